"""Failures as a snapshots kernel reports them: a %checkpoint that cannot be stored is a
failed cell (with the remedy, and no id), bad chkpt_requests are refused before anything
is done. Real kernels through jupyter_client, a real helper, a real full disk (tmpfs)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ID = re.compile(r"\b[0-9a-f]{8}\b")


@pytest.fixture
def full_store(helper_dirs: tuple[Path, Path]) -> Iterator[Path]:
    """The test's store on a 1 MiB tmpfs: room for the store's layout, not for a snapshot."""
    store = helper_dirs[1]
    store.mkdir(mode=0o700)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(store)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield store
    subprocess.run(["umount", "-l", str(store)], check=False)


@pytest.mark.timeout(300)
def test_a_checkpoint_that_cannot_be_stored_fails_the_cell_and_prints_no_id(
    full_store: Path, kernel_factory
) -> None:
    kernel = kernel_factory()
    kernel.ok("x = 1")
    msg_id = kernel.kc.execute("%checkpoint -m doomed")
    queued = kernel.kc.execute("x = 2")  # after a failed cell: aborted, as for any error
    r = kernel.reply_to(msg_id)
    assert r.status == "error", r.content
    assert r.content["ename"] == "StoreFull", (r.content["ename"], r.content["evalue"])
    assert "does not fit in the store" in r.content["evalue"], r.content
    assert "Nothing was stored and the process runs on" in r.content["evalue"], r.content
    assert r.error is not None and "snapshot failed" in r.error, r.types()
    assert "execute_result" not in r.types(), "the id of a snapshot that does not exist"
    out = r.stdout + r.stderr + "".join(str(m["content"]) for m in r.iopub)
    assert "taken" not in out and not ID.search(r.content["evalue"]), out
    assert kernel.reply_to(queued).status == "aborted"
    assert kernel.value("x") == "1"

    assert kernel.chkpt("list").content["snapshots"] == []
    r = kernel.chkpt("checkpoint", label="via-message")
    assert r.content["status"] == "error" and r.content["ename"] == "StoreFull", r.content
    assert "Free disk space" in r.content["error"]


@pytest.mark.timeout(300)
def test_a_stored_checkpoint_shows_its_id_after_the_snapshot(kernel) -> None:
    r = kernel.ok("%checkpoint -m fine")
    assert r.value is not None
    snap = r.value.strip("'")
    types = r.types()
    assert types.index("execute_result") < types.index("stream"), types
    assert f"snapshot {snap} taken" in r.stdout
    assert [s["id"] for s in kernel.chkpt("list").content["snapshots"]] == [snap]
    kernel.ok("sid = %checkpoint")  # as a value, too
    assert kernel.value("sid").strip("'") == kernel.chkpt("list").content["snapshots"][-1]["id"]


@pytest.mark.timeout(300)
def test_bad_chkpt_requests_are_refused_before_anything_is_done(kernel) -> None:
    before = kernel.chkpt("settings").content
    for content, says in [
        ({"auto": True, "keep": "x"}, "keep must be a whole number"),
        ({"keep": True}, "keep must be a whole number"),
        ({"auto": "yes"}, "auto must be true or false"),
    ]:
        r = kernel.chkpt("settings", **content)
        assert r.content["status"] == "error" and says in r.content["error"], r.content
        assert r.content["ename"] == "BadRequest", r.content
    after = kernel.chkpt("settings").content
    assert (after["auto"], after["keep"]) == (before["auto"], before["keep"])

    for content, says in [
        ({"label": "abcd1234"}, "looks like a snapshot id"),
        ({"label": 5}, "a label must be a string"),
    ]:
        r = kernel.chkpt("checkpoint", **content)
        assert r.content["status"] == "error" and says in r.content["error"], r.content
        assert "restart the helper" not in r.content["error"]
    r = kernel.run("%checkpoint -m dead")
    assert r.status == "error" and "A label is at most" in r.content["evalue"], r.content
    kernel.ok("%checkpoint")
    for content, says in [
        ({"snapshot": ""}, "no snapshot given"),
        ({"snapshot": 3}, "must be a string"),
    ]:
        for op in ("restore", "delete"):
            r = kernel.chkpt(op, **content)
            assert r.content["status"] == "error" and says in r.content["error"], (op, r.content)
    r = kernel.chkpt("label", snapshot="-1", label="beef")
    assert r.content["status"] == "error" and "looks like a snapshot id" in r.content["error"]
    assert len(kernel.chkpt("list").content["snapshots"]) == 1


@pytest.mark.timeout(300)
def test_unexpected_errors_arrive_with_a_remedy(kernel) -> None:
    """Never a bare `ValueError: ...`: a bug says it is one, and where to look."""
    kernel.ok(
        "ctl = get_ipython().kernel._chkpt\n"
        "def broken(op, **args):\n"
        "    raise ValueError('something nobody planned for')\n"
        "ctl.call = broken"
    )
    r = kernel.chkpt("list")
    assert r.content["status"] == "error" and r.content["ename"] == "InternalError", r.content
    assert "unexpected ValueError: something nobody planned for" in r.content["error"]
    assert "bug in jupyter-chkpt" in r.content["error"] and "kernel's log" in r.content["error"]

    r = kernel.run("%checkpoint")
    assert r.status == "error" and r.content["ename"] == "InternalError", r.content
    assert "bug in jupyter-chkpt" in r.content["evalue"], r.content
    assert "execute_result" not in r.types()

    r = kernel.chkpt("checkpoint")
    assert r.content["status"] == "error" and r.content["ename"] == "InternalError", r.content
    kernel.ok("del ctl.call")  # the class's method again
    assert kernel.chkpt("list").content["snapshots"] == []
