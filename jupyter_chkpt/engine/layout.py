"""Reconcile: what must change in an address space to match a snapshot's.

Pure logic over lists of mappings, so it can be unit-tested without a
process. Layouts are compared per address interval, not per VMA: the kernel
merges and splits VMAs freely, so only what each address maps to matters.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..errors import UnsupportedState
from ..image import PAGE_SIZE, Mapping

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_GROWSDOWN, MAP_NORESERVE = 0x100, 0x4000

# VmFlags (smaps) a restore sets back, each of which it can also clear: DONTFORK,
# WIPEONFORK, DONTDUMP, locked (and lock-on-fault), transparent huge pages, KSM.
RESTORED_FLAGS = frozenset({"dc", "wf", "dd", "lo", "lf", "hg", "mg"})
SEALED = "sl"  # mseal(): cannot be unmapped or re-protected

# Huge PROT_NONE reservations (allocators, runtimes) can span terabytes;
# scanning their page tables would cost more than it could ever find.
MAX_SCANNED_UNREADABLE = 4 << 30


def dumpable(m: Mapping) -> bool:
    """Mappings whose page contents belong in a snapshot."""
    if m.is_special or (m.shared and not m.is_shared_anon):
        return False
    return m.readable or m.size <= MAX_SCANNED_UNREADABLE


def device_memory(m: Mapping) -> bool:
    """Memory a device or the kernel owns (GPU buffers, /dev/dri, io_uring rings):
    its contents are not the process's to save or write back."""
    if m.is_shared_anon or m.is_special:
        return False
    if m.path.startswith("/dev/"):
        return m.path != "/dev/zero" and not m.path.startswith("/dev/shm/")
    return m.path.startswith(("anon_inode:", "/dmabuf:"))


def refuse_device_memory(pid: int, maps: list[Mapping]) -> None:
    found = [m for m in maps if device_memory(m)]
    if found:
        where = ", ".join(f"{m.path} at {m.start:#x}" for m in found[:3])
        raise UnsupportedState(
            f"PID {pid} maps device memory ({where}): neither a snapshot nor a restore can "
            "save or put back what a GPU or another device holds",
            "Nothing was changed. Release the device in that process (for a GPU: free its "
            "tensors and context) or use snapshots in a kernel that does not use it",
        )


def prot_of(perms: str) -> int:
    return (
        (PROT_READ if perms[0] == "r" else 0)
        | (PROT_WRITE if perms[1] == "w" else 0)
        | (PROT_EXEC if perms[2] == "x" else 0)
    )


@dataclass(frozen=True)
class Unmap:
    start: int
    end: int


@dataclass(frozen=True)
class Protect:
    start: int
    end: int
    perms: str


@dataclass(frozen=True)
class Map:
    start: int
    end: int
    source: Mapping  # the snapshot's mapping this range belongs to

    @property
    def file_offset(self) -> int:
        return self.source.offset + (self.start - self.source.start)


@dataclass(frozen=True)
class Flags:
    """Same memory, other VmFlags (of RESTORED_FLAGS): madvise / mlock what differs."""

    start: int
    end: int
    want: frozenset[str]
    have: frozenset[str]


Op = Unmap | Protect | Map | Flags


def flags_to_restore(m: Mapping) -> frozenset[str]:
    return m.flags & RESTORED_FLAGS


def carry_flags(maps: list[Mapping], flagged: list[Mapping]) -> list[Mapping]:
    """`maps` with the VmFlags of the `flagged` mapping at each one's start: a
    mapping only moved its edges (brk, munmap) keeps its flags."""
    index = _Index(flagged)
    out = []
    for m in maps:
        f = index.at(m.start)
        out.append(m if f is None or f.vmflags is None else replace(m, vmflags=f.vmflags))
    return out


def regions(ops: list[Op], kind: type) -> list[tuple[int, int]]:
    """The page runs of the plan's operations of one kind (Map: contents replaced)."""
    return [(op.start, (op.end - op.start) // PAGE_SIZE) for op in ops if isinstance(op, kind)]


def touches_sealed(ops: list[Op], current: list[Mapping]) -> list[Mapping]:
    """Sealed mappings (mseal) that an unmap, mprotect or map of the plan would touch."""
    sealed = [m for m in current if SEALED in m.flags]
    return [
        m
        for m in sealed
        for op in ops
        if not isinstance(op, Flags) and op.start < m.end and m.start < op.end
    ]


def _same_backing(a: Mapping, b: Mapping) -> bool:
    if a.shared != b.shared or a.is_file != b.is_file:
        return False
    if not a.is_file:
        return True
    # The same file at the same file offset for the same address.
    return (a.dev, a.inode, a.offset - a.start) == (b.dev, b.inode, b.offset - b.start)


class _Index:
    def __init__(self, maps: Iterable[Mapping]) -> None:
        self.maps = sorted((m for m in maps if not m.is_special), key=lambda m: m.start)
        self.starts = [m.start for m in self.maps]

    def at(self, addr: int) -> Mapping | None:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and self.maps[i].start <= addr < self.maps[i].end:
            return self.maps[i]
        return None


def plan(snapshot: list[Mapping], current: list[Mapping]) -> list[Op]:
    """The operations that turn `current` into `snapshot`; empty when they match."""
    want, have = _Index(snapshot), _Index(current)
    stack = next((m for m in want.maps if m.path == "[stack]"), None)
    edges = sorted(
        {m.start for m in want.maps + have.maps} | {m.end for m in want.maps + have.maps}
    )
    ops: list[Op] = []
    flag_ops: list[Op] = []
    for a, b in itertools.pairwise(edges):
        w, h = want.at(a), have.at(a)
        if w is None and h is None:
            continue
        if w is None:
            assert h is not None
            if h.path == "[stack]" and stack is not None and b <= stack.start:
                continue  # the main stack grew since; the pages below it are unused
            op: Op = Unmap(a, b)
        elif h is not None and _same_backing(w, h):
            if w.perms != h.perms:
                ops.append(Protect(a, b, w.perms))
            if w.vmflags is not None and h.vmflags is not None:
                wf, hf = flags_to_restore(w), flags_to_restore(h)
                if wf != hf:
                    flag_ops.append(Flags(a, b, wf, hf))
            continue
        else:
            op = Map(a, b, w)
        ops.append(op)
    return _coalesce(ops) + _coalesce(flag_ops)


def _mergeable(prev: Op, op: Op) -> bool:
    if type(prev) is not type(op) or prev.end != op.start:
        return False
    if isinstance(prev, Protect) and isinstance(op, Protect):
        return prev.perms == op.perms
    if isinstance(prev, Map) and isinstance(op, Map):
        return prev.source == op.source
    if isinstance(prev, Flags) and isinstance(op, Flags):
        return (prev.want, prev.have) == (op.want, op.have)
    return True


def _merge(prev: Op, op: Op) -> Op:
    if isinstance(prev, Unmap):
        return Unmap(prev.start, op.end)
    if isinstance(prev, Protect):
        return Protect(prev.start, op.end, prev.perms)
    if isinstance(prev, Flags):
        return Flags(prev.start, op.end, prev.want, prev.have)
    return Map(prev.start, op.end, prev.source)


def _coalesce(ops: list[Op]) -> list[Op]:
    out: list[Op] = []
    for op in ops:
        if out and _mergeable(out[-1], op):
            out[-1] = _merge(out[-1], op)
        else:
            out.append(op)
    return out


def describe(ops: list[Op]) -> str:
    parts = []
    for op in ops:
        if isinstance(op, Unmap):
            parts.append(f"extra {op.start:#x}-{op.end:#x}")
        elif isinstance(op, Protect):
            parts.append(f"{op.start:#x}-{op.end:#x} should be {op.perms}")
        elif isinstance(op, Flags):
            parts.append(
                f"{op.start:#x}-{op.end:#x} flags {' '.join(sorted(op.have))!r} "
                f"should be {' '.join(sorted(op.want))!r}"
            )
        else:
            parts.append(f"missing {op.start:#x}-{op.end:#x} {op.source.path or '[anon]'}")
    return ", ".join(parts)
