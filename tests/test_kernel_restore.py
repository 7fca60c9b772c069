"""A real snapshots kernel, checkpointed and restored in place while its client stays connected."""

from __future__ import annotations

import signal
import time

import pytest

SETUP = r"""
import numpy as np, pandas as pd, threading, itertools, os
x = 1
y = [1, 2, 3]
doomed = "still here"
big = np.arange(4_000_000, dtype=np.float64)          # 32 MB
frame = pd.DataFrame({"a": np.arange(200_000), "b": np.arange(200_000) % 7})
def f(v): return v * 2
class C:
    def __init__(self): self.v = 41
    def bump(self): self.v += 1; return self.v
c = C()
gen = (i * i for i in range(100)); next(gen); next(gen)
fh = open("data.txt", "w+"); fh.write("0123456789" * 10); fh.flush(); fh.seek(15)
stop = threading.Event()
ticks = itertools.count()
worker = threading.Thread(target=lambda: [next(ticks) for _ in iter(lambda: stop.wait(0.01), True)], daemon=True)
worker.start()
"""

MUTATE = r"""
x = 2
y.append(4)
del doomed
big[:] = -1
frame["a"] = 0
def f(v): return v * 3
class C:
    pass
c = C()
for _ in range(10): next(gen)
fh.seek(0); fh.truncate(); fh.write("gone")
import json, decimal
late = threading.Thread(target=stop.wait, name="late", daemon=True); late.start()
stop_late = True
"""

CHECKS = {
    "x": "1",
    "y": "[1, 2, 3]",
    "doomed": "'still here'",
    "float(big.sum())": str(float(sum(range(4_000_000)))),
    "int(frame['a'].sum()), int(frame['b'].sum())": str(
        (sum(range(200_000)), sum(i % 7 for i in range(200_000)))
    ),
    "f(5)": "10",
    "c.bump()": "42",
    "next(gen)": "4",
    "fh.tell()": "15",
    "'json' in dir(), 'decimal' in dir()": "(False, False)",
    "worker.is_alive(), stop.is_set()": "(True, False)",
    "'late' in dir(), sorted(t.name for t in threading.enumerate() if t.name == 'late')": "(False, [])",
}


@pytest.mark.timeout(300)
def test_values_counts_and_kernel_keep_working(kernel, tmp_path) -> None:
    kernel.ok(f"import os; os.chdir({str(tmp_path)!r})")
    kernel.ok(SETUP)
    snap = kernel.ok("%checkpoint -m setup")
    snap_id = snap.value.strip("'")
    assert f"snapshot {snap_id} taken" in snap.stdout
    count_at_snapshot = snap.content["execution_count"]

    kernel.ok(MUTATE)
    kernel.ok("x")
    r = kernel.ok("%restore setup")
    assert f"restored snapshot {snap_id}" in r.stdout
    assert "chkpt_restored" in r.types()
    (echo,) = [m for m in r.iopub if m["msg_type"] == "execute_input"]
    assert r.content["execution_count"] == echo["content"]["execution_count"]
    restored = next(m for m in r.iopub if m["msg_type"] == "chkpt_restored")
    assert restored["content"]["execution_count"] == count_at_snapshot

    first = kernel.ok("1 + 1")
    assert first.content["execution_count"] == count_at_snapshot + 1
    for expr, want in CHECKS.items():
        assert kernel.value(expr) == want, expr
    # the open file: its position is back; its content on disk is as the cells left it
    # (file contents are not part of a snapshot)
    assert kernel.value("fh.read()") == "''"

    ticks = int(kernel.value("next(ticks)"))
    time.sleep(0.3)
    assert int(kernel.value("next(ticks)")) > ticks + 5, "the restored thread does not run"

    for i in range(50):
        assert kernel.value(f"{i} * 3") == str(i * 3)

    # interrupt still works
    msg_id = kernel.kc.execute("import time; time.sleep(60)")
    time.sleep(1.0)
    kernel.km.interrupt_kernel()
    r = kernel.reply_to(msg_id, timeout=30)
    assert r.status == "error" and "KeyboardInterrupt" in (r.error or ""), r.content
    assert kernel.value("x") == "1"
    kernel.km.shutdown_kernel(now=False)
    assert not kernel.km.is_alive()


@pytest.mark.timeout(300)
def test_no_history_collision_after_many_restores(kernel) -> None:
    kernel.ok("a = 0")
    kernel.ok("%checkpoint -m base")
    for i in range(8):
        kernel.ok(f"a = {i + 1}")
        kernel.ok("a * 2")
        r = kernel.ok("%restore base")
        assert "not unique" not in r.stdout + r.stderr
        later = kernel.ok("a")
        assert later.value == "0"
        assert "not unique" not in later.stdout + later.stderr
    hist = kernel.ok(
        "ip = get_ipython(); ip.history_manager.writeout_cache(); "
        "len(list(ip.history_manager.get_range(raw=True)))"
    )
    assert "not unique" not in hist.stdout + hist.stderr


@pytest.mark.timeout(300)
def test_queued_requests_behind_restore_each_get_one_reply(kernel) -> None:
    kernel.ok("n = 0")
    kernel.ok("%checkpoint -m zero")
    kernel.ok("n = 100")
    # a Run All: the restore and five cells after it, sent at once
    restore_id = kernel.kc.execute("%restore zero")
    ids = [kernel.kc.execute(f"n += 1; print('cell', {i}, n)") for i in range(5)]
    r = kernel.reply_to(restore_id)
    assert r.status == "ok" and "restored snapshot" in r.stdout
    for i, msg_id in enumerate(ids):
        cell = kernel.reply_to(msg_id)
        assert cell.status == "ok", cell.content
        assert cell.stdout == f"cell {i} {i + 1}\n"
    # exactly one reply each: nothing else arrives for these requests
    time.sleep(1.0)
    extra = []
    while True:
        try:
            extra.append(kernel.kc.get_shell_msg(timeout=0.5))
        except Exception:
            break
    assert not extra, [m["parent_header"].get("msg_id") for m in extra]
    assert kernel.value("n") == "5"


@pytest.mark.timeout(300)
def test_chkpt_request_message(kernel) -> None:
    kernel.ok("v = 'before'")
    r = kernel.chkpt("checkpoint", label="via-message")
    assert r.reply["msg_type"] == "chkpt_reply" and r.content["status"] == "ok", r.content
    snap = r.content["snapshot"]
    assert snap["label"] == "via-message"
    kernel.ok("v = 'after'")
    listing = kernel.chkpt("list")
    assert [s["id"] for s in listing.content["snapshots"]] == [snap["id"]]
    assert listing.content["kernel"]["live"] == snap["id"]
    r = kernel.chkpt("restore", snapshot=snap["id"])
    assert r.reply["msg_type"] == "chkpt_reply" and r.content["status"] == "ok", r.content
    assert kernel.value("v") == "'before'"
    r = kernel.chkpt("label", snapshot=snap["id"], label="renamed")
    assert r.content["status"] == "ok", r.content
    assert r.content["snapshot"]["label"] == "renamed"
    r = kernel.chkpt("restore", snapshot="no-such")
    assert r.content["status"] == "error" and "no snapshot" in r.content["error"]
    r = kernel.chkpt("delete", snapshot=snap["id"])
    assert r.content["status"] == "ok"
    # what is left: the state the restore left (v = 'after')
    left = kernel.chkpt("list").content["snapshots"]
    assert [s["tags"]["kind"] for s in left] == ["before-restore"], left
    r = kernel.chkpt("frobnicate")
    assert r.content["status"] == "error" and "unknown" in r.content["error"]
    assert kernel.value("v") == "'before'"


@pytest.mark.timeout(300)
def test_magics_help_and_usage_errors(kernel) -> None:
    r = kernel.run("%restore")
    assert (r.status == "error" and "UsageError" in (r.error or "")) or "usage" in r.stderr.lower()
    r = kernel.run("%restore nothing-like-this")
    assert "no snapshot" in (r.error or "") + r.stderr, r.iopub
    r = kernel.ok("%checkpoint?")
    assert "end of the cell" in r.stdout + str(r.content.get("payload"))
    r = kernel.ok("%chkpt auto on --keep 2")
    assert "on, keeping 2" in r.stdout
    for i in range(4):
        kernel.ok(f"z = {i}")
    listing = kernel.chkpt("list").content["snapshots"]
    autos = [s for s in listing if s["tags"].get("auto")]
    assert 1 <= len(autos) <= 2, listing
    kernel.ok("%chkpt auto off")
    text = kernel.ok("%snapshots --text").stdout
    assert "(auto)" in text and "*" in text
    status = kernel.ok("%chkpt status").stdout
    assert "helper PID" in status


def test_interrupt_signal_does_not_reach_helper(kernel) -> None:
    """The helper runs in its own session: interrupting the kernel's process
    group must not touch it."""
    kernel.ok("%checkpoint")
    helper = int(kernel.value("get_ipython().kernel._chkpt.client.helper_pid"))
    assert os_getpgid(helper) != os_getpgid(kernel.pid)
    kernel.km.interrupt_kernel()
    time.sleep(0.5)
    import os

    os.kill(helper, 0)  # still there
    assert signal.SIGINT


def os_getpgid(pid: int) -> int:
    import os

    return os.getpgid(pid)


@pytest.mark.timeout(300)
def test_snapshot_browser_widget(kernel) -> None:
    kernel.ok("w = 'first'")
    first = kernel.ok("%checkpoint -m one").value.strip("'")
    kernel.ok("w = 'second'")
    second = kernel.ok("%checkpoint -m two").value.strip("'")
    r = kernel.ok("browser = %snapshots\nbrowser")
    result = next(m for m in r.iopub if m["msg_type"] == "execute_result")["content"]["data"]
    assert "application/vnd.jupyter.widget-view+json" in result
    assert first in result["text/plain"] and "* " in result["text/plain"]  # text where no widgets
    kernel.ok(f"browser.rows.value = {second!r}; browser.label.value = 'renamed'; browser._label()")
    assert "labelled" in kernel.value("browser.message.value")
    listing = {s["id"]: s for s in kernel.chkpt("list").content["snapshots"]}
    assert listing[second]["label"] == "renamed"
    kernel.ok(f"browser.rows.value = {second!r}; browser._delete()")
    assert second not in {s["id"] for s in kernel.chkpt("list").content["snapshots"]}
    # Restore runs on the main thread's event loop once the cell is done
    kernel.ok("w = 'third'")
    kernel.ok(f"browser.rows.value = {first!r}; browser._restore()")
    deadline = time.monotonic() + 30
    while kernel.value("w") != "'first'":
        assert time.monotonic() < deadline, "the widget's restore did not happen"
        time.sleep(0.2)


@pytest.mark.timeout(300)
def test_snapshot_references(kernel) -> None:
    """An exact id, then an exact label, then a unique id prefix of 4+ characters;
    labels that look like ids are refused, and a label is never matched twice."""
    kernel.ok("v = 'first'")
    first = kernel.value("%checkpoint -m start").strip("'")
    kernel.ok("v = 'second'")
    refused = kernel.run(f"%checkpoint -m {first[:4]}")  # would shadow the id prefix
    assert refused.status == "error", refused.content
    assert "looks like a snapshot id" in refused.content["evalue"], refused.content
    assert "neither 4 to 8 hex digits" in refused.content["evalue"]  # the remedy
    second = kernel.value("%checkpoint").strip("'")
    # a label that is also the start of its own id: one match (the "B" on bccca9b9)
    initial = second[0].upper()
    r = kernel.chkpt("label", snapshot=second, label=initial)
    assert r.content["status"] == "ok", r.content
    kernel.ok("v = 'third'")
    kernel.ok(f"%restore {initial}")
    assert kernel.value("v") == "'second'"
    kernel.ok(f"%restore {first}")
    assert kernel.value("v") == "'first'"
    kernel.ok(f"%restore {second[:5]}")
    assert kernel.value("v") == "'second'"
    kernel.ok(f"%restore {first[:4].upper()}")  # ids are hex: either case
    assert kernel.value("v") == "'first'"
    short = kernel.run(f"%restore {first[:3]}")
    assert short.status == "error" and "no snapshot with id or label" in short.content["evalue"]
    assert "at least its first 4 characters" in short.content["evalue"]
    kernel.ok("%checkpoint -m start")  # a second 'start'
    twice = kernel.run("%restore start")
    assert twice.status == "error" and "give an id" in twice.content["evalue"], twice.content


@pytest.mark.timeout(300)
def test_a_restore_that_lands_while_an_async_cell_awaits_answers_that_cell(kernel) -> None:
    """A widget's restore runs from the event loop, so it can land while a cell awaits
    (top-level await): the restored state never ran that cell, and the restored
    process answers it with an error instead of leaving its frontend waiting."""
    kernel.ok("x = 1")
    snap = kernel.value("%checkpoint -m a").strip("'")
    kernel.ok("x = 2")
    r = kernel.run(
        "import asyncio\n"
        f"get_ipython().kernel._chkpt.restore_soon({snap!r})\n"
        "await asyncio.sleep(30)\n"
        "y = 'the cell went on'",
        timeout=120,
    )
    assert r.status == "error", r.content
    assert r.content["ename"] == "Restored" and snap in r.content["evalue"], r.content
    assert "restored snapshot" in r.stdout, r.stdout
    assert kernel.value("x") == "1"
    assert kernel.run("y").status == "error"  # the rest of that cell never ran
    assert kernel.value("x + 1") == "2"
