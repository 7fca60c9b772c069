"""Threads that existed at the snapshot and have exited since come back (zdtm).

thread_exit.c: pthreads blocked in futex, read and nanosleep, one holding an
error-checking robust mutex, one with an alternate signal stack, CPU affinity
and nice value, one spinning; each checks its TLS, name and glibc's tid word from
the inside. py_threads.py "ended": a ThreadPoolExecutor's workers and threads
waiting on a Condition, a Queue, an Event, in time.sleep and in a blocking read,
a daemon, with threading.local data. Both end every thread in `mutate`.

As root the kernel lets the helper ask for the old tids (clone3 set_tid); an
ordinary user gets new tids, and what memory believes about them is rewritten:
the non-root runs prove that path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import zdtm

from jupyter_chkpt.engine import checkpoint, restore

pytestmark = pytest.mark.timeout(180)

SCENARIOS = [("thread_exit", [], 6), ("py_threads.py", ["ended"], 8)]
IDS = ["c", "python"]


def _recreated(result: Any) -> list[list[int]]:
    return list(result.threads_recreated)


@pytest.mark.parametrize(("name", "args", "n"), SCENARIOS, ids=IDS)
def test_exited_threads_come_back(
    spawn, store, tracked, name: str, args: list[str], n: int
) -> None:
    target = spawn(name, *args)
    info = checkpoint(target.pid, store, tracking=tracked)
    for cycle in range(3):  # each time from the restored state
        target.ok("mutate")
        assert zdtm.tasks(target.pid) == [target.pid]
        result = restore(target.pid, store, info.id, tracking=tracked)
        zdtm.assert_released(target.pid)
        recreated = _recreated(result)
        assert len(recreated) == n, recreated
        if os.geteuid() == 0:  # clone3 with set_tid: the very same tids
            assert all(old == new for old, new in recreated), recreated
        assert result.threads_exited == []
        target.ok("verify")
        for _ in range(2):
            target.ok("work")
        assert len(zdtm.tasks(target.pid)) == n + 1, cycle
    if name == "thread_exit":
        target.ok("die")  # the robust mutex passes to main with EOWNERDEAD; join works
    target.quit()


def test_back_and_forth_between_thread_sets(spawn, store) -> None:
    """Snapshots before and after the thread set changed, restored alternately."""
    target = spawn("py_threads.py", "flip")
    assert target.ok("check") == "a"
    a = checkpoint(target.pid, store)
    target.ok("flip")
    assert target.ok("check") == "b"
    b = checkpoint(target.pid, store)
    for i in range(25):
        ra = restore(target.pid, store, a.id)
        assert target.ok("check") == "a", i
        assert len(ra.threads_recreated) == 2 and len(ra.threads_exited) == 3
        rb = restore(target.pid, store, b.id)
        assert target.ok("check") == "b", i
        assert len(rb.threads_recreated) == 3 and len(rb.threads_exited) == 2
    zdtm.assert_released(target.pid)
    target.quit()


def test_new_thread_reusing_an_old_tid_is_not_taken_for_it(spawn, store) -> None:
    """A thread born since the snapshot under the tid of one that exited is another
    thread (told apart by start time): it exits, and the old one is recreated."""
    if os.geteuid() != 0:
        pytest.skip("needs root to choose the next pid (ns_last_pid)")
    target = spawn("py_threads.py", "ended")
    info = checkpoint(target.pid, store)
    old = zdtm.parse_pairs(target.ok("tids"))["w-cond"]
    target.ok("mutate")
    Path("/proc/sys/kernel/ns_last_pid").write_text(str(old - 1))
    impostor = int(target.ok("spawn"))
    assert impostor == old, "another process took the tid first; the scenario did not happen"
    result = restore(target.pid, store, info.id)
    assert result.threads_exited == [impostor]
    (pair,) = [p for p in result.threads_recreated if p[0] == old]
    assert pair[1] != old  # the impostor held the tid while the thread was recreated
    target.ok("verify")
    target.ok("work")
    target.quit()


# --- the same as an ordinary user: new tids ---------------------------------------------


@pytest.mark.parametrize(("name", "args", "n"), SCENARIOS, ids=IDS)
def test_exited_threads_come_back_for_a_user(
    spawn, nonroot_user, user_dir: Path, name: str, args: list[str], n: int
) -> None:
    target = spawn(name, *args, user=nonroot_user, cwd=user_dir)
    store, pid = str(user_dir / "store"), str(target.pid)
    snap = zdtm.ok_json(zdtm.run_as(nonroot_user, "-c", zdtm.API_SCRIPT, "checkpoint", pid, store))
    for _ in range(2):
        target.ok("mutate")
        result = zdtm.ok_json(
            zdtm.run_as(nonroot_user, "-c", zdtm.API_SCRIPT, "restore", pid, store, snap["id"])
        )
        zdtm.assert_released(target.pid)
        recreated = result["threads_recreated"]
        assert len(recreated) == n
        assert all(old != new for old, new in recreated), "a user cannot choose tids"
        target.ok("verify")  # glibc's tid word, robust mutex owner, signals: all right
        target.ok("work")
    if name == "thread_exit":
        target.ok("die")
    target.quit()


def test_back_and_forth_for_a_user(spawn, nonroot_user, user_dir: Path) -> None:
    target = spawn("py_threads.py", "flip", user=nonroot_user, cwd=user_dir)
    store, pid = str(user_dir / "store"), str(target.pid)

    def api(*args: str) -> Any:
        return zdtm.ok_json(zdtm.run_as(nonroot_user, "-c", zdtm.API_SCRIPT, *args))

    a = api("checkpoint", pid, store)["id"]
    target.ok("flip")
    b = api("checkpoint", pid, store)["id"]
    for i in range(5):
        api("restore", pid, store, a)
        assert target.ok("check") == "a", i
        api("restore", pid, store, b)
        assert target.ok("check") == "b", i
    target.quit()


def test_a_thread_that_cannot_be_recreated_rolls_back(spawn, nonroot_user, user_dir: Path) -> None:
    """clone fails (the user's process limit): the restore is rolled back before the
    point of no return, the process runs on as it was, and a later restore works."""
    target = spawn("py_threads.py", "ended", user=nonroot_user, cwd=user_dir)
    store, pid = str(user_dir / "store"), str(target.pid)
    snap = zdtm.ok_json(zdtm.run_as(nonroot_user, "-c", zdtm.API_SCRIPT, "checkpoint", pid, store))
    target.ok("mutate")
    target.ok("nproc 1")  # the user runs more than one process: no clone succeeds
    res = zdtm.run_as(nonroot_user, "-c", zdtm.API_SCRIPT, "restore", pid, store, snap["id"])
    assert res.returncode != 0
    assert "could not recreate thread" in res.stderr and "rolled back" in res.stderr, res.stderr
    zdtm.assert_released(target.pid)
    assert zdtm.tasks(target.pid) == [target.pid]
    assert target.send("verify").startswith("fail 1 tasks")  # still the mutated state
    target.ok("nproc max")
    zdtm.ok_json(
        zdtm.run_as(nonroot_user, "-c", zdtm.API_SCRIPT, "restore", pid, store, snap["id"])
    )
    target.ok("verify")
    target.ok("work")
    target.quit()
