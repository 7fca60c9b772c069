"""The CLI's store commands end to end on a real process: snapshot, ls, show, restore, rm, gc."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def run(*args: str) -> Any:
    res = subprocess.run(
        [sys.executable, "-m", "jupyter_chkpt", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.timeout(180)
def test_store_commands(spawn, store_dir: Path) -> None:
    store = ["--store", str(store_dir)]
    target = spawn("py_counter.py")
    pid = str(target.pid)
    first = run("snapshot", pid, "--label", "one", *store)
    assert {"id", "pid", "bytes", "pause_s"} <= first.keys()
    assert first["pid"] == target.pid and first["bytes"] > 0 and first["pause_s"] > 0
    target.ok("mutate")
    second = run("snapshot", pid, "--label", "two", *store)
    target.ok("mutate")

    listed = run("ls", pid, *store)
    assert [s["id"] for s in listed] == [first["id"], second["id"]]
    assert [s["label"] for s in listed] == ["one", "two"]
    assert run("ls", "1", *store) == []

    manifest = run("show", first["id"][:5], *store)
    assert manifest["id"] == first["id"]
    assert manifest["meta"]["process"]["pid"] == target.pid
    assert len(manifest["meta"]["threads"]) >= 1

    restored = run("restore", pid, second["id"], *store)
    assert restored["snapshot_id"] == second["id"]
    assert target.ok("verify 2") == "counter=2"

    assert run("rm", second["id"], *store) == {"deleted": [second["id"]]}
    assert [s["id"] for s in run("ls", *store)] == [first["id"]]
    freed = run("gc", *store)
    assert freed["bytes_freed"] > 0
    run("restore", pid, first["id"], *store)
    assert target.ok("verify 1") == "counter=1"
    target.quit()


def test_check_command() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "jupyter_chkpt", "check", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(res.stdout)
    assert res.returncode == (0 if report["snapshots_possible"] else 1)
    assert {c["name"] for c in report["capabilities"]} >= {"ptrace", "/proc/PID/mem write"}
