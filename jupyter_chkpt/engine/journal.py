"""The journal: what a tracer that dies leaves for the next one to finish.

A frozen process sits in a group stop (proc/ptrace.py), so when the helper or
the CLI dies while working on it, nothing runs on half-changed state: the
process just stays stopped. The journal says how to end that stop with the
process whole. One file per process, `<runtime dir>/chkpt/journal/<pid>.json`
(0600, in 0700 directories), replaced atomically before each change it covers:

| phase       | written                          | a rescue                                  |
|-------------|----------------------------------|-------------------------------------------|
| `freezing`  | claimed, nothing sent yet        | leaves it alone (it may be stopped by its |
|             |                                  | user: not ours to end)                    |
| `stopping`  | right before the SIGSTOP         | SIGCONT (no register was touched)         |
| `frozen`    | every thread seized, before any  | puts back each thread's registers and     |
|             | injected syscall                 | signal mask and the scratch page, closes  |
|             |                                  | fds opened since, lets it run             |
| `changing`  | a restore, before its first      | rolls back: applies the safety image      |
|             | change; safety image on disk,    | (`<pid>.safety`) and puts parked fds back |
|             | fds parked inside the process    |                                           |
| `committed` | a restore at its point of no     | rolls forward: writes the snapshot (from  |
|             | return                           | the store) and its registers              |
| `released`  | every thread detached, before    | SIGCONT                                   |
|             | the SIGCONT                      |                                           |

`owner` is the tracer (pid + start time): a journal is only acted on once
its owner is gone, so a rescue never races the operation it would finish.
The file is created exclusively, so it is also what keeps two tracers (a
helper and the CLI, two helpers) off one process; it goes once the process
runs again. Rescues: engine/rescue.py.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ProcessBusy, SnapshotInUse
from ..helper import paths
from ..image import ProcessIdentity
from ..private import DIR_MODE, FILE_MODE, make_private_dirs, write_file
from ..proc import procfs

VERSION = 1
PHASES = ("freezing", "stopping", "frozen", "changing", "committed", "released")


def journal_dir() -> Path:
    """<runtime dir>/chkpt/journal: private whatever the umask."""
    d = paths.journal_path()
    make_private_dirs(d)
    for p in (d.parent, d):
        if os.stat(p).st_mode & 0o777 != DIR_MODE:
            os.chmod(p, DIR_MODE)
    return d


def safety_file(name: str) -> Path:
    """Where a restore keeps its safety image: a file named after us (pid and start
    time) in a private directory on /dev/shm (a tmpfs: it costs what anonymous
    memory does, and outlives a helper that dies), else in the journal directory.
    Files of owners that are gone are swept first (sweep_safety_files)."""
    d = _safety_dir()
    sweep_safety_files(d)
    me = os.getpid()
    return d / f"safety-{me}.{procfs.identity(me).start_time}-{name}"


def sweep_safety_files(d: Path | None = None) -> list[str]:
    """Remove the safety files of owners that have exited, but not one a journal
    still names (a rescue needs it). Returns what was removed."""
    d = d or _safety_dir()
    removed = []
    with locked() as jdir:
        named = set()
        for path in jdir.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                named.add(Journal.load(path).safety_file)
        for f in d.glob("safety-*"):
            owner = f.name.split("-")[1]
            pid, _, start = owner.partition(".")
            try:
                alive = procfs.running(int(pid), int(start))
            except ValueError:
                alive = False  # not a name we give
            if not alive and str(f) not in named:
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
                    removed.append(f.name)
    return removed


def _safety_dir() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir():
        d = shm / f"jupyter-chkpt-{os.getuid()}"
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, DIR_MODE)
        with contextlib.suppress(OSError):
            st = os.lstat(d)  # world-writable parent: it must be ours, private, no link
            if st.st_uid == os.getuid() and stat.S_ISDIR(st.st_mode):
                if st.st_mode & 0o777 != DIR_MODE:
                    os.chmod(d, DIR_MODE)
                return d
    return journal_dir()


@contextlib.contextmanager
def locked() -> Iterator[Path]:
    """Claims and rescues take turns (between processes too); the journal directory."""
    d = journal_dir()
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield d
    finally:
        os.close(fd)


@dataclass
class ThreadRecord:
    regs: dict[str, int]
    sigmask: int


@dataclass
class Journal:
    """The record of one operation on one frozen process."""

    process: ProcessIdentity
    op: str  # "snapshot" or "restore"
    owner_pid: int = field(default_factory=os.getpid)
    owner_start: int = 0
    phase: str = "freezing"
    threads: dict[int, ThreadRecord] = field(default_factory=dict)
    scratch: tuple[int, str] | None = None  # address, base64 of its page at the freeze
    fds: list[int] = field(default_factory=list)  # the fd numbers at the freeze
    # a restore's
    store: str = ""
    snapshot: str = ""
    parked: dict[int, tuple[int, bool]] = field(default_factory=dict)  # fd -> (where, cloexec)
    safety_file: str = ""  # the safety image's pages, laid out as safety_runs says
    safety_runs: list[tuple[int, int]] = field(default_factory=list)
    safety_present: list[tuple[int, int]] = field(default_factory=list)
    # what the restored process is told if a rescue finishes the restore: the
    # snapshot and what the requester handed over (helper/server.py op_restore)
    handoff: dict[str, Any] | None = None
    path: Path = field(default=Path(), repr=False)

    def __post_init__(self) -> None:
        if not self.owner_start:
            self.owner_start = procfs.identity(self.owner_pid).start_time
        if self.path == Path():
            self.path = journal_dir() / f"{self.process.pid}.json"

    @property
    def safety_meta_path(self) -> Path:
        return self.path.with_suffix(".meta")

    # --- writing ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        d["version"] = VERSION
        return d

    def _data(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    def claim(self) -> None:
        """Create the file, or refuse: another live tracer works on the process. A
        journal left by a dead one is rescued first (the process comes back whole)."""
        from .rescue import rescue_path  # rescue builds on this module

        with locked():
            try:
                write_file(self.path, self._data(), os.O_EXCL)
                return
            except FileExistsError:
                pass
            try:
                other = Journal.load(self.path)
            except (OSError, ValueError, KeyError, TypeError):
                other = None
            if other is not None and other.owner_alive():
                raise other.busy()
            rescue_path(self.path)
            write_file(self.path, self._data(), os.O_EXCL)

    def write(self, phase: str | None = None) -> None:
        """Replace the file atomically (no fsync: this guards against our death,
        not the machine's, which ends the process too)."""
        if phase is not None:
            self.phase = phase
        tmp = self.path.with_name(self.path.name + ".tmp")
        write_file(tmp, self._data(), os.O_TRUNC)
        os.rename(tmp, self.path)

    def write_safety(
        self,
        meta: dict[str, Any],
        runs: list[tuple[int, int]],
        present: list[tuple[int, int]],
        *,
        file: str | os.PathLike[str] | None = None,
        pages: memoryview | None = None,
    ) -> None:
        """What a rollback needs, before the journal names it: the safety image's
        metadata, and its pages in `runs` order: already in `file`, or `pages` to
        be copied to one."""
        write_file(self.safety_meta_path, json.dumps(meta).encode(), os.O_TRUNC)
        if file is None:
            assert pages is not None
            file = self.path.with_suffix(".safety")
            write_file(Path(file), pages, os.O_TRUNC)
        self.safety_file = os.fspath(file)
        self.safety_runs = runs
        self.safety_present = present

    def remove(self) -> None:
        own = self.path.with_suffix(".safety")  # a copy; a staging file is its buffer's
        for p in (own, self.safety_meta_path, self.path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    # --- reading ----------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> Journal:
        d = json.loads(path.read_bytes())
        if d.get("version") != VERSION or d.get("phase") not in PHASES:
            raise ValueError(f"not a version {VERSION} journal")
        scratch = d.get("scratch")
        return cls(
            process=ProcessIdentity(**d["process"]),
            op=d["op"],
            owner_pid=int(d["owner_pid"]),
            owner_start=int(d["owner_start"]),
            phase=d["phase"],
            threads={int(t): ThreadRecord(**r) for t, r in d["threads"].items()},
            scratch=None if scratch is None else (int(scratch[0]), str(scratch[1])),
            fds=[int(n) for n in d["fds"]],
            store=d["store"],
            snapshot=d["snapshot"],
            parked={int(k): (int(v[0]), bool(v[1])) for k, v in d["parked"].items()},
            safety_file=str(d["safety_file"]),
            safety_runs=[(int(a), int(n)) for a, n in d["safety_runs"]],
            safety_present=[(int(a), int(n)) for a, n in d["safety_present"]],
            handoff=d.get("handoff"),
            path=path,
        )

    def busy(self) -> ProcessBusy:
        return ProcessBusy(
            f"PID {self.process.pid} is being worked on by process {self.owner_pid} "
            f"(a {self.op}, {self.phase})"
        )

    def owner_alive(self) -> bool:
        return procfs.running(self.owner_pid, self.owner_start)

    def scratch_page(self) -> tuple[int, bytes] | None:
        if self.scratch is None:
            return None
        return self.scratch[0], base64.b64decode(self.scratch[1])

    def safety_meta(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.safety_meta_path.read_bytes())
        return data


def refuse_if_busy(pid: int) -> None:
    """ProcessBusy if one of our tracers is at work on `pid`."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        j = Journal.load(journal_dir() / f"{pid}.json")
        if j.owner_alive():
            raise j.busy()


def handoff_path(pid: int) -> Path:
    """Where a rescue leaves word for the process it rescued (kernel/controller.py
    reads it when its request ends without a reply)."""
    journal_dir()
    return paths.handoff_path(pid)


def tell(j: Journal, state: str, what: str, result: dict[str, Any] | None = None) -> None:
    """Word for a kernel whose helper may die before it answers: there before the
    process runs again. `state` "restored" carries what the restored process needs
    to answer its requester (kernel/controller.py reads it if its request ends
    without a reply, and removes it once it has answered)."""
    if j.handoff is None:
        return  # not a kernel's helper at work: nobody to tell
    # for this process instance only: a pid can be reused
    word: dict[str, Any] = {
        "op": j.op,
        "state": state,
        "what": what,
        "start_time": j.process.start_time,
    }
    if state == "restored":
        word["restored"] = {
            "snapshot": j.handoff.get("snapshot", {}),
            "result": result or {},
            "carry": j.handoff.get("carry", {}),
        }
    path = handoff_path(j.process.pid)
    tmp = path.with_name(path.name + ".tmp")
    write_file(tmp, json.dumps(word).encode(), os.O_TRUNC)
    os.rename(tmp, path)


def refuse_if_needed(store: str | os.PathLike[str], snap_id: str) -> None:
    """SnapshotInUse if a restore journaled from `snap_id` of `store` may still need it:
    a rescue of a restore past its point of no return rolls forward from it."""
    for path in existing():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            j = Journal.load(path)
            if (
                j.op == "restore"
                and j.snapshot == snap_id
                and j.phase in ("frozen", "changing", "committed")
                and os.path.realpath(j.store) == os.path.realpath(store)
            ):
                raise SnapshotInUse(
                    f"snapshot {snap_id} is being restored into PID {j.process.pid}"
                    + ("" if j.owner_alive() else ", whose rescue still needs it")
                )


def existing() -> list[Path]:
    """Every journal of this user's operations, oldest first."""
    try:
        d = journal_dir()
    except OSError:
        return []
    found = []
    for p in d.glob("*.json"):
        with contextlib.suppress(FileNotFoundError):
            found.append((p.stat().st_mtime, p))
    return [p for _, p in sorted(found)]
