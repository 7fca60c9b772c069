"""Everything specific to Linux on x86_64, in one place.

Register layout, register sets, syscall numbers and calling convention, the
syscall instruction, and the kernel's syscall-restart rules. A port to another
architecture replaces this module (see `arch.py`).
"""

from __future__ import annotations

import ctypes
import struct
from typing import Final, TypeAlias

from ptrace.binding.linux_struct import user_regs_struct
from ptrace.syscall.linux.x86_64 import SYSCALL_NAMES

NAME: Final = "x86_64"

# python-ptrace is untyped: to mypy the register struct is Any.
Regs: TypeAlias = user_regs_struct
REG_NAMES: Final[tuple[str, ...]] = tuple(name for name, _ in user_regs_struct._fields_)

# PTRACE_GETREGSET note types (include/uapi/linux/elf.h)
NT_PRSTATUS: Final = 1
NT_X86_XSTATE: Final = 0x202
# Large enough for AVX-512 and AMX tiles; the kernel reports the real size.
XSTATE_MAX: Final = 16 * 1024

SYSCALL_INSN: Final = b"\x0f\x05"

# python-ptrace's table also lists the x32 ABI entries (512 and up) under the
# same names: keep the native 64-bit numbers.
SYS: Final[dict[str, int]] = {}
for _nr, _name in sorted(SYSCALL_NAMES.items(), reverse=True):
    SYS[_name] = _nr
# Newer than python-ptrace's table.
SYS.setdefault("pidfd_open", 434)
SYS.setdefault("pidfd_getfd", 438)
SYS.setdefault("process_madvise", 440)

_U64: Final = (1 << 64) - 1

ERESTARTSYS: Final = 512
ERESTARTNOINTR: Final = 513
ERESTARTNOHAND: Final = 514
ERESTART_RESTARTBLOCK: Final = 516
EINTR: Final = 4


def signed(value: int) -> int:
    value &= _U64
    return value - (1 << 64) if value >> 63 else value


def unsigned(value: int) -> int:
    return value & _U64


def regs_to_dict(regs: Regs) -> dict[str, int]:
    return {name: int(getattr(regs, name)) for name in REG_NAMES}


def regs_from_dict(values: dict[str, int]) -> Regs:
    regs = Regs()
    for name in REG_NAMES:
        setattr(regs, name, unsigned(values[name]))
    return regs


def copy_regs(regs: Regs) -> Regs:
    clone = Regs()
    ctypes.pointer(clone)[0] = regs
    return clone


def instruction_pointer(regs: Regs) -> int:
    return int(regs.rip)


def stack_pointer(regs: Regs) -> int:
    return int(regs.rsp)


def thread_pointer(regs: Regs) -> int:
    """The TLS base; glibc keeps the thread's TCB (with its rseq area) there."""
    return int(regs.fs_base)


def resolve_syscall_restart(values: dict[str, int]) -> dict[str, int]:
    """Make an interrupted syscall's restart explicit in the saved registers.

    A thread stopped inside a syscall holds -ERESTART* in rax; the kernel
    would restart the call using per-thread state we do not restore. As CRIU
    does: rewind rip over the syscall instruction and reload rax with the
    syscall number so the call re-executes when the thread resumes; the
    restart-block variant (its state lives in the kernel) becomes -EINTR.
    orig_rax = -1 then stops the kernel's own restart logic from firing on top.
    """
    out = dict(values)
    if signed(out["orig_rax"]) >= 0:
        ret = signed(out["rax"])
        if ret in (-ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND):
            out["rip"] = unsigned(out["rip"] - len(SYSCALL_INSN))
            out["rax"] = out["orig_rax"]
        elif ret == -ERESTART_RESTARTBLOCK:
            out["rax"] = unsigned(-EINTR)
    out["orig_rax"] = _U64
    return out


def without_pending_restart(regs: Regs) -> Regs:
    """What the kernel would make of `regs` when the thread returns to user mode
    without running a signal handler, done now: for a thread of a live process
    that will go on from a syscall stop, where the kernel does no restarting.

    Unlike resolve_syscall_restart the restart block stays usable (the thread's
    own kernel state is still there), so that case restarts too.
    """
    out = copy_regs(regs)
    if signed(int(regs.orig_rax)) >= 0:
        ret = signed(int(regs.rax))
        if ret in (-ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND, -ERESTART_RESTARTBLOCK):
            out.rip = unsigned(int(regs.rip) - len(SYSCALL_INSN))
            out.rax = regs.orig_rax if ret != -ERESTART_RESTARTBLOCK else SYS["restart_syscall"]
    out.orig_rax = _U64
    return out


def load_syscall(regs: Regs, gadget: int, nr: int, args: tuple[int, ...]) -> None:
    """Set up `regs` to execute syscall `nr` at the `syscall` instruction at `gadget`."""
    if len(args) > 6:
        raise ValueError("a syscall takes at most 6 arguments")
    regs.rax = nr
    # Unused arguments are zero, not whatever the thread held: some syscalls refuse
    # a nonzero one (prctl(PR_SET_MM) answers EINVAL to a stray fifth argument).
    padded = (*args, *(0,) * (6 - len(args)))
    for reg, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), padded, strict=True):
        setattr(regs, reg, unsigned(value))
    regs.rip = gadget
    # -1: we are not inside a syscall, so the kernel must not try to restart one.
    regs.orig_rax = _U64


def syscall_result(regs: Regs) -> int:
    return signed(int(regs.rax))


# Kernel ABI structs passed to injected syscalls.

NSIG: Final = 64
SIGSET_SIZE: Final = 8
# struct kernel_sigaction: handler, flags, restorer, mask (sigset of 64 bits)
_SIGACTION: Final = struct.Struct("<QQQQ")
SIGACTION_SIZE: Final = _SIGACTION.size


def pack_sigaction(handler: int, flags: int, restorer: int, mask: int) -> bytes:
    return _SIGACTION.pack(handler, flags, restorer, mask)


def unpack_sigaction(raw: bytes) -> tuple[int, int, int, int]:
    handler, flags, restorer, mask = _SIGACTION.unpack(raw)
    return handler, flags, restorer, mask


# struct epoll_event is packed on x86_64 only: u32 events, u64 data, 12 bytes.
_EPOLL_EVENT: Final = struct.Struct("<IQ")


def pack_epoll_event(events: int, data: int) -> bytes:
    return _EPOLL_EVENT.pack(events, data)


# struct clone_args (clone3), up to set_tid_size: CLONE_ARGS_SIZE_VER1
_CLONE_ARGS: Final = struct.Struct("<10Q")


def pack_clone_args(flags: int, set_tid: int, set_tid_size: int) -> bytes:
    """No stack (the child starts on the parent's stack pointer; we set its registers
    before it runs), no exit signal (a thread), the tids to ask for at `set_tid`."""
    return _CLONE_ARGS.pack(flags, 0, 0, 0, 0, 0, 0, 0, set_tid, set_tid_size)


# stack_t: sp, flags (int, padded; read unsigned: SS_AUTODISARM is bit 31), size
_STACK_T: Final = struct.Struct("<QI4xQ")
STACK_T_SIZE: Final = _STACK_T.size


def pack_stack_t(sp: int, flags: int, size: int) -> bytes:
    return _STACK_T.pack(sp, flags, size)


def unpack_stack_t(raw: bytes) -> tuple[int, int, int]:
    sp, flags, size = _STACK_T.unpack(raw)
    return sp, flags, size


# struct itimerval and struct itimerspec: interval then value, (seconds, sub-seconds) each
_TIMER_PAIR: Final = struct.Struct("<qqqq")
TIMER_PAIR_SIZE: Final = _TIMER_PAIR.size


def pack_timer_pair(interval: tuple[int, int], value: tuple[int, int]) -> bytes:
    return _TIMER_PAIR.pack(*interval, *value)


def unpack_timer_pair(raw: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    a, b, c, d = _TIMER_PAIR.unpack(raw)
    return (a, b), (c, d)


# struct sigevent: sigval, signo, notify, then the union (its first member: the thread id)
_SIGEVENT: Final = struct.Struct("<Qiii44x")


def pack_sigevent(sigval: int, signo: int, notify: int, tid: int) -> bytes:
    return _SIGEVENT.pack(sigval, signo, notify, tid)


# struct robust_list_head: list.next, futex_offset (signed), list_op_pending
_ROBUST_HEAD: Final = struct.Struct("<QqQ")
ROBUST_HEAD_SIZE: Final = _ROBUST_HEAD.size


def unpack_robust_head(raw: bytes) -> tuple[int, int, int]:
    nxt, offset, pending = _ROBUST_HEAD.unpack(raw)
    return nxt, offset, pending


def shadow_stack_enabled(thread_features: str) -> bool:
    """/proc/PID/status x86_Thread_features: user shadow stacks are switched on."""
    return "shstk" in thread_features.split()
