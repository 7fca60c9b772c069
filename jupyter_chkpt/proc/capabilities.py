"""What this machine allows: the probes behind `jupyter-chkpt check`.

Every probe really does the thing it reports on, on a throw-away child process
(or, for userfaultfd, on a scratch mapping of this process): reading a
configuration file says what should work, only trying says what does.  A probe
never raises: a failure becomes ``ok=False`` with the reason in ``detail``.
Children are always killed and reaped and every fd is closed, whatever fails.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gzip
import os
import platform
import re
import select
import signal
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, NoReturn


@dataclass(frozen=True)
class Capability:
    name: str
    ok: bool
    detail: str
    required: bool  # snapshots cannot work without it


def probe() -> list[Capability]:
    """Run every probe, in a fixed order; takes well under a second when all is well."""
    return [_run(name, required, fn) for name, required, fn in _PROBES]


def snapshots_possible(caps: list[Capability]) -> bool:
    return all(cap.ok for cap in caps if cap.required)


# --- kernel ABI (x86_64) ------------------------------------------------------------

_PTRACE_SEIZE = 0x4206
_PTRACE_INTERRUPT = 0x4207
_PTRACE_EVENT_STOP = 128
_WALL = 0x40000000  # waitpid: also report stops of ptraced (possibly clone) children
_PR_SET_PDEATHSIG = 1
_CAP_SYS_PTRACE = 19
_CAP_SYS_ADMIN = 21
_CAP_CHECKPOINT_RESTORE = 40
_PR_TIMER_CREATE_RESTORE_IDS, _PR_TIMER_CREATE_RESTORE_IDS_GET = 77, 2

_SYS_USERFAULTFD = 323
_SYS_PIDFD_OPEN = 434
_SYS_PIDFD_GETFD = 438
_SYS_KCMP = 312
_KCMP_FILE = 0
_SYSCALL_NAMES = {
    _SYS_USERFAULTFD: "userfaultfd",
    _SYS_PIDFD_OPEN: "pidfd_open",
    _SYS_PIDFD_GETFD: "pidfd_getfd",
    _SYS_KCMP: "kcmp",
}
_PTRACE_NAMES = {
    _PTRACE_SEIZE: "PTRACE_SEIZE",
    _PTRACE_INTERRUPT: "PTRACE_INTERRUPT",
    12: "PTRACE_GETREGS",
    17: "PTRACE_DETACH",
}

_PROT_READ = 0x1
_PROT_WRITE = 0x2
_MAP_PRIVATE = 0x02
_MAP_ANONYMOUS = 0x20
_MAP_FAILED = ctypes.c_void_p(-1).value


def _ioc(direction: int, kind: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (kind << 8) | nr


_IOC_WRITE = 1
_IOC_READ = 2


def _iowr(kind: int, nr: int, size: int) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, kind, nr, size)


# include/uapi/linux/userfaultfd.h
_UFFD_API = 0xAA
_UFFD_USER_MODE_ONLY = 1
_UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
_UFFD_FEATURE_WP_ASYNC = 1 << 15
_UFFDIO_REGISTER_MODE_WP = 1 << 1


class _UffdioApi(ctypes.Structure):
    _fields_ = [
        ("api", ctypes.c_uint64),
        ("features", ctypes.c_uint64),
        ("ioctls", ctypes.c_uint64),
    ]
    api: int
    features: int
    ioctls: int


class _UffdioRange(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64)]
    start: int
    len: int


class _UffdioRegister(ctypes.Structure):
    _fields_ = [("range", _UffdioRange), ("mode", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]
    range: _UffdioRange
    mode: int
    ioctls: int


_UFFDIO_API = _iowr(0xAA, 0x3F, ctypes.sizeof(_UffdioApi))
_UFFDIO_REGISTER = _iowr(0xAA, 0x00, ctypes.sizeof(_UffdioRegister))


# include/uapi/linux/fs.h
_PAGE_IS_WRITTEN = 1 << 1
_PAGE_IS_PRESENT = 1 << 3
_PM_SCAN_WP_MATCHING = 1 << 0
_PM_SCAN_CHECK_WPASYNC = 1 << 1


class _PageRegion(ctypes.Structure):
    _fields_ = [
        ("start", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("categories", ctypes.c_uint64),
    ]
    start: int
    end: int
    categories: int


class _PmScanArg(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "size",
            "flags",
            "start",
            "end",
            "walk_end",
            "vec",
            "vec_len",
            "max_pages",
            "category_inverted",
            "category_mask",
            "category_anyof_mask",
            "return_mask",
        )
    ]
    size: int
    flags: int
    start: int
    end: int
    walk_end: int
    vec: int
    vec_len: int
    max_pages: int
    category_inverted: int
    category_mask: int
    category_anyof_mask: int
    return_mask: int


_PAGEMAP_SCAN = _iowr(ord("f"), 16, ctypes.sizeof(_PmScanArg))

_PM_SOFT_DIRTY_BIT = 55  # Documentation/admin-guide/mm/pagemap.rst
_CLEAR_REFS_SOFT_DIRTY = b"4"


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


# A private CDLL so that setting argtypes cannot clash with other modules' libc use.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long
# Resolved now: a dlsym() in the forked child could deadlock on a lock another thread held.
_prctl = getattr(_libc, "prctl", None)

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TIMEOUT = 2.0  # seconds for any single wait on the child; all waits are bounded
_MARKER = b"chkpt-probe-ro-0"  # contents of the child's read-only page
_RW_PAGES = 4


# --- small helpers -------------------------------------------------------------------


def _errno_error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    name = errno.errorcode.get(code, "") if isinstance(code, int) else ""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"{name}: {text}" if name else f"{type(exc).__name__}: {text}"


def _syscall(nr: int, *args: int) -> int:
    name = _SYSCALL_NAMES.get(nr, f"syscall {nr}")
    ret = int(_libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)))
    if ret < 0:
        raise _errno_error(name)
    return ret


def _mmap(length: int) -> int:
    addr = _libc.mmap(None, length, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)
    if addr is None or addr == _MAP_FAILED:
        raise _errno_error("mmap")
    return int(addr)


def _munmap(addr: int, length: int) -> None:
    _libc.munmap(addr, length)


def _has_cap(cap: int) -> bool:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def _has_cap_sys_ptrace() -> bool:
    return _has_cap(_CAP_SYS_PTRACE)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except FileNotFoundError:
        return None


def _kernel_config(option: str) -> bool | None:
    """Whether the running kernel was built with `option`, if /proc/config.gz tells."""
    try:
        with gzip.open("/proc/config.gz", "rt") as config:
            return any(line.startswith(f"{option}=") for line in config)
    except OSError:
        return None


def _ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    from ptrace import PtraceError
    from ptrace.binding.func import ptrace

    try:
        return int(ptrace(request, pid, addr, data))
    except PtraceError as exc:
        # Re-raise as OSError so that callers and _describe see a plain errno.
        code = exc.errno or 0
        name = _PTRACE_NAMES.get(request, f"ptrace({request:#x})")
        raise OSError(code, f"{name}: {os.strerror(code)}") from None


def _wait_stopped(pid: int) -> int:
    """waitpid for a ptrace stop, polling so that a child that never stops cannot hang us."""
    deadline = time.monotonic() + _TIMEOUT
    delay = 0.0005
    while True:
        got, status = os.waitpid(pid, os.WNOHANG | _WALL)
        if got == pid:
            if not os.WIFSTOPPED(status):
                raise RuntimeError(f"child exited instead of stopping (status {status:#x})")
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"child did not stop within {_TIMEOUT:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


@contextmanager
def _seized(pid: int) -> Iterator[None]:
    """The child stopped under PTRACE_SEIZE + PTRACE_INTERRUPT, as the engine holds its targets."""
    from ptrace.binding.func import PTRACE_DETACH

    _ptrace(_PTRACE_SEIZE, pid)
    try:
        _ptrace(_PTRACE_INTERRUPT, pid)
        status = _wait_stopped(pid)
        if status >> 16 != _PTRACE_EVENT_STOP:
            raise RuntimeError(f"unexpected stop (status {status:#x}), not PTRACE_EVENT_STOP")
        yield
    finally:
        # If this fails the child is still killed by _Child, which also ends the tracing.
        with suppress(OSError):
            _ptrace(PTRACE_DETACH, pid)


class _Child:
    """A forked child that blocks reading one-byte commands from a pipe.

    Before forking, the parent maps one read-only page holding _MARKER (at `ro_addr`) and
    _RW_PAGES populated read-write pages (at `rw_addr`); the child inherits both at the same
    addresses.  Commands: b"p" ping, b"w" write a byte to the second rw page, b"r" send
    back what the child sees in its read-only page.
    """

    def __init__(self) -> None:
        self.pid = 0
        self.ro_addr = 0
        self.rw_addr = 0
        self._fds: list[int] = []
        self._cmd_w = -1
        self._ack_r = -1
        self.ack_ino = 0  # inode of the reply pipe, to recognise it when fetched with pidfd_getfd

    def __enter__(self) -> _Child:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        self.ro_addr = _mmap(_PAGE)
        ctypes.memmove(self.ro_addr, _MARKER, len(_MARKER))
        if _libc.mprotect(self.ro_addr, _PAGE, _PROT_READ) != 0:
            raise _errno_error("mprotect")
        self.rw_addr = _mmap(_RW_PAGES * _PAGE)
        ctypes.memset(self.rw_addr, 1, _RW_PAGES * _PAGE)  # populate: soft-dirty needs present ptes
        cmd_r, self._cmd_w = os.pipe()
        self._fds += [cmd_r, self._cmd_w]
        self._ack_r, ack_w = os.pipe()
        self._fds += [self._ack_r, ack_w]
        self.ack_ino = os.fstat(ack_w).st_ino
        pid = os.fork()
        if pid == 0:
            _child_main(
                cmd_r, ack_w, (self._cmd_w, self._ack_r), self.ro_addr, self.rw_addr + _PAGE
            )
        self.pid = pid
        for fd in (cmd_r, ack_w):
            os.close(fd)
            self._fds.remove(fd)

    def request(self, command: bytes, reply_len: int) -> bytes:
        os.write(self._cmd_w, command)
        reply = b""
        deadline = time.monotonic() + _TIMEOUT
        while len(reply) < reply_len:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._ack_r], [], [], remaining)[0]:
                raise TimeoutError(f"child did not answer {command!r} within {_TIMEOUT:.0f} s")
            chunk = os.read(self._ack_r, reply_len - len(reply))
            if not chunk:
                raise RuntimeError("child exited unexpectedly")
            reply += chunk
        return reply

    def __exit__(self, *exc_info: object) -> None:
        for fd in self._fds:
            with suppress(OSError):
                os.close(fd)
        self._fds.clear()
        if self.pid:
            # SIGKILL also ends a ptrace stop; the pid cannot be reused before we reap it.
            with suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
            with suppress(ChildProcessError):
                os.waitpid(self.pid, _WALL)
            self.pid = 0
        if self.ro_addr:
            _munmap(self.ro_addr, _PAGE)
            self.ro_addr = 0
        if self.rw_addr:
            _munmap(self.rw_addr, _RW_PAGES * _PAGE)
            self.rw_addr = 0


def _child_main(
    cmd_r: int, ack_w: int, parent_ends: tuple[int, int], ro_addr: int, write_addr: int
) -> NoReturn:
    # Runs in the forked child: whatever happens, never return into the parent's stack.
    code = 1
    try:
        for fd in parent_ends:  # else our own copy of the write end would hide the parent's EOF
            os.close(fd)
        if _prctl is not None:
            _prctl(
                ctypes.c_int(_PR_SET_PDEATHSIG),
                ctypes.c_ulong(signal.SIGKILL),
                *[ctypes.c_ulong(0)] * 3,
            )
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which kills us
        while command := os.read(cmd_r, 1):
            if command == b"w":
                ctypes.memset(write_addr, 0x5A, 1)
                os.write(ack_w, b"k")
            elif command == b"r":
                os.write(ack_w, ctypes.string_at(ro_addr, len(_MARKER)))
            else:
                os.write(ack_w, b"k")
        code = 0
    finally:
        os._exit(code)


def _run(name: str, required: bool, fn: Callable[[], tuple[bool, str]]) -> Capability:
    try:
        ok, detail = fn()
    except Exception as exc:
        ok, detail = False, _describe(exc)
    return Capability(name=name, ok=ok, detail=detail, required=required)


# --- the probes ------------------------------------------------------------------------


def _probe_architecture() -> tuple[bool, str]:
    machine = platform.machine()
    bits = struct.calcsize("P") * 8
    if machine != "x86_64":
        return False, f"{machine or 'unknown'}: only x86_64 is supported"
    if bits != 64:
        return False, f"x86_64 kernel but a {bits}-bit Python"
    return True, "x86_64"


def _probe_kernel() -> tuple[bool, str]:
    system, release = platform.system(), platform.release()
    if system != "Linux":
        return False, f"{system} {release}: Linux is required"
    match = re.match(r"(\d+)\.(\d+)", release)
    version = (int(match[1]), int(match[2])) if match else (0, 0)
    notes = []
    if version < (5, 6):
        notes.append("pidfd_getfd needs 5.6")
    if version < (6, 7):
        notes.append("PAGEMAP_SCAN and userfaultfd WP_ASYNC need 6.7")
    return True, "; ".join([release, *notes])


def _probe_ptrace() -> tuple[bool, str]:
    from ptrace.binding.func import PTRACE_GETREGS
    from ptrace.binding.linux_struct import user_regs_struct

    with _Child() as child:
        regs: Any = user_regs_struct()
        with _seized(child.pid):
            _ptrace(PTRACE_GETREGS, child.pid, 0, ctypes.addressof(regs))
        if not regs.rip or not regs.rsp:
            return False, f"PTRACE_GETREGS returned implausible registers (rip={regs.rip:#x})"
        # The child must be running again after the detach, not left stopped.
        child.request(b"p", 1)
        return True, "seize, interrupt, getregs, detach on a child process"


def _yama_verdict(scope: int | None, cap_sys_ptrace: bool) -> tuple[bool, str]:
    if scope is None:
        return True, "not present"
    if scope == 0:
        return True, "scope 0: any process of the same user may be traced"
    if scope == 1:
        return True, "scope 1: target must call prctl(PR_SET_PTRACER) (the kernel side does)"
    if scope == 2:
        if cap_sys_ptrace:
            return True, "scope 2: only CAP_SYS_PTRACE may trace, which this process has"
        return False, "scope 2: only CAP_SYS_PTRACE may trace; run as root or lower the scope"
    return False, f"scope {scope}: ptrace is disabled until reboot"


def _probe_yama() -> tuple[bool, str]:
    scope = _read_int("/proc/sys/kernel/yama/ptrace_scope")
    return _yama_verdict(scope, _has_cap_sys_ptrace())


def _probe_mem_write() -> tuple[bool, str]:
    written = b"chkpt-probe-rw-1"
    with _Child() as child:
        fd = os.open(f"/proc/{child.pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        try:
            # The engine writes while the target is ptrace-stopped, so that is what must work.
            with _seized(child.pid):
                os.pwrite(fd, written, child.ro_addr)
                back = os.pread(fd, len(written), child.ro_addr)
            if back != written:
                return False, f"wrote {written!r} but read back {back!r}"
            if (seen := child.request(b"r", len(_MARKER))) != written:
                return False, f"child sees {seen!r} after the write"
            if ctypes.string_at(child.ro_addr, len(_MARKER)) != _MARKER:
                return False, "the write changed this process's copy of the page too"
            # Kernels booted with proc_mem.force_override=ptrace refuse this when not attached.
            try:
                os.pwrite(fd, again := b"chkpt-probe-rw-2", child.ro_addr)
                if os.pread(fd, len(again), child.ro_addr) != again:
                    raise OSError(errno.EIO, "the write did not stick")
                unattached = "also without ptrace attach"
            except OSError as exc:
                unattached = f"only while attached ({_describe(exc)} otherwise)"
        finally:
            os.close(fd)
    return True, f"read-only page of a stopped child written and read back; {unattached}"


def _probe_process_vm_readv() -> tuple[bool, str]:
    with _Child() as child:
        buf = ctypes.create_string_buffer(len(_MARKER))
        local = _Iovec(ctypes.cast(buf, ctypes.c_void_p), len(_MARKER))
        remote = _Iovec(child.ro_addr, len(_MARKER))
        got = int(
            _libc.process_vm_readv(
                child.pid,
                ctypes.byref(local),
                ctypes.c_ulong(1),
                ctypes.byref(remote),
                ctypes.c_ulong(1),
                ctypes.c_ulong(0),
            )
        )
        if got < 0:
            raise _errno_error("process_vm_readv")
        if buf.raw != _MARKER:
            return False, f"read {buf.raw!r}, expected {_MARKER!r}"
    return True, "read a child's page"


def _probe_pidfd_getfd() -> tuple[bool, str]:
    with _Child() as child:
        pidfd = _syscall(_SYS_PIDFD_OPEN, child.pid, 0)
        try:
            fd = _syscall(_SYS_PIDFD_GETFD, pidfd, _child_ack_fd(child), 0)
            try:
                if os.fstat(fd).st_ino != child.ack_ino:
                    return False, "pidfd_getfd returned a different file"
            finally:
                os.close(fd)
        finally:
            os.close(pidfd)
    return True, "fetched an fd from a child"


def _probe_kcmp() -> tuple[bool, str]:
    with _Child() as child:
        fd = _child_ack_fd(child)
        if _syscall(_SYS_KCMP, child.pid, child.pid, _KCMP_FILE, fd, fd) != 0:
            return False, "kcmp said an fd differs from itself"
    return True, "compared a child's open files"


def _probe_thread_ids() -> tuple[bool, str]:
    # Kernels run as this user: what this user may do, they may (clone3 set_tid).
    if _has_cap(_CAP_CHECKPOINT_RESTORE) or _has_cap(_CAP_SYS_ADMIN):
        return True, "threads that exited are recreated under their old ids"
    return False, (
        "threads that exited are recreated under new ids (needs CAP_CHECKPOINT_RESTORE); "
        "glibc's and Python's idea of their ids is updated"
    )


def _probe_timer_ids() -> tuple[bool, str]:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_TIMER_CREATE_RESTORE_IDS, _PR_TIMER_CREATE_RESTORE_IDS_GET, 0, 0, 0) < 0:
        return False, "a POSIX timer deleted since a snapshot cannot be recreated (Linux < 6.17)"
    return True, "POSIX timers deleted since a snapshot are recreated under their ids"


def _child_ack_fd(child: _Child) -> int:
    # Find the child's write end of the reply pipe through /proc, not by assumption.
    # Only once it answered: until it has closed its copies of our ends, the read end
    # (same pipe, same inode) is there too, and may be gone a moment later.
    child.request(b"p", 1)
    fd_dir = f"/proc/{child.pid}/fd"
    for name in os.listdir(fd_dir):
        with suppress(OSError):
            if os.stat(f"{fd_dir}/{name}").st_ino == child.ack_ino:
                return int(name)
    raise RuntimeError("the child's pipe fd was not found in /proc")


def _uffd_flags() -> tuple[int, str]:
    flags = os.O_CLOEXEC | os.O_NONBLOCK
    if not _has_cap_sys_ptrace() and _read_int("/proc/sys/vm/unprivileged_userfaultfd") == 0:
        # Without the privilege the kernel only allows uffds that ignore kernel-mode faults.
        return flags | _UFFD_USER_MODE_ONLY, "user-mode-only uffd"
    return flags, "full uffd"


def _scan(pagemap_fd: int, start: int, pages: int, flags: int, category: int) -> set[int]:
    """PAGEMAP_SCAN: indexes of the pages in [start, start+pages) that have `category`."""
    vec = (_PageRegion * pages)()
    arg = _PmScanArg(
        size=ctypes.sizeof(_PmScanArg),
        flags=flags,
        start=start,
        end=start + pages * _PAGE,
        vec=ctypes.addressof(vec),
        vec_len=pages,
        category_mask=category,
        return_mask=category,
    )
    count = fcntl.ioctl(pagemap_fd, _PAGEMAP_SCAN, arg, True)
    if arg.walk_end != arg.end:
        raise RuntimeError(f"PAGEMAP_SCAN stopped at {arg.walk_end:#x} before {arg.end:#x}")
    found: set[int] = set()
    for region in vec[:count]:
        found.update(range((region.start - start) // _PAGE, (region.end - start) // _PAGE))
    return found


def _probe_pagemap_scan() -> tuple[bool, str]:
    pages = 4
    addr = _mmap(pages * _PAGE)
    try:
        ctypes.memset(addr + 2 * _PAGE, 1, 1)
        fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            present = _scan(fd, addr, pages, 0, _PAGE_IS_PRESENT)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno == errno.ENOTTY:
            return False, f"{_describe(exc)} (needs Linux 6.7)"
        raise
    finally:
        _munmap(addr, pages * _PAGE)
    if present != {2}:
        return False, f"reported pages {sorted(present)} present, expected [2]"
    return True, "found the one touched page of four"


def _probe_uffd_wp_async() -> tuple[bool, str]:
    flags, kind = _uffd_flags()
    wanted = _UFFD_FEATURE_WP_ASYNC | _UFFD_FEATURE_WP_UNPOPULATED
    # The UFFDIO_API handshake can be done once per uffd: one to ask, one to use.
    uffd = _syscall(_SYS_USERFAULTFD, flags)
    try:
        api = _UffdioApi(api=_UFFD_API, features=0)
        fcntl.ioctl(uffd, _UFFDIO_API, api, True)
    finally:
        os.close(uffd)
    missing = [
        name
        for bit, name in (
            (_UFFD_FEATURE_WP_ASYNC, "WP_ASYNC"),
            (_UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED"),
        )
        if not api.features & bit
    ]
    if missing:
        return False, f"kernel lacks {' and '.join(missing)} (needs Linux 6.7)"

    pages = 4
    scan_flags = _PM_SCAN_WP_MATCHING | _PM_SCAN_CHECK_WPASYNC
    addr = _mmap(pages * _PAGE)
    fds: list[int] = []
    try:
        uffd = _syscall(_SYS_USERFAULTFD, flags)
        fds.append(uffd)
        fcntl.ioctl(uffd, _UFFDIO_API, _UffdioApi(api=_UFFD_API, features=wanted), True)
        register = _UffdioRegister(
            range=_UffdioRange(start=addr, len=pages * _PAGE), mode=_UFFDIO_REGISTER_MODE_WP
        )
        fcntl.ioctl(uffd, _UFFDIO_REGISTER, register, True)
        pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        fds.append(pagemap)
        _scan(pagemap, addr, pages, scan_flags, _PAGE_IS_WRITTEN)  # arm: write-protect all
        if before := _scan(pagemap, addr, pages, scan_flags, _PAGE_IS_WRITTEN):
            return False, f"pages {sorted(before)} reported written before any write"
        ctypes.memset(addr + 1 * _PAGE, 0x5A, 1)
        # A write by the kernel on the process's behalf (read() into a buffer) must count too.
        pipe_r, pipe_w = os.pipe()
        fds += [pipe_r, pipe_w]
        os.write(pipe_w, b"x")
        os.readv(pipe_r, [(ctypes.c_char * 1).from_address(addr + 3 * _PAGE)])
        written = _scan(pagemap, addr, pages, scan_flags, _PAGE_IS_WRITTEN)
        if written != {1, 3}:
            return False, f"reported pages {sorted(written)} written, expected [1, 3]"
        if after := _scan(pagemap, addr, pages, scan_flags, _PAGE_IS_WRITTEN):
            return False, f"pages {sorted(after)} still reported written after re-arming"
    finally:
        for fd in fds:
            os.close(fd)  # closing the uffd also unregisters the range
        _munmap(addr, pages * _PAGE)
    return True, f"{kind}: PAGEMAP_SCAN reported exactly the pages written by user and kernel"


def _probe_soft_dirty() -> tuple[bool, str]:
    with _Child() as child:
        pid = child.pid
        with open(f"/proc/{pid}/clear_refs", "wb", buffering=0) as clear_refs:
            clear_refs.write(_CLEAR_REFS_SOFT_DIRTY)
        with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pagemap:

            def dirty() -> set[int]:
                raw = os.pread(pagemap.fileno(), 8 * _RW_PAGES, child.rw_addr // _PAGE * 8)
                entries = struct.unpack(f"<{_RW_PAGES}Q", raw)
                return {i for i, e in enumerate(entries) if e >> _PM_SOFT_DIRTY_BIT & 1}

            if still := dirty():
                return False, f"clear_refs left pages {sorted(still)} soft-dirty"
            child.request(b"w", 1)  # the child writes its second page itself
            if (found := dirty()) != {1}:
                if not found:
                    why = {
                        None: " (kernel without CONFIG_MEM_SOFT_DIRTY?)",
                        False: ": kernel built without CONFIG_MEM_SOFT_DIRTY",
                        True: "",
                    }[_kernel_config("CONFIG_MEM_SOFT_DIRTY")]
                    return False, f"a write by the child was not recorded{why}"
                return False, f"reported pages {sorted(found)} soft-dirty, expected [1]"
    return True, "clear_refs 4 then a write by the child set exactly its page's bit 55"


_PROBES: tuple[tuple[str, bool, Callable[[], tuple[bool, str]]], ...] = (
    ("architecture", True, _probe_architecture),
    ("kernel", True, _probe_kernel),
    ("ptrace", True, _probe_ptrace),
    ("yama ptrace_scope", True, _probe_yama),
    ("/proc/PID/mem write", True, _probe_mem_write),
    ("process_vm_readv", False, _probe_process_vm_readv),
    # Without these, memory and fd numbers are still restored; closed sockets cannot be put
    # back and offsets/counters are left alone (docs/ARCHITECTURE.md, "Files").
    ("pidfd_getfd", False, _probe_pidfd_getfd),
    ("kcmp", False, _probe_kcmp),
    ("thread ids", False, _probe_thread_ids),
    ("POSIX timer ids", False, _probe_timer_ids),
    ("userfaultfd WP_ASYNC", False, _probe_uffd_wp_async),
    ("PAGEMAP_SCAN", False, _probe_pagemap_scan),
    ("soft-dirty", False, _probe_soft_dirty),
)
