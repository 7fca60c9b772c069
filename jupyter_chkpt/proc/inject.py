"""Make a stopped thread execute system calls on our behalf.

As CRIU's compel does, but without injecting code: point the thread's
instruction pointer at a `syscall` instruction that already exists in the
target (the vDSO always has one), load the number and arguments, run the
thread to the syscall's entry and exit stops (PTRACE_SYSCALL, never a
single-step: see proc/ptrace.py), read the result, and put the registers
back. Every signal is blocked in the thread meanwhile, so none is taken
from its queue (and none loses its siginfo) while it runs for us.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import SyscallInjectionFailed
from .arch import current as arch
from .maps import find_mapping, read_maps
from .memory import ProcessMemory
from .ptrace import ALL_SIGNALS, Thread

SCRATCH_SIZE = 4096


_CODE_SEARCHED = 1 << 20  # bytes of each code mapping searched for an instruction


def find_syscall_gadget(
    pid: int, mem: ProcessMemory, *, vdso: bool = True, avoid: tuple[int, int] | None = None
) -> int:
    """Where the bytes of a `syscall` instruction are: in the [vdso], else (or without
    `vdso`: while it moves) in the program's own code, outside the range `avoid`.
    Any two such bytes will do, whatever instruction they belong to."""
    maps = read_maps(pid)
    places = [m for m in maps if m.path == "[vdso]"] if vdso else []
    places += [
        m
        for m in maps
        if m.perms.startswith("r-x") and m.path.startswith("/")
        if avoid is None or m.end <= avoid[0] or avoid[1] <= m.start
    ]
    for m in places:
        at = mem.read(m.start, min(m.size, _CODE_SEARCHED)).find(arch.SYSCALL_INSN)
        if at >= 0:
            return m.start + at
    raise SyscallInjectionFailed(f"PID {pid} has no syscall instruction in its code")


class Injector:
    """Runs syscalls in one stopped thread; its registers are unchanged afterwards."""

    def __init__(self, thread: Thread, gadget: int, mem: ProcessMemory) -> None:
        self.thread = thread
        self.gadget = gadget
        self.mem = mem

    def call(self, name: str, *args: int) -> int:
        """The raw result: a negative errno on failure."""
        saved = self.thread.get_regs()
        mask = self.thread.get_sigmask()
        regs = arch.copy_regs(saved)
        arch.load_syscall(regs, self.gadget, arch.SYS[name], args)
        self.thread.set_regs(regs)
        self.thread.set_sigmask(ALL_SIGNALS)
        try:
            self.thread.to_syscall_stop()  # entry
            self.thread.to_syscall_stop()  # exit
            result = self.thread.get_regs()
            if arch.instruction_pointer(result) != self.gadget + len(arch.SYSCALL_INSN):
                raise SyscallInjectionFailed(
                    f"injected {name} in thread {self.thread.tid} stopped at "
                    f"{arch.instruction_pointer(result):#x}, not after the syscall instruction"
                )
            return arch.syscall_result(result)
        finally:
            # The thread goes on from a syscall stop now, where the kernel no longer
            # restarts an interrupted syscall of its own: the registers do it.
            self.thread.set_regs(arch.without_pending_restart(saved))
            self.thread.set_sigmask(mask)

    def check(self, name: str, *args: int) -> int:
        """Like call(), raising on failure."""
        result = self.call(name, *args)
        if -4096 < result < 0:
            raise SyscallInjectionFailed(
                f"{name}({', '.join(hex(a) for a in args)}) in PID {self.thread.pid} failed: "
                f"{os.strerror(-result)} ({errno.errorcode.get(-result, -result)})"
            )
        return result

    def scratch(self) -> int:
        """Page-aligned address of 4 KiB of dead memory for syscall arguments.

        Taken from the main thread's stack well below its stack pointer (past
        the 128-byte red zone): nothing live is there, and a restore rewrites
        it with the snapshot's memory anyway.
        """
        sp = arch.stack_pointer(self.thread.get_regs())
        addr = (sp - 8192) & ~0xFFF
        m = find_mapping(self.thread.pid, addr=addr)
        if m is not None and addr + SCRATCH_SIZE <= m.end and "w" in m.perms:
            return addr
        raise SyscallInjectionFailed(
            f"no scratch memory below the stack pointer {sp:#x} of PID {self.thread.pid}"
        )

    @contextmanager
    def scratch_kept(self) -> Iterator[int]:
        """Like scratch(), but the memory is put back as it was afterwards:
        for a dump, which must leave the process exactly as it found it."""
        addr = self.scratch()
        saved = self.mem.read(addr, SCRATCH_SIZE)
        try:
            yield addr
        finally:
            self.mem.write(addr, saved)

    def put(self, scratch: int, data: bytes) -> int:
        """Write `data` into the scratch area; returns its address."""
        if len(data) > SCRATCH_SIZE:
            raise SyscallInjectionFailed(
                f"{len(data)} bytes of syscall arguments do not fit the {SCRATCH_SIZE}-byte scratch area"
            )
        self.mem.write(scratch, data)
        return scratch

    def exit_thread(self) -> None:
        """The thread runs exit(0): only it ends, the process goes on."""
        regs = self.thread.get_regs()
        arch.load_syscall(regs, self.gadget, arch.SYS["exit"], (0,))
        self.thread.set_regs(regs)
        self.thread.set_sigmask(ALL_SIGNALS)
        self.thread.run_until_exit()
