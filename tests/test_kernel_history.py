"""The snapshot history a user can trust and undo (issue 12), on real snapshots kernels
through jupyter_client: every restore keeps the state it leaves, undo/redo of cells,
settings that do not travel back in time, diffs of variables, change events on IOPub,
cancelling a request that waits for a cell, and the snapshots of earlier processes.

Each scenario builds state, snapshots, changes it, restores, and checks the state
from inside the kernel and that it keeps working.
"""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.timeout(300)

STATE = r"""
import itertools
counter = itertools.count(100)
items = [next(counter), next(counter)]
"""


def _left(r) -> str:
    """The snapshot id a restore's output names as the state it left."""
    for line in r.stdout.splitlines():
        if "the state it left is kept as snapshot" in line:
            return line.split("snapshot ", 1)[1].split(":", 1)[0]
    raise AssertionError(f"no state-left line in {r.stdout!r}")


def _failed(r, text: str) -> bool:
    """The cell failed saying `text` (IPython shows a UsageError on stderr)."""
    said = (r.error or "") + r.stderr
    assert r.status == "error" and text in said, (r.status, said)
    return True


def test_every_restore_keeps_the_state_it_leaves(kernel) -> None:
    kernel.ok(STATE)
    kernel.ok("%checkpoint -m start")
    kernel.ok("items.append(next(counter)); later = 'x'")
    r = kernel.ok("%restore start")
    left = _left(r)
    assert kernel.value("items, 'later' in dir()") == "([100, 101], False)"
    # back to the state the restore left: the restore is undone, the generator goes on
    r = kernel.ok(f"%restore {left}")
    # nothing ran since the snapshot it went to: no new one is needed to go back
    n = len(kernel.chkpt("list").content["snapshots"])
    r = kernel.ok("%restore start")
    assert _left(r) == left
    assert len(kernel.chkpt("list").content["snapshots"]) == n
    kernel.ok(f"%restore {left}")
    assert kernel.value("items, later") == "([100, 101, 102], 'x')"
    assert kernel.value("next(counter)") == "103"
    # the process woke up in the middle of the old %restore cell, and keeps working
    for i in range(5):
        assert kernel.value(f"{i} + len(items)") == str(i + 3)
    listing = kernel.chkpt("list").content
    kinds = {s["id"]: s["tags"].get("kind") for s in listing["snapshots"]}
    assert kinds[left] == "before-restore", kinds


def test_a_restore_request_says_what_it_left_and_discard_keeps_nothing(kernel) -> None:
    kernel.ok("v = 'one'")
    snap = kernel.chkpt("checkpoint", label="one").content["snapshot"]["id"]
    kernel.ok("v = 'two'")
    r = kernel.chkpt("restore", snapshot=snap)
    assert r.content["status"] == "ok", r.content
    left = r.content["result"]["left"]
    assert left and left != snap
    assert kernel.value("v") == "'one'"
    r = kernel.chkpt("restore", snapshot=left)  # a chkpt_request answered by the resumed state
    assert r.content["status"] == "ok", r.content
    assert kernel.value("v") == "'two'"
    kernel.ok("v = 'three'")
    n = len(kernel.chkpt("list").content["snapshots"])
    r = kernel.run(f"%restore --discard {snap}")
    assert r.status == "ok" and "state it left" not in r.stdout, r.stdout
    assert kernel.value("v") == "'one'"
    assert len(kernel.chkpt("list").content["snapshots"]) == n


def _peek(kernel, expr: str) -> str:
    """`expr` evaluated by a silent request: not a cell (no snapshot, no undo step)."""
    msg_id = kernel.kc.execute("", silent=True, user_expressions={"v": expr})
    reply = kernel.kc._recv_reply(msg_id, timeout=60)
    return str(reply["content"]["user_expressions"]["v"]["data"]["text/plain"])


def test_undo_and_redo_cells(kernel) -> None:
    r = kernel.run("%chkpt undo")
    assert _failed(r, "automatic snapshots")
    kernel.ok("%chkpt auto on")
    kernel.ok("x = 1")
    kernel.ok("x = 2")
    kernel.ok("x = 3")
    kernel.ok("%chkpt undo")
    assert _peek(kernel, "x") == "2"
    kernel.ok("%chkpt undo")
    assert _peek(kernel, "x") == "1"
    r = kernel.chkpt("redo")  # the frontends' way (REST and the panel)
    assert r.content["status"] == "ok", r.content
    assert _peek(kernel, "x") == "2"
    kernel.ok("%chkpt redo")
    assert _peek(kernel, "x") == "3"
    r = kernel.run("%chkpt redo")
    assert _failed(r, "nothing to redo")
    kernel.ok("%chkpt undo")
    assert _peek(kernel, "x") == "2"
    kernel.ok("x = 20")  # a cell ran: there is nothing to redo any more
    r = kernel.chkpt("redo")
    assert r.content["status"] == "error" and r.content["ename"] == "NothingToUndo", r.content
    assert kernel.value("x") == "20"
    kernel.ok("%chkpt undo")  # undoes the cell that showed x
    assert _peek(kernel, "x") == "20"
    kernel.ok("%chkpt undo")
    assert _peek(kernel, "x") == "2"


def test_settings_survive_restores_both_ways(kernel) -> None:
    kernel.ok("a = 1")
    off = kernel.chkpt("checkpoint", label="off").content["snapshot"]["id"]
    kernel.ok("%chkpt auto on --keep 7")
    kernel.ok("a = 2")
    on = kernel.chkpt("list").content["kernel"]["live"]
    assert kernel.chkpt("restore", snapshot=off).content["status"] == "ok"
    r = kernel.ok("%chkpt auto")
    assert "on, keeping 7" in r.stdout, r.stdout
    r = kernel.chkpt("settings", auto=False)
    assert r.content["auto"] is False
    assert kernel.chkpt("restore", snapshot=on).content["status"] == "ok"
    assert kernel.value("a") == "2"
    r = kernel.ok("%chkpt auto")
    assert "off, keeping 7" in r.stdout, r.stdout


def test_diff_between_snapshots(kernel) -> None:
    kernel.ok("import numpy as np\nkeep = 5\nname = 'a'\nbig = np.zeros(1 << 20)\ngone = [1]")
    a = kernel.chkpt("checkpoint").content["snapshot"]["id"]
    kernel.ok("name = 'b'\nbig[0] = 1\ndel gone\nnew = {'k': 1}")
    b = kernel.chkpt("checkpoint").content["snapshot"]["id"]
    r = kernel.chkpt("diff", a=a, b=b)
    assert r.content["status"] == "ok", r.content
    assert [v["name"] for v in r.content["added"]] == ["new"]
    assert r.content["added"][0]["repr"] == "{'k': 1}"
    assert [v["name"] for v in r.content["removed"]] == ["gone"]
    changed = {c["name"]: c for c in r.content["changed"]}
    assert set(changed) == {"big", "name"}, changed
    assert changed["name"]["from"]["repr"] == "'a'" and changed["name"]["to"]["repr"] == "'b'"
    assert changed["big"]["to"]["type"] == "numpy.ndarray"
    assert changed["big"]["to"]["size"] == 8 << 20
    assert r.content["same"] >= 1  # keep (np the module is not a variable)
    out = kernel.ok(f"%snapshots diff {a} {b}").stdout
    assert "+ new: dict" in out and "- gone: list" in out and "~ name: str" in out, out
    r = kernel.run(f"%snapshots diff {a}")
    assert _failed(r, "usage: %snapshots diff A B")
    # the listing carries the count, not the summary
    snaps = kernel.chkpt("list").content["snapshots"]
    assert all("namespace" not in s["tags"] and s["tags"]["variables"] >= 4 for s in snaps)


def _iopub_events(kernel, seconds: float) -> list[dict]:
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got.append(kernel.kc.get_iopub_msg(timeout=0.2))
        except Exception:
            continue
    return got


def test_changes_are_published_on_iopub(kernel) -> None:
    kernel.ok("x = 1")
    events: list[tuple[str, str]] = []

    def collect(r) -> None:
        events.extend(
            (m["content"]["event"], m["content"]["snapshot"])
            for m in r.iopub
            if m["msg_type"] == "chkpt_changed"
        )

    r = kernel.ok("%checkpoint -m one")
    collect(r)
    snap = kernel.chkpt("list").content["kernel"]["live"]
    assert ("taken", snap) in events, events
    collect(kernel.chkpt("label", snapshot=snap, label="uno"))
    assert ("labelled", snap) in events
    kernel.ok("x = 2")
    collect(kernel.chkpt("restore", snapshot=snap))
    assert ("restored", snap) in events, events
    left = [s for e, s in events if e == "taken" and s != snap]
    assert left, events  # the state the restore left
    collect(kernel.chkpt("delete", snapshot=left[0]))
    assert ("deleted", left[0]) in events
    kernel.ok("%chkpt auto on")
    collect(kernel.ok("y = 1"))
    auto = kernel.chkpt("list").content["kernel"]["live"]
    assert ("taken", auto) in events, events


def test_a_request_waiting_for_a_cell_can_be_cancelled(kernel) -> None:
    kernel.ok("v = 'kept'")
    snap = kernel.chkpt("checkpoint").content["snapshot"]["id"]
    kernel.ok("v = 'now'")
    cell = kernel.kc.execute("import time; time.sleep(4); v = 'after the cell'")
    msg = kernel.kc.session.msg("chkpt_request", {"operation": "restore", "snapshot": snap})
    kernel.kc.shell_channel.send(msg)
    time.sleep(0.5)
    cancel = kernel.kc.session.msg(
        "chkpt_request", {"operation": "cancel", "requests": [msg["header"]["msg_id"]]}
    )
    kernel.kc.control_channel.send(cancel)
    ack = kernel.kc._recv_reply(cancel["header"]["msg_id"], timeout=10, channel="control")
    assert ack["content"]["status"] == "ok", ack
    assert kernel.reply_to(cell).status == "ok"
    r = kernel.reply_to(msg["header"]["msg_id"])
    assert r.content["status"] == "error" and r.content["ename"] == "Cancelled", r.content
    assert kernel.value("v") == "'after the cell'"  # nothing was restored
    bad = kernel.kc.session.msg("chkpt_request", {"operation": "restore"})
    kernel.kc.control_channel.send(bad)
    r = kernel.kc._recv_reply(bad["header"]["msg_id"], timeout=10, channel="control")
    assert r["content"]["status"] == "error" and "cancel" in r["content"]["error"]


def test_snapshots_of_an_earlier_process_are_listed_apart(kernel) -> None:
    kernel.ok("v = 1")
    old = kernel.chkpt("checkpoint", label="before-restart").content["snapshot"]["id"]
    old_pid = kernel.pid
    kernel.km.restart_kernel(now=True)
    kernel.kc.wait_for_ready(timeout=60)
    assert kernel.pid != old_pid
    listing = kernel.chkpt("list").content
    assert listing["snapshots"] == [] and listing["kernel"]["pid"] == kernel.pid
    earlier = {s["id"]: s for s in listing["earlier"]}
    assert old in earlier and earlier[old]["restorable"] is True, earlier
    assert "earlier process" in earlier[old]["why"] and earlier[old]["pid"] == old_pid
    assert json.dumps(listing["usage"]) == json.dumps({"count": 0, "stored_bytes": 0})
    # restoring it moves it into this process: test_kernel_transplant.py


def test_a_storage_limit_prunes_the_oldest_automatic_snapshots(kernel) -> None:
    kernel.ok("blob = bytes(8 << 20)")
    manual = kernel.chkpt("checkpoint", label="mine").content["snapshot"]["id"]
    r = kernel.ok("%chkpt auto on --keep 100 --max-mib 1")
    assert "at most 1 MiB" in r.stdout, r.stdout
    for i in range(4):
        kernel.ok(f"blob = bytes([{i}]) * (4 << 20)")  # 4 MiB new each time (compressible)
    snaps = kernel.chkpt("list").content
    autos = [s for s in snaps["snapshots"] if s["tags"]["auto"]]
    assert manual in [s["id"] for s in snaps["snapshots"]]  # manual ones are never pruned
    assert snaps["kernel"]["live"] in [s["id"] for s in autos]
    assert len(autos) < 5, [(s["id"], s["stored_bytes"]) for s in autos]
    r = kernel.chkpt("settings", max_mib=-1)
    assert r.content["status"] == "error" and "max_mib" in r.content["error"]
    r = kernel.chkpt("settings", max_mib=0)
    assert r.content == {**r.content, "auto": True, "keep": 100, "max_mib": 0}


def test_a_snapshot_a_frontend_asks_for_names_the_last_cell(kernel) -> None:
    kernel.ok("# a comment\nanswer = 42")
    snap = kernel.chkpt("checkpoint").content["snapshot"]
    assert snap["tags"]["cell"] == "# a comment", snap["tags"]
    assert snap["tags"]["kind"] == "manual"


def test_references_name_snapshots_before_the_state_left_is_kept(kernel) -> None:
    kernel.ok("v = 1")
    kernel.ok("%checkpoint -m one")
    kernel.ok("v = 2")
    n = len(kernel.chkpt("list").content["snapshots"])
    r = kernel.run("%restore no-such-label")
    assert _failed(r, "no snapshot")
    assert len(kernel.chkpt("list").content["snapshots"]) == n  # a failed restore keeps nothing
    kernel.ok("%restore -1")  # the newest *before* the state left joined them
    assert kernel.value("v") == "1"


def test_restoring_the_state_a_widget_restore_left_stays_there(kernel) -> None:
    """A widget's restore (from the event loop, no shell request) leaves a state; when
    that state is restored later, the process wakes inside the widget's old restore,
    which must not run again."""
    kernel.ok("x = 1")
    kernel.ok("%checkpoint -m one")
    kernel.ok("x = 2")
    kernel.ok("get_ipython().kernel._chkpt.restore_soon('one')")
    deadline = time.monotonic() + 60
    while _peek(kernel, "x") != "1":
        assert time.monotonic() < deadline, "the widget's restore did not happen"
        time.sleep(0.2)
    snaps = kernel.chkpt("list").content["snapshots"]
    left = [s["id"] for s in snaps if s["tags"].get("kind") == "before-restore"]
    assert len(left) == 1, snaps
    r = kernel.chkpt("restore", snapshot=left[0])
    assert r.content["status"] == "ok", r.content
    assert _peek(kernel, "x") == "2"
    assert kernel.chkpt("list").content["kernel"]["live"] == left[0]
    assert kernel.value("x * 10") == "20"
