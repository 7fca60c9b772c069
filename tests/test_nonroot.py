"""The engine and the CLI, run by an ordinary user on that user's own process.

Needs root to create the user (chkpt-test) and to switch to it; skipped otherwise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zdtm

pytestmark = pytest.mark.timeout(180)

# Runs as the test user: the engine API without the CLI.
API_SCRIPT = """
import json, sys
from jupyter_chkpt.engine import checkpoint, restore
from jupyter_chkpt.store import Store
op, pid, store = sys.argv[1], int(sys.argv[2]), Store(sys.argv[3])
if op == "checkpoint":
    info = checkpoint(pid, store, label="api")
    print(json.dumps({"id": info.id, "pid": info.pid}))
else:
    result = restore(pid, store, sys.argv[4])
    print(json.dumps({"id": result.snapshot_id}))
"""


def run_as(user: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        env=zdtm.user_env(user),
        cwd=user.pw_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok_json(res: subprocess.CompletedProcess[str]) -> Any:
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_user_snapshots_own_process(spawn, nonroot_user, user_dir: Path) -> None:
    target = spawn("py_counter.py", user=nonroot_user, cwd=user_dir)
    assert zdtm.status(target.pid)["Uid"].split()[0] == str(nonroot_user.pw_uid)
    store = str(user_dir / "store")
    pid = str(target.pid)

    # CLI
    snap = ok_json(
        run_as(nonroot_user, "-m", "jupyter_chkpt", "snapshot", pid, "--json", "--store", store)
    )
    assert snap["pid"] == target.pid
    assert snap["bytes"] > 0 and snap["pause_s"] >= 0
    assert target.ok("mutate") == "counter=2"
    ok_json(
        run_as(
            nonroot_user,
            "-m",
            "jupyter_chkpt",
            "restore",
            pid,
            snap["id"],
            "--json",
            "--store",
            store,
        )
    )
    zdtm.assert_released(target.pid)
    assert target.ok("verify 1") == "counter=1"

    # API, same store
    api = ok_json(run_as(nonroot_user, "-c", API_SCRIPT, "checkpoint", pid, store))
    assert target.ok("mutate") == "counter=2"
    assert target.ok("mutate") == "counter=3"
    assert (
        ok_json(run_as(nonroot_user, "-c", API_SCRIPT, "restore", pid, store, api["id"]))["id"]
        == api["id"]
    )
    zdtm.assert_released(target.pid)
    assert target.ok("verify 1") == "counter=1"

    listed = run_as(nonroot_user, "-m", "jupyter_chkpt", "ls", pid, "--json", "--store", store)
    assert listed.returncode == 0, listed.stderr
    assert snap["id"] in listed.stdout and api["id"] in listed.stdout
    for _ in range(3):
        target.ok("work")
    target.quit()


def test_user_cannot_snapshot_root_process(spawn, nonroot_user, user_dir: Path) -> None:
    target = spawn("py_counter.py")  # runs as root
    res = run_as(
        nonroot_user,
        "-m",
        "jupyter_chkpt",
        "snapshot",
        str(target.pid),
        "--store",
        str(user_dir / "s"),
    )
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert res.stderr.strip() and "Traceback" not in res.stderr
    zdtm.assert_released(target.pid)
    assert target.ok("verify 1") == "counter=1"
    target.quit()
