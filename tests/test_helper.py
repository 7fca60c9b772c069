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

from jupyter_chkpt.errors import (
    BadRequest,
    HelperUnavailable,
    InternalError,
    NotRegistered,
    RequestRefused,
    RequestTooLarge,
)
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
    deep = b"[" * 100_000 + b"]" * 100_000
    raw.sendall(b'{"v": 99, "id": 1, "op": "status"}\nnot json\n' + deep + b"\n")
    reader = protocol.LineReader(raw)
    # only a version mismatch says "different versions"
    for kind, expected in (
        ("ProtocolError", "protocol version 99"),
        ("BadRequest", "not a JSON line"),
        ("BadRequest", "nested too deeply"),
    ):
        line = reader.read()
        assert line is not None
        error = json.loads(line)["error"]
        assert error["type"] == kind and expected in error["message"], error
        assert ("different versions" in error["remedy"]) == (kind == "ProtocolError"), error
    raw.close()


def _register_self(c: HelperClient) -> None:
    """This test process registers with the in-process helper (its peer pid is ours)."""
    c.call("register", timeout=10, pid=os.getpid(), kernel_id="me")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"keep": "x"}, "keep must be a whole number"),
        ({"keep": True}, "keep must be a whole number"),  # JSON true is not 1
        ({"keep": 0}, "keep must be a whole number"),
        ({"label": 5}, "a label must be a string"),
        ({"label": "x" * 201}, "too long"),
        ({"label": "deadbeef"}, "looks like a snapshot id"),
        ({"label": "-2"}, "looks like -N"),
        ({"label": "a\nb"}, "control characters"),
        ({"tags": "x"}, "tags must be an object"),
        ({"snap_id": "../x"}, "snap_id must be 8 lowercase hex digits"),
    ],
)
def test_checkpoint_arguments_are_checked_before_anything_is_done(server, args, says) -> None:
    """Checked before the snapshot is taken (the test process could not be frozen
    by a helper thread of its own: any snapshot attempt would fail differently)."""
    with HelperClient(start=False) as c:
        _register_self(c)
        with pytest.raises(BadRequest, match=says) as err:
            good = {"snap_id": None, "label": "", "tags": {}, "keep": None}
            c.call("checkpoint", timeout=10, **{**good, **args})
        assert err.value.remedy and "different versions" not in err.value.remedy
        assert "Nothing was done" in err.value.remedy
        assert server.store.list() == []


def test_bad_arguments_of_other_operations(server) -> None:
    with HelperClient(start=False) as c:
        _register_self(c)
        for op, args, says in [
            ("restore", {"ref": ""}, "no snapshot given"),
            ("restore", {"ref": 7}, "must be a string"),
            ("restore", {"ref": "-1", "carry": []}, "carry must be an object"),
            ("register", {"pid": True}, "pid must be an integer"),
            ("list", {"pid": "1"}, "pid must be an integer"),
            ("delete", {"snapshot": ""}, "no snapshot given"),
            ("label", {"snapshot": "abcd"}, "label must be given"),
            ("label", {"snapshot": "abcd", "label": "abcd"}, "looks like a snapshot id"),
        ]:
            with pytest.raises(BadRequest, match=says):
                c.call(op, timeout=10, **args)
        assert c.call("status", timeout=10)["kernels"]  # the connection still works


def test_unexpected_errors_arrive_with_a_remedy(server, monkeypatch) -> None:
    def broken(conn, req):
        raise ValueError("something nobody planned for")

    monkeypatch.setattr(server, "op_status", broken)
    with HelperClient(start=False) as c, pytest.raises(InternalError) as err:
        c.call("status", timeout=10)
    assert "ValueError: something nobody planned for" in err.value.message
    assert "bug" in err.value.remedy and str(paths.log_path()) in err.value.remedy


def test_an_over_long_line_is_answered_then_skipped(server) -> None:
    """A foreign client's line over the limit: the documented error, no EPIPE
    while it sends the rest, and the connection goes on with the next line."""
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(str(paths.socket_path()))
    sender = threading.Thread(
        target=raw.sendall,
        args=(b"x" * (protocol.MAX_LINE + 1) + b'\n{"v":1,"id":2,"op":"status"}\n',),
    )
    sender.start()  # the helper answers while it is still sending
    reader = protocol.LineReader(raw)
    first, second = reader.read(), reader.read()
    sender.join()
    assert first is not None and second is not None
    error = json.loads(first)["error"]
    assert error["type"] == "RequestTooLarge" and str(protocol.MAX_LINE) in error["message"]
    assert "64 MiB" in error["remedy"] and "different versions" not in error["remedy"]
    assert json.loads(second)["ok"] and json.loads(second)["id"] == 2
    raw.close()


def test_the_client_refuses_to_send_an_over_long_request(server) -> None:
    with HelperClient(start=False) as c:
        with pytest.raises(RequestTooLarge, match="it was not sent"):
            c.call("label", timeout=10, snapshot="abcd", label="x" * protocol.MAX_LINE)
        assert c.call("status", timeout=10)["helper_pid"]  # nothing was sent: still in step


def test_line_reader_reads_big_and_many_lines() -> None:
    a, b = socket.socketpair()
    with a, b:
        big = os.urandom(3 << 20).hex().encode()  # 6 MiB, in many receives
        writer = threading.Thread(target=a.sendall, args=(b"one\n" + big + b"\nx\n\n",))
        writer.start()
        reader = protocol.LineReader(b)
        assert [reader.read() for _ in range(4)] == [b"one", big, b"x", b""]
        writer.join()
        a.close()
        assert reader.read() is None


def test_line_reader_refuses_lines_over_its_limit_and_skips_them() -> None:
    a, b = socket.socketpair()
    with a, b:
        reader = protocol.LineReader(b, limit=10)
        a.sendall(b"0123456789\n0123456789a\nok\n")  # at the limit, over it (newline seen)
        assert reader.read() == b"0123456789"
        with pytest.raises(RequestTooLarge):
            reader.read()
        assert reader.read() == b"ok"
        a.sendall(b"x" * 30)  # over it before any newline: the rest is skipped
        with pytest.raises(RequestTooLarge):
            reader.read()
        a.sendall(b"y" * 30 + b"\nnext\n")
        assert reader.read() == b"next"


def test_other_users_are_refused_even_if_the_socket_is_reachable(server, nonroot_user) -> None:
    """The directory (0700) keeps others out; should it ever be opened up, the
    peer uid check (SO_PEERCRED) still refuses them. The refusal comes unasked,
    and a request sent after it still goes through (the helper reads until the
    peer hangs up: no EPIPE however late it sends), then the peer reads EOF."""
    sock = paths.socket_path()
    for p in sock.parents:  # let the other user through every directory above it
        if not p.stat().st_mode & stat.S_IXOTH:
            p.chmod(p.stat().st_mode | stat.S_IXOTH)
    sock.chmod(0o666)
    code = (
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
        "f=s.makefile('rb'); print(f.readline().decode().strip());"
        's.sendall(b\'{"v":1,"id":1,"op":"status"}\\n\'); print(repr(f.read()))'
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
    refusal, rest = res.stdout.splitlines()
    assert '"ok":false' in refusal and "serves uid" in refusal, res.stdout
    assert rest == "b''", "nothing but the refusal, then end of stream"


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
    if r.status == "error":  # the usual case: the cell fails, and shows no id
        assert r.content["ename"] == "HelperStopped", r.content
        assert "nothing was saved" in r.content["evalue"], r.content
        assert "execute_result" not in r.types() and "taken" not in r.stdout
    else:  # the helper was quicker than the kill
        assert r.status == "ok" and "taken" in r.stdout, (r.content, r.stderr)
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
    assert "`jupyter-chkpt helper start`" in res.stderr and "helper status" not in res.stderr
    res = subprocess.run([*run, "start", "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    pid = json.loads(res.stdout)["helper_pid"]
    res = subprocess.run([*run, "status"], capture_output=True, text=True, timeout=60)
    assert f"helper PID {pid}" in res.stdout
    res = subprocess.run([*run, "stop"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "stopping" in res.stdout
    _gone(pid)
