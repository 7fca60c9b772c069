"""The snapshot store on real files: round trips, dedup, gc, corruption, crashes, permissions."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import stat
from pathlib import Path

import pytest

from jupyter_chkpt.errors import (
    AmbiguousSnapshot,
    CorruptSnapshot,
    StoreError,
    StorePermissionError,
    UnknownSnapshot,
    UnsupportedFormat,
)
from jupyter_chkpt.image import (
    PAGE_SIZE,
    ImageMeta,
    Mapping,
    PageRuns,
    ProcessIdentity,
    ThreadImage,
)
from jupyter_chkpt.store import CleanResult, GcResult, SnapshotInfo, Store

HEAP = 0x5555_0000_0000
STACK = 0x7FFD_0000_0000


def make_store(root: Path) -> Store:
    return Store(root, frame_pages=8, threads=2)  # small frames: many of them


def make_meta(pid: int = 4242) -> ImageMeta:
    return ImageMeta(
        process=ProcessIdentity(
            pid=pid, start_time=777, boot_id="b00t", exe="/usr/bin/python3", uid=os.getuid()
        ),
        brk=HEAP + 0x100000,
        start_brk=HEAP,
        cwd="/home/u",
        threads=[
            ThreadImage(
                tid=pid,
                regs={"rip": 0x401000, "rsp": STACK + 0x8000, "rax": 2**64 - 1},
                xstate=bytes(range(256)) * 4,
                sigmask=0,
                name="python3",
            )
        ],
        mappings=[
            Mapping(HEAP, HEAP + 0x100000, "rw-p", 0, "00:00", 0, "[heap]"),
            Mapping(STACK, STACK + 0x10000, "rw-p", 0, "00:00", 0, "[stack]"),
        ],
        stats={"pause_s": 0.012},
    )


def random_pages(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(PAGE_SIZE) for _ in range(n)]


def make_pages(runs: list[tuple[int, int]], contents: list[bytes]) -> PageRuns:
    assert sum(n for _, n in runs) == len(contents)
    return PageRuns(memoryview(bytearray(b"".join(contents))), runs)


def image(seed: int = 1, n: int = 40) -> PageRuns:
    """`n` heap pages in two runs (with repeats and zero pages) plus two stack pages."""
    contents = random_pages(n, seed)
    contents[5] = contents[6] = bytes(PAGE_SIZE)
    contents[7] = contents[3]
    contents += random_pages(2, seed + 1000)
    half = n // 2
    return make_pages(
        [(HEAP, half), (HEAP + (half + 3) * PAGE_SIZE, n - half), (STACK + 0x4000, 2)], contents
    )


def assert_same(a: PageRuns, b: PageRuns) -> None:
    assert a.runs == b.runs
    assert bytes(a.buffer[: a.nbytes]) == bytes(b.buffer[: b.nbytes])


def pack_files(root: Path, ext: str) -> list[Path]:
    return sorted((root / "packs").glob(f"*.{ext}"))


def test_round_trip(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    meta, pages = make_meta(), image()
    info = store.commit(meta, pages, label="first")
    assert isinstance(info, SnapshotInfo)
    assert len(info.id) == 8 and int(info.id, 16) >= 0
    assert (info.pid, info.label, info.parent) == (4242, "first", None)
    assert (info.npages, info.mem_bytes) == (42, 42 * PAGE_SIZE)
    assert info.new_pages == 40  # 42 minus one repeated zero page and one repeated page
    assert info.stats == {"pause_s": 0.012}

    loaded_meta, loaded = store.load(info.id)
    assert loaded_meta == meta
    assert_same(loaded, pages)
    assert store.load_meta(info.id) == meta
    assert store.info(info.id) == info
    assert json.loads(json.dumps(info.to_json()))["id"] == info.id
    m = store.manifest(info.id)
    assert (m["format"], m["version"], m["id"]) == ("jupyter-chkpt-snapshot", "1.3", info.id)


def test_round_trip_from_a_fresh_store_object(tmp_path: Path) -> None:
    info = make_store(tmp_path / "s").commit(make_meta(), image())
    _, loaded = Store(tmp_path / "s").load(info.id)
    assert_same(loaded, image())


def test_chosen_id_and_tags(tmp_path: Path) -> None:
    """The kernel picks the id up front (so %checkpoint can return it) and tags the snapshot."""
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), image(), snap_id="0badcafe", tags={"execution_count": 7})
    assert info.id == "0badcafe" and info.tags == {"execution_count": 7}
    assert store.info("0badcafe").tags == {"execution_count": 7}
    with pytest.raises(StoreError, match="already taken"):
        store.commit(make_meta(), image(), snap_id="0badcafe")
    with pytest.raises(ValueError, match="not a snapshot id"):
        store.commit(make_meta(), image(), snap_id="../etc")
    assert [i.id for i in store.list()] == ["0badcafe"]  # the refused ones left nothing


def test_empty_image(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), PageRuns(memoryview(b""), []))
    assert (info.npages, info.stored_bytes) == (0, 0)
    _, pages = store.load(info.id)
    assert (pages.runs, len(pages.buffer)) == ([], 0)


def test_runs_come_back_maximal_within_mappings(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    meta = make_meta()
    end = meta.mappings[0].end
    meta.mappings.append(Mapping(end, end + 0x4000, "r--p", 0, "00:00", 0, ""))
    contents = random_pages(6, 3)
    # split inside the heap by the engine, contiguous across the heap's end
    pages = make_pages([(end - 4 * PAGE_SIZE, 2), (end - 2 * PAGE_SIZE, 4)], contents)
    _, loaded = store.load(store.commit(meta, pages).id)
    assert loaded.runs == [(end - 4 * PAGE_SIZE, 4), (end, 2)]
    assert bytes(loaded.buffer) == b"".join(contents)


def test_bad_input_is_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    contents = random_pages(4, 1)
    with pytest.raises(ValueError):
        store.commit(make_meta(), make_pages([(HEAP + 8, 4)], contents))
    with pytest.raises(ValueError):
        store.commit(make_meta(), make_pages([(HEAP, 2), (HEAP + PAGE_SIZE, 2)], contents))
    with pytest.raises(ValueError):
        store.commit(make_meta(), PageRuns(memoryview(bytes(PAGE_SIZE)), [(HEAP, 2)]))
    with pytest.raises(ValueError):
        store.commit(make_meta(), make_pages([(HEAP, 4)], contents), parent="nope")
    assert store.list() == []


def test_dedup_across_snapshots(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    first = store.commit(make_meta(), image())
    before = store.usage()
    second = store.commit(make_meta(), image(), parent=first.id)
    assert (second.new_pages, second.stored_bytes, second.parent) == (0, 0, first.id)
    after = store.usage()
    assert after["packs"] == before["packs"] == 1
    assert after["unique_pages"] == before["unique_pages"] == 40
    # only a manifest and a pagemap were added
    assert after["bytes_on_disk"] - before["bytes_on_disk"] < 8192
    _, loaded = store.load(second.id)
    assert_same(loaded, image())

    # half the pages changed: only those are stored
    contents = random_pages(40, 1)
    contents[5] = contents[6] = bytes(PAGE_SIZE)
    contents[7] = contents[3]
    contents[20:] = random_pages(20, 99)
    third = store.commit(make_meta(), make_pages([(HEAP, 40)], contents))
    assert third.new_pages == 20
    assert 20 * PAGE_SIZE < third.stored_bytes < 22 * PAGE_SIZE  # random pages do not compress


def test_delete_and_gc(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    a = store.commit(make_meta(), image(seed=1))
    b_pages = image(seed=1)
    b_pages.buffer[: 10 * PAGE_SIZE] = b"".join(random_pages(10, 50))  # shares 32 pages with a
    b = store.commit(make_meta(), b_pages)
    c = store.commit(make_meta(), image(seed=2))  # shares the zero page only
    assert store.gc() == GcResult(0, 0, 0)

    store.delete(a.id)
    assert [i.id for i in store.list()] == [b.id, c.id]
    before = store.usage()["bytes_on_disk"]
    result = store.gc()
    # a's pack is partly dead (b uses most of it): rewritten
    assert (result.packs_removed, result.packs_rewritten) == (0, 1)
    assert result.bytes_freed > 6 * PAGE_SIZE  # 7 random pages and a zero page died
    assert store.usage()["bytes_on_disk"] == before - result.bytes_freed
    assert_same(store.load(b.id)[1], b_pages)
    assert_same(store.load(c.id)[1], image(seed=2))

    store.delete(c.id)
    result = store.gc()
    # c's own pack goes; the zero page it shared with a goes from the rewritten pack
    assert (result.packs_removed, result.packs_rewritten) == (1, 1)
    assert_same(store.load(b.id)[1], b_pages)

    store.delete(b.id)
    store.gc()
    assert store.usage() == {"snapshots": 0, "packs": 0, "bytes_on_disk": 0, "unique_pages": 0}
    assert pack_files(store.root, "*") == []


def test_gc_merges_duplicated_pages(tmp_path: Path) -> None:
    """A gc interrupted after writing its new pack leaves pages in two packs."""
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), image())
    (pack,) = pack_files(store.root, "pack")
    (idx,) = pack_files(store.root, "idx")
    for path in (pack, idx):
        path.with_name("0" * 16 + path.suffix).write_bytes(path.read_bytes())
    assert store.usage()["packs"] == 2
    result = store.gc()
    assert (result.packs_removed, result.packs_rewritten) == (1, 0)
    assert_same(store.load(info.id)[1], image())


def test_gc_refuses_to_guess_for_an_unreadable_snapshot(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    a = store.commit(make_meta(), image(seed=1))
    b = store.commit(make_meta(), image(seed=2))
    (store.root / "snapshots" / b.id / "pagemap.bin.zst").write_bytes(b"garbage")
    store.delete(a.id)
    with pytest.raises(CorruptSnapshot, match=b.id):
        store.gc()
    assert len(pack_files(store.root, "pack")) == 2


# --- corruption -------------------------------------------------------------------


def test_flipped_byte_in_a_pack(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), image())
    (pack,) = pack_files(store.root, "pack")
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x01
    pack.write_bytes(data)
    with pytest.raises(CorruptSnapshot, match=info.id) as err:
        store.load(info.id)
    assert "rm ID" in str(err.value)  # the remedy comes along
    store.load_meta(info.id)  # the manifest is fine


@pytest.mark.parametrize("where", ["frame header", "truncated pack"])
def test_damaged_frame(tmp_path: Path, where: str) -> None:
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), image())
    (pack,) = pack_files(store.root, "pack")
    data = bytearray(pack.read_bytes())
    if where == "frame header":
        data[4] ^= 0xFF  # frame header descriptor of the first frame
    else:
        del data[-100:]
    pack.write_bytes(data)
    with pytest.raises(CorruptSnapshot, match=f"snapshot {info.id}: .*frame"):
        store.load(info.id)


def test_truncated_manifest(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), image())
    path = store.root / "snapshots" / info.id / "manifest.json"
    path.write_bytes(path.read_bytes()[:-40])
    for read in (store.load, store.load_meta, store.info, store.manifest):
        with pytest.raises(
            CorruptSnapshot, match=f"snapshot {info.id}: manifest.json is truncated"
        ):
            read(info.id)
    # listed, with why it cannot be restored and what could be made out of it
    (listed,) = store.list()
    assert (listed.id, listed.pid, listed.created) == (info.id, info.pid, info.created)
    assert listed.damage.startswith("manifest.json is truncated")
    assert store.list(info.pid) == [listed]


def test_altered_manifest(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), image())
    path = store.root / "snapshots" / info.id / "manifest.json"
    m = json.loads(path.read_bytes())
    m["meta"]["threads"][0]["regs"]["rip"] += 1
    path.write_text(json.dumps(m))
    with pytest.raises(CorruptSnapshot, match="checksum"):
        store.load_meta(info.id)


def test_unknown_major_version(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), image())
    path = store.root / "snapshots" / info.id / "manifest.json"
    m = json.loads(path.read_bytes())
    m["version"] = "2.0"
    path.write_text(json.dumps(m))
    with pytest.raises(UnsupportedFormat, match=r"2\.0"):
        store.load(info.id)


def test_pagemap_checksum_mismatch(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), image())
    path = store.root / "snapshots" / info.id / "pagemap.bin.zst"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(data)
    with pytest.raises(CorruptSnapshot, match=r"pagemap\.bin\.zst does not match its checksum"):
        store.load(info.id)


@pytest.mark.parametrize("ext", ["pack", "idx", "both"])
def test_deleted_pack(tmp_path: Path, ext: str) -> None:
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), image())
    for path in pack_files(store.root, "*"):
        if ext in ("both", path.suffix[1:]):
            path.unlink()
    with pytest.raises(
        CorruptSnapshot, match=f"snapshot {info.id}: 42 of its pages are in no pack"
    ):
        store.load(info.id)
    # the next commit stores the pages again, and that snapshot is whole
    again = store.commit(make_meta(), image())
    assert again.new_pages == 40
    assert_same(store.load(again.id)[1], image())


# --- crashes ----------------------------------------------------------------------


def test_leftovers_of_a_crash_are_invisible_and_collected(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), image())
    snaps, packs = store.root / "snapshots", store.root / "packs"
    half = snaps / ".tmp-0badc0de"
    half.mkdir()
    (half / "pagemap.bin.zst").write_bytes(b"x" * 100)
    (snaps / ".del-01234567").mkdir()
    (snaps / info.id / "manifest.json.tmp").write_bytes(b"{")
    (packs / "00112233aabbccdd.pack").write_bytes(b"y" * 1000)  # crashed before its idx
    (packs / "00112233aabbccde.idx.tmp").write_bytes(b"z" * 10)
    (packs / "00112233aabbccdf.idx").write_bytes(b"w" * 32)  # its pack is gone

    assert [i.id for i in store.list()] == [info.id]
    assert store.usage()["packs"] == 1
    with pytest.raises(UnknownSnapshot):
        store.resolve("0badc0de")
    result = store.gc()
    assert (result.packs_removed, result.packs_rewritten) == (0, 0)
    assert result.bytes_freed == 100 + 1 + 1000 + 10 + 32
    # reported: what was removed (the pack holds no page and nothing lacks one)
    assert sorted(result.cleaned.removed) == [
        "packs/00112233aabbccdd.pack",
        "packs/00112233aabbccde.idx.tmp",
        "packs/00112233aabbccdf.idx",
        "snapshots/.del-01234567",
        "snapshots/.tmp-0badc0de",
        f"snapshots/{info.id}/manifest.json.tmp",
    ]
    assert (result.cleaned.repaired, result.cleaned.damaged, result.damaged) == ((), (), ())
    assert sorted(os.listdir(snaps)) == [info.id]
    assert sorted(os.listdir(snaps / info.id)) == ["manifest.json", "pagemap.bin.zst"]
    assert len(os.listdir(packs)) == 2
    assert_same(store.load(info.id)[1], image())


def test_failed_commit_leaves_nothing_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(tmp_path / "s")
    real_rename = os.rename

    def crash(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        if Path(dst).parent.name == "snapshots":
            raise OSError("disk on fire")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="disk on fire"):
        store.commit(make_meta(), image())
    monkeypatch.undo()
    assert store.list() == []
    assert os.listdir(store.root / "snapshots") == []
    # the pack was committed under the same lock and taken back with the snapshot
    assert os.listdir(store.root / "packs") == []
    assert store.gc() == GcResult(0, 0, 0)


# --- permissions ------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_modes(tmp_path: Path) -> None:
    store = make_store(tmp_path / "new" / "s")
    info = store.commit(make_meta(), image())
    store.set_label(info.id, "x")
    assert mode(store.root) == 0o700
    files = [Path(d) / f for d, _, fs in os.walk(store.root) for f in fs]
    assert len(files) == 5  # lock, pack, idx, manifest, pagemap
    assert {mode(f) for f in files} == {0o600}
    assert {mode(Path(d)) for d, _, _ in os.walk(store.root)} == {0o700}


def test_too_open_root_is_fixed(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    root.chmod(0o755)
    make_store(root)
    assert mode(root) == 0o700


def test_root_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "s"
    root.mkdir(mode=0o700)
    monkeypatch.setattr(os, "geteuid", lambda: root.stat().st_uid + 1)
    with pytest.raises(StorePermissionError, match="belongs to uid"):
        Store(root)


def test_root_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("JUPYTER_CHKPT_STORE", raising=False)
    assert Store().root == tmp_path / "data" / "chkpt" / "store"
    monkeypatch.setenv("JUPYTER_CHKPT_STORE", str(tmp_path / "env"))
    assert Store().root == tmp_path / "env"
    assert Store(tmp_path / "arg").root == tmp_path / "arg"


# --- ids, labels, listing ---------------------------------------------------------


def test_resolve(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), image())
    other = "ffffffff" if info.id != "ffffffff" else "eeeeeeee"
    assert store.resolve(info.id) == info.id
    assert store.resolve(info.id[:4]) == info.id
    assert store.resolve(f" {info.id[:6].upper()}") == info.id
    assert store.info(info.id[:5]) == info
    with pytest.raises(AmbiguousSnapshot, match="too short"):
        store.resolve(info.id[:3])
    with pytest.raises(UnknownSnapshot, match="not a snapshot id"):
        store.resolve("xyz!")
    with pytest.raises(UnknownSnapshot, match=f"no snapshot '{other}'"):
        store.resolve(other)
    with pytest.raises(UnknownSnapshot):
        store.delete(other)


def test_resolve_ambiguous(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), image())
    snaps = store.root / "snapshots"
    twin = info.id[:6] + ("00" if info.id[6:] != "00" else "11")
    (snaps / twin).mkdir()
    with pytest.raises(AmbiguousSnapshot, match=f"matches 2 snapshots: .*{info.id}"):
        store.resolve(info.id[:6])
    assert store.resolve(info.id) == info.id


def test_label(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    info = store.commit(make_meta(), image(), label="before")
    store.set_label(info.id[:5], "after: ünïcode")
    assert store.info(info.id).label == "after: ünïcode"
    assert Store(store.root).list()[0].label == "after: ünïcode"
    assert_same(store.load(info.id)[1], image())


def test_list_by_pid_oldest_first(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    ids = [store.commit(make_meta(pid), image()).id for pid in (10, 20, 10, 30, 10)]
    assert [i.id for i in store.list()] == ids
    assert [i.id for i in store.list(10)] == [ids[0], ids[2], ids[4]]
    assert [i.pid for i in store.list(20)] == [20]
    assert store.list(99) == []
    created = [i.created for i in store.list()]
    assert created == sorted(created)


# --- several processes ------------------------------------------------------------


def commit_several(root: str, seed: int, n: int) -> list[str]:
    """Commits that share a page with the other process's, each followed by a gc."""
    store = make_store(Path(root))
    ids = []
    for i in range(n):
        pages = image(seed=seed + i)
        pages.buffer[:PAGE_SIZE] = image(seed=1).buffer[:PAGE_SIZE]
        ids.append(store.commit(make_meta(pid=seed), pages).id)
        store.gc()
    return ids


def test_concurrent_commits_from_two_processes(tmp_path: Path) -> None:
    root = tmp_path / "s"
    make_store(root)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(commit_several, [(str(root), 100, 15), (str(root), 200, 15)])
    store = make_store(root)
    assert sorted(i.id for i in store.list()) == sorted(results[0] + results[1])
    for seed, ids in ((100, results[0]), (200, results[1])):
        for i, snap_id in enumerate(ids):
            _, loaded = store.load(snap_id)
            assert bytes(loaded.buffer[PAGE_SIZE:]) == bytes(
                image(seed=seed + i).buffer[PAGE_SIZE:]
            )
    assert store.gc() == GcResult(0, 0, 0)


def test_gc_leaves_alone_a_pack_a_commit_is_about_to_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without O_TMPFILE a commit writes its named pack before it takes the store lock,
    holding the pack's own flock until the snapshot is committed: gc must not take it
    for debris or dead."""
    from jupyter_chkpt.store import packs

    monkeypatch.setattr(packs, "USE_TMPFILE", False)
    store = Store(tmp_path / "s")
    pages = [(bytes([i]) * 4096) for i in range(3)]
    hashes = packs.hash_pages(memoryview(b"".join(pages)), 3)
    written = packs.write_pack(
        store.root / "packs", [(hashes, b"".join(pages))], level=1, threads=1
    )
    pack = store.root / "packs" / f"{written.pack_id}.pack"
    assert packs.pack_in_use(store.root / "packs", written.pack_id)
    store.gc()
    assert pack.exists(), "gc removed a pack a commit holds"
    assert store.clean() == CleanResult()
    assert pack.exists(), "clean removed a pack a commit holds"
    written.release()  # its writer died before committing it
    assert not packs.pack_in_use(store.root / "packs", written.pack_id)
    cleaned = store.clean()
    assert cleaned.removed == (
        f"packs/{written.pack_id}.idx.tmp",
        f"packs/{written.pack_id}.pack",
    )
    assert not pack.exists()


def test_a_pack_being_written_is_nameless(tmp_path: Path) -> None:
    """With O_TMPFILE a pack and its idx have no name until the snapshot that uses
    them is committed: a writer that dies leaves nothing anyone has to clean."""
    from jupyter_chkpt.store import packs

    store = Store(tmp_path / "s")
    pages = b"".join(bytes([i]) * 4096 for i in range(3))
    written = packs.write_pack(
        store.root / "packs", [(packs.hash_pages(memoryview(pages), 3), pages)], level=1, threads=1
    )
    assert not written.named and written.idx_fd >= 0
    assert os.listdir(store.root / "packs") == []
    written.release()  # the writer dies
    assert os.listdir(store.root / "packs") == []
    assert store.clean() == CleanResult()


# --- a lost or damaged pack index (issue 11: gc freed a live snapshot's only pages) ---


def damage_file(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "deleted":
        path.unlink()
        return
    if how == "truncated":
        del data[len(data) // 2 :]
    elif how == "flipped":
        data[len(data) - 7] ^= 0x10
    elif how == "emptied":
        data.clear()
    path.write_bytes(data)


def commit_new_pack(store: Store, pages: PageRuns) -> tuple[SnapshotInfo, Path]:
    """Commit; the snapshot and the one new pack it wrote."""
    before = set(pack_files(store.root, "pack"))
    info = store.commit(make_meta(), pages)
    (pack,) = set(pack_files(store.root, "pack")) - before
    return info, pack


@pytest.mark.parametrize("how", ["deleted", "truncated", "flipped", "emptied"])
def test_gc_rebuilds_a_lost_idx_from_its_pack(tmp_path: Path, how: str) -> None:
    store = make_store(tmp_path / "s")
    a, a_pack = commit_new_pack(store, image(seed=1))
    doomed, doomed_pack = commit_new_pack(store, image(seed=2))
    b, b_pack = commit_new_pack(store, image(seed=3))
    store.delete(doomed.id)
    for pack in (a_pack, doomed_pack):
        damage_file(pack.with_suffix(".idx"), how)
    # as another process sees it (one that read the idx before it was damaged in place
    # still finds the pages through what it read, which is right: the pack is whole)
    store = make_store(store.root)

    # the snapshot is listed as damaged, with why and what to do
    listed = {i.id: i for i in store.list()}
    assert listed[a.id].damage == (
        "42 of its pages are in no pack of the store (the first at 0x555500000000); "
        "2 pack(s) of the store have a missing or damaged idx"
    )
    # b's zero page was a's already
    assert listed[b.id].damage.startswith("2 of its pages are in no pack of the store")
    assert store.check(a.id) == listed[a.id].damage
    with pytest.raises(CorruptSnapshot, match="in no pack") as err:
        store.load_pagemap(a.id)
    assert "jupyter-chkpt gc" in err.value.remedy

    result = store.gc()
    # a's idx is rebuilt from its pack; the deleted snapshot's pack, which nothing
    # needs, goes; b's pack is untouched
    (repaired,) = result.cleaned.repaired
    assert repaired.startswith(f"packs/{a_pack.stem}.idx rebuilt from its pack (40 pages;")
    assert f"packs/{doomed_pack.stem}.pack" in result.cleaned.removed
    assert result.damaged == () and result.cleaned.damaged == ()
    assert sorted(p.name for p in pack_files(store.root, "*")) == sorted(
        [a_pack.name, a_pack.stem + ".idx", b_pack.name, b_pack.stem + ".idx"]
    )
    assert [i.damage for i in store.list()] == ["", ""]
    assert_same(store.load(a.id)[1], image(seed=1))
    assert_same(store.load(b.id)[1], image(seed=3))
    assert store.gc() == GcResult(0, 0, 0)


@pytest.mark.parametrize("pack_damage", ["first frame", "tail"])
def test_gc_keeps_a_pack_it_cannot_read_without_its_idx(tmp_path: Path, pack_damage: str) -> None:
    """The idx is gone and the pack cannot be read (whole): pages a snapshot needs may
    be in it, so gc removes no pack, says why and what to do."""
    store = make_store(tmp_path / "s")
    a, a_pack = commit_new_pack(store, image(seed=1))
    doomed, doomed_pack = commit_new_pack(store, image(seed=2))
    store.delete(doomed.id)  # its pack is dead: gc would remove it
    a_pack.with_suffix(".idx").unlink()
    data = bytearray(a_pack.read_bytes())
    if pack_damage == "first frame":
        data[4] ^= 0xFF  # the first frame's header
    else:
        del data[-50:]  # the last frame loses its end
    a_pack.write_bytes(data)
    store = make_store(store.root)

    with pytest.raises(CorruptSnapshot, match=f"snapshot\\(s\\) {a.id} use .* page\\(s\\)") as err:
        store.gc()
    assert "gc stopped before removing any pack" in err.value.message
    assert "jupyter-chkpt rm" in err.value.remedy
    # nothing was removed, not even the dead pack (partial data; a backup may come back)
    assert doomed_pack.exists() and a_pack.read_bytes() == data
    (listed,) = store.list()
    assert "of its pages are in no pack of the store" in listed.damage
    with pytest.raises(CorruptSnapshot, match="in no pack"):
        store.load(a.id)

    # once the damaged snapshot is deleted, gc frees everything
    store.delete(a.id)
    result = store.gc()
    assert result.damaged == ()
    assert pack_files(store.root, "*") == []


def test_clean_rebuilds_an_idx_without_a_gc(tmp_path: Path) -> None:
    """clean() (what a helper runs when it starts) repairs too, and removes no pack
    with pages a snapshot uses; a pack it holds the only pages of is rebuilt, even
    when another pack of the store is unreadable."""
    store = make_store(tmp_path / "s")
    a, a_pack = commit_new_pack(store, image(seed=1))
    a_pack.with_suffix(".idx").unlink()
    (store.root / "packs" / ("f" * 16 + ".pack")).write_bytes(b"not zstd at all" * 100)
    store = make_store(store.root)
    cleaned = store.clean()
    assert cleaned.removed == (f"packs/{'f' * 16}.pack",)
    assert cleaned.repaired == (
        f"packs/{a_pack.stem}.idx rebuilt from its pack (40 pages; it had no idx)",
    )
    assert cleaned.lines()[0].startswith("removed 1 leftover(s) of interrupted operations")
    assert_same(store.load(a.id)[1], image(seed=1))
    assert store.clean() == CleanResult()
