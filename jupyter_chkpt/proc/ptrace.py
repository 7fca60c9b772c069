"""ptrace on top of python-ptrace's binding layer.

python-ptrace gives the raw call, the register struct and the classic
requests; this module adds what it lacks: PTRACE_SEIZE, register sets
(XSTATE), signal masks, queued signals, rseq registrations, running a thread
from one syscall stop to the next, freezing every thread of a process, and
adopting threads the process is made to create.

Death-safety: a tracer may die at any instant (OOM killer, crash). A process
is frozen in a group stop (SIGSTOP) before it is seized, so when the tracer
dies the kernel puts every thread back into that stop instead of letting it
run on half-changed registers; and threads are only ever resumed to syscall
stops (PTRACE_SYSCALL), never single-stepped: a trap flag left set by
PTRACE_SINGLESTEP survives the tracer and kills the process with SIGTRAP.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import signal
import struct
import time
from collections.abc import Callable
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

from ..errors import EngineError, FreezeTimeout, ProcessChanged, ProcessStopped, PtraceDenied
from . import procfs
from .arch import current as arch

log = logging.getLogger(__name__)
_libc = ctypes.CDLL(None, use_errno=True)

PTRACE_SYSCALL = 24
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
PTRACE_O_TRACESYSGOOD = 0x1  # syscall stops report SIGTRAP | 0x80
PTRACE_O_TRACECLONE = 0x8
SYSCALL_STOP = signal.SIGTRAP | 0x80
OPTIONS = PTRACE_O_TRACESYSGOOD  # set at seize, kept by every later SETOPTIONS
ALL_SIGNALS = (1 << 64) - 1  # the kernel ignores the bits of SIGKILL and SIGSTOP
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
        _call(PTRACE_SETOPTIONS, self.tid, 0, OPTIONS | (PTRACE_O_TRACECLONE if on else 0))

    def to_syscall_stop(self) -> None:
        """Let the thread run to its next syscall stop (entry or exit).

        Stops on the way are dealt with: a clone event notes the new thread's tid;
        a group-stop or interrupt trap is passed; a signal (only SIGSTOP or SIGKILL
        get through the full mask injection runs under) is kept for the detach.
        """
        _call(PTRACE_SYSCALL, self.tid)
        while True:
            status = wait_stop(self.tid)
            sig, event = os.WSTOPSIG(status), status >> 16
            if sig == SYSCALL_STOP:
                return
            if event == PTRACE_EVENT_CLONE:
                msg = ctypes.c_ulong()
                _call(PTRACE_GETEVENTMSG, self.tid, 0, ctypes.addressof(msg))
                self.last_clone = int(msg.value)
            elif event == 0:
                self.pending_signals.append(sig)
            _call(PTRACE_SYSCALL, self.tid)

    def run_until_exit(self) -> None:
        """Let the thread run (syscall stop by syscall stop) until it has exited and is reaped."""
        try:
            while True:
                self.to_syscall_stop()
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
    """Seize one thread that is in the group stop; None if it exited meanwhile."""
    try:
        _call(PTRACE_SEIZE, tid, 0, OPTIONS)
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
        # Seizing a thread in a group stop waits until it has become a traced
        # stop, so its report is there at once; if someone sent SIGCONT since,
        # it runs, and an interrupt stops it.
        got, status = os.waitpid(tid, WALL | os.WNOHANG)
        if got == 0:
            _call(PTRACE_INTERRUPT, tid)
            status = wait_stop(tid)
        elif os.WIFEXITED(status) or os.WIFSIGNALED(status):
            return None
        if not is_event_stop(status):
            # Signal-delivery-stop: the thread is stopped all the same; keep the
            # signal to deliver it when we let go.
            thread.pending_signals.append(os.WSTOPSIG(status))
        return thread
    except (ThreadExited, ChildProcessError):
        return None


class ThreadGroup:
    """Every thread of a process, held in a group stop and seized.

    The group stop (SIGSTOP, sent through a pidfd) comes first: it is what keeps
    the process stopped if we die, and once every thread is in it the set of
    threads cannot change (no thread can clone), so one pass seizes them all.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.threads: dict[int, Thread] = {}
        self.pidfd = -1
        self.stopped = False  # we put the process in its group stop: we end it

    def freeze(self, deadline_s: float, before_stop: Callable[[], None] | None = None) -> None:
        """Stop the process and seize every thread; FreezeTimeout (the process
        running on, untouched) if a thread does not stop within `deadline_s`.
        `before_stop` runs right before the SIGSTOP (the journal notes it)."""
        self._open()
        try:
            if any(s in ("T", "t") for s in procfs.thread_states(self.pid).values()):
                raise ProcessStopped(f"PID {self.pid} is stopped (SIGSTOP, Ctrl-Z or a debugger)")
            if before_stop is not None:
                before_stop()
            signal.pidfd_send_signal(self.pidfd, signal.SIGSTOP)
            self.stopped = True
            self._wait_stopped(deadline_s)
            self._seize_all()
        except BaseException:
            self.release()
            raise

    def take_over(self, deadline_s: float) -> None:
        """Seize a process left in its group stop by a tracer that died (a rescue)."""
        self._open()
        self.stopped = True
        try:
            self._wait_stopped(deadline_s)
            self._seize_all()
        except BaseException:
            self.release()
            raise

    def _open(self) -> None:
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            raise ProcessChanged(f"PID {self.pid} exited before it could be frozen") from None

    def _wait_stopped(self, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        pause = 0.0001
        while True:
            states = procfs.thread_states(self.pid)
            running = [(t, s) for t, s in states.items() if s not in ("T", "t", "Z", "X")]
            if not running:
                return
            if time.monotonic() > end:
                tid, state = running[0]
                raise FreezeTimeout(
                    f"thread {tid} ({procfs.thread_name(self.pid, tid)}) of PID {self.pid} did "
                    f"not stop within {deadline_s:g} s (state {state})"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def _seize_all(self) -> None:
        for tid, state in procfs.thread_states(self.pid).items():
            if state not in ("Z", "X"):
                thread = _seize(self.pid, tid)
                if thread is not None:
                    self.threads[tid] = thread
        if self.pid not in self.threads:
            raise ProcessChanged(f"PID {self.pid} exited while it was being frozen")

    @property
    def main(self) -> Thread:
        return self.threads[self.pid]

    def forget(self, tid: int) -> None:
        """Drop a thread that exited (e.g. through an injected exit)."""
        self.threads.pop(tid, None)

    def detach_all(self) -> None:
        """Let go of every thread; they stay in the group stop until release()."""
        failures = []
        for thread in list(self.threads.values()):
            try:
                thread.detach()
            except PtraceError as e:
                failures.append(f"{thread.tid}: {e}")
        self.threads.clear()
        if failures:
            log.error("could not detach threads: %s", "; ".join(failures))

    def leave_stopped(self) -> None:
        """Detach every thread, leaving the process in its group stop."""
        try:
            self.detach_all()
        finally:
            self.stopped = False
            if self.pidfd >= 0:
                os.close(self.pidfd)
                self.pidfd = -1

    def release(self) -> None:
        """Detach every thread, then end the group stop: the process runs on."""
        try:
            self.detach_all()
        finally:
            if self.pidfd >= 0:
                if self.stopped:
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(self.pidfd, signal.SIGCONT)
                    self.stopped = False
                os.close(self.pidfd)
                self.pidfd = -1
