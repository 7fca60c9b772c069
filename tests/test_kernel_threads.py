"""A snapshots kernel whose threads and children came and went since a snapshot.

The reproductions from the field: a shell escape after a snapshot (IPython ends
its history thread at every fork), and going back and forth across a large
output (pyzmq starts a garbage-collector thread and a context for it).
"""

from __future__ import annotations

import time
from ast import literal_eval

import pytest

pytestmark = pytest.mark.timeout(300)


def restore(kernel, ref: str) -> str:
    r = kernel.ok(f"%restore {ref}")
    assert "restored snapshot" in r.stdout, r.stdout
    return r.stdout


HISTORY_TID = (
    "[t.native_id for t in __import__('threading').enumerate()"
    " if t.name == 'IPythonHistorySavingThread']"
)


def test_shell_escape_after_a_snapshot(kernel) -> None:
    kernel.ok("x = 1")
    # IPython restarts its history thread only when it next flushes, so whether one runs at a
    # given moment depends on what forked before: make sure the snapshot has one.
    kernel.ok("%checkpoint -m warm-up")  # a helper that starts forks, and that ends the thread
    kernel.ok("get_ipython().history_manager._restart_thread_if_stopped()")
    before = literal_eval(kernel.value(HISTORY_TID))
    kernel.ok("%checkpoint -m a")
    [tid] = before
    assert literal_eval(kernel.value(HISTORY_TID)) == before, "the snapshot has no history thread"
    assert kernel.ok("!true").status == "ok"
    kernel.ok("x = 2")
    assert tid not in literal_eval(kernel.value(HISTORY_TID)), (
        "the fork did not end the history thread"
    )
    out = restore(kernel, "a")
    assert "thread(s) that had ended since were started again" in out
    assert kernel.value("x") == "1"
    assert kernel.ok("!echo still here").stdout.strip() == "still here"
    kernel.ok("%checkpoint -m b")
    for _ in range(3):
        restore(kernel, "a")
        kernel.ok("!true")
        restore(kernel, "b")
        assert kernel.value("x") == "1"


def test_back_and_forth_across_a_large_output(kernel) -> None:
    kernel.ok("x = 'a'")
    kernel.ok("%checkpoint -m a")
    big = kernel.ok("print('x' * 200_000, end=''); x = 'b'")
    assert len(big.stdout) == 200_000
    kernel.ok("%checkpoint -m b")
    for _ in range(10):
        restore(kernel, "a")
        assert kernel.value("x") == "'a'"
        restore(kernel, "b")
        assert kernel.value("x") == "'b'"
    assert len(kernel.ok("print('y' * 100_000, end='')").stdout) == 100_000


def test_children_that_came_and_went(kernel) -> None:
    kernel.ok("import subprocess; old = subprocess.Popen(['sleep', '600'])")
    kernel.ok("%checkpoint -m a")
    kernel.ok("old.kill(); old.wait(10); new = subprocess.Popen(['sleep', '600'])")
    new_pid = kernel.value("new.pid")
    out = restore(kernel, "a")
    assert "child processes of the snapshot have ended since" in out
    assert "started since the snapshot still run" in out and new_pid in out
    # the Popen object thinks its child runs: asking must answer, not hang
    assert kernel.value("old.poll() is not None or old.wait(timeout=5) is not None") == "True"
    kernel.ok(f"import os, signal; os.kill({new_pid}, signal.SIGKILL)")


def test_alarm_armed_since_does_not_kill_the_kernel(kernel) -> None:
    kernel.ok("import signal, time")
    kernel.ok("%checkpoint -m a")
    kernel.ok("signal.alarm(2)")
    restore(kernel, "a")
    time.sleep(3)
    assert kernel.value("signal.getitimer(signal.ITIMER_REAL)") == "(0.0, 0.0)"
    assert kernel.value("1 + 1") == "2"
