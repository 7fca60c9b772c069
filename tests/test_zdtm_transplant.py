"""Transplant: a snapshot restored into a fresh process of the same program (issue 13).

Each scenario builds its state in one target, is checkpointed; the target is then
SIGKILLed (as the OOM killer would), a second target of the same program starts
with its own state (ASLR puts everything elsewhere), the snapshot is restored into
it, and the second process checks the first one's state and keeps working. The
harness talks to it over the second process's own pipes: what connected the old
process to the outside is the new process's own (files.py, `inherit`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import zdtm

from jupyter_chkpt.engine import checkpoint, restore, transplant
from jupyter_chkpt.errors import Incompatible
from jupyter_chkpt.image import Child


def _transplant(spawn, store, keeper, name: str, *args: str, **kw):
    first = spawn(name, *args, **kw)
    snap = checkpoint(first.pid, store, keeper=keeper)
    first.kill()
    keeper.prune()  # as the helper does when a process ends: its listeners go
    second = spawn(name, *args, **kw)
    result = restore(second.pid, store, snap.id, keeper=keeper, into=True)
    zdtm.assert_released(second.pid)
    return second, result


@pytest.mark.timeout(60)
def test_heap_and_brk_move_with_the_snapshot(spawn, store, keeper) -> None:
    target, result = _transplant(spawn, store, keeper, "heap", "small")
    assert not result.notes and result.files.inherited == [0, 1], result
    target.ok("verify")
    for _ in range(5):
        target.ok("work")
    target.ok("verify")
    target.quit()


@pytest.mark.timeout(60)
def test_the_layout_is_the_snapshots(spawn, store, keeper) -> None:
    """Every mapping at the snapshot's address, the vDSO area included; the kernel's
    memory-map fields (heap, stack, arguments) are the snapshot's."""
    from jupyter_chkpt.proc import procfs

    first = spawn("heap", "small")
    snap = checkpoint(first.pid, store, keeper=keeper)
    before = zdtm.maps_text(first.pid)
    mm = procfs.mm_fields(first.pid)
    first.kill()
    second = spawn("heap", "small")
    assert zdtm.maps_text(second.pid) != before  # ASLR: elsewhere
    restore(second.pid, store, snap.id, keeper=keeper, into=True)
    assert zdtm.maps_text(second.pid) == before
    assert procfs.mm_fields(second.pid) == mm
    assert Path(f"/proc/{second.pid}/cmdline").read_bytes()  # arguments are readable
    second.ok("verify")
    second.quit()


@pytest.mark.timeout(60)
def test_threads_are_recreated(spawn, store, keeper) -> None:
    target, result = _transplant(spawn, store, keeper, "threads")
    assert len(result.threads_recreated) == 7, result  # every one but main
    assert len(result.files.stand_ins) == 15, result.files  # 7 pipes (both ends), the epoll
    assert not result.notes, result.notes
    target.ok("verify")
    for _ in range(3):
        target.ok("work")  # every thread wakes with the right token
    target.quit()


@pytest.mark.timeout(60)
def test_python_state_comes_back(spawn, store, keeper) -> None:
    target, result = _transplant(spawn, store, keeper, "py_counter.py")
    assert result.bytes_written > 4 << 20, result  # the 4 MiB buffer and the rest
    target.ok("verify")
    for n in range(2, 6):
        target.ok("mutate")
        assert target.ok(f"verify {n}") == f"counter={n}"
    target.quit()


@pytest.mark.timeout(90)
def test_python_threads_come_back(spawn, store, keeper) -> None:
    """A ThreadPoolExecutor's workers, threads waiting on a Condition, a Queue, an
    Event, in sleep and in a read, a daemon: all recreated, all working."""
    target, result = _transplant(spawn, store, keeper, "py_threads.py", "ended")
    assert result.threads_recreated, result
    target.ok("verify")
    target.ok("work")
    target.quit()


@pytest.mark.timeout(60)
def test_a_regular_file_is_reopened_at_its_offset(spawn, store, keeper) -> None:
    target, result = _transplant(spawn, store, keeper, "py_files.py", "offset")
    assert result.files.reopened, result.files  # by path: never truncated
    target.ok("verify")
    target.ok("work")
    target.quit()


@pytest.mark.timeout(60)
def test_the_cli_restores_into_another_process(spawn, store_dir) -> None:
    """`jupyter-chkpt restore --into PID ID`, as a user would after a crash."""
    store = ["--store", str(store_dir)]
    first = spawn("py_counter.py")
    first.ok("mutate")
    snap = _cli_json("snapshot", str(first.pid), *store)
    first.kill()
    second = spawn("py_counter.py")
    res = _cli("restore", str(second.pid), snap["id"], *store)
    assert res.returncode != 0 and "--into" in res.stderr, res.stderr  # the remedy says how
    res = _cli("restore", "--into", str(second.pid), "-1", *store)
    assert res.returncode != 0 and "id or label" in res.stderr, res.stderr
    done = _cli_json("restore", "--into", str(second.pid), snap["id"], *store)
    assert done["pid"] == second.pid and done["snapshot_id"] == snap["id"]
    assert second.ok("verify 2") == "counter=2"
    second.quit()


@pytest.mark.timeout(60)
def test_another_program_is_refused_and_keeps_running(spawn, store, keeper) -> None:
    first = spawn("heap", "small")
    snap = checkpoint(first.pid, store, keeper=keeper)
    first.kill()
    other = spawn("threads")
    before = zdtm.maps_text(other.pid)
    with pytest.raises(Incompatible, match=r"runs .*threads, not .*heap") as e:
        restore(other.pid, store, snap.id, keeper=keeper, into=True)
    assert "Nothing was changed" in str(e.value)
    zdtm.assert_released(other.pid)
    assert zdtm.maps_text(other.pid) == before
    other.ok("verify")
    other.ok("work")
    other.quit()


@pytest.mark.timeout(60)
def test_a_replaced_program_file_is_refused(spawn, store, keeper, tmp_path, c_targets) -> None:
    """An upgrade between the crash and the restore: same path, another file."""
    exe = tmp_path / "bin" / "heap"
    exe.parent.mkdir()
    shutil.copy(c_targets["heap"], exe)
    first = zdtm.Target([str(exe), "small"], name="heap-1", log=tmp_path / "1.log")
    try:
        snap = checkpoint(first.pid, store, keeper=keeper)
    finally:
        first.kill()
    shutil.copy(c_targets["heap"], exe.with_name("new"))
    exe.with_name("new").rename(exe)  # same bytes, another file
    second = zdtm.Target([str(exe), "small"], name="heap-2", log=tmp_path / "2.log")
    try:
        with pytest.raises(Incompatible, match="has been replaced"):
            restore(second.pid, store, snap.id, keeper=keeper, into=True)
        zdtm.assert_released(second.pid)
        second.ok("verify")
        second.quit()
    finally:
        second.kill()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("what", ["old", "children", "sysv", "uid", "library"])
def test_what_cannot_be_made_whole_is_refused(spawn, store, keeper, what) -> None:
    """Refusals decided from the snapshot alone, before the process is touched."""
    first = spawn("heap", "small")
    snap = checkpoint(first.pid, store, keeper=keeper)
    meta = store.load_meta(snap.id)
    first.kill()
    second = spawn("heap", "small")
    if what == "old":
        meta.mm = None
        want = "older jupyter-chkpt"
    elif what == "children":
        meta.children = [Child(pid=1234, start_time=5, comm="worker")]
        want = r"child processes \(1234 \(worker\)\)"
    elif what == "sysv":
        meta.mappings.append(replace(meta.mappings[0], path="/SYSV00000000 (deleted)"))
        want = "System V shared memory"
    elif what == "uid":
        meta.process = replace(meta.process, uid=meta.process.uid + 1)
        want = "runs as uid"
    else:  # a library rebuilt in place: same inode, other content
        assert meta.mapped_files
        libc = next(f for f in meta.mapped_files if "libc" in f.path)
        meta.mapped_files = [replace(libc, mtime_ns=libc.mtime_ns + 1)]
        want = f"{libc.path} has been replaced or changed"
    with pytest.raises(Incompatible, match=want):
        transplant.check(meta, second.pid)
    second.ok("verify")
    second.quit()


@pytest.mark.timeout(120)
def test_an_unprivileged_user_transplants(spawn, nonroot_user, user_dir) -> None:
    """Without CAP_CHECKPOINT_RESTORE: threads get new tids, the memory map is set
    with the unprivileged prctl(PR_SET_MM_MAP)."""
    store = str(user_dir / "store")
    first = spawn("py_threads.py", "ended", user=nonroot_user, cwd=user_dir)
    snap = zdtm.ok_json(
        zdtm.run_as(nonroot_user, "-c", zdtm.API_SCRIPT, "checkpoint", str(first.pid), store)
    )
    first.kill()
    second = spawn("py_threads.py", "ended", user=nonroot_user, cwd=user_dir)
    done = zdtm.ok_json(
        zdtm.run_as(
            nonroot_user, "-c", zdtm.API_SCRIPT, "transplant", str(second.pid), store, snap["id"]
        )
    )
    assert done["pid"] == second.pid and done["threads_recreated"], done
    zdtm.assert_released(second.pid)
    second.ok("verify")
    second.ok("work")
    second.quit()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_chkpt", *args], capture_output=True, text=True, timeout=120
    )


def _cli_json(*args: str) -> Any:
    res = _cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.timeout(60)
def test_kernel_objects_are_rebuilt(spawn, store, keeper) -> None:
    """A socket pair and a pipe (both ends held: made whole, bytes waiting
    included), an eventfd (its counter), an epoll (its registrations) and a TCP
    listener (bound again to its address)."""
    target, result = _transplant(spawn, store, keeper, "py_files.py", "closed")
    assert result.files.inherited == [0, 1] and 9 in result.files.reopened, result.files
    assert not result.notes, result.notes  # the socket's 3 bytes are back too (checked below)
    target.ok("moved")
    target.ok("work")
    target.quit()
