"""Kernel-side objects: fds, epoll, eventfd, pipes, sockets, signals, umask, cwd.

Each scenario (tests/targets/py_files.py) builds its state, is checkpointed
with a keeper (as the helper daemon does), mutates, is restored, and then
checks itself and keeps working.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import zdtm

from jupyter_chkpt.engine import checkpoint, restore


def _roundtrip(spawn, store, keeper, *args: str, tracking=None, **kw):
    target = spawn("py_files.py", *args, **kw)
    snap = checkpoint(target.pid, store, keeper=keeper, tracking=tracking)
    target.ok("mutate")
    result = restore(target.pid, store, snap.id, keeper=keeper, tracking=tracking)
    zdtm.assert_released(target.pid)
    target.ok("verify")
    target.ok("work")
    return target, result


@pytest.mark.timeout(60)
def test_files_opened_after_the_snapshot_are_closed(spawn, store, keeper, tracked) -> None:
    target, result = _roundtrip(spawn, store, keeper, "opened", tracking=tracked)
    assert len(result.files.closed) >= 7, result.files
    assert not result.notes, result.notes
    target.quit()


@pytest.mark.timeout(60)
def test_files_closed_after_the_snapshot_come_back(spawn, store, keeper, tracked) -> None:
    """A socket pair and a pipe with bytes waiting, an eventfd, an epoll, a listener."""
    target, result = _roundtrip(spawn, store, keeper, "closed", tracking=tracked)
    assert len(result.files.put_back) == 7, (
        result.files
    )  # 2 sockets, 2 pipe ends, eventfd, epoll, listener
    assert not result.notes, result.notes
    target.quit()


@pytest.mark.timeout(60)
def test_fd_number_reused_by_another_file(spawn, store, keeper, tracked) -> None:
    target, result = _roundtrip(spawn, store, keeper, "reused", tracking=tracked)
    assert result.files.closed == result.files.put_back != [], result.files
    target.quit()


@pytest.mark.timeout(60)
def test_epoll_registrations_added_removed_modified(spawn, store, keeper, tracked) -> None:
    target, result = _roundtrip(spawn, store, keeper, "epoll", tracking=tracked)
    assert result.files.epoll_changed or result.files.epoll_replaced, result.files
    target.quit()


@pytest.mark.timeout(60)
def test_pipe_contents_come_back_socket_bytes_are_reported(spawn, store, keeper, tracked) -> None:
    target, result = _roundtrip(spawn, store, keeper, "consumed", tracking=tracked)
    assert len(result.files.pipes) == 2, result.files  # bytes read since, bytes written since
    (note,) = [n for n in result.notes if "bytes waiting" in n]
    assert "socket:" in note and "5 of the 5 bytes waiting" in note, result.notes
    target.quit()


@pytest.mark.timeout(60)
def test_eventfd_counters(spawn, store, keeper, tracked) -> None:
    target, result = _roundtrip(spawn, store, keeper, "counters", tracking=tracked)
    assert len(result.files.eventfds) == 3, result.files
    target.quit()


@pytest.mark.timeout(60)
def test_regular_file_offset(spawn, store, keeper, tracked) -> None:
    target, result = _roundtrip(spawn, store, keeper, "offset", tracking=tracked)
    assert result.files.offsets, result.files
    target.quit()


@pytest.mark.timeout(60)
def test_offset_without_keeper_reopens_closed_files(spawn, store) -> None:
    """The CLI holds no duplicates: regular files are reopened by path, and
    what cannot be reopened is reported, not ignored."""
    target = spawn("py_files.py", "offset")
    snap = checkpoint(target.pid, store)
    target.ok("mutate")
    result = restore(target.pid, store, snap.id)
    target.ok("verify")
    target.quit()

    target = spawn("py_files.py", "closed")
    snap = checkpoint(target.pid, store)
    target.ok("mutate")
    result = restore(target.pid, store, snap.id)
    assert any("no duplicate of it is held" in n and "socket:" in n for n in result.notes), (
        result.notes
    )
    # a pipe both of whose ends the process held comes back whole, bytes included
    assert not any("pipe:" in n for n in result.notes), result.notes
    pipe_ends = [f.fd for f in store.load_meta(snap.id).files or [] if f.kind == "pipe"]
    pipe_ends = [n for n in pipe_ends if n > 2]
    assert len(pipe_ends) == 2 and set(pipe_ends) <= set(result.files.stand_ins), result.files
    assert set(result.files.pipes) & set(pipe_ends), result.files
    assert result.files.put_back == []
    target.kill()


@pytest.mark.timeout(60)
def test_shared_stdout_is_not_rewound(spawn, store, keeper, tracked, tmp_path: Path) -> None:
    """The target's stderr is the parent's own log, open in the parent too: the
    shared offset is never moved, so the parent's lines stay intact."""
    log = tmp_path / "shared.log"
    with open(log, "wb", buffering=0) as f:
        target = spawn("py_files.py", "shared", "2", stderr=f)
        snap = checkpoint(target.pid, store, keeper=keeper)
        target.ok("mutate")
        f.write(b"parent: between\n")
        result = restore(target.pid, store, snap.id, keeper=keeper)
        target.ok("verify")
        f.write(b"parent: at the end\n")
        target.quit()
    assert log.read_text().splitlines() == [
        "target: before the snapshot",
        "target: after the snapshot",
        "parent: between",
        "target: after the restore",
        "parent: at the end",
    ]
    assert result.files.shared == [2], result.files
    assert result.files.offsets == []


@pytest.mark.timeout(60)
def test_signal_dispositions(spawn, store, keeper, tracked) -> None:
    target, result = _roundtrip(spawn, store, keeper, "signals", tracking=tracked)
    assert set(result.signals_changed) >= {1, 10, 12}, result.signals_changed  # HUP, USR1, USR2
    target.quit()


@pytest.mark.timeout(60)
def test_cwd_and_umask(spawn, store, keeper, tracked, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    target, result = _roundtrip(spawn, store, keeper, "cwd", str(other), tracking=tracked)
    assert result.umask_changed
    target.quit()
