"""The fd keeper's holding strategy, against real processes: what it holds is
released with its snapshots, and everything when the process exits."""

from __future__ import annotations

import select

import pytest

from jupyter_chkpt.engine import checkpoint


@pytest.mark.timeout(60)
def test_held_pipe_is_released_when_the_process_exits(spawn, store, keeper) -> None:
    """A held duplicate of a process's stdout keeps its reader from seeing
    end-of-file; pruning after the exit gives the reader its EOF."""
    target = spawn("py_counter.py")
    checkpoint(target.pid, store, keeper=keeper)
    assert keeper.held_count() >= 3
    target.quit()
    out = target.proc.stdout
    assert out is not None
    # The process is gone, but our duplicate of its stdout keeps the pipe open.
    assert not select.select([out], [], [], 0.2)[0]
    assert keeper.prune() == [target.pid]
    assert keeper.held_count() == 0
    assert select.select([out], [], [], 5)[0] and out.read() == b""


@pytest.mark.timeout(60)
def test_duplicates_are_shared_between_snapshots_and_released_with_them(
    spawn, store, keeper
) -> None:
    target = spawn("py_files.py", "opened")
    a = checkpoint(target.pid, store, keeper=keeper)
    base = keeper.held_count()
    b = checkpoint(target.pid, store, keeper=keeper)
    assert keeper.held_count() == base, "the same files are held once"
    target.ok("mutate")  # 7 more fds
    c = checkpoint(target.pid, store, keeper=keeper)
    assert keeper.held_count() == base + 7
    keeper.release_snapshot(c.id)
    assert keeper.held_count() == base
    keeper.release_snapshot(a.id)
    assert keeper.held_count() == base, "b still owns them"
    keeper.release_snapshot(b.id)
    assert keeper.held_count() == 0
    target.quit()


@pytest.mark.timeout(60)
def test_prune_works_with_fd_numbers_above_1024(spawn, store, keeper) -> None:
    """A helper serving many kernels holds thousands of fds; select() would fail there."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2048:
        pytest.skip("the hard fd limit is below 2048")
    target = spawn("py_counter.py")  # before: the harness select()s on its pipes
    resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    filler = []
    try:
        while len(filler) < 1100:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        checkpoint(target.pid, store, keeper=keeper)
        assert keeper.pidfd(target.pid) >= 1024
        target.quit()
        assert keeper.prune() == [target.pid]
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
