"""Snapshots that outlive the kernel (issue 13): a snapshot restored into the process
the kernel manager started after the old one died, through jupyter_client.

The state below (what pickling-based tools cannot bring back into a new kernel) is
built, a snapshot is taken, the kernel is SIGKILLed (as the OOM killer would), the
kernel manager starts it again (same connection file, same ports), and `%restore`
in the new kernel moves the snapshot into it. The same client is used throughout:
it is never reconnected by hand.

Known defect (issue 13, open): after the move the kernel answers every request on
its shell channel, but IOPub (output, status) does not reach the client reliably: a
subscriber that reconnects to the moved-in XPUB socket is not taken in.
The tests wait for the move itself and read results from execute replies (shell),
and `test_output_reaches_the_client_after_a_move` is a strict xfail that says when
that is fixed. Until then the move is opt-in (JUPYTER_CHKPT_MOVE=1).
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import zdtm

pytestmark = pytest.mark.timeout(300)

STATE = r"""
import concurrent.futures, random, sqlite3, threading, time
import numpy as np
import pandas as pd
rng = random.Random(7)
gen = (rng.random() for _ in range(10**6))
first = [next(gen) for _ in range(3)]
arr = np.arange(1_000_000, dtype=np.float64) * 1.5
df = pd.DataFrame({"a": range(1000), "b": [str(i) for i in range(1000)]})
triple = lambda x: x * 3
fh = open(PATH, "w+")
fh.write("A" * 10); fh.flush(); fh.write("B" * 5)   # 10 bytes on disk, 5 in the buffer
db = sqlite3.connect(DB, check_same_thread=False)
db.execute("create table t (x)"); db.commit()
db.execute("insert into t values (1)")   # a transaction left open
ticks = []
def tick():
    while True:
        ticks.append(1)
        time.sleep(0.01)
ticker = threading.Thread(target=tick, daemon=True, name="ticker")
ticker.start()
pool = concurrent.futures.ThreadPoolExecutor(2)
assert pool.submit(pow, 2, 10).result() == 1024
"""


def _expected_fourth() -> float:
    rng = random.Random(7)
    return [rng.random() for _ in range(4)][3]


def _move_in(kernel: Any, code: str) -> None:
    """Run `code` (a restore of an earlier process's snapshot) and wait until the move
    is done: the process has the snapshot's memory map and nobody traces it."""
    from jupyter_chkpt.proc import procfs

    pid, before = kernel.pid, procfs.mm_fields(kernel.pid)
    kernel.kc.execute(code)
    deadline = time.monotonic() + 60
    while procfs.mm_fields(pid) == before or zdtm.status(pid)["TracerPid"] != "0":
        assert time.monotonic() < deadline, "the snapshot was not moved in"
        time.sleep(0.05)
    time.sleep(1.0)  # the client's connections come back (zmq reconnects by itself)


def _die_and_restart(kernel: Any) -> int:
    """SIGKILL, then the manager starts the kernel again; returns the old pid."""
    old = kernel.pid
    os.kill(old, signal.SIGKILL)
    kernel.km.provisioner.process.wait(30)  # reaped, as a kernel manager's poll does
    kernel.km.restart_kernel(now=True)
    kernel.kc.wait_for_ready(timeout=60)
    assert kernel.pid != old
    return old


def _shell_value(kernel: Any, expr: str) -> str:
    """`expr` evaluated by the kernel, read from the execute reply alone (shell): the
    known defect above keeps IOPub quiet after a move."""
    msg_id = kernel.kc.execute("", silent=True, user_expressions={"v": expr})
    reply = kernel.kc._recv_reply(msg_id, timeout=60)
    got = reply["content"]["user_expressions"]["v"]
    assert got["status"] == "ok", got
    return str(got["data"]["text/plain"])


def _shell_ok(kernel: Any, code: str) -> None:
    msg_id = kernel.kc.execute(code)
    reply = kernel.kc._recv_reply(msg_id, timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]


@pytest.fixture
def moving(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restoring snapshots of earlier processes is opt-in (experimental)."""
    monkeypatch.setenv("JUPYTER_CHKPT_MOVE", "1")


@pytest.mark.parametrize("helper", ["same helper", "helper killed"])
def test_a_killed_kernels_snapshot_moves_into_the_restarted_kernel(
    moving: None, kernel: Any, helper_dirs: Any, tmp_path: Path, helper: str
) -> None:
    path, db = tmp_path / "mid-write.txt", tmp_path / "t.db"
    kernel.ok(STATE.replace("PATH", repr(str(path))).replace("DB", repr(str(db))))
    arr_sum = kernel.value("arr.sum()")
    snap = kernel.ok("%checkpoint -m whole").stdout.split("snapshot ")[1].split()[0]
    kernel.ok("x_after = 1; fh.write('C' * 3)")  # after the snapshot: gone after the restore
    if helper == "helper killed":
        os.kill(int(kernel.value("get_ipython().kernel._chkpt.client.helper_pid")), 9)
    old = _die_and_restart(kernel)
    assert path.read_bytes() == b"A" * 10  # what the killed kernel had flushed
    assert "NameError" in (kernel.run("gen").error or "")  # a new, empty kernel

    earlier = {s["id"]: s for s in kernel.chkpt("list").content["earlier"]}
    assert earlier[snap]["restorable"] and earlier[snap]["pid"] == old, earlier
    _move_in(kernel, f"%restore {snap}")
    v = _shell_value
    assert v(kernel, "__import__('os').getpid()") == str(kernel.pid)
    assert float(v(kernel, "next(gen)")) == _expected_fourth()  # the generator goes on
    assert v(kernel, "arr.sum()") == arr_sum
    assert v(kernel, "(df.shape, df.b.iloc[999], triple(14))") == "((1000, 2), '999', 42)"
    assert v(kernel, "'x_after' in dir()") == "False"
    assert path.read_bytes() == b"A" * 10  # the restore did not touch the file
    assert v(kernel, "fh.tell()") == "15"
    _shell_ok(kernel, "fh.write('D'); fh.flush()")
    assert path.read_bytes() == b"A" * 10 + b"B" * 5 + b"D"  # written on at its position
    assert v(kernel, "(db.in_transaction, db.execute('select count(*) from t').fetchone())") == (
        "(True, (1,))"
    )
    _shell_ok(kernel, "db.commit()")
    assert v(kernel, "ticker.is_alive()") == "True"
    n = int(v(kernel, "len(ticks)"))
    time.sleep(0.3)
    assert int(v(kernel, "len(ticks)")) > n  # the thread runs
    assert v(kernel, "pool.submit(pow, 3, 3).result()") == "27"
    for i in range(50):
        _shell_ok(kernel, f"z = {i} * 2")
    assert v(kernel, "z") == "98"

    # interrupt, then shutdown
    msg_id = kernel.kc.execute("time.sleep(60)")
    time.sleep(1)
    kernel.km.interrupt_kernel()
    reply = kernel.kc._recv_reply(msg_id, timeout=30)
    assert reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]
    assert v(kernel, "1 + 1") == "2"
    pid = kernel.pid
    kernel.km.shutdown_kernel(now=False)
    assert zdtm.exited(pid)


def test_without_the_opt_in_it_is_refused(kernel: Any, helper_dirs: Any) -> None:
    kernel.ok("v = 5")
    snap = kernel.ok("%checkpoint").stdout.split("snapshot ")[1].split()[0]
    _die_and_restart(kernel)
    earlier = {s["id"]: s for s in kernel.chkpt("list").content["earlier"]}
    assert not earlier[snap]["restorable"] and "JUPYTER_CHKPT_MOVE=1" in earlier[snap]["why"]
    r = kernel.run(f"%restore {snap}")
    assert r.status == "error" and "no snapshot" in (r.error or "") + r.stderr, r.content
    assert "NameError" in (kernel.run("v").error or "")  # nothing was changed


@pytest.mark.xfail(strict=True, reason="known defect, issue 13: IOPub is quiet after a move")
def test_output_reaches_the_client_after_a_move(
    moving: None, kernel: Any, helper_dirs: Any
) -> None:
    kernel.ok("v = 5")
    snap = kernel.ok("%checkpoint").stdout.split("snapshot ")[1].split()[0]
    _die_and_restart(kernel)
    _move_in(kernel, f"%restore {snap}")
    assert (
        kernel.value(
            "v",
        )
        == "5"
    )
