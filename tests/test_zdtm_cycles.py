"""Repeated restores: out of order, twice in a row, and 100 cycles without leaks."""

from __future__ import annotations

import gc

import pytest
import zdtm

from jupyter_chkpt.engine import checkpoint, restore

MiB_KiB = 1024


@pytest.mark.timeout(120)
def test_restore_same_twice_and_older_after_newer(spawn, store) -> None:
    target = spawn("py_counter.py")
    a = checkpoint(target.pid, store, label="A")  # counter 1
    assert target.ok("mutate") == "counter=2"
    b = checkpoint(target.pid, store, label="B")  # counter 2
    assert target.ok("mutate") == "counter=3"
    assert a.id != b.id

    for snap, counter in ((b, 2), (a, 1), (a, 1), (b, 2), (b, 2), (a, 1)):
        assert restore(target.pid, store, snap.id).snapshot_id == snap.id
        zdtm.assert_released(target.pid)
        assert target.ok(f"verify {counter}") == f"counter={counter}"
        target.ok("work")
    target.quit()


def _cycle(target: zdtm.Target, store) -> None:
    info = checkpoint(target.pid, store)
    target.ok("mutate")
    restore(target.pid, store, info.id)
    target.ok("verify")
    target.ok("work")


def _usage(pid: int) -> dict[str, int]:
    gc.collect()
    return {
        "helper_fds": zdtm.fd_count("self"),
        "helper_rss": zdtm.vm_kib("self", "VmRSS"),
        "target_fds": zdtm.fd_count(pid),
        "target_rss": zdtm.vm_kib(pid, "VmRSS"),
        "target_size": zdtm.vm_kib(pid, "VmSize"),
    }


# Allowed growth over 90 cycles after warm-up (KiB for memory). A leak of one
# fd, or of one image's pages (~1 MiB), per cycle is far above these.
TOLERANCE = {
    "helper_fds": 2,
    "helper_rss": 16 * MiB_KiB,
    "target_fds": 0,
    "target_rss": 4 * MiB_KiB,
    "target_size": 4 * MiB_KiB,
}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_hundred_cycles_without_growth(spawn, store) -> None:
    """snapshot -> mutate -> restore -> verify -> work, 100 times on a small C target."""
    target = spawn("heap", "small")
    for _ in range(10):  # warm-up: caches, buffers and the store settle
        _cycle(target, store)
    start = _usage(target.pid)
    for _ in range(90):
        _cycle(target, store)
    end = _usage(target.pid)
    zdtm.assert_released(target.pid)
    grown = {k: end[k] - start[k] for k in start if end[k] - start[k] > TOLERANCE[k]}
    assert not grown, f"growth over 90 cycles: {grown} (start {start}, end {end})"
    target.quit()
