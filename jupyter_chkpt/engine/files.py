"""Files: record a frozen process's fd table, and bring it back to a snapshot's.

The reconcile order (docs/ARCHITECTURE.md, "Files"):

1. epoll registrations of fds about to be closed are deleted first, while the
   fd still names the registered file. Once it is closed epoll_ctl cannot reach
   them, and a registration that outlives its fd (the file kept alive by our
   duplicate, or by another process) delivers events with stale data pointers:
   the SIGSEGV seen in a restored zmq kernel.
2. fds that are new, or now name a different open file description, are closed:
   parked first (duplicated above every number in use, the duplicate named in
   the journal) so that a rollback, ours or a rescue's, can put them back; the
   duplicates are closed past the point of no return (`close_parked`).
3. Missing fds are put back at their numbers: from a held duplicate (the target
   runs pidfd_getfd on the helper, then dup3), else a regular file is reopened
   by path, else a stand-in takes the number (a helper restarted since the
   snapshot holds no duplicates): a socket or pipe whose other end is closed
   (its user reads end-of-file, as when a peer goes: zmq drops that peer), an
   eventfd with the snapshot's counter, an epoll instance that gets the
   snapshot's registrations; else it is reported.
4. FD_CLOEXEC; then every epoll instance is made to hold exactly the snapshot's
   registrations (DEL / MOD / ADD; an instance holding a registration nobody can
   name any more is replaced by a fresh one).
5. Description state (offset, status flags, eventfd counter) goes back through a
   borrowed copy of the fd, unless another process shares the description: then
   changing it would change it for them too (an inherited stdout would rewind
   the parent's log), so it is left alone and listed in `FilesReport.shared`.
   A pipe's read end gets back exactly the bytes that waited in it at the
   snapshot: what arrived since is read out, what was read since is written in
   again (also only where nobody else shares it).
6. What cannot be put back is reported: bytes read from sockets since the
   snapshot, peers that have gone, timers that changed.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ChkptError
from ..image import EpollItem, FileImage
from ..proc import fds, sockets
from ..proc.arch import current as arch
from ..proc.inject import Injector
from .freeze import Frozen
from .keeper import FdKeeper

EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
F_DUPFD_CLOEXEC, F_SETFD, FD_CLOEXEC = 1030, 2, 1
EFD_SEMAPHORE = 1
SHUT_RDWR = 2
AT_FDCWD = -100
_NO_REOPEN = os.O_CREAT | os.O_EXCL | os.O_TRUNC
_SEMAPHORE_READ_LIMIT = 1 << 16
_WHOLE_PIPE = "a new pipe, both of whose ends the process holds"
_WHOLE_PAIR = "a new socket pair, both of whose ends the process holds"
_ptracer = threading.Lock()  # held while a target may pull fds from this process


@dataclass
class FilesReport:
    """What a reconcile did, fd numbers per action; `notes` says what it could not do."""

    closed: list[int] = field(default_factory=list)
    put_back: list[int] = field(default_factory=list)
    reopened: list[int] = field(default_factory=list)
    epoll_changed: list[int] = field(default_factory=list)
    epoll_replaced: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    eventfds: list[int] = field(default_factory=list)
    pipes: list[int] = field(default_factory=list)  # pipe contents set back
    stand_ins: list[int] = field(default_factory=list)  # gone, replaced (step 3)
    # a transplant's: the new process's own fds kept where the snapshot's connected
    # the old process to the outside (`_Reconciler.inherit`)
    inherited: list[int] = field(default_factory=list)
    # offset / flags / counter differ but left alone: the open file is shared with
    # another process, which would see the change too (an inherited stdout)
    shared: list[int] = field(default_factory=list)
    # a transplant's: connections of the old process to the outside (frontends, its
    # helper), now sockets that read as closed: said once, not fd by fd
    severed: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """e.g. "closed 3 (fd 7, 8, 9), put back 1 (fd 5)"; "" when nothing was done."""
        parts = []
        for name, fds_ in asdict(self).items():
            if name != "notes" and fds_:
                parts.append(
                    f"{name.replace('_', ' ')} {len(fds_)} (fd {', '.join(map(str, fds_))})"
                )
        return ", ".join(parts)


@contextmanager
def _pidfd(pid: int, keeper: FdKeeper | None) -> Iterator[int]:
    if keeper is not None:
        yield keeper.pidfd(pid)
        return
    pidfd = os.pidfd_open(pid)
    try:
        yield pidfd
    finally:
        os.close(pidfd)


def capture_files(fz: Frozen, keeper: FdKeeper | None, key: str | None) -> list[FileImage]:
    """The fd table of a frozen process; with a keeper, duplicates are held under `key`.
    Which other processes share each description (scanning every fd of every process
    of the user: milliseconds) is for `note_sharers`, once the process runs again."""
    table = fds.read_fd_table(fz.pid)
    files = list(table.values())
    with _pidfd(fz.pid, keeper) as pidfd:
        try:
            for f in files:
                if f.kind in ("pipe", "socket"):
                    with fds.borrowed(pidfd, f.fd) as mine:
                        f.waiting = fds.bytes_waiting(mine)
                        f.hangup = fds.hung_up(mine)
                        if _pipe_read_end(f):
                            f.content = base64.b64encode(fds.peek_pipe(mine)).decode()
                        if f.kind == "socket":  # for a transplant: listeners, pairs
                            f.details.update(sockets.describe(mine))
                            if f.waiting and f.details.get("type") == "stream":
                                data = sockets.peek(mine, f.waiting)
                                f.content = base64.b64encode(data).decode()
        except OSError as e:
            if e.errno not in fds.NOT_PERMITTED:
                raise  # else: no pidfd_getfd here, so no byte counts
    unix = str(int(socket.AF_UNIX))
    sockets.note_peers({f.ino: f.details for f in files if f.details.get("family") == unix})
    if keeper is not None and key is not None:
        keeper.hold(fz.pid, key, files)
    return files


def note_sharers(pid: int, files: list[FileImage], keeper: FdKeeper | None) -> None:
    """Fill in `shared_with` (informative: a restore checks sharing again itself)."""
    own = keeper.own_fds() if keeper else set()
    try:
        found = fds.sharers(pid, files, own)
    except (OSError, ChkptError):
        return  # the process is gone or changed: nothing to say
    for fd, pids in found.items():
        for f in files:
            if f.fd == fd:
                f.shared_with = pids


def _names(f: FileImage | None, item: EpollItem) -> bool:
    """Whether fd entry `f` could be the file an epoll item was registered with."""
    return (
        f is not None
        and f.ino == item.ino
        and (os.major(f.dev), os.minor(f.dev)) == (item.sdev >> 20, item.sdev & 0xFFFFF)
    )


class _Reconciler:
    def __init__(
        self,
        fz: Frozen,
        want: list[FileImage],
        keeper: FdKeeper | None,
        key: str | None,
        scratch: int,
        report: FilesReport,
        moving: bool = False,
    ) -> None:
        self.pid = fz.pid
        self.moving = moving
        self.inj: Injector = fz.injector
        self.want = {f.fd: f for f in want}
        self.keeper = keeper
        self.key = key
        self.scratch = scratch
        self.report = report
        self.target_pidfd: int | None = None  # the target's pidfd of us, while installing
        self.journal = fz.journal
        self.park_from = 3
        # fds given another file (stand-ins, a transplant's adopted and inherited
        # ones): epoll registrations of the snapshot name them by number
        self.renewed: set[int] = set()
        self.placed: set[int] = set()  # ends of pairs made ahead of their turn
        self.inherited: set[int] = set()
        self.listeners: dict[str, int] = {}  # a transplant's: address -> the process's fd

    def _table(self) -> dict[int, FileImage]:
        """The fd table, less our parked duplicates."""
        parked = {p for p, _ in self.journal.parked.values()} if self.journal else set()
        return {n: f for n, f in fds.read_fd_table(self.pid).items() if n not in parked}

    def _close(self, n: int, cloexec: bool) -> None:
        """Close fd `n` of the process, parked where a journal is kept."""
        if self.journal is not None and n not in self.journal.parked:
            p = self.inj.check("fcntl", n, F_DUPFD_CLOEXEC, self.park_from)
            self.journal.parked[n] = (p, cloexec)
            self.journal.write()
        self.inj.check("close", n)

    def held(self, fd: int) -> int | None:
        if self.keeper is None or self.key is None:
            return None
        return self.keeper.lookup(self.pid, self.key, fd)

    def same(self, want: FileImage, now: FileImage) -> bool:
        if self.moving and want.kind not in ("file", "dir", "char"):
            # nothing but a file on disk outlives the old process; anon inodes look
            # alike (every epoll is "the same"), and a kept epoll would go on
            # watching the new process's files under the old numbers
            return False
        held = self.held(want.fd)
        if held is not None:
            same = fds.same_file(self.pid, want.fd, os.getpid(), held)
            if same is not None:
                return same
        # Without a duplicate the inode is all we have: anon inodes (eventfd,
        # epoll) share one, so eventfds are told apart by their id.
        return (want.kind, want.dev, want.ino, want.details.get("eventfd-id")) == (
            now.kind,
            now.dev,
            now.ino,
            now.details.get("eventfd-id"),
        )

    def run(self, pidfd: int) -> None:
        self.pidfd = pidfd
        now = self._table()
        if self.moving:
            self.listeners = _listeners(pidfd, now)
        self.park_from = max([*self.want, *now, *fds.read_fd_table(self.pid), 2]) + 1
        keep = {n for n, w in self.want.items() if n in now and self.same(w, now[n])}
        if self.moving:
            self.inherited = self.inherit(now) - keep
            keep |= self.inherited
            self.renewed |= self.inherited
            self.report.inherited = sorted(self.inherited)
        close = sorted(set(now) - keep)
        missing = sorted(set(self.want) - keep)

        replace = self._unregister(now, set(close))
        for n in close:
            self._close(n, now[n].cloexec)
            self.report.closed.append(n)
        if missing:
            self._install(missing, now)
        if self.report.severed:
            n = len(self.report.severed)
            self.report.notes.append(
                f"{n} connection(s) of the earlier process read as closed here: its "
                "frontends reconnect by themselves"
            )

        now = self._table()
        for n, w in self.want.items():
            if n in now and now[n].cloexec != w.cloexec:
                self.inj.check("fcntl", n, F_SETFD, FD_CLOEXEC if w.cloexec else 0)
        for n, w in sorted(self.want.items()):
            if w.kind == "epoll" and n in now:
                self._reconcile_epoll(w, now, n in replace)
        # cloexec and epoll changes leave offsets, flags and counters as they were
        self._description_state(pidfd, now)

    def inherit(self, now: dict[int, FileImage]) -> set[int]:
        """A transplant's: fds that connected the old process to the outside world
        (terminals, pipes whose other end it did not hold: a launcher's stdio) are
        the new process's own at the same number, where it has one of the same kind
        and direction connected likewise. Sockets never are: a peer of the old
        process is not one of the new process (zmq would carry on mid-message)."""
        out = set()
        for n, w in self.want.items():
            c = now.get(n)
            if c is None or c.kind != w.kind or (w.flags ^ c.flags) & os.O_ACCMODE:
                continue
            if w.kind == "char" or (
                w.kind == "pipe"
                and not _inner(w, self.want.values())
                and not _inner(c, now.values())
            ):
                out.add(n)
        return out

    # 1. epoll registrations of fds about to close
    def _unregister(self, now: dict[int, FileImage], closing: set[int]) -> set[int]:
        """DEL what can be deleted; returns epoll fds holding registrations we cannot reach."""
        replace = set()
        for e, ep in now.items():
            if ep.kind != "epoll" or e in closing:
                continue
            for item in ep.epoll:
                if item.tfd not in closing:
                    continue
                if not _names(now.get(item.tfd), item) or self._ctl(e, EPOLL_CTL_DEL, item) < 0:
                    replace.add(e)
        return replace

    def _ctl(self, epfd: int, op: int, item: EpollItem) -> int:
        event = self.inj.put(self.scratch, arch.pack_epoll_event(item.events, item.data))
        return self.inj.call("epoll_ctl", epfd, op, item.tfd, event)

    # 3. put missing fds back
    def _install(self, missing: list[int], now: dict[int, FileImage]) -> None:
        # Temporaries live above every number we may need, so they never
        # take the place of an fd still to be installed.
        high = max([*self.want, *now, 2]) + 1
        try:
            for n in missing:
                if n in self.placed:  # an end of a pair made with its other end
                    self.report.stand_ins.append(n)
                    continue
                w = self.want[n]
                held = self.held(n)
                if held is not None:
                    tmp = self.inj.call("pidfd_getfd", self._target_pidfd(high), held, 0)
                    if tmp < 0:
                        self._note(
                            w, f"could not be put back: pidfd_getfd failed with {_errname(tmp)}"
                        )
                        continue
                    self._move(tmp, n, w.cloexec)
                    self.report.put_back.append(n)
                elif self._adopt_listener(w, high):
                    self.report.inherited.append(n)
                elif (self.moving and self._listen_again(w)) or self._reopen(w):
                    self.report.reopened.append(n)
                elif (what := self._stand_in(w, missing)) is not None:
                    self.report.stand_ins.append(n)
                    # those lose nothing; nor, in a transplant (where nothing survives),
                    # an eventfd with its counter or an epoll with its registrations
                    faithful = self.moving and w.kind in ("eventfd", "epoll")
                    if self.moving and w.kind == "socket" and what not in (_WHOLE_PAIR,):
                        self.report.severed.append(n)  # expected: its peers were the old one's
                    elif what not in (_WHOLE_PIPE, _WHOLE_PAIR) and not faithful:
                        self._note(
                            w, f"was gone and no duplicate of it is held: replaced by {what}"
                        )
                else:
                    self._note(
                        w,
                        "was closed since the snapshot and no duplicate of it is held "
                        "(the snapshot was taken without a helper keeping its files); "
                        "left closed",
                    )
        finally:
            if self.target_pidfd is not None:
                try:
                    self.inj.call("close", self.target_pidfd)
                finally:  # whatever happened to the target, never keep the lock
                    self.target_pidfd = None
                    fds.allow_ptrace_by(0)
                    _ptracer.release()

    def _target_pidfd(self, high: int) -> int:
        if self.target_pidfd is None:
            # The target takes files from us: under Yama scope 1 it needs our leave,
            # and we can name one process at a time.
            _ptracer.acquire()
            try:
                fds.allow_ptrace_by(self.pid)
                first = self.inj.check("pidfd_open", os.getpid(), 0)
                self.target_pidfd = self.inj.check("fcntl", first, F_DUPFD_CLOEXEC, high)
                self.inj.check("close", first)
            except BaseException:
                fds.allow_ptrace_by(0)
                _ptracer.release()
                raise
        return self.target_pidfd

    def _move(self, tmp: int, n: int, cloexec: bool) -> None:
        if tmp == n:
            self.inj.check("fcntl", n, F_SETFD, FD_CLOEXEC if cloexec else 0)
            return
        try:
            self.inj.check("dup3", tmp, n, fds.O_CLOEXEC if cloexec else 0)
        finally:
            self.inj.call("close", tmp)

    def _adopt_listener(self, w: FileImage, high: int) -> bool:
        """A transplant's listening socket: the new process's own on the same address
        (a restarted kernel binds its ports again), from its parked duplicate."""
        at = self.listeners.get(w.details.get("listen", ""))
        if at is None:
            return False
        parked = self.journal.parked.get(at) if self.journal else None
        src = parked[0] if parked else at
        self._move(self.inj.check("fcntl", src, F_DUPFD_CLOEXEC, high), w.fd, w.cloexec)
        self.renewed.add(w.fd)
        return True

    def _listen_again(self, w: FileImage) -> bool:
        """A transplant's IP listener the new process lacks: bound again to its address
        (free since the old process ended)."""
        at = sockets.sockaddr(w.details.get("listen", "0:"))
        if at is None:
            return False
        family, raw = at
        kind = socket.SOCK_STREAM | os.O_CLOEXEC | (w.flags & os.O_NONBLOCK)
        tmp = self.inj.call("socket", family, kind, 0)
        if tmp < 0:
            return False
        one = self.inj.put(self.scratch + 512, struct.pack("=i", 1))
        ok = (
            self.inj.call("setsockopt", tmp, socket.SOL_SOCKET, socket.SO_REUSEADDR, one, 4) == 0
            and self.inj.call("bind", tmp, self.inj.put(self.scratch, raw), len(raw)) == 0
            and self.inj.call("listen", tmp, socket.SOMAXCONN) == 0
        )
        if not ok:
            self.inj.call("close", tmp)
            return False
        self._move(tmp, w.fd, w.cloexec)
        self.renewed.add(w.fd)
        return True

    def _stand_in(self, w: FileImage, missing: list[int]) -> str | None:
        """Put something that behaves like `w` gone at its number; what, or None."""
        nonblock = w.flags & os.O_NONBLOCK
        pair = self.scratch  # int[2] out of socketpair / pipe2
        if w.kind == "pipe":
            ends = [self.want[n] for n in missing if self.want[n].ino == w.ino]
            if any(e.kind == "pipe" and _pipe_read_end(e) != _pipe_read_end(w) for e in ends):
                return self._pipe(ends)
        peer = w.details.get("peer")
        if w.kind == "socket" and peer:
            ends = [self.want[n] for n in missing if self.want[n].kind == "socket"]
            ends = [e for e in ends if e.ino in (w.ino, int(peer))]
            if any(e.ino == int(peer) for e in ends):
                return self._socketpair(w, ends)
        if w.kind == "socket":
            kind = socket.SOCK_STREAM | os.O_CLOEXEC | nonblock
            if self.inj.call("socketpair", socket.AF_UNIX, kind, 0, pair) < 0:
                return None
            keep, other = struct.unpack("ii", self.inj.mem.read(pair, 8))
            what = "a socket whose other end is closed"
        elif w.kind == "pipe":
            if self.inj.call("pipe2", pair, os.O_CLOEXEC | nonblock) < 0:
                return None
            read_end, write_end = struct.unpack("ii", self.inj.mem.read(pair, 8))
            keep, other = (read_end, write_end) if _pipe_read_end(w) else (write_end, read_end)
            what = "a pipe whose other end is closed"
        elif w.kind == "eventfd":
            flags = os.O_CLOEXEC | nonblock | (EFD_SEMAPHORE if w.eventfd_semaphore else 0)
            keep = self.inj.call("eventfd2", w.eventfd_count or 0, flags)
            other, what = -1, "a new eventfd with its counter"
        elif w.kind == "epoll":
            keep = self.inj.call("epoll_create1", os.O_CLOEXEC)
            other, what = -1, "a new epoll instance with its registrations"
        else:
            return None
        if keep < 0:
            return None
        if other >= 0:
            self.inj.call("close", other)
        self._move(keep, w.fd, w.cloexec)
        self.renewed.add(w.fd)
        return what

    def _pipe(self, ends: list[FileImage]) -> str | None:
        """Both ends of a pipe, each at every number the process had it under (its
        status flags and contents are set like any pipe's, step 5)."""
        if self.inj.call("pipe2", self.scratch, os.O_CLOEXEC) < 0:
            return None
        return self._place(ends, lambda e: 0 if _pipe_read_end(e) else 1, _WHOLE_PIPE)

    def _socketpair(self, w: FileImage, ends: list[FileImage]) -> str | None:
        """Both ends of a unix socket pair the process held (asyncio's self-pipe)."""
        kind = {v: k for k, v in sockets.TYPES.items()}.get(w.details.get("type", ""))
        if kind is None:
            return None
        if self.inj.call("socketpair", socket.AF_UNIX, kind | os.O_CLOEXEC, 0, self.scratch) < 0:
            return None
        return self._place(ends, lambda e: 0 if e.ino == w.ino else 1, _WHOLE_PAIR)

    def _place(self, ends: list[FileImage], side: Callable[[FileImage], int], what: str) -> str:
        """The two fds a pipe2/socketpair left in scratch, at every number of `ends`."""
        high = max([*self.want, 2]) + 1
        made = [
            self._lift(fd, high) for fd in struct.unpack("ii", self.inj.mem.read(self.scratch, 8))
        ]
        try:
            for e in ends:
                got = self.inj.check("fcntl", made[side(e)], F_DUPFD_CLOEXEC, high)
                self._move(got, e.fd, e.cloexec)
                self.placed.add(e.fd)
                self.renewed.add(e.fd)
        finally:
            for fd in made:
                self.inj.call("close", fd)
        return what

    def _lift(self, fd: int, high: int) -> int:
        """`fd` moved to `high` or above: temporaries never take a number still wanted."""
        got = self.inj.check("fcntl", fd, F_DUPFD_CLOEXEC, high)
        self.inj.call("close", fd)
        return got

    def _reopen(self, w: FileImage) -> bool:
        if w.kind not in ("file", "dir") or not w.link.startswith("/"):
            return False
        try:
            st = os.stat(w.link)
        except OSError:
            return False
        if (st.st_dev, st.st_ino) != (w.dev, w.ino):
            return False
        path = self.inj.put(self.scratch, os.fsencode(w.link) + b"\0")
        tmp = self.inj.call("openat", arch.unsigned(AT_FDCWD), path, w.flags & ~_NO_REOPEN, 0)
        if tmp < 0:
            return False
        self._move(tmp, w.fd, w.cloexec)
        return True

    # 4. epoll registrations
    def _reconcile_epoll(self, w: FileImage, now: dict[int, FileImage], replace: bool) -> None:
        e = w.fd
        wanted = {(i.tfd, i.ino, i.sdev): i for i in w.epoll}
        if not replace:
            for item in now[e].epoll:
                want = wanted.get((item.tfd, item.ino, item.sdev))
                if want is None:
                    if not _names(now.get(item.tfd), item) or self._ctl(e, EPOLL_CTL_DEL, item) < 0:
                        replace = True
                        break
                    self._changed(e)
                elif (want.events, want.data) != (item.events, item.data):
                    if self._ctl(e, EPOLL_CTL_MOD, want) < 0:
                        replace = True
                        break
                    self._changed(e)
        if replace:
            fresh = self.inj.check("epoll_create1", 0)
            self._close(e, now[e].cloexec)
            self._move(fresh, e, w.cloexec)
            self.report.epoll_replaced.append(e)
            present: set[tuple[int, int, int]] = set()
        else:
            present = {(i.tfd, i.ino, i.sdev) for i in now[e].epoll}
        for k, item in sorted(wanted.items()):
            if k in present:
                continue
            if not _names(now.get(item.tfd), item) and item.tfd not in self.renewed:
                self._note(w, f"registration of fd {item.tfd} dropped: that file is not back")
                continue
            result = self._ctl(e, EPOLL_CTL_ADD, item)
            if result < 0:
                self._note(w, f"could not register fd {item.tfd} again: {_errname(result)}")
            else:
                self._changed(e)

    def _changed(self, e: int) -> None:
        if e not in self.report.epoll_changed:
            self.report.epoll_changed.append(e)

    # 5, 6. description state, and what cannot be put back
    def _description_state(self, pidfd: int, now: dict[int, FileImage]) -> None:
        todo: list[tuple[FileImage, FileImage]] = []
        for n, w in sorted(self.want.items()):
            c = now.get(n)
            if c is None or n in self.inherited:
                continue
            if (
                _restorable_changes(w, c)
                or w.kind in ("pipe", "socket")
                or (w.kind in ("timerfd", "signalfd") and c.details != w.details)
            ):
                todo.append((w, c))
        if not todo:
            return
        own = self.keeper.own_fds() if self.keeper else set()
        shared = fds.sharers(self.pid, [c for _, c in todo], own)
        for w, c in todo:
            try:
                with fds.borrowed(pidfd, w.fd) as mine:
                    self._one_description(w, c, mine, shared.get(w.fd, []))
            except OSError as e:
                if e.errno not in fds.NOT_PERMITTED:
                    raise
                self.report.notes.append(
                    "offsets, eventfd counters and flags of open files were not checked or "
                    "restored: this host does not allow pidfd_getfd (a container's seccomp "
                    "profile, for one)"
                )
                return

    def _one_description(self, w: FileImage, c: FileImage, mine: int, shared: list[int]) -> None:
        n = w.fd
        changes = _restorable_changes(w, c)
        if changes and shared:
            # By design, not a failure: listed, not noted (every kernel's inherited
            # stdout would otherwise make a note on every restore).
            self.report.shared.append(n)
        elif changes:
            if "offset" in changes:
                os.lseek(mine, w.pos, os.SEEK_SET)
                self.report.offsets.append(n)
            if "status flags" in changes:
                fcntl.fcntl(mine, fcntl.F_SETFL, w.flags & fds.SETFL_MASK)
                self.report.flags.append(n)
            if "counter" in changes:
                self._set_eventfd(w, c, mine)
        if w.kind in ("timerfd", "signalfd") and c.details != w.details:
            self._note(w, "its settings changed since the snapshot and are not restored")
        if w.kind == "socket" and w.content and w.fd in self.placed:
            self._refill(w)
        elif _pipe_read_end(w) and w.content is not None and not shared:
            want = base64.b64decode(w.content)
            if fds.peek_pipe(mine) != want:
                fds.set_pipe_content(mine, want)
                self.report.pipes.append(n)
        elif w.kind in ("pipe", "socket"):
            waiting = fds.bytes_waiting(mine) or 0
            if w.waiting and waiting < w.waiting:
                self._note(
                    w,
                    f"{w.waiting - waiting} of the {w.waiting} bytes waiting at the snapshot "
                    "were read since and cannot be put back",
                )
            if not w.hangup and fds.hung_up(mine):
                self._note(
                    w, "its other end was closed since the snapshot; the process will see it closed"
                )

    def _refill(self, w: FileImage) -> None:
        """The bytes that waited in a socket of a pair made whole, sent by its peer."""
        assert w.content is not None
        peer = next((p for p in self.want.values() if str(p.ino) == w.details.get("peer")), None)
        if peer is None:
            return
        with fds.borrowed(self.pidfd, peer.fd) as other:
            os.write(other, base64.b64decode(w.content))
        self.report.pipes.append(w.fd)

    def _set_eventfd(self, w: FileImage, c: FileImage, mine: int) -> None:
        assert w.eventfd_count is not None
        count = c.eventfd_count or 0
        if count and w.eventfd_semaphore and count > _SEMAPHORE_READ_LIMIT:
            self._note(w, f"semaphore count {count} too large to reset; left as it is")
            return
        # A read never blocks here: it only happens when the count is non-zero.
        for _ in range(count if w.eventfd_semaphore else min(count, 1)):
            os.read(mine, 8)
        if w.eventfd_count:
            os.write(mine, w.eventfd_count.to_bytes(8, "little"))
        self.report.eventfds.append(w.fd)

    def _note(self, w: FileImage, text: str) -> None:
        if w.fd in self.report.severed:
            return  # said once for all of them (`_install`)
        self.report.notes.append(f"fd {w.fd} ({w.link}): {text}")


def _listeners(pidfd: int, table: dict[int, FileImage]) -> dict[str, int]:
    """The process's listening sockets by address."""
    out: dict[str, int] = {}
    for n, f in table.items():
        if f.kind == "socket":
            try:
                with fds.borrowed(pidfd, n) as mine:
                    at = sockets.describe(mine).get("listen")
            except OSError:
                continue
            if at is not None:
                out.setdefault(at, n)
    return out


def _inner(f: FileImage, table: Iterable[FileImage]) -> bool:
    """A pipe end whose other end the same process holds."""
    return any(o.ino == f.ino and _pipe_read_end(o) != _pipe_read_end(f) for o in table)


def _pipe_read_end(f: FileImage) -> bool:
    return f.kind == "pipe" and f.flags & os.O_ACCMODE == os.O_RDONLY


def _restorable_changes(w: FileImage, c: FileImage) -> list[str]:
    """What of the open file description differs from the snapshot and can be set back."""
    changes = []
    if w.kind in ("file", "dir") and c.pos != w.pos:
        changes.append("offset")
    if (c.flags ^ w.flags) & fds.SETFL_MASK:
        changes.append("status flags")
    if w.eventfd_count is not None and c.eventfd_count != w.eventfd_count:
        changes.append("counter")
    return changes


def reconcile_files(
    fz: Frozen,
    want: list[FileImage],
    keeper: FdKeeper,
    key: str | None,
    scratch: int,
    *,
    moving: bool = False,
) -> FilesReport:
    """Make the frozen process's fd table match `want` (module docstring for the order).
    `moving`: a transplant (`FilesReport.inherited`)."""
    report = FilesReport()
    with _pidfd(fz.pid, keeper) as pidfd:
        _Reconciler(fz, want, keeper, key, scratch, report, moving).run(pidfd)
    return report


def unpark(fz: Frozen) -> None:
    """Put every parked fd back at its number (a rollback), closing what took it."""
    j = fz.journal
    if j is None or not j.parked:
        return
    for n, (p, cloexec) in sorted(j.parked.items()):
        fz.injector.check("dup3", p, n, fds.O_CLOEXEC if cloexec else 0)
        # journaled before the close: a rescue after a kill here never dup3s a closed p
        # (a p left open is closed by the rollback's own pass over the fds)
        del j.parked[n]
        j.write()
        fz.injector.call("close", p)


def close_parked(fz: Frozen, *, shutdown: bool = True) -> None:
    """Past the point of no return: the parked duplicates go. A connected socket
    among them is shut down first unless someone else still uses it: our keeper's
    duplicates (held for other snapshots) would otherwise keep the connection up,
    with nobody reading it in the process, and its peer (a frontend) would never
    reconnect nor get a reply routed to it again."""
    j = fz.journal
    if j is None or not j.parked:
        return
    table = fds.read_fd_table(fz.pid)
    parked = {p for p, _ in j.parked.values()}
    kept = {(f.dev, f.ino) for n, f in table.items() if n not in parked}
    sockets = [
        table[p]
        for p in parked
        if p in table and table[p].kind == "socket" and (table[p].dev, table[p].ino) not in kept
    ]
    if not shutdown:  # a rollback: what it parked are sockets of the snapshot's, still wanted
        sockets = []
    shared = fds.sharers(fz.pid, sockets, ignore_own=set()) if sockets else {}
    me = os.getpid()
    for f in sockets:
        if not [other for other in shared.get(f.fd, []) if other != me]:
            fz.injector.call("shutdown", f.fd, SHUT_RDWR)  # ENOTCONN (listening, ...) is fine
    for p in parked:
        fz.injector.call("close", p)
    j.parked.clear()
    j.write()


def _errname(result: int) -> str:
    return f"{os.strerror(-result)} ({errno.errorcode.get(-result, -result)})"


def files_lost(pid: int, want: list[FileImage]) -> list[FileImage]:
    """The snapshot's fds that a restore without held duplicates (the CLI's) would
    leave closed: no longer the same file at that number (kind, inode, eventfd id:
    all a restore without duplicates can compare, as `_Reconciler.same` does), and
    not a regular file or directory that can be reopened by its path."""
    now = fds.read_fd_table(pid)
    lost = []
    for w in want:
        c = now.get(w.fd)
        if c is not None and (w.kind, w.dev, w.ino, w.details.get("eventfd-id")) == (
            c.kind,
            c.dev,
            c.ino,
            c.details.get("eventfd-id"),
        ):
            continue
        if w.kind in ("file", "dir") and w.link.startswith("/"):
            try:
                st = os.stat(w.link)
            except OSError:
                pass
            else:
                if (st.st_dev, st.st_ino) == (w.dev, w.ino):
                    continue  # reopened by path
        lost.append(w)
    return lost
