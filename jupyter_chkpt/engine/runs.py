"""Page runs: sorted, non-overlapping (vaddr, npages) lists, and the set operations
the dump and restore need on them (which pages hold data, were written, differ).

Runs are few (a mapping or a written stretch each) even where pages are many,
so all of this is cheap in pure Python.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..image import PAGE_SIZE

Run = tuple[int, int]


def npages(runs: Iterable[Run]) -> int:
    return sum(n for _, n in runs)


def _intervals(runs: Iterable[Run]) -> list[tuple[int, int]]:
    return [(v, v + n * PAGE_SIZE) for v, n in runs]


def _runs(intervals: Iterable[tuple[int, int]]) -> list[Run]:
    return [(a, (b - a) // PAGE_SIZE) for a, b in intervals if b > a]


def union(*lists: Iterable[Run]) -> list[Run]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(iv for runs in lists for iv in _intervals(runs)):
        if merged and a <= merged[-1][1]:
            if b > merged[-1][1]:
                merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return _runs(merged)


def intersect(x: list[Run], y: list[Run]) -> list[Run]:
    a, b = _intervals(x), _intervals(y)
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return _runs(out)


def subtract(have: list[Run], keep: list[Run]) -> list[Run]:
    """Page runs in `have` that are not in `keep`; both sorted."""
    out: list[Run] = []
    j = 0
    for start, n in have:
        end = start + n * PAGE_SIZE
        pos = start
        while j < len(keep) and keep[j][0] + keep[j][1] * PAGE_SIZE <= pos:
            j += 1
        k = j
        while pos < end:
            if k >= len(keep) or keep[k][0] >= end:
                out.append((pos, (end - pos) // PAGE_SIZE))
                break
            ks, ke = keep[k][0], keep[k][0] + keep[k][1] * PAGE_SIZE
            if ks > pos:
                out.append((pos, (ks - pos) // PAGE_SIZE))
            pos = max(pos, ke)
            k += 1
    return out


def within(runs: list[Run], ranges: Iterable[tuple[int, int]]) -> list[Run]:
    """The parts of `runs` inside the (start, end) byte ranges."""
    return intersect(runs, union(_runs(sorted(ranges))))
