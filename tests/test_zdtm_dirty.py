"""Dirty-page tracking (py_dirty.py): an incremental image equals a full image taken at
the same moment, page for page; restores in any order bring memory back exactly.

The two images come from one freeze: the tracker's incremental capture, then a
full capture with no tracker. Memory changes in every way a tracker could miss:
random writes, MADV_DONTNEED (with and without rewriting), munmap + mmap at the
same address, mremap, mprotect, fork, transparent huge pages, shared memory written
by a child, read faults; with threads scribbling until the freeze.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import xxhash
import zdtm

from jupyter_chkpt.engine import runs
from jupyter_chkpt.engine.dump import capture
from jupyter_chkpt.engine.freeze import frozen
from jupyter_chkpt.engine.keeper import FdKeeper
from jupyter_chkpt.engine.restore import restore
from jupyter_chkpt.engine.tracking import Tracking, present_pages
from jupyter_chkpt.image import PageMap, PageRuns
from jupyter_chkpt.proc.maps import read_maps
from jupyter_chkpt.proc.memory import StagingBuffer

pytestmark = pytest.mark.timeout(300)

STEPS = [
    "write 2000",
    "dontneed",
    "rewrite",
    "remap",
    "mremap",
    "mprotect",
    "fork",
    "huge",
    "shared",
    "readfault",
    "write 50",
]
ZERO = np.frombuffer(xxhash.xxh3_128_digest(bytes(4096)), "V16")[0]


@pytest.fixture
def tracking():
    t = Tracking()
    yield t
    t.close()


def every_page(fz) -> PageRuns:
    """What memory holds, read without injecting anything (a capture's injections come
    after its reads, but they can change memory: the kernel updates rseq areas)."""
    present = present_pages(fz.pid, read_maps(fz.pid)).present
    buf = memoryview(bytearray(runs.npages(present) * 4096))
    off = 0
    for vaddr, n in present:
        fz.mem.read_into(vaddr, buf[off : off + n * 4096])
        off += n * 4096
    return PageRuns(buf, present)


def both(
    pid: int, store, tracking: Tracking, keeper: FdKeeper
) -> tuple[PageMap, PageMap, int, int]:
    """One freeze: every page as it is, then the tracker's (incremental) image; stored."""
    with frozen(pid) as fz:
        tracker = tracking.ensure(fz, keeper)
        assert tracker is not None, tracking.unavailable
        base = tracker.base
        full = every_page(fz)
        inc = capture(fz, StagingBuffer(), tracker=tracker, rearm=True)
    info, pm_inc = store.commit_image(
        inc.meta, inc.contents[0], present=inc.present if base else None, base=base
    )
    _, pm_full = store.commit_image(inc.meta, full)
    tracker.set_base(info.id, pm_inc)
    return pm_inc, pm_full, inc.nbytes, full.nbytes


def assert_same(a: PageMap, b: PageMap, what: str = "", pid: int = 0) -> None:
    extra = np.setxor1d(a.vaddrs, b.vaddrs)
    assert not len(extra), f"{what}: pages {[hex(int(v)) for v in extra[:8]]} in one image only"
    bad = [int(v) for v in a.vaddrs[a.hashes != b.hashes]]
    if bad and pid:
        with open(f"/proc/{pid}/maps") as f:
            lines = [ln.strip() for ln in f]
        where = {
            ln
            for v in bad
            for ln in lines
            if int(ln.split("-")[0], 16) <= v < int(ln.split()[0].split("-")[1], 16)
        }
        what += f"; in mappings {sorted(where)}"
    assert not bad, f"{what}: {len(bad)} pages differ: {[hex(v) for v in bad[:20]]}"


@pytest.mark.parametrize("threads", [False, True], ids=["quiet", "threads-writing"])
def test_incremental_image_equals_full_image(spawn, store, tracking, threads: bool) -> None:
    target = spawn("py_dirty.py", *(["threads"] if threads else []))
    with FdKeeper() as keeper:
        pm_inc, pm_full, _, _ = both(target.pid, store, tracking, keeper)  # the first is full
        assert_same(pm_inc, pm_full)
        for step in STEPS:
            target.ok(step)
            pm_inc, pm_full, read, total = both(target.pid, store, tracking, keeper)
            assert_same(pm_inc, pm_full, step)
            assert read < total / 2, f"{step}: read {read} of {total} bytes"
    target.quit()


def idle(target) -> None:
    """The target answers a command, then runs a little Python on its way back into
    read(0): a snapshot must not catch it in between, or restoring it would resume
    that Python (which writes memory) before memory is compared."""
    zdtm.wait_blocked(target.pid, {target.pid: zdtm.SYS_READ})


def nonzero(pm: PageMap, skip: list[int]) -> PageMap:
    """A page of zeros and a page without data read the same; pages in `skip` go."""
    keep = (pm.hashes != ZERO) & ~np.isin(pm.vaddrs, np.array(skip, np.uint64))
    return PageMap(pm.vaddrs[keep], pm.hashes[keep])


@pytest.mark.parametrize("seed", [20261201, 1, 2, 3])
def test_chain_of_snapshots_and_restores(spawn, store, tracking, seed: int) -> None:
    """50 steps with a fixed seed: mutate, snapshot (incremental) or restore any earlier
    snapshot (incremental); after each restore memory equals the snapshot exactly."""
    rng = random.Random(seed)
    target = spawn("py_dirty.py")
    staging, safety = StagingBuffer(), StagingBuffer()
    snaps: list[str] = []
    history: list[str] = []
    restores = 0
    with FdKeeper() as keeper:
        from jupyter_chkpt.engine.dump import take

        idle(target)
        snaps.append(take(target.pid, keeper, staging=staging, tracking=tracking).commit(store).id)
        for _ in range(50):
            op = rng.choice(["mutate", "mutate", "snapshot", "restore", "restore"])
            history.append(op)
            if op == "mutate":
                history.append(rng.choice(STEPS))
                target.ok(history[-1])
            elif op == "snapshot":
                idle(target)
                taken = take(target.pid, keeper, staging=staging, tracking=tracking)
                assert taken.image.meta.stats["incremental"]
                snaps.append(taken.commit(store).id)
            else:
                sid = rng.choice(snaps)
                result = restore(target.pid, store, sid, keeper, safety=safety, tracking=tracking)
                restores += 1
                zdtm.assert_released(target.pid)
                meta, want = store.load_pagemap(sid)
                idle(target)
                with frozen(target.pid) as fz:
                    now = capture(fz, StagingBuffer())
                _, have = store.commit_image(now.meta, now.contents[0])
                # the kernel rewrites each thread's rseq area (its CPU) as it runs
                rseq = [t.state.rseq[0] & ~4095 for t in meta.threads if t.state and t.state.rseq]
                where = f"restore {sid} after {history[-8:]}"
                assert_same(nonzero(have, rseq), nonzero(want, rseq), where, target.pid)
                assert result.bytes_loaded < sum(p.nbytes for p in now.contents)
                target.ok("write 10")  # the restored process works
    assert restores >= 10
    target.quit()


# Runs as the test user: tracking needs a user-mode-only userfaultfd there.
USER_SCRIPT = """
import json, sys
from jupyter_chkpt.engine import checkpoint, restore
from jupyter_chkpt.engine.tracking import Tracking
from jupyter_chkpt.engine.keeper import FdKeeper
from jupyter_chkpt.store import Store
pid, store = int(sys.argv[1]), Store(sys.argv[2])
tracking, keeper = Tracking(), FdKeeper()
first = checkpoint(pid, store, keeper=keeper, tracking=tracking)
print(first.id, flush=True)
sys.stdin.readline()
second = checkpoint(pid, store, keeper=keeper, tracking=tracking)
back = restore(pid, store, first.id, keeper=keeper, tracking=tracking)
print(json.dumps({"unavailable": tracking.unavailable, "second": second.stats,
                  "loaded": back.bytes_loaded, "mem": second.mem_bytes}), flush=True)
"""


def test_a_user_gets_tracking(spawn, nonroot_user, user_dir: Path) -> None:
    import json
    import subprocess
    import sys

    target = spawn("py_dirty.py", user=nonroot_user, cwd=user_dir)
    proc = subprocess.Popen(
        [sys.executable, "-c", USER_SCRIPT, str(target.pid), str(user_dir / "store")],
        user=nonroot_user.pw_uid,
        group=nonroot_user.pw_gid,
        extra_groups=[],
        env=zdtm.user_env(nonroot_user),
        cwd=user_dir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first, proc.communicate(timeout=60)[1]
        target.ok("write 500")
        out, err = proc.communicate("go\n", timeout=120)
        assert proc.returncode == 0, err
        got = json.loads(out)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert got["unavailable"] is None
    assert got["second"]["incremental"] is True
    assert got["second"]["bytes"] < got["mem"] / 4
    assert got["loaded"] < got["mem"] / 4
    zdtm.assert_released(target.pid)
    target.quit()
