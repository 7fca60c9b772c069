"""ptrace on top of python-ptrace's binding layer.

python-ptrace gives the raw call, the register struct and the classic
requests; this module adds what it lacks: PTRACE_SEIZE/INTERRUPT, register
sets (XSTATE), signal masks, queued signals, rseq registrations, attaching
every thread of a process, and adopting threads the process is made to create.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import struct
from dataclasses import dataclass, field

from ptrace.binding.func import (
    ptrace as raw_ptrace,
)
from ptrace.binding.func import (
    ptrace_getregs,
    ptrace_setregs,
)
from ptrace.binding.linux_struct import iovec_struct
from ptrace.error import PtraceError

from ..errors import EngineError, ProcessChanged, PtraceDenied
from . import procfs
from .arch import current as arch

log = logging.getLogger(__name__)
_libc = ctypes.CDLL(None, use_errno=True)

PTRACE_SINGLESTEP = 9
PTRACE_DETACH = 17
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_PEEKSIGINFO = 0x4209
PTRACE_GETSIGMASK = 0x420A
PTRACE_SETSIGMASK = 0x420B
PTRACE_GET_RSEQ_CONFIGURATION = 0x420F
PTRACE_O_TRACECLONE = 0x8
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_STOP = 128
PTRACE_PEEKSIGINFO_SHARED = 1
SIGINFO_SIZE = 128
WALL = 0x40000000  # __WALL: wait for threads too

# struct ptrace_rseq_configuration; struct ptrace_peeksiginfo_args
RSEQ_CONFIG = struct.Struct("<QIIII")
PEEKSIGINFO_ARGS = struct.Struct("<QIi")


class ThreadExited(Exception):
    """A traced thread exited while we waited for it."""


def _call(request: int, tid: int, addr: int = 0, data: int = 0) -> int:
    return int(raw_ptrace(request, tid, addr, data))


def wait_stop(tid: int) -> int:
    """Wait for a traced thread to stop; returns the raw status."""
    while True:
        try:
            _, status = os.waitpid(tid, WALL)
        except ChildProcessError:
            raise ThreadExited(tid) from None
        except InterruptedError:
            continue
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            raise ThreadExited(tid)
        return status


def is_event_stop(status: int) -> bool:
    return os.WIFSTOPPED(status) and (status >> 16) == PTRACE_EVENT_STOP


@dataclass
class Thread:
    """One seized, stopped thread."""

    pid: int
    tid: int
    # Signals that arrived while we held the thread; re-delivered at detach.
    pending_signals: list[int] = field(default_factory=list)
    # tid of the last thread this one created while stepping (PTRACE_O_TRACECLONE)
    last_clone: int | None = None

    def get_regs(self) -> arch.Regs:
        return ptrace_getregs(self.tid)

    def set_regs(self, regs: arch.Regs) -> None:
        ptrace_setregs(self.tid, regs)

    def get_xstate(self) -> bytes:
        buf = ctypes.create_string_buffer(arch.XSTATE_MAX)
        iov = iovec_struct()
        iov.buf = ctypes.addressof(buf)
        iov.len = arch.XSTATE_MAX
        _call(PTRACE_GETREGSET, self.tid, arch.NT_X86_XSTATE, ctypes.addressof(iov))
        return buf.raw[: iov.len]

    def set_xstate(self, data: bytes) -> None:
        buf = ctypes.create_string_buffer(data, len(data))
        iov = iovec_struct()
        iov.buf = ctypes.addressof(buf)
        iov.len = len(data)
        _call(PTRACE_SETREGSET, self.tid, arch.NT_X86_XSTATE, ctypes.addressof(iov))

    def get_sigmask(self) -> int:
        mask = ctypes.c_uint64()
        _call(PTRACE_GETSIGMASK, self.tid, ctypes.sizeof(mask), ctypes.addressof(mask))
        return int(mask.value)

    def set_sigmask(self, value: int) -> None:
        mask = ctypes.c_uint64(value)
        _call(PTRACE_SETSIGMASK, self.tid, ctypes.sizeof(mask), ctypes.addressof(mask))

    def rseq_config(self) -> tuple[int, int, int] | None:
        """(address, length, signature) of the thread's rseq area; None if it has none
        or the kernel cannot say (before Linux 5.13)."""
        conf = ctypes.create_string_buffer(RSEQ_CONFIG.size)
        try:
            _call(PTRACE_GET_RSEQ_CONFIGURATION, self.tid, RSEQ_CONFIG.size, ctypes.addressof(conf))
        except PtraceError:
            return None
        addr, length, sig, _flags, _pad = RSEQ_CONFIG.unpack(conf.raw)
        return (addr, length, sig) if addr else None

    def queued_signals(self, *, shared: bool = False) -> list[bytes]:
        """The raw siginfo of every signal queued for this thread (or, with `shared`,
        for the whole process), oldest first; the queue is left as it is."""
        out: list[bytes] = []
        batch = 32
        buf = ctypes.create_string_buffer(SIGINFO_SIZE * batch)
        while True:
            args = PEEKSIGINFO_ARGS.pack(
                len(out), PTRACE_PEEKSIGINFO_SHARED if shared else 0, batch
            )
            raw_args = ctypes.create_string_buffer(args, len(args))
            n = _call(
                PTRACE_PEEKSIGINFO, self.tid, ctypes.addressof(raw_args), ctypes.addressof(buf)
            )
            out.extend(buf.raw[i * SIGINFO_SIZE : (i + 1) * SIGINFO_SIZE] for i in range(n))
            if n < batch:
                return out

    def trace_clones(self, on: bool) -> None:
        """With `on`, a thread this one creates is attached to us and starts stopped."""
        _call(PTRACE_SETOPTIONS, self.tid, 0, PTRACE_O_TRACECLONE if on else 0)

    def single_step(self) -> None:
        """Execute one instruction; keeps waiting through unrelated stops."""
        _call(PTRACE_SINGLESTEP, self.tid)
        while True:
            status = wait_stop(self.tid)
            sig = os.WSTOPSIG(status)
            if sig == signal.SIGTRAP and (status >> 16) == 0:
                return
            if sig == signal.SIGTRAP and (status >> 16) == PTRACE_EVENT_CLONE:
                # the stepped syscall created a thread (trace_clones): note its tid
                msg = ctypes.c_ulong()
                _call(PTRACE_GETEVENTMSG, self.tid, 0, ctypes.addressof(msg))
                self.last_clone = int(msg.value)
                _call(PTRACE_SINGLESTEP, self.tid)
                continue
            if is_event_stop(status):
                # A leftover PTRACE_INTERRUPT fired before the step: step again.
                _call(PTRACE_SINGLESTEP, self.tid)
                continue
            # A real signal arrived: keep it for later and finish the step.
            self.pending_signals.append(sig)
            _call(PTRACE_SINGLESTEP, self.tid)

    def step_until_exit(self) -> None:
        """Let the thread run (step by step) until it has exited and is reaped."""
        try:
            while True:
                _call(PTRACE_SINGLESTEP, self.tid)
                wait_stop(self.tid)
        except ThreadExited:
            return
        except PtraceError as e:
            if e.errno != errno.ESRCH:
                raise
        # ESRCH: it is exiting and no longer stoppable; reap it.
        try:
            while True:
                wait_stop(self.tid)
        except ThreadExited:
            return

    def detach(self) -> None:
        sig = self.pending_signals.pop(0) if self.pending_signals else 0
        try:
            _call(PTRACE_DETACH, self.tid, 0, sig)
        except PtraceError as e:
            if e.errno != errno.ESRCH:
                raise
        # Only one signal can ride on the detach; send the others to the thread.
        for extra in self.pending_signals:
            _libc.syscall(arch.SYS["tgkill"], self.pid, self.tid, extra)
        self.pending_signals.clear()


def adopt(pid: int, tid: int) -> Thread:
    """A thread the process created while traced with trace_clones(): it is
    already ours and starts in a stop, before running any instruction."""
    status = wait_stop(tid)
    if not is_event_stop(status):
        raise EngineError(f"the new thread {tid} of PID {pid} stopped with status {status:#x}")
    return Thread(pid, tid)


def _seize(pid: int, tid: int) -> Thread | None:
    """Seize and stop one thread; None if it exited meanwhile."""
    try:
        _call(PTRACE_SEIZE, tid, 0, 0)
    except PtraceError as e:
        if e.errno == errno.ESRCH:
            return None
        if e.errno == errno.EPERM:
            raise PtraceDenied(
                f"the kernel refused to let us trace thread {tid}: {os.strerror(e.errno)}"
            ) from None
        raise EngineError(
            f"PTRACE_SEIZE of thread {tid} failed: {os.strerror(e.errno or 0)}"
        ) from None
    thread = Thread(pid, tid)
    try:
        _call(PTRACE_INTERRUPT, tid)
        status = wait_stop(tid)
        if not is_event_stop(status):
            # Signal-delivery-stop: the thread is stopped all the same; keep the
            # signal to deliver it when we let go.
            thread.pending_signals.append(os.WSTOPSIG(status))
        return thread
    except ThreadExited:
        return None


class ThreadGroup:
    """Every thread of a process, seized and stopped.

    Seizing is repeated until the set of threads is stable: a thread can
    spawn another between our reading /proc/PID/task and stopping it.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.threads: dict[int, Thread] = {}

    def seize_all(self) -> None:
        try:
            while True:
                current = procfs.thread_ids(self.pid)
                new = [tid for tid in current if tid not in self.threads]
                if not new and set(current) >= set(self.threads):
                    break
                for tid in new:
                    thread = _seize(self.pid, tid)
                    if thread is not None:
                        self.threads[tid] = thread
                # Threads that exited while being seized are gone from the set.
                alive = set(current)
                for tid in list(self.threads):
                    if tid not in alive:
                        del self.threads[tid]
            if self.pid not in self.threads:
                raise ProcessChanged(f"PID {self.pid} exited while it was being frozen")
        except BaseException:
            self.detach_all()
            raise

    @property
    def main(self) -> Thread:
        return self.threads[self.pid]

    def forget(self, tid: int) -> None:
        """Drop a thread that exited (e.g. through an injected exit)."""
        self.threads.pop(tid, None)

    def detach_all(self) -> None:
        failures = []
        for thread in list(self.threads.values()):
            try:
                thread.detach()
            except PtraceError as e:
                failures.append(f"{thread.tid}: {e}")
        self.threads.clear()
        if failures:
            log.error("could not detach threads: %s", "; ".join(failures))
