"""Snapshots that outlive the kernel (issue 13): a snapshot restored into the process
the kernel manager started after the old one died, through jupyter_client.

The state below (what pickling-based tools cannot bring back into a new kernel) is
built, a snapshot is taken, the kernel is SIGKILLed (as the OOM killer would), the
kernel manager starts it again (same connection file, same ports), and `%restore`
in the new kernel moves the snapshot into it. The same client is used throughout:
it is never reconnected by hand; its connections were reset by the move (they
belonged to the new process) and zmq reconnects them by itself, so every result,
the `%restore` cell's own output and status included, is read as a notebook reads
it: output on IOPub, the reply on shell.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import threading
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


def _move_in(kernel: Any, snap: str, old: int) -> None:
    """`%restore snap` in the new kernel: its own reply, output and idle arrive."""
    r = kernel.run(f"%restore {snap}", timeout=60)
    assert r.status == "ok", r.content
    assert f"restored snapshot {snap}" in r.stdout, r.stdout
    assert "earlier process" in r.stdout and f"(PID {old})" in r.stdout, r.stdout
    assert r.types()[-1] == "status"  # idle: a notebook shows the cell done


def _die_and_restart(kernel: Any) -> int:
    """SIGKILL, then the manager starts the kernel again; returns the old pid."""
    old = kernel.pid
    os.kill(old, signal.SIGKILL)
    kernel.km.provisioner.process.wait(30)  # reaped, as a kernel manager's poll does
    kernel.km.restart_kernel(now=True)
    kernel.kc.wait_for_ready(timeout=60)
    assert kernel.pid != old
    return old


@pytest.mark.parametrize("helper", ["same helper", "helper killed"])
def test_a_killed_kernels_snapshot_moves_into_the_restarted_kernel(
    kernel: Any, helper_dirs: Any, tmp_path: Path, helper: str
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
    _move_in(kernel, snap, old)
    v = kernel.value
    assert v("__import__('os').getpid()") == str(kernel.pid)
    assert float(v("next(gen)")) == _expected_fourth()  # the generator goes on
    assert v("arr.sum()") == arr_sum
    assert v("(df.shape, df.b.iloc[999], triple(14))") == "((1000, 2), '999', 42)"
    assert "NameError" in (kernel.run("x_after").error or "")
    assert path.read_bytes() == b"A" * 10  # the restore did not touch the file
    assert v("fh.tell()") == "15"
    kernel.ok("fh.write('D'); fh.flush()")
    assert path.read_bytes() == b"A" * 10 + b"B" * 5 + b"D"  # written on at its position
    assert v("(db.in_transaction, db.execute('select count(*) from t').fetchone())") == (
        "(True, (1,))"
    )
    kernel.ok("db.commit()")
    assert v("ticker.is_alive()") == "True"
    n = int(v("len(ticks)"))
    time.sleep(0.3)
    assert int(v("len(ticks)")) > n  # the thread runs
    assert v("pool.submit(pow, 3, 3).result()") == "27"
    for i in range(50):
        assert kernel.ok(f"z = {i} * 2; print(z)").stdout == f"{i * 2}\n"  # output arrives
    assert v("z") == "98"

    # interrupt, then shutdown
    msg_id = kernel.kc.execute("time.sleep(60)")
    time.sleep(1)
    kernel.km.interrupt_kernel()
    reply = kernel.kc._recv_reply(msg_id, timeout=30)
    assert reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]
    assert v("1 + 1") == "2"
    pid = kernel.pid
    kernel.km.shutdown_kernel(now=False)
    assert zdtm.exited(pid)


def test_turned_off_it_is_refused(
    kernel_factory: Any, helper_dirs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_CHKPT_MOVE", "0")  # in Jupyter's (so the helper's) environment
    kernel = kernel_factory()
    kernel.ok("v = 5")
    snap = kernel.ok("%checkpoint").stdout.split("snapshot ")[1].split()[0]
    _die_and_restart(kernel)
    earlier = {s["id"]: s for s in kernel.chkpt("list").content["earlier"]}
    assert not earlier[snap]["restorable"] and "JUPYTER_CHKPT_MOVE=0" in earlier[snap]["why"]
    r = kernel.run(f"%restore {snap}")
    assert r.status == "error" and "no snapshot" in (r.error or "") + r.stderr, r.content
    assert "NameError" in (kernel.run("v").error or "")  # nothing was changed


def test_another_kernel_of_the_notebook_is_listed_but_refused(
    kernel_factory: Any, helper_dirs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot of another kernel of the same notebook (closed and opened again: a
    new kernel id, connection file, ports and key) would move in state that listens
    where no frontend connects: listed, with why, and refused."""
    monkeypatch.setenv("JPY_SESSION_NAME", "/work/x.ipynb")  # jupyter_server names it
    first = kernel_factory()
    first.ok("v = 5")
    snap = first.ok("%checkpoint").stdout.split("snapshot ")[1].split()[0]
    first.shutdown()
    second = kernel_factory()
    earlier = {s["id"]: s for s in second.chkpt("list").content["earlier"]}
    assert snap in earlier and not earlier[snap]["restorable"], earlier
    assert "another kernel of this notebook" in earlier[snap]["why"], earlier[snap]["why"]
    r = second.run(f"%restore {snap}")
    assert r.status == "error", r.content
    assert "NameError" in (second.run("v").error or "")  # nothing was changed
    assert second.value("1 + 1") == "2"


def test_a_second_frontend_sees_the_moving_cell_finish(kernel: Any, helper_dirs: Any) -> None:
    """Two frontends (two browser tabs): the one that did not ask, and looks at IOPub
    only every 0.6 s, still gets the %restore cell's output and its idle, because the
    moved kernel waits for a subscription from each IOPub connection there was."""
    kernel.ok("v = 5")
    snap = kernel.ok("%checkpoint").stdout.split("snapshot ")[1].split()[0]
    old = _die_and_restart(kernel)
    from jupyter_client.blocking import BlockingKernelClient

    other = BlockingKernelClient()  # a session (and so a shell identity) of its own
    other.load_connection_info(kernel.km.get_connection_info())
    other.start_channels()
    other.wait_for_ready(timeout=60)
    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def watch() -> None:  # the other tab: its own thread, a look every 0.6 s
        while not stop.is_set():
            try:
                while True:
                    seen.append(other.get_iopub_msg(timeout=0))
            except queue.Empty:
                time.sleep(0.6)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        msg_id = kernel.kc.execute(f"%restore {snap}")
        r = kernel.reply_to(msg_id, timeout=60)
        assert r.status == "ok" and f"(PID {old})" in r.stdout, r.content
        deadline = time.monotonic() + 10
        while not any(
            m["parent_header"].get("msg_id") == msg_id
            and m["msg_type"] == "status"
            and m["content"]["execution_state"] == "idle"
            for m in list(seen)
        ):
            assert time.monotonic() < deadline, [m["msg_type"] for m in seen]
            time.sleep(0.05)
        mine = [m for m in list(seen) if m["parent_header"].get("msg_id") == msg_id]
        assert any(
            m["msg_type"] == "stream" and "restored snapshot" in m["content"]["text"] for m in mine
        )
    finally:
        stop.set()
        watcher.join(10)
        other.stop_channels()
    assert kernel.value("v") == "5"
