"""The store under faults, on real files (issue 11): a writer killed mid-commit, a
full disk (a real size-limited tmpfs, and ENOSPC injected at every write), private
modes under umask 000, a store path under a regular file, and the CLI showing
damage. Build state, damage it, check."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_store import assert_same, commit_new_pack, image, make_meta, make_store, random_pages

from jupyter_chkpt.errors import StoreFull, StoreUnavailable
from jupyter_chkpt.image import PAGE_SIZE, PageRuns
from jupyter_chkpt.store import CleanResult, GcResult, Store, layout, packs
from jupyter_chkpt.store import store as store_mod


def tree(root: Path) -> list[str]:
    """Every path under the store, but its lock."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != "lock")


def big_image(pages: int, seed: int = 7) -> PageRuns:
    """Incompressible pages in one run."""
    return PageRuns(
        memoryview(bytearray(b"".join(random_pages(pages, seed)))), [(0x1000_0000, pages)]
    )


@pytest.fixture(params=[True, False], ids=["O_TMPFILE", "named"])
def tmpfile_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Both ways of writing a pack: nameless until committed, or named and flocked."""
    monkeypatch.setattr(packs, "USE_TMPFILE", request.param)
    return bool(request.param)


# --- a writer killed in the middle of a commit ---------------------------------------


def _commit_and_die(root: str, where: str, use_tmpfile: bool) -> None:
    """In a child: commit, and SIGKILL ourselves at `where`."""
    packs.USE_TMPFILE = use_tmpfile
    store = make_store(Path(root))

    def die(*_: Any, **__: Any) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "writing the pack":  # after some frames are on disk
        real = packs.ordered_parallel

        def some_then_die(fn: Any, items: Any, threads: int) -> Any:
            for i, out in enumerate(real(fn, items, threads)):
                if i == 2:
                    die()
                yield out

        packs.ordered_parallel = some_then_die  # type: ignore[assignment]
    elif where == "pack committed":  # linked, the snapshot not renamed into place yet
        real_rename = os.rename

        def rename(src: Any, dst: Any) -> None:
            if Path(src).name.startswith(layout.TMP_PREFIX):
                die()
            real_rename(src, dst)

        os.rename = rename  # type: ignore[assignment]
    elif where == "writing the manifest":
        real_write = layout.write_file

        def write_file(path: Path, data: Any) -> None:
            if path.name == "manifest.json":
                die()
            real_write(path, data)

        store_mod.layout.write_file = write_file  # type: ignore[assignment]
    store.commit(make_meta(), image(seed=99))
    raise AssertionError("not killed")


@pytest.mark.parametrize("where", ["writing the pack", "writing the manifest", "pack committed"])
def test_commit_killed_leaves_older_snapshots_whole_and_is_cleaned(
    tmp_path: Path, where: str, tmpfile_mode: bool
) -> None:
    store = make_store(tmp_path / "s")
    old, old_pack = commit_new_pack(store, image(seed=1))
    before = tree(store.root)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import test_store_faults as t; "
            "t._commit_and_die(sys.argv[2], sys.argv[3], sys.argv[4] == '1')",
            str(Path(__file__).parent),
            str(store.root),
            where,
            "1" if tmpfile_mode else "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr

    # readers see the older snapshot, whole, and nothing of the interrupted one
    store = make_store(store.root)
    assert [(i.id, i.damage) for i in store.list()] == [(old.id, "")]
    assert_same(store.load(old.id)[1], image(seed=1))

    new = set(tree(store.root)) - set(before)
    left = sorted(p for p in new if not any(p.startswith(q + "/") for q in new))
    cleaned = store.clean()  # what a helper does when it starts
    if where == "writing the pack" and tmpfile_mode:
        assert left == [] and cleaned == CleanResult()  # a nameless pack leaves nothing
    else:
        assert left, "the interrupted commit left nothing: the test did not interrupt it"
        assert sorted(cleaned.removed) == left
        assert cleaned.bytes_freed > 0
        assert cleaned.lines()[0].startswith(f"removed {len(left)} leftover(s)")
    assert tree(store.root) == before
    assert_same(store.load(old.id)[1], image(seed=1))
    assert store.clean() == CleanResult()
    assert store.gc() == GcResult(0, 0, 0)
    assert old_pack.exists()


def test_clean_keeps_an_orphan_pack_a_later_snapshot_needs(tmp_path: Path) -> None:
    """A commit died after committing its pack; before anyone cleaned, another commit
    found its pages there and used them: that pack is no longer debris."""
    store = make_store(tmp_path / "s")
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import test_store_faults as t; "
            "t._commit_and_die(sys.argv[2], 'pack committed', True)",
            str(Path(__file__).parent),
            str(store.root),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    store = make_store(store.root)
    (orphan,) = packs_of(store)
    later = store.commit(make_meta(), image(seed=99))  # the same pages: all deduplicated
    assert later.new_pages == 0
    cleaned = store.clean()
    assert cleaned.removed == (f"snapshots/.tmp-{_tmp_ids(cleaned)[0]}",)
    assert packs_of(store) == [orphan]
    assert_same(store.load(later.id)[1], image(seed=99))


def packs_of(store: Store) -> list[str]:
    return sorted(p.name for p in (store.root / "packs").glob("*.pack"))


def _tmp_ids(cleaned: CleanResult) -> list[str]:
    return [r.removeprefix("snapshots/.tmp-") for r in cleaned.removed if ".tmp-" in r]


# --- a full disk -----------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (needs root, as the CI container runs tests)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_on_a_small_tmpfs(small_fs: Path, tmpfile_mode: bool) -> None:
    store = make_store(small_fs / "store")
    old = store.commit(make_meta(), image(seed=1))
    before, free = tree(store.root), store.free_bytes()
    with pytest.raises(StoreFull) as err:
        store.commit(make_meta(), big_image(3000))  # 12 MiB of incompressible pages
    assert "does not fit in the store" in err.value.message
    assert "nothing was stored" in err.value.message
    assert "jupyter-chkpt rm" in err.value.remedy
    assert tree(store.root) == before  # nothing half-written left behind
    assert store.free_bytes() == free
    assert [i.id for i in store.list()] == [old.id]
    assert_same(store.load(old.id)[1], image(seed=1))
    # what does fit is stored as usual
    fits = store.commit(make_meta(), big_image(200, seed=8))
    assert_same(store.load(fits.id)[1], big_image(200, seed=8))


@pytest.mark.parametrize(
    "step", ["pack", "idx", "pagemap.bin.zst", "manifest.json", "pack.tmp", "relabel"]
)
def test_enospc_at_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, tmpfile_mode: bool
) -> None:
    """ENOSPC (or EDQUOT) injected at each write a commit or relabel makes."""
    store = make_store(tmp_path / "s")
    old = store.commit(make_meta(), image(seed=1), label="old")
    before = tree(store.root)
    full = OSError(errno.EDQUOT if step == "idx" else errno.ENOSPC, "No space left on device")
    real_write_file, real_replace, real_write_all = (
        layout.write_file,
        layout.write_private,
        packs._write_all,
    )

    def write_file(path: Path, data: Any) -> None:
        if path.name == step or (step == "idx" and path.name.endswith(".idx.tmp")):
            raise full
        real_write_file(path, data)

    def write_all(fd: int, data: bytes) -> None:
        if step == "idx":
            raise full
        real_write_all(fd, data)

    def synced(path: Path, data: Any, flags: int, *, sync: bool = False) -> None:
        if step == "relabel":
            raise full
        real_replace(path, data, flags, sync=sync)

    monkeypatch.setattr(layout, "write_file", write_file)
    monkeypatch.setattr(packs, "_write_all", write_all)
    monkeypatch.setattr(layout, "write_private", synced)
    if step == "pack":
        monkeypatch.setattr(packs, "_compressor", _failing_compressor(full))
    with pytest.raises(StoreFull):
        if step == "relabel":
            store.set_label(old.id, "new")
        else:
            store.commit(make_meta(), image(seed=2))
    monkeypatch.undo()
    assert tree(store.root) == before
    assert [(i.id, i.label, i.damage) for i in store.list()] == [(old.id, "old", "")]
    assert_same(store.load(old.id)[1], image(seed=1))
    assert store.clean() == CleanResult()


def _failing_compressor(error: OSError) -> Any:
    class Failing:
        def compress(self, data: Any) -> bytes:
            raise error

    return lambda level: Failing()


def test_a_snapshot_that_clearly_does_not_fit_is_refused_before_the_freeze(
    small_fs: Path,
) -> None:
    """engine/space.py: the page map alone (16 bytes a page) exceeds what is free."""
    from jupyter_chkpt.engine import checkpoint, space

    store = make_store(small_fs / "store")
    target = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time; b = os.urandom(96 << 20); print('ready', flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert target.stdout is not None and target.stdout.readline() == "ready\n"
        est = space.estimate(target.pid, None, None)
        assert est is not None and est.pages >= (96 << 20) // PAGE_SIZE
        # leave less than the page map needs
        filler = small_fs / "filler"
        with open(filler, "wb") as f, contextlib.suppress(OSError):
            f.write(b"\0" * (store.free_bytes() - est.needed // 2))
        before = tree(store.root)
        with pytest.raises(StoreFull, match=r"need at least .* nothing was done") as err:
            checkpoint(target.pid, store)
        assert "its page map" in err.value.message
        assert tree(store.root) == before
        assert target.poll() is None  # never frozen, still running
        filler.unlink()
    finally:
        target.kill()
        target.wait()


def test_estimate_counts_written_pages_at_the_last_ratio() -> None:
    from jupyter_chkpt.engine import space
    from jupyter_chkpt.store import SnapshotInfo

    info = SnapshotInfo(
        id="0badcafe",
        pid=1,
        created=0.0,
        label="",
        parent=None,
        mem_bytes=0,
        stored_bytes=100 * PAGE_SIZE // 4,
        npages=200,
        new_pages=100,
        stats={},
    )
    assert space.last_ratio(info) == 0.25
    assert space.last_ratio(None) is None
    est = space.Estimate(pages=1000, written=400, ratio=0.25, needed=0)
    assert "400 pages written since the last snapshot" in est.describe()


# --- permissions and an unusable store path --------------------------------------------


def test_private_modes_under_umask_000(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        root = tmp_path / "a" / "b" / "store"
        store = make_store(root)
        store.commit(make_meta(), image(seed=1), label="x")
        info = store.commit(make_meta(), image(seed=2))
        store.set_label(info.id, "relabelled")
    finally:
        os.umask(old)
    for d in (tmp_path / "a", tmp_path / "a" / "b", root):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    for p in root.rglob("*"):
        want = 0o700 if p.is_dir() else 0o600
        assert stat.S_IMODE(p.stat().st_mode) == want, p


def test_store_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="Not a directory") as err:
        Store(tmp_path / "file" / "store")
    assert "--store DIR" in err.value.remedy
    with pytest.raises(StoreUnavailable, match="is not a directory"):
        Store(tmp_path / "file")
    res = subprocess.run(
        [sys.executable, "-m", "jupyter_chkpt", "ls", "--store", str(tmp_path / "file" / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "cannot use snapshot store" in res.stderr and "--store DIR" in res.stderr


# --- the CLI shows damage ---------------------------------------------------------------


def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [sys.executable, "-m", "jupyter_chkpt", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ok:
        assert res.returncode == 0, res.stderr
    return res


def test_cli_shows_damage_and_gc_says_what_it_kept(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    a, a_pack = commit_new_pack(store, image(seed=1))
    b = store.commit(make_meta(), image(seed=2))
    c = store.commit(make_meta(), image(seed=3))
    a_pack.with_suffix(".idx").unlink()
    manifest = store.root / "snapshots" / c.id / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:-40])
    s = ["--store", str(store.root)]

    listed = {i["id"]: i for i in json.loads(cli("ls", *s, "--json").stdout)}
    assert listed[a.id]["damage"].startswith("42 of its pages are in no pack")
    assert listed[b.id]["damage"].startswith("2 of its pages are in no pack")  # a's zero page
    assert listed[c.id]["damage"].startswith("manifest.json is truncated")
    assert listed[c.id]["pid"] == c.pid  # made out of what is left of it
    text = cli("ls", *s).stdout
    assert "STATE" in text and text.count("DAMAGED") == 3
    assert f"{c.id} cannot be restored: manifest.json is truncated" in text
    assert "jupyter-chkpt gc" in text

    report = cli("check", *s).stdout
    assert "3 snapshot(s), 3 damaged" in report
    assert f"{a.id} cannot be restored: 42 of its pages" in report
    health = json.loads(cli("check", *s, "--json", ok=False).stdout)["store"]
    assert {d["id"] for d in health["damaged"]} == {a.id, b.id, c.id}

    # gc cannot know what c uses: it refuses, and says what to do
    res = cli("gc", *s, ok=False)
    assert res.returncode == 1 and c.id in res.stderr and "Traceback" not in res.stderr
    cli("rm", c.id, *s)
    out = cli("gc", *s).stdout
    assert f"repaired: packs/{a_pack.stem}.idx rebuilt from its pack" in out
    assert "kept 2 pack(s) whole" in out and "the pages of 2 snapshot(s)" in out
    assert "DAMAGED" not in cli("ls", *s).stdout
    assert_same(Store(store.root).load(a.id)[1], image(seed=1))


def test_a_starting_helper_cleans_the_store(helper_dirs: tuple[Path, Path]) -> None:
    """The debris of a helper killed mid-commit goes when the next helper starts,
    which says so (log and status); the older snapshot is untouched."""
    import time

    from jupyter_chkpt.helper.client import HelperClient

    root = helper_dirs[1]
    store = make_store(root)
    old = store.commit(make_meta(), image(seed=1))
    before = tree(root)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import test_store_faults as t; "
            "t._commit_and_die(sys.argv[2], 'pack committed', True)",
            str(Path(__file__).parent),
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert tree(root) != before
    with HelperClient() as c:  # starts a helper on this store
        deadline = time.monotonic() + 60
        while not (cleaned := c.call("status", timeout=10)["store"]["cleaned_at_start"]):
            assert time.monotonic() < deadline, "the helper never reported cleaning"
            time.sleep(0.05)
    assert cleaned[0].startswith("removed 3 leftover(s) of interrupted operations")
    assert tree(root) == before
    status = cli("helper", "status").stdout
    assert "at start, the helper removed 3 leftover(s)" in status
    assert_same(Store(root).load(old.id)[1], image(seed=1))


def test_kernel_listing_says_why_a_snapshot_is_damaged(tmp_path: Path) -> None:
    """%snapshots renders what the helper lists: a damaged snapshot is there, marked."""
    from jupyter_chkpt.kernel import tree

    store = make_store(tmp_path / "s")
    a, a_pack = commit_new_pack(store, image(seed=1))
    a_pack.unlink()
    (listed,) = make_store(store.root).list()
    line = tree.describe(listed.to_json())
    assert line.startswith(a.id)
    assert "DAMAGED: 42 of its pages are in no pack of the store" in line
    assert "DAMAGED" not in tree.describe({**listed.to_json(), "damage": ""})


def test_helper_directory_and_its_parents_are_private_under_umask_000(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_chkpt.helper import paths

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "run" / "time"))
    old = os.umask(0)
    try:
        d = paths.helper_dir()
    finally:
        os.umask(old)
    for p in (tmp_path / "run", tmp_path / "run" / "time", d):
        assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
