"""Snapshots stay restorable when the kernel's connection to the helper changes.

The restored process wakes up waiting for the reply to the request its
snapshot was taken during. When that connection is gone (the kernel dropped
it after a timeout or an interrupt, or the helper was restarted), it reads
end-of-file there and takes the word the restore left; the files the new
helper holds no duplicates of get stand-ins.
"""

from __future__ import annotations

import os
import signal

import pytest
import zdtm
from test_kernel_storm import frontend


def helper_pid() -> int:
    from jupyter_chkpt.helper.client import HelperClient

    with HelperClient(start=False) as c:
        return c.helper_pid


def restored(kernel, ref: str) -> str:
    r = kernel.ok(f"%restore {ref}")
    assert "restored snapshot" in r.stdout, r.stdout + r.stderr
    return r.stdout


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_a_new_helper_restores_an_earlier_helpers_snapshot(how: str, kernel) -> None:
    kernel.ok("import threading; x = 1; gen = (i * i for i in range(10)); next(gen)")
    kernel.ok("%checkpoint -m a")
    kernel.ok("x = 2; next(gen); next(gen)")
    first = helper_pid()
    if how == "killed":
        os.kill(first, signal.SIGKILL)
    else:
        from jupyter_chkpt.helper.client import HelperClient

        with HelperClient(start=False) as c:
            c.call("shutdown", timeout=10)
    assert zdtm.exited(first)
    restored(kernel, "a")
    assert helper_pid() != first
    assert kernel.value("x") == "1"
    assert kernel.value("next(gen)") == "1"
    # and on from there, with the new helper
    kernel.ok("x = 3")
    kernel.ok("%checkpoint -m b")
    kernel.ok("x = 4")
    restored(kernel, "b")
    assert kernel.value("x") == "3"
    restored(kernel, "a")
    assert kernel.value("x") == "1"


@pytest.mark.timeout(300)
def test_a_kernel_that_reconnected_restores_its_earlier_snapshots(kernel) -> None:
    kernel.ok("x = 1")
    kernel.ok("%checkpoint -m a")
    # what a client timeout or an interrupt does: the connection is dropped, and
    # the next request makes a new one
    kernel.ok("get_ipython().kernel._chkpt._drop_client(); x = 2")
    kernel.ok("%checkpoint -m b")
    kernel.ok("get_ipython().kernel._chkpt._drop_client(); x = 3")
    restored(kernel, "a")
    assert kernel.value("x") == "1"
    restored(kernel, "b")
    assert kernel.value("x") == "2"
    kernel.ok("x = 5")
    restored(kernel, "a")
    assert kernel.value("x") == "1"


@pytest.mark.timeout(300)
def test_a_frontend_gone_since_the_snapshot_with_a_new_helper(kernel) -> None:
    """Its connections are gone and nobody holds them: stand-ins that read as
    closed take their numbers, and the kernel's zmq drops that peer."""
    other = frontend(kernel)
    other.start_channels()
    other.wait_for_ready(timeout=60)
    kernel.ok("x = 1")
    kernel.ok("%checkpoint -m a")
    other.stop_channels()
    kernel.ok("x = 2")
    os.kill(helper_pid(), signal.SIGKILL)
    out = restored(kernel, "a")
    assert kernel.value("x") == "1"
    late = frontend(kernel)
    late.start_channels()
    try:
        late.wait_for_ready(timeout=60)
        reply = late.execute_interactive("x + 1", timeout=60)
        assert reply["content"]["status"] == "ok"
    finally:
        late.stop_channels()
    assert kernel.value("sum(range(10))") == "45", out


@pytest.mark.timeout(300)
def test_a_read_right_after_the_helper_died_asks_the_next_one(kernel) -> None:
    """A listing (and %restore, which lists first) over the dead helper's connection
    reads a reset or end-of-file: it changed nothing, so the next helper is asked."""
    kernel.ok("x = 1")
    kernel.ok("%checkpoint -m a")
    for _ in range(10):
        # not waited for: the request may reach it before it dies (then the kernel reads
        # a reset) or after (a refused write)
        os.kill(helper_pid(), signal.SIGKILL)
        r = kernel.ok("%snapshots --text")
        assert "'a'" in r.stdout, r.stdout + r.stderr
    kernel.ok("x = 2")
    os.kill(helper_pid(), signal.SIGKILL)
    restored(kernel, "a")
    assert kernel.value("x") == "1"
