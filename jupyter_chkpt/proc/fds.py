"""A process's fd table as /proc shows it, and the syscalls to compare and borrow its files.

pidfd_getfd copies a target's fd into this process (the same open file
description, as dup does); kcmp(KCMP_FILE) tells whether two fds, in any two
processes, are the same description. Together they let the helper inspect and
change description state (offsets, eventfd counters) without injecting syscalls.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import stat
import struct
import termios
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ..errors import ProcessNotFound
from ..image import EpollItem, FileImage
from .arch import current as arch
from .procfs import proc_path

O_CLOEXEC = 0o2000000
KCMP_FILE = 0
# open flags F_SETFL can change on an existing description
SETFL_MASK = os.O_APPEND | os.O_NONBLOCK | 0o20000 | 0o40000 | 0o1000000  # + ASYNC, DIRECT, NOATIME

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_ANON_KINDS = {
    "anon_inode:[eventfd]": "eventfd",
    "anon_inode:[eventpoll]": "epoll",
    "anon_inode:[timerfd]": "timerfd",
    "anon_inode:[signalfd]": "signalfd",
}


def _syscall(name: str, *args: int) -> int:
    result = int(_libc.syscall(arch.SYS[name], *(ctypes.c_long(a) for a in args)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return result


def pidfd_getfd(pidfd: int, fd: int) -> int:
    """A new fd here (close-on-exec) for the target's fd `fd`."""
    return _syscall("pidfd_getfd", pidfd, fd, 0)


PR_SET_PTRACER = 0x59616D61


def allow_ptrace_by(pid: int) -> None:
    """Let `pid` (0: nobody extra) ptrace us under Yama ptrace_scope 1, which
    pidfd_getfd on us requires. Without Yama the call fails, and nothing is needed."""
    _libc.prctl(PR_SET_PTRACER, ctypes.c_ulong(pid), 0, 0, 0)


# errors meaning "this host does not let us" (seccomp, missing kernel support),
# as opposed to "no such fd": the engine then works without these syscalls
NOT_PERMITTED = (errno.EPERM, errno.EACCES, errno.ENOSYS)


def same_file(pid1: int, fd1: int, pid2: int, fd2: int) -> bool | None:
    """Whether the two fds are the same open file description (kcmp); None when
    this host does not allow kcmp (Docker's default seccomp profile, for one)."""
    try:
        return _syscall("kcmp", pid1, pid2, KCMP_FILE, fd1, fd2) == 0
    except OSError as e:
        if e.errno in NOT_PERMITTED:
            return None
        if e.errno in (errno.EBADF, errno.ESRCH):
            return False
        raise


@contextmanager
def borrowed(pidfd: int, fd: int) -> Iterator[int]:
    """A temporary copy of the target's fd in this process."""
    mine = pidfd_getfd(pidfd, fd)
    try:
        yield mine
    finally:
        os.close(mine)


def bytes_waiting(fd: int) -> int | None:
    """Bytes readable without blocking (FIONREAD); None where that has no meaning."""
    try:
        raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return None
    return int(struct.unpack("i", raw)[0])


F_GETPIPE_SZ, F_SETPIPE_SZ = 1032, 1031
_libc.tee.restype = ctypes.c_ssize_t
_libc.tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
SPLICE_F_NONBLOCK = 2


def peek_pipe(fd: int) -> bytes:
    """Everything waiting in the pipe whose read end is `fd`, left in place (tee(2))."""
    size = fcntl.fcntl(fd, F_GETPIPE_SZ)
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if fcntl.fcntl(w, F_GETPIPE_SZ) < size:
            fcntl.fcntl(w, F_SETPIPE_SZ, size)
        n = _libc.tee(fd, w, size, SPLICE_F_NONBLOCK)
        if n < 0:
            err = ctypes.get_errno()
            if err == errno.EAGAIN:  # empty
                return b""
            raise OSError(err, os.strerror(err))
        return os.read(r, n) if n else b""
    finally:
        os.close(r)
        os.close(w)


def set_pipe_content(fd: int, data: bytes) -> None:
    """Make the pipe whose read end is `fd` hold exactly `data`: what waits is read
    out, `data` written in through a write end opened anew (the process may hold none)."""
    left = bytes_waiting(fd) or 0
    while left > 0:  # never blocks: these bytes are there
        left -= len(os.read(fd, left))
    if data:
        w = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(w, view) :]
        finally:
            os.close(w)


def hung_up(fd: int) -> bool:
    """A pipe or connected socket whose other end has gone."""
    poller = select.poll()
    poller.register(fd, select.POLLRDHUP | select.POLLHUP)
    return any(ev & (select.POLLRDHUP | select.POLLHUP) for _, ev in poller.poll(0))


def kind_of(link: str, mode: int) -> str:
    if link in _ANON_KINDS:
        return _ANON_KINDS[link]
    for test, kind in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISCHR, "char"),
        (stat.S_ISFIFO, "pipe"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return kind
    return "other"


def parse_epoll_line(line: str) -> EpollItem:
    # "tfd:        5 events:       19 data:                5  pos:0 ino:4c sdev:d"
    f = line.replace(":", " ").split()
    v = dict(zip(f[0::2], f[1::2], strict=False))
    return EpollItem(
        tfd=int(v["tfd"]),
        events=int(v["events"], 16),
        data=int(v["data"], 16),
        ino=int(v["ino"], 16),
        sdev=int(v["sdev"], 16),
    )


def read_fdinfo(pid: int, fd: int) -> FileImage | None:
    """The entry for one fd, or None if it is not open (any more)."""
    try:
        link = os.readlink(proc_path(pid, "fd", str(fd)))
        st = os.stat(proc_path(pid, "fd", str(fd)))
        with open(proc_path(pid, "fdinfo", str(fd))) as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields: dict[str, str] = {}
    epoll = []
    for line in lines:
        if line.startswith("tfd:"):
            epoll.append(parse_epoll_line(line))
        else:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    flags = int(fields.get("flags", "0"), 8)
    info = FileImage(
        fd=fd,
        kind=kind_of(link, st.st_mode),
        link=link,
        dev=st.st_dev,
        ino=st.st_ino,
        flags=flags & ~O_CLOEXEC,
        cloexec=bool(flags & O_CLOEXEC),
        pos=int(fields.get("pos", "0")),
        epoll=epoll,
    )
    if "eventfd-count" in fields:
        info.eventfd_count = int(fields["eventfd-count"], 16)
        info.eventfd_semaphore = fields.get("eventfd-semaphore", "0") == "1"
    known = {"pos", "flags", "mnt_id", "ino", "eventfd-count", "eventfd-semaphore"}
    info.details = {k: v for k, v in fields.items() if k not in known}
    return info


def fd_numbers(pid: int) -> list[int]:
    try:
        return sorted(int(n) for n in os.listdir(proc_path(pid, "fd")))
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessNotFound(f"no process with PID {pid}") from None


def read_fd_table(pid: int) -> dict[int, FileImage]:
    table = {}
    for n in fd_numbers(pid):
        info = read_fdinfo(pid, n)
        if info is not None:
            table[n] = info
    return table


def _same_user_pids(uid: int) -> Iterator[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    yield int(name)
            except OSError:
                continue


def sharers(pid: int, files: Iterable[FileImage], ignore_own: set[int]) -> dict[int, list[int]]:
    """For each of `pid`'s fds, the other processes holding the same description.

    Only processes of the same user are visible (we may read their fd tables),
    which covers a kernel's parent and siblings. Our own fds in `ignore_own`
    (duplicates we hold) do not count.
    """
    by_inode: dict[tuple[int, int], list[int]] = {}
    for f in files:
        by_inode.setdefault((f.dev, f.ino), []).append(f.fd)
    found: dict[int, list[int]] = {}
    me = os.getpid()
    for other in _same_user_pids(os.stat(proc_path(pid)).st_uid):
        if other == pid:
            continue
        try:
            numbers = os.listdir(proc_path(other, "fd"))
        except OSError:
            continue
        for name in numbers:
            n = int(name)
            if other == me and n in ignore_own:
                continue
            try:
                st = os.stat(proc_path(other, "fd", name))
            except OSError:
                continue
            for fd in by_inode.get((st.st_dev, st.st_ino), ()):
                # without kcmp the same inode must do: rather left alone than rewound
                if other not in found.get(fd, []) and same_file(pid, fd, other, n) is not False:
                    found.setdefault(fd, []).append(other)
    return found
