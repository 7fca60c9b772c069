"""The in-memory image of a process: what the engine dumps and restores.

Pure data, shared by the engine (which fills and consumes it) and the store
(which persists it). `ImageMeta` is everything but the page contents and maps
one-to-one onto the manifest (docs/FORMAT.md); `PageRuns` holds the page
contents as runs of contiguous pages in one buffer.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

PAGE_SIZE = 4096


@dataclass(frozen=True)
class ProcessIdentity:
    """Identifies one process instance: a pid alone can be reused."""

    pid: int
    start_time: int  # /proc/PID/stat field 22, clock ticks since boot
    boot_id: str
    exe: str
    uid: int

    def same_process(self, other: ProcessIdentity) -> bool:
        return (self.pid, self.start_time, self.boot_id) == (
            other.pid,
            other.start_time,
            other.boot_id,
        )


@dataclass
class ThreadState:
    """What the kernel holds for a thread beyond its registers (format 1.2): what it
    takes to recreate the thread if it has exited by the time of a restore."""

    start_time: int  # clock ticks since boot: with the tid, names one thread
    clear_child_tid: int  # cleared and futex-woken at exit (glibc: the pthread's tid field)
    robust_list: int  # head of its robust futex list, 0 = none
    robust_len: int
    rseq: list[int] | None  # [address, length, signature] of its rseq area
    altstack: list[int]  # sigaltstack: [sp, flags, size]
    cpus: list[int]  # CPU affinity
    policy: int  # scheduling policy (SCHED_OTHER, ...), priority and nice value
    priority: int
    nice: int
    queued: list[str] = field(default_factory=list)  # base64 siginfo of its queued signals

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ThreadState:
        return cls(**d)


@dataclass
class ThreadImage:
    tid: int
    regs: dict[str, int]  # user_regs_struct by field name, syscall restart already resolved
    xstate: bytes  # raw NT_X86_XSTATE regset
    sigmask: int
    name: str = ""
    state: ThreadState | None = None  # None in images before 1.2

    def to_json(self) -> dict[str, Any]:
        return {
            "tid": self.tid,
            "name": self.name,
            "regs": self.regs,
            "xstate": base64.b64encode(self.xstate).decode(),
            "sigmask": self.sigmask,
            "state": None if self.state is None else _flat(self.state),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ThreadImage:
        return cls(
            tid=int(d["tid"]),
            name=str(d.get("name", "")),
            regs={str(k): int(v) for k, v in d["regs"].items()},
            xstate=base64.b64decode(d["xstate"]),
            sigmask=int(d["sigmask"]),
            state=None if d.get("state") is None else ThreadState.from_json(d["state"]),
        )


@dataclass(frozen=True)
class Mapping:
    """One line of /proc/PID/maps."""

    start: int
    end: int
    perms: str  # e.g. "rw-p"
    offset: int
    dev: str  # "major:minor" in hex, as in maps
    inode: int
    path: str  # "" for anonymous, "[heap]", "/usr/lib/...", "/memfd:x (deleted)", ...
    # smaps VmFlags, two letters each ("rd wr mr mw me ac lo"); None where not read
    vmflags: str | None = None

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"

    @property
    def readable(self) -> bool:
        return self.perms[0] == "r"

    @property
    def is_shared_anon(self) -> bool:
        """mmap(MAP_SHARED | MAP_ANONYMOUS), e.g. Python's mmap.mmap(-1, n): backed by an
        unnamed shmem file the kernel shows as /dev/zero (deleted)."""
        return self.shared and self.inode != 0 and self.path == "/dev/zero (deleted)"

    @property
    def is_file(self) -> bool:
        """Backed by a file one can reopen (shared anonymous memory is not)."""
        return self.inode != 0 and not self.is_shared_anon

    @property
    def flags(self) -> frozenset[str]:
        return frozenset((self.vmflags or "").split())

    @property
    def is_special(self) -> bool:
        """Kernel-provided areas that are never dumped nor remapped."""
        return self.path in ("[vvar]", "[vdso]", "[vsyscall]", "[vvar_vclock]", "[uprobes]")

    def to_json(self) -> dict[str, Any]:
        return _flat(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Mapping:
        return cls(**d)


@dataclass(frozen=True)
class EpollItem:
    """One registration of an epoll instance (a `tfd:` line of its fdinfo)."""

    tfd: int  # the fd number it was added with: part of the kernel's key
    events: int
    data: int
    ino: int  # inode and device of the registered file, to tell files apart
    sdev: int  # kernel dev_t encoding (major << 20 | minor), as fdinfo prints it


@dataclass
class FileImage:
    """One entry of the fd table and what matters of its open file description."""

    fd: int
    kind: str  # file, dir, char, pipe, socket, eventfd, epoll, timerfd, signalfd, other
    link: str  # readlink of /proc/PID/fd/N: a path, "pipe:[ino]", "anon_inode:[eventfd]", ...
    dev: int  # st_dev / st_ino of the file (anon inodes share one inode)
    ino: int
    flags: int  # open flags from fdinfo, without O_CLOEXEC
    cloexec: bool  # FD_CLOEXEC: a property of the fd, not of the description
    pos: int
    shared_with: list[int] = field(default_factory=list)  # other PIDs holding this description
    epoll: list[EpollItem] = field(default_factory=list)
    eventfd_count: int | None = None
    eventfd_semaphore: bool = False
    waiting: int | None = None  # bytes readable in a pipe or socket (FIONREAD)
    content: str | None = None  # a pipe read end: the bytes waiting in it, base64 (1.2)
    hangup: bool = False  # a pipe or socket whose other end is closed
    details: dict[str, str] = field(default_factory=dict)  # other fdinfo lines (timerfd, ...)

    def to_json(self) -> dict[str, Any]:
        d = _flat(self)
        d["epoll"] = [_flat(e) for e in self.epoll]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FileImage:
        d = dict(d)
        d["epoll"] = [EpollItem(**e) for e in d.get("epoll", [])]
        return cls(**d)


@dataclass(frozen=True)
class SigAction:
    """A signal's disposition as the kernel holds it (struct kernel_sigaction)."""

    signo: int
    handler: int  # 0 = SIG_DFL, 1 = SIG_IGN, else an address
    flags: int
    restorer: int
    mask: int


@dataclass(frozen=True)
class PosixTimer:
    """A timer_create() timer: /proc/PID/timers plus timer_gettime()."""

    id: int
    clock: int
    signo: int
    sigval: int
    notify: int  # sigev_notify: SIGEV_SIGNAL 0, SIGEV_NONE 1, | SIGEV_THREAD_ID 4
    notify_tid: int
    interval_ns: int
    value_ns: int  # time left until it fires; 0 = disarmed


@dataclass
class Timers:
    """Interval timers (setitimer: real, virtual, prof as [interval_us, value_us]) and POSIX timers."""

    itimers: list[list[int]]
    posix: list[PosixTimer] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Timers:
        return cls(
            itimers=[[int(v) for v in t] for t in d["itimers"]],
            posix=[PosixTimer(**t) for t in d.get("posix", [])],
        )


@dataclass(frozen=True)
class Child:
    """A child process, as the parent could reap it."""

    pid: int
    start_time: int
    comm: str


@dataclass(frozen=True)
class MappedFile:
    """A file with private mappings: pages never written read its current content."""

    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int


@dataclass
class ImageMeta:
    """Everything about a process image except the page contents."""

    process: ProcessIdentity
    brk: int
    start_brk: int
    cwd: str
    threads: list[ThreadImage]
    mappings: list[Mapping]
    # OS objects beyond memory (format 1.1); None in images that lack them
    files: list[FileImage] | None = None
    sigactions: list[SigAction] | None = None
    umask: int | None = None
    # more process state (format 1.2); None in images that lack it
    timers: Timers | None = None
    rlimits: dict[str, list[int]] | None = None  # "RLIMIT_NOFILE" -> [soft, hard]
    personality: int | None = None
    children: list[Child] | None = None
    queued_signals: list[str] | None = None  # base64 siginfo of process-wide queued signals
    mapped_files: list[MappedFile] | None = None
    # what a transplant into another process needs (format 1.3): the mm fields of
    # /proc/PID/stat (start_code, ..., env_end; `procfs.MM_FIELDS`) and a hash of the
    # [vdso]'s contents (restored code holds pointers into it: it must be the same)
    mm: dict[str, int] | None = None
    vdso_hash: str | None = None
    # engine figures (pause_s, bytes read, ...); informative only
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "process": asdict(self.process),
            "brk": self.brk,
            "start_brk": self.start_brk,
            "cwd": self.cwd,
            "threads": [t.to_json() for t in self.threads],
            "mappings": [m.to_json() for m in self.mappings],
            "files": None if self.files is None else [f.to_json() for f in self.files],
            "sigactions": None if self.sigactions is None else [asdict(a) for a in self.sigactions],
            "umask": self.umask,
            "timers": None if self.timers is None else asdict(self.timers),
            "rlimits": self.rlimits,
            "personality": self.personality,
            "children": _list_json(self.children),
            "queued_signals": self.queued_signals,
            "mapped_files": _list_json(self.mapped_files),
            "mm": self.mm,
            "vdso_hash": self.vdso_hash,
            "stats": self.stats,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ImageMeta:
        return cls(
            process=ProcessIdentity(**d["process"]),
            brk=int(d["brk"]),
            start_brk=int(d["start_brk"]),
            cwd=str(d["cwd"]),
            threads=[ThreadImage.from_json(t) for t in d["threads"]],
            mappings=[Mapping.from_json(m) for m in d["mappings"]],
            files=None if d.get("files") is None else [FileImage.from_json(f) for f in d["files"]],
            sigactions=None
            if d.get("sigactions") is None
            else [SigAction(**a) for a in d["sigactions"]],
            umask=None if d.get("umask") is None else int(d["umask"]),
            timers=None if d.get("timers") is None else Timers.from_json(d["timers"]),
            rlimits=d.get("rlimits"),
            personality=d.get("personality"),
            children=None if d.get("children") is None else [Child(**c) for c in d["children"]],
            queued_signals=d.get("queued_signals"),
            mapped_files=None
            if d.get("mapped_files") is None
            else [MappedFile(**f) for f in d["mapped_files"]],
            mm=None if d.get("mm") is None else {k: int(v) for k, v in d["mm"].items()},
            vdso_hash=d.get("vdso_hash"),
            stats=dict(d.get("stats", {})),
        )


def _list_json(items: list[Any] | None) -> list[dict[str, Any]] | None:
    return None if items is None else [_flat(i) for i in items]


def _flat(obj: Any) -> dict[str, Any]:
    """A dataclass of JSON values as a dict: `asdict` without its deep copies (a
    kernel's image has hundreds of mappings, and a snapshot per cell)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


@dataclass
class PageRuns:
    """Page contents: runs of contiguous pages laid end to end in `buffer`.

    `runs` holds (vaddr, npages) sorted by vaddr and non-overlapping; run i
    starts in `buffer` at the sum of the page counts before it. Pages not in
    any run were not present at dump time (zero or unchanged file content).
    """

    buffer: memoryview
    runs: list[tuple[int, int]]

    @property
    def npages(self) -> int:
        return sum(n for _, n in self.runs)

    @property
    def nbytes(self) -> int:
        return self.npages * PAGE_SIZE

    def iter_runs(self) -> Iterator[tuple[int, memoryview]]:
        """(vaddr, bytes of the run) for every run."""
        off = 0
        for vaddr, n in self.runs:
            size = n * PAGE_SIZE
            yield vaddr, self.buffer[off : off + size]
            off += size

    def iter_pages(self) -> Iterator[tuple[int, memoryview]]:
        """(vaddr, 4 KiB page) for every page, in address order."""
        for vaddr, data in self.iter_runs():
            for i in range(0, len(data), PAGE_SIZE):
                yield vaddr + i, data[i : i + PAGE_SIZE]


@dataclass
class Image:
    """A process image to store or to apply: its meta, the runs of pages that hold
    data (`present`), and the contents of those that were read (`contents`): all
    of them in a full image; in an incremental one only those that may differ from
    the memory it is compared with (the rest is known to be equal)."""

    meta: ImageMeta
    present: list[tuple[int, int]]
    contents: list[PageRuns]

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.contents)


@dataclass
class PageMap:
    """Which content sits at which page of an image: page addresses (sorted) and
    their 16-byte hashes, as arrays. What a snapshot's pagemap file holds, and
    what an incremental dump or restore compares against."""

    vaddrs: np.ndarray[Any, np.dtype[np.uint64]]
    hashes: np.ndarray[Any, np.dtype[np.void]]  # dtype V16

    def __len__(self) -> int:
        return len(self.vaddrs)

    @classmethod
    def empty(cls) -> PageMap:
        return cls(np.empty(0, np.uint64), np.empty(0, "V16"))

    def runs(self) -> list[tuple[int, int]]:
        """Its pages as maximal runs of consecutive addresses."""
        v = self.vaddrs
        if not len(v):
            return []
        breaks = np.flatnonzero(np.diff(v) != PAGE_SIZE) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [len(v)]))
        return [(int(v[a]), int(b - a)) for a, b in zip(starts, ends, strict=True)]

    def select(self, runs: list[tuple[int, int]]) -> PageMap:
        """The entries whose address lies in `runs`."""
        if not runs:
            return PageMap.empty()
        starts = np.array([v for v, _ in runs], np.uint64)
        ends = starts + np.array([n for _, n in runs], np.uint64) * PAGE_SIZE
        # +1 where a run begins, -1 where it ends: inside a run the running sum is 1
        edge = np.zeros(len(self.vaddrs) + 1, np.int64)
        np.add.at(edge, np.searchsorted(self.vaddrs, starts), 1)
        np.add.at(edge, np.searchsorted(self.vaddrs, ends), -1)
        keep = np.cumsum(edge[:-1]) > 0
        return PageMap(self.vaddrs[keep], self.hashes[keep])

    def differing(self, other: PageMap) -> list[tuple[int, int]]:
        """Runs of our pages that `other` lacks or holds with other content."""
        idx = np.searchsorted(other.vaddrs, self.vaddrs)
        idx[idx == len(other.vaddrs)] = 0
        same = np.zeros(len(self.vaddrs), bool)
        if len(other.vaddrs):
            same = (other.vaddrs[idx] == self.vaddrs) & (other.hashes[idx] == self.hashes)
        return PageMap(self.vaddrs[~same], self.hashes[~same]).runs()
