"""Unit tests of the x86_64 syscall-restart rules and register helpers."""

from __future__ import annotations

from jupyter_chkpt.proc.arch import current as arch

U64 = (1 << 64) - 1


def regs(**values: int) -> dict[str, int]:
    base = dict.fromkeys(arch.REG_NAMES, 0)
    base.update({k: v & U64 for k, v in values.items()})
    return base


def test_restartable_syscall_is_rewound() -> None:
    for err in (512, 513, 514):
        out = arch.resolve_syscall_restart(regs(orig_rax=232, rax=-err, rip=0x1002))
        assert (out["rip"], out["rax"], out["orig_rax"]) == (0x1000, 232, U64)


def test_restart_block_becomes_eintr() -> None:
    out = arch.resolve_syscall_restart(regs(orig_rax=7, rax=-516, rip=0x1002))
    assert (out["rip"], arch.signed(out["rax"]), out["orig_rax"]) == (0x1002, -4, U64)


def test_not_in_syscall_or_completed_syscall_untouched_but_orig_rax_cleared() -> None:
    for r in (regs(orig_rax=-1, rax=5, rip=0x10), regs(orig_rax=0, rax=3, rip=0x10)):
        out = arch.resolve_syscall_restart(r)
        assert (out["rip"], out["rax"], out["orig_rax"]) == (0x10, r["rax"], U64)


def test_regs_round_trip_and_syscall_loading() -> None:
    values = regs(rax=1, rip=0xDEAD, fs_base=0x7F00)
    r = arch.regs_from_dict(values)
    assert arch.regs_to_dict(r) == values
    arch.load_syscall(r, 0x5000, arch.SYS["mmap"], (1, 2, 3, 4, 5, -1))
    out = arch.regs_to_dict(r)
    assert (out["rax"], out["rip"], out["rdi"], out["r10"], out["r9"], out["orig_rax"]) == (
        9,
        0x5000,
        1,
        4,
        U64,
        U64,
    )


def test_arguments_a_syscall_is_not_given_are_zero() -> None:
    """Not the thread's leftovers: prctl(PR_SET_MM, PR_SET_MM_MAP, addr, len) answers
    EINVAL when r8 (its fifth argument) is not zero (seen rolling back a transplant)."""
    r = arch.regs_from_dict(regs(rdx=7, r10=8, r8=9, r9=10))
    arch.load_syscall(r, 0x5000, arch.SYS["prctl"], (35, 14, 0x1000, 104))
    out = arch.regs_to_dict(r)
    assert [out[k] for k in ("rdi", "rsi", "rdx", "r10", "r8", "r9")] == [35, 14, 0x1000, 104, 0, 0]


def test_native_syscall_numbers() -> None:
    assert (arch.SYS["rt_sigaction"], arch.SYS["brk"], arch.SYS["exit"], arch.SYS["openat"]) == (
        13,
        12,
        60,
        257,
    )
