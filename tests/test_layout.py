"""Unit tests of the pure layout logic (reconcile plan, run subtraction)."""

from __future__ import annotations

from jupyter_chkpt.engine.layout import Map, Protect, Unmap, dumpable, plan, prot_of
from jupyter_chkpt.engine.runs import intersect, subtract, union
from jupyter_chkpt.image import Mapping

P = 4096


def anon(start: int, end: int, perms: str = "rw-p", path: str = "") -> Mapping:
    return Mapping(start * P, end * P, perms, 0, "00:00", 0, path)


def lib(start: int, end: int, offset: int, perms: str = "r-xp", inode: int = 7) -> Mapping:
    return Mapping(start * P, end * P, perms, offset * P, "fd:01", inode, "/usr/lib/libx.so")


def test_identical_layouts_need_nothing() -> None:
    maps = [anon(1, 5), lib(10, 20, 0), anon(30, 31, path="[stack]")]
    assert plan(maps, list(maps)) == []


def test_vma_split_and_merge_do_not_matter() -> None:
    assert plan([anon(1, 10)], [anon(1, 4), anon(4, 10)]) == []
    assert plan([lib(10, 12, 0), lib(12, 20, 2)], [lib(10, 20, 0)]) == []


def test_extra_interval_is_unmapped() -> None:
    assert plan([anon(1, 5)], [anon(1, 5), anon(8, 9)]) == [Unmap(8 * P, 9 * P)]


def test_grown_mapping_is_trimmed_and_missing_part_mapped() -> None:
    snapshot = [anon(1, 10)]
    assert plan(snapshot, [anon(1, 12)]) == [Unmap(10 * P, 12 * P)]
    assert plan(snapshot, [anon(1, 6)]) == [Map(6 * P, 10 * P, snapshot[0])]


def test_protection_change_is_mprotect() -> None:
    assert plan([anon(1, 10)], [anon(1, 4), anon(4, 6, "r--p"), anon(6, 10)]) == [
        Protect(4 * P, 6 * P, "rw-p")
    ]


def test_different_file_or_offset_is_remapped() -> None:
    want = lib(10, 20, 0)
    assert plan([want], [lib(10, 20, 0, inode=8)]) == [Map(10 * P, 20 * P, want)]
    assert plan([want], [lib(10, 20, 1)]) == [Map(10 * P, 20 * P, want)]
    assert plan([want], [anon(10, 20, "r-xp")]) == [Map(10 * P, 20 * P, want)]


def test_map_file_offset_follows_address() -> None:
    want = lib(10, 20, 3)
    (op,) = plan([want], [lib(10, 15, 3)])
    assert isinstance(op, Map) and op.start == 15 * P and op.file_offset == 8 * P


def test_stack_growth_is_tolerated_but_other_growth_is_not() -> None:
    snapshot = [anon(100, 110, path="[stack]")]
    assert plan(snapshot, [anon(90, 110, path="[stack]")]) == []
    assert plan([anon(100, 110)], [anon(90, 110)]) == [Unmap(90 * P, 100 * P)]


def test_special_mappings_are_ignored() -> None:
    vdso = Mapping(50 * P, 52 * P, "r-xp", 0, "00:00", 0, "[vdso]")
    assert plan([anon(1, 2)], [anon(1, 2), vdso]) == []
    assert not dumpable(vdso)


def test_dumpable() -> None:
    assert dumpable(anon(1, 2))
    assert dumpable(lib(1, 2, 0, "rw-p"))
    assert not dumpable(Mapping(P, 2 * P, "rw-s", 0, "00:05", 9, "/dev/shm/x"))
    assert dumpable(anon(1, 2, "---p"))
    assert not dumpable(anon(0, 2 << 20, "---p"))  # an 8 GiB reservation


def test_prot_of() -> None:
    assert prot_of("rwxp") == 7
    assert prot_of("r--p") == 1
    assert prot_of("---p") == 0


def test_subtract_runs() -> None:
    assert subtract([(0, 10)], []) == [(0, 10)]
    assert subtract([(0, 10)], [(0, 10)]) == []
    assert subtract([(0, 10)], [(2 * P, 3)]) == [(0, 2), (5 * P, 5)]
    assert subtract([(0, 4), (10 * P, 4)], [(3 * P, 8)]) == [(0, 3), (11 * P, 3)]
    assert subtract([(5 * P, 1)], [(0, 2), (8 * P, 2)]) == [(5 * P, 1)]


def test_union_and_intersect_runs() -> None:
    assert union([(0, 2)], [(2 * P, 2)]) == [(0, 4)]
    assert union([(4 * P, 2), (0, 1)], [(P, 4)]) == [(0, 6)]
    assert union([], [(P, 1)], [(P, 1)]) == [(P, 1)]
    assert intersect([(0, 10)], [(2 * P, 3), (8 * P, 4)]) == [(2 * P, 3), (8 * P, 2)]
    assert intersect([(0, 2), (4 * P, 2)], [(P, 4)]) == [(P, 1), (4 * P, 1)]
    assert intersect([(0, 2)], []) == []
