"""Python target for process state beyond memory and files.

Usage: py_process.py MODE [ARG]. ``mutate`` changes the state; ``verify`` (after
a restore) checks it is the one built; ``work`` uses it again.

Modes:
  timers       a POSIX timer (timer_create) and an interval timer: mutate deletes
               the first, creates another, arms a second interval timer
  signals      signals queued at the snapshot (blocked: one for the process, one
               for the main thread) are taken since; one more arrives since
  personality  the process personality changed since
  mapped       a file mapped privately is rewritten on disk since (ARG: the path)
  uffd         a userfaultfd registered on memory since: a restore must refuse
  device       (ARG: /dev/kvm) a KVM vCPU's shared mapping: a snapshot must refuse
  sealed       memory mapped and sealed (mseal) since: a restore must refuse
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import signal
import struct
import sys
import threading
import time

from _proto import Fail, address_of, check, serve

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
CLOCK_MONOTONIC = 1
SIGEV_SIGNAL = 0
ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC = 0x0040000, 0x0400000
SYS_userfaultfd, SYS_mseal = 323, 462
UFFDIO_API, UFFDIO_REGISTER = 0xC018AA3F, 0xC020AA00
UFFD_USER_MODE_ONLY, UFFDIO_REGISTER_MODE_MISSING = 1, 1
KVM_CREATE_VM, KVM_CREATE_VCPU, KVM_GET_VCPU_MMAP_SIZE = 0xAE01, 0xAE41, 0xAE04


def _errno_check(result: int, what: str) -> int:
    if result < 0:
        e = ctypes.get_errno()
        raise Fail(f"{what}: {os.strerror(e)}")
    return result


class Timers:
    def __init__(self) -> None:
        self.hits = 0
        signal.signal(signal.SIGUSR2, self._hit)
        self.timer = self._create()
        self._arm(self.timer, 600)
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _hit(self, *_: object) -> None:
        self.hits += 1

    @staticmethod
    def _create() -> int:
        # struct sigevent: sigval, signo, notify, then padding to 64 bytes
        sev = ctypes.create_string_buffer(struct.pack("<Qii", 7, signal.SIGUSR2, SIGEV_SIGNAL), 64)
        tid = ctypes.c_int()
        _errno_check(libc.timer_create(CLOCK_MONOTONIC, sev, ctypes.byref(tid)), "timer_create")
        return tid.value

    @staticmethod
    def _arm(timer: int, seconds: int) -> None:
        spec = struct.pack("<qqqq", 0, 0, seconds, 0)
        _errno_check(libc.timer_settime(timer, 0, spec, None), "timer_settime")

    @staticmethod
    def _left(timer: int) -> int:
        out = ctypes.create_string_buffer(32)
        if libc.timer_gettime(timer, out) < 0:
            return -1  # no such timer
        return struct.unpack("<qqqq", out.raw)[2]

    def mutate(self) -> None:
        libc.timer_delete(self.timer)
        self.other = self._create()
        signal.setitimer(signal.ITIMER_REAL, 2)  # SIGALRM's default action ends us

    def verify(self) -> None:
        left = self._left(self.timer)
        check(500 < left <= 600, f"timer {self.timer} has {left} s left, had 600")
        with open("/proc/self/timers") as f:
            timers = sum(line.startswith("ID:") for line in f)
        check(timers == 1, f"{timers} POSIX timers, had 1")
        check(signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0), "the interval timer is armed")

    def work(self) -> None:
        hits, probe = self.hits, self._create()
        spec = struct.pack("<qqqq", 0, 0, 0, 20_000_000)  # fires in 20 ms
        _errno_check(libc.timer_settime(probe, 0, spec, None), "timer_settime")
        time.sleep(0.2)  # the handler runs meanwhile
        libc.timer_delete(probe)
        check(self.hits == hits + 1, f"the timer fired {self.hits - hits} times, not once")


class Signals:
    def __init__(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2, signal.SIGRTMIN})
        os.kill(os.getpid(), signal.SIGUSR1)  # for the process
        signal.pthread_kill(threading.get_ident(), signal.SIGRTMIN)  # for this thread

    def mutate(self) -> None:
        got = {signal.sigtimedwait({signal.SIGUSR1, signal.SIGRTMIN}, 1).si_signo for _ in range(2)}
        check(got == {signal.SIGUSR1, signal.SIGRTMIN}, f"took {got}")
        os.kill(os.getpid(), signal.SIGUSR2)  # arrives since

    def verify(self) -> None:
        pending = signal.sigpending()
        check(
            {signal.SIGUSR1, signal.SIGRTMIN} <= pending,
            f"pending are {sorted(pending)}, want SIGUSR1 and SIGRTMIN",
        )

    def work(self) -> None:
        while signal.sigtimedwait({signal.SIGUSR1, signal.SIGUSR2, signal.SIGRTMIN}, 0):
            pass
        os.kill(os.getpid(), signal.SIGUSR1)
        check(signal.sigtimedwait({signal.SIGUSR1}, 1) is not None, "signals do not arrive")


class Personality:
    def __init__(self) -> None:
        self.want = libc.personality(0xFFFFFFFF) | READ_IMPLIES_EXEC
        libc.personality(self.want)

    def mutate(self) -> None:
        libc.personality(self.want & ~READ_IMPLIES_EXEC | ADDR_NO_RANDOMIZE)

    def verify(self) -> None:
        now = libc.personality(0xFFFFFFFF)
        check(now == self.want, f"personality {now:#x}, was {self.want:#x}")

    def work(self) -> None:
        pass


class Mapped:
    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "wb") as f:
            f.write(b"A" * 8192)
        with open(path, "rb") as f:
            self.map = mmap.mmap(
                f.fileno(), 8192, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE
            )
        self.map[:5] = b"mine!"  # a page of its own; the second page is the file's

    def mutate(self) -> None:
        with open(self.path, "r+b") as f:
            f.write(b"B" * 8192)

    def verify(self) -> None:
        check(self.map[:5] == b"mine!", "the written page is lost")

    def work(self) -> None:
        self.map[4096:4100] = b"more"


class Uffd:
    def __init__(self) -> None:
        self.region = mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def mutate(self) -> None:
        fd = libc.syscall(SYS_userfaultfd, os.O_CLOEXEC | UFFD_USER_MODE_ONLY)
        self.uffd = _errno_check(fd, "userfaultfd")
        api = ctypes.create_string_buffer(struct.pack("<QQQ", 0xAA, 0, 0))
        fcntl.ioctl(self.uffd, UFFDIO_API, api)
        reg = ctypes.create_string_buffer(
            struct.pack("<QQQQ", address_of(self.region), 1 << 20, UFFDIO_REGISTER_MODE_MISSING, 0)
        )
        fcntl.ioctl(self.uffd, UFFDIO_REGISTER, reg)

    def verify(self) -> None:
        raise Fail("verify is not expected: the restore must refuse")

    def work(self) -> None:
        pass


class Device:
    """A KVM vCPU's kvm_run area: memory a device driver owns, mapped shared."""

    def __init__(self, dev: str) -> None:
        self.kvm = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
        self.vm = fcntl.ioctl(self.kvm, KVM_CREATE_VM, 0)
        self.vcpu = fcntl.ioctl(self.vm, KVM_CREATE_VCPU, 0)
        size = fcntl.ioctl(self.kvm, KVM_GET_VCPU_MMAP_SIZE, 0)
        self.run = mmap.mmap(self.vcpu, size, mmap.MAP_SHARED)

    def mutate(self) -> None:
        pass

    def verify(self) -> None:
        pass

    def work(self) -> None:
        check(len(self.run) > 0, "the vCPU area is gone")


class Sealed:
    def __init__(self) -> None:
        self.maps: list[mmap.mmap] = []

    def mutate(self) -> None:
        m = mmap.mmap(-1, 1 << 16, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.maps.append(m)
        addr, size = ctypes.c_void_p(address_of(m)), ctypes.c_size_t(1 << 16)
        _errno_check(libc.syscall(SYS_mseal, addr, size, 0), "mseal")

    def verify(self) -> None:
        raise Fail("verify is not expected: the restore must refuse")

    def work(self) -> None:
        pass


class TimedWait:
    """The main thread waits for commands in poll() with a timeout (see serve)."""

    def __init__(self) -> None:
        self.value = "snapshot"

    def mutate(self) -> None:
        self.value = "since"

    def verify(self) -> None:
        check(self.value == "snapshot", f"value is {self.value!r}")

    def work(self) -> None:
        self.value = "works"
        check(self.value == "works", "no longer works")


MODES = {
    "timers": Timers,
    "signals": Signals,
    "personality": Personality,
    "mapped": Mapped,
    "uffd": Uffd,
    "device": Device,
    "sealed": Sealed,
    "timed_wait": TimedWait,
}

if __name__ == "__main__":
    state = MODES[sys.argv[1]](*sys.argv[2:])
    serve(
        {"mutate": state.mutate, "verify": state.verify, "work": state.work},
        poll_ms=500 if isinstance(state, TimedWait) else 0,
    )
