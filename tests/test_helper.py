"""The helper daemon: who may talk to it, what it refuses, and how it dies."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
import zdtm

from jupyter_chkpt.errors import HelperUnavailable, NotRegistered, RequestRefused
from jupyter_chkpt.helper import paths, protocol
from jupyter_chkpt.helper.client import HelperClient
from jupyter_chkpt.helper.server import HelperServer
from jupyter_chkpt.store import Store


@pytest.fixture
def server(helper_dirs):
    """A helper running in this process (threads), on this test's runtime directory."""
    srv = HelperServer(Store(helper_dirs[1]))
    srv.bind()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.stopping.set()
    t.join(10)


def test_socket_and_directory_are_private(server) -> None:
    sock = paths.socket_path()
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert sock.parent.stat().st_uid == os.getuid()


def test_unregistered_process_cannot_checkpoint_or_restore(server) -> None:
    with HelperClient(start=False) as c:
        with pytest.raises(NotRegistered, match="has not registered"):
            c.call("checkpoint", timeout=10)
        with pytest.raises(NotRegistered):
            c.call("restore", timeout=10, ref="-1")
        with pytest.raises(RequestRefused, match="tried to register"):
            c.call("register", timeout=10, pid=1)
        with pytest.raises(NotRegistered):
            c.call("list", timeout=10, pid=1)
        assert c.call("status", timeout=10)["kernels"] == []


def test_bad_requests_get_clear_errors(server) -> None:
    with HelperClient(start=False) as c, pytest.raises(Exception, match="unknown operation"):
        c.call("explode", timeout=10)
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(str(paths.socket_path()))
    raw.sendall(b'{"v": 99, "id": 1, "op": "status"}\nnot json\n')
    reader = protocol.LineReader(raw)
    for expected in ("protocol version 99", "not a JSON line"):
        line = reader.read()
        assert line is not None and expected in line.decode()
    raw.close()


def test_other_users_are_refused_even_if_the_socket_is_reachable(server, nonroot_user) -> None:
    """The directory (0700) keeps others out; should it ever be opened up, the
    peer uid check (SO_PEERCRED) still refuses them."""
    sock = paths.socket_path()
    for p in sock.parents:  # let the other user through every directory above it
        if not p.stat().st_mode & stat.S_IXOTH:
            p.chmod(p.stat().st_mode | stat.S_IXOTH)
    sock.chmod(0o666)
    code = (
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
        's.sendall(b\'{"v":1,"id":1,"op":"status"}\\n\'); print(s.recv(4096).decode())'
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(sock)],
        user=nonroot_user.pw_uid,
        group=nonroot_user.pw_gid,
        extra_groups=[],
        env=zdtm.user_env(nonroot_user),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert '"ok":false' in res.stdout and "serves uid" in res.stdout, res.stdout


def test_stale_socket_is_replaced_and_a_second_helper_steps_aside(helper_dirs) -> None:
    sock = paths.socket_path()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))  # a socket file nobody listens on: a dead helper's
    stale.close()
    with HelperClient() as c:  # starts a helper, which replaces the stale socket
        pid = c.helper_pid
        assert c.call("status", timeout=10)["helper_pid"] == pid
    # a second start finds the first running and leaves it alone
    res = subprocess.run(
        [sys.executable, "-m", "jupyter_chkpt.helper", "start"], timeout=60, capture_output=True
    )
    assert res.returncode == 0
    with HelperClient(start=False) as c:
        assert c.helper_pid == pid
    os.kill(pid, signal.SIGTERM)
    _gone(pid)
    assert not sock.exists()
    with pytest.raises(HelperUnavailable, match="no helper is running"):
        HelperClient(start=False)


def _gone(pid: int) -> None:
    assert zdtm.exited(pid), f"PID {pid} did not exit"


def _traced(pid: int) -> bool:
    return any(zdtm.status(pid, tid)["TracerPid"] != "0" for tid in zdtm.tasks(pid))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_helper_dying_during_a_snapshot_leaves_the_kernel_usable(kernel, how) -> None:
    kernel.ok("import numpy as np; big = np.ones(1_500_000_000 // 8); v = 7")
    kernel.ok("%checkpoint")
    helper = int(kernel.value("get_ipython().kernel._chkpt.client.helper_pid"))
    msg_id = kernel.kc.execute("%checkpoint -m doomed")
    deadline = time.monotonic() + 60
    while not _traced(kernel.pid):
        assert time.monotonic() < deadline, "the snapshot never froze the kernel"
        time.sleep(0.002)
    time.sleep(0.05)  # well into copying 1.5 GB, which is nearly all of the freeze
    os.kill(helper, how)
    _gone(helper)
    r = kernel.reply_to(msg_id)
    assert r.status == "ok"
    zdtm.assert_released(kernel.pid)
    assert kernel.value("v") == "7"
    for i in range(10):
        assert kernel.value(f"v + {i}") == str(7 + i)
    # a new helper took over (started on demand), and snapshots work again
    r = kernel.ok("%checkpoint -m after")
    assert "taken" in r.stdout
    new_helper = int(kernel.value("get_ipython().kernel._chkpt.client.helper_pid"))
    assert new_helper != helper
    kernel.ok("v = 8")
    kernel.ok("%restore after")
    assert kernel.value("v") == "7"


def test_cli_helper_status_and_stop(helper_dirs) -> None:
    run = [sys.executable, "-m", "jupyter_chkpt", "helper"]
    res = subprocess.run([*run, "stop"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "no helper is running" in res.stdout
    res = subprocess.run([*run, "status"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "no helper is running" in res.stderr
    res = subprocess.run([*run, "start", "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    pid = json.loads(res.stdout)["helper_pid"]
    res = subprocess.run([*run, "status"], capture_output=True, text=True, timeout=60)
    assert f"helper PID {pid}" in res.stdout
    res = subprocess.run([*run, "stop"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "stopping" in res.stdout
    _gone(pid)
