"""Freezing refuses what it cannot do cleanly, and leaves the process untouched.

A process stopped by someone else (SIGSTOP, Ctrl-Z) is refused: ending that
stop is not ours to do. A thread that cannot stop (a vfork parent waits in the
kernel, state D) makes the freeze give up at its deadline. Two tracers never
act on one process at once. Signals sent meanwhile arrive afterwards as sent.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path

import pytest
import zdtm

from jupyter_chkpt.engine import checkpoint, restore
from jupyter_chkpt.engine.freeze import DEADLINE_ENV, frozen
from jupyter_chkpt.engine.journal import journal_dir
from jupyter_chkpt.errors import FreezeTimeout, ProcessBusy, ProcessStopped


@pytest.fixture(autouse=True)
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "runtime"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(d))
    return d


def no_journal() -> None:
    assert not list(journal_dir().glob("*.json"))


@pytest.mark.timeout(120)
def test_a_stopped_process_is_refused_and_stays_stopped(spawn, store) -> None:
    target = spawn("threads")
    os.kill(target.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while zdtm.status(target.pid)["State"][0] != "T":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(ProcessStopped, match="kill -CONT"):
        checkpoint(target.pid, store)
    assert zdtm.status(target.pid)["State"][0] == "T"  # still the user's stop
    no_journal()
    os.kill(target.pid, signal.SIGCONT)
    target.ok("work")
    checkpoint(target.pid, store)


def wait_state(pid: int, state: str) -> None:
    deadline = time.monotonic() + 10
    while zdtm.status(pid)["State"][0] != state:
        assert time.monotonic() < deadline, zdtm.status(pid)["State"]
        time.sleep(0.01)


@pytest.mark.timeout(120)
def test_a_tracer_that_died_before_its_sigstop_leaves_the_users_stop(spawn) -> None:
    """A journal left in phase "freezing" means no SIGSTOP was sent: a stop the process
    is in is its user's, and the rescue leaves it stopped; in phase "stopping" the
    SIGSTOP may have been ours, and the rescue continues the process."""
    from jupyter_chkpt.engine.journal import Journal
    from jupyter_chkpt.engine.rescue import rescue_pid
    from jupyter_chkpt.proc import procfs

    target = spawn("threads")
    dead = {"owner_pid": os.getpid(), "owner_start": 1}  # no live process has that start
    os.kill(target.pid, signal.SIGSTOP)
    wait_state(target.pid, "T")
    Journal(procfs.identity(target.pid), "snapshot", **dead).claim()
    assert "left as it was" in rescue_pid(target.pid)
    time.sleep(0.2)
    assert zdtm.status(target.pid)["State"][0] == "T", "the rescue ended the user's stop"
    no_journal()
    j = Journal(procfs.identity(target.pid), "snapshot", **dead)
    j.claim()
    j.write("stopping")
    assert "runs on" in rescue_pid(target.pid)
    wait_state(target.pid, "S")
    no_journal()
    target.ok("work")


@pytest.mark.timeout(120)
def test_a_thread_that_cannot_stop_times_out(spawn, store, monkeypatch: pytest.MonkeyPatch) -> None:
    target = spawn("vfork_parent")
    snap = checkpoint(target.pid, store)
    assert target.proc.stdin is not None
    target.proc.stdin.write(b"vfork 4\n")
    deadline = time.monotonic() + 10
    while zdtm.status(target.pid)["State"][0] != "D":
        assert time.monotonic() < deadline, zdtm.status(target.pid)["State"]
        time.sleep(0.005)
    monkeypatch.setenv(DEADLINE_ENV, "0.5")
    with pytest.raises(FreezeTimeout, match=r"did not stop within 0\.5 s"):
        checkpoint(target.pid, store)
    with pytest.raises(FreezeTimeout):
        restore(target.pid, store, snap.id)
    no_journal()
    assert target.readline() == "ok"  # the vfork ended as it would have
    zdtm.assert_released(target.pid)
    target.ok("work")
    restore(target.pid, store, snap.id)
    target.ok("work")


@pytest.mark.timeout(120)
def test_two_tracers_never_act_on_one_process(spawn, store) -> None:
    target = spawn("threads")
    with frozen(target.pid) as fz:
        assert fz.journal is not None
        # what another helper or the CLI would meet now
        with pytest.raises(ProcessBusy, match="being worked on by process"):
            checkpoint(target.pid, store)
        assert fz.journal.path.exists()
    no_journal()
    zdtm.assert_released(target.pid)
    target.ok("work")


@pytest.mark.timeout(120)
def test_signals_sent_while_frozen_arrive_as_sent(spawn) -> None:
    """A real-time signal queued three times while the process is frozen (and its
    main thread runs injected syscalls) arrives three times, each with its value
    and sender; a kill() arrives as a kill (SI_USER), not as the tracer's tgkill."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sigqueue.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    rt = signal.SIGRTMIN + 1
    target = spawn("siginfo")
    with frozen(target.pid) as fz:
        fz.injector.check("getpid")
        for value in range(3):
            assert libc.sigqueue(target.pid, rt, value) == 0, os.strerror(ctypes.get_errno())
        os.kill(target.pid, signal.SIGUSR1)
        fz.injector.check("getpid")  # runs with the signals queued
    target.ok(f"check {os.getpid()}")
    target.ok("work")
    target.quit()
