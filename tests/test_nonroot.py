"""The engine and the CLI, run by an ordinary user on that user's own process.

Needs root to create the user (chkpt-test) and to switch to it; skipped otherwise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import zdtm

pytestmark = pytest.mark.timeout(180)


def test_user_snapshots_own_process(spawn, nonroot_user, user_dir: Path) -> None:
    target = spawn("py_counter.py", user=nonroot_user, cwd=user_dir)
    assert zdtm.status(target.pid)["Uid"].split()[0] == str(nonroot_user.pw_uid)
    store = str(user_dir / "store")
    pid = str(target.pid)

    # CLI
    snap = zdtm.ok_json(
        zdtm.run_as(
            nonroot_user, "-m", "jupyter_chkpt", "snapshot", pid, "--json", "--store", store
        )
    )
    assert snap["pid"] == target.pid
    assert snap["bytes"] > 0 and snap["pause_s"] >= 0
    assert target.ok("mutate") == "counter=2"
    zdtm.ok_json(
        zdtm.run_as(
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
    api = zdtm.ok_json(zdtm.run_as(nonroot_user, "-c", zdtm.API_SCRIPT, "checkpoint", pid, store))
    assert target.ok("mutate") == "counter=2"
    assert target.ok("mutate") == "counter=3"
    assert (
        zdtm.ok_json(
            zdtm.run_as(nonroot_user, "-c", zdtm.API_SCRIPT, "restore", pid, store, api["id"])
        )["id"]
        == api["id"]
    )
    zdtm.assert_released(target.pid)
    assert target.ok("verify 1") == "counter=1"

    listed = zdtm.run_as(nonroot_user, "-m", "jupyter_chkpt", "ls", pid, "--json", "--store", store)
    assert listed.returncode == 0, listed.stderr
    assert snap["id"] in listed.stdout and api["id"] in listed.stdout
    for _ in range(3):
        target.ok("work")
    target.quit()


def test_user_cannot_snapshot_root_process(spawn, nonroot_user, user_dir: Path) -> None:
    target = spawn("py_counter.py")  # runs as root
    res = zdtm.run_as(
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


# Runs as the test user: a long-lived helper holding duplicates between
# checkpoint and restore, as the helper daemon does.
KEEPER_SCRIPT = """
import json, sys
from jupyter_chkpt.engine import checkpoint, restore
from jupyter_chkpt.engine.keeper import FdKeeper
from jupyter_chkpt.store import Store
pid, store = int(sys.argv[1]), Store(sys.argv[2])
with FdKeeper() as keeper:
    info = checkpoint(pid, store, keeper=keeper)
    print(info.id, flush=True)
    sys.stdin.readline()
    result = restore(pid, store, info.id, keeper=keeper)
    print(json.dumps(result.to_json()), flush=True)
"""


def test_user_restores_closed_sockets_with_a_keeper(spawn, nonroot_user, user_dir: Path) -> None:
    """The target runs pidfd_getfd on the helper: both are the same ordinary user."""
    target = spawn("py_zmq.py", user=nonroot_user, cwd=user_dir)
    helper = subprocess.Popen(
        [sys.executable, "-c", KEEPER_SCRIPT, str(target.pid), str(user_dir / "store")],
        user=nonroot_user.pw_uid,
        group=nonroot_user.pw_gid,
        extra_groups=[],
        env=zdtm.user_env(nonroot_user),
        cwd=user_dir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert helper.stdout is not None and helper.stdin is not None
        snap_id = helper.stdout.readline().strip()
        assert snap_id, helper.communicate(timeout=60)[1]
        target.ok("mutate")  # closes a zmq socket and an inproc PAIR end
        out, err = helper.communicate("go\n", timeout=120)
        assert helper.returncode == 0, err
        result = json.loads(out)
        assert result["snapshot_id"] == snap_id
        assert result["files"]["put_back"], result
    finally:
        if helper.poll() is None:
            helper.kill()
    zdtm.assert_released(target.pid)
    target.ok("verify")
    target.ok("work")
    target.quit()


# Runs as the test user: a snapshots kernel through jupyter_client, its helper
# started on demand as that user, %checkpoint / %restore, then the helper stopped.
KERNEL_SCRIPT = """
import os, pathlib, sys
sys.path.insert(0, sys.argv[1])
import kernels
from jupyter_chkpt.helper.client import HelperClient
base = pathlib.Path(sys.argv[2])
THREAD = '''
import threading, queue
q_in, q_out = queue.Queue(), queue.Queue()
def w():
    while q_in.get() != 'exit':
        q_out.put(threading.get_native_id())
t = threading.Thread(target=w, daemon=True)
t.start()
'''
(base / "rt").mkdir(mode=0o700)
env = kernels.kernel_env(base / "rt", base / "store")
os.environ.update(JUPYTER_RUNTIME_DIR=env["JUPYTER_RUNTIME_DIR"])
k = kernels.Kernel(env)
try:
    k.ok("import socket; a, b = socket.socketpair(); x = 1")
    k.ok(THREAD)
    k.ok("%checkpoint -m first")
    k.ok("x = 2; a.close(); q_in.put('exit'); t.join(10)")
    k.ok("!true")
    k.ok("%restore first")
    print(k.value("x"), k.value("a.sendall(b'hi'); b.recv(2)"), k.value("__import__('os').getuid()"))
    # recreated under a new tid (users cannot choose): Thread.native_id follows
    print(k.value("q_in.put(1); q_out.get(timeout=10) == t.native_id"))
finally:
    k.shutdown()
    with HelperClient(start=False) as c:
        c.call("shutdown", timeout=30)
"""


def test_user_runs_a_snapshots_kernel(nonroot_user, user_dir: Path) -> None:
    res = zdtm.run_as(nonroot_user, "-c", KERNEL_SCRIPT, str(zdtm.TESTS), str(user_dir))
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split() == ["1", "b'hi'", str(nonroot_user.pw_uid), "True"], res.stdout
