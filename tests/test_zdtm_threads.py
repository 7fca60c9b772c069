"""Thread scenarios: threads born after the snapshot, threads blocked in system calls."""

from __future__ import annotations

import pytest
import zdtm

from jupyter_chkpt.engine import checkpoint, restore  # noqa: F401  (fail early without the engine)


def finish(target: zdtm.Target) -> None:
    for _ in range(3):
        target.ok("work")
    target.quit()


@pytest.mark.timeout(120)
def test_threads_spawned_after_snapshot(spawn, store, tracked) -> None:
    """Six threads (one busy) started after the snapshot must be gone after restore."""
    target = spawn("py_threads.py", "late")
    before = zdtm.tasks(target.pid)
    zdtm.snapshot_mutate_restore(target, store, tracked)
    assert zdtm.tasks(target.pid) == before
    finish(target)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("name", "args", "where"),
    [("py_threads.py", ["blocked"], zdtm.PY_BLOCKED), ("threads", [], zdtm.C_BLOCKED)],
    ids=["python", "c"],
)
def test_threads_blocked_at_snapshot(
    spawn, store, tracked, name: str, args: list[str], where
) -> None:
    """Python: read, futex (Event, Lock), clock_nanosleep, poll, epoll_wait.
    C: read, futex, nanosleep, poll with and without timeout, epoll_wait, and one
    thread spinning in user code. All resume correctly and block again where they were."""
    target = spawn(name, *args)
    tids = zdtm.blocked_tids(target, where)
    zdtm.wait_blocked(target.pid, tids)
    zdtm.snapshot_mutate_restore(target, store, tracked)
    zdtm.wait_blocked(target.pid, tids)  # restarted, not spinning on EINTR
    finish(target)
