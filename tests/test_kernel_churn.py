"""Restore under connection churn: frontends come and go, as they do under JupyterLab."""

from __future__ import annotations

import time
from typing import Any

import pytest


def _new_client(km: Any) -> Any:
    """A client with a session of its own, as a second browser tab has (clients
    made by km.client() share one session id, hence one zmq identity)."""
    from jupyter_client.blocking import BlockingKernelClient

    kc = BlockingKernelClient()
    kc.load_connection_info(km.get_connection_info())
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return kc


def _control(kc: Any, msg_type: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    msg = kc.session.msg(msg_type, content or {})
    kc.control_channel.send(msg)
    reply: dict[str, Any] = kc._recv_reply(msg["header"]["msg_id"], timeout=60, channel="control")
    return reply


def _execute_in(kc: Any, code: str, subshell_id: str | None) -> str:
    msg = kc.session.msg("execute_request", {"code": code, "silent": False})
    if subshell_id:
        msg["header"]["subshell_id"] = subshell_id
    kc.shell_channel.send(msg)
    return str(msg["header"]["msg_id"])


def _value(kc: Any, code: str, timeout: float = 60) -> Any:
    """Run `code` on another client and return its execute_result text (retrying the
    send once: a request sent into a connection the restore just reset is lost)."""
    for _ in range(2):
        msg_id = kc.execute(code)
        deadline = time.monotonic() + timeout / 2
        while time.monotonic() < deadline:
            try:
                m = kc.get_iopub_msg(timeout=1)
            except Exception:
                continue
            if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "execute_result":
                return m["content"]["data"]["text/plain"]
    raise AssertionError(f"no result for {code!r}")


@pytest.mark.timeout(300)
def test_restore_under_connection_churn(kernel) -> None:
    early = _new_client(kernel.km)  # connected at the snapshot, gone before the restore
    kernel.ok("v = 1")
    kernel.ok("%checkpoint -m s")

    late = _new_client(kernel.km)  # connected after the snapshot
    assert _value(late, "v") == "1"
    sub = _control(kernel.kc, "create_subshell_request")["content"]["subshell_id"]
    msg_id = _execute_in(kernel.kc, "in_subshell = 1", sub)
    assert kernel.reply_to(msg_id).status == "ok"
    kernel.kc.kernel_info()
    early.stop_channels()
    kernel.ok("v = 2")
    for _ in range(3):  # nudges, as jupyter_server sends them
        kernel.kc.kernel_info()

    r = kernel.ok("%restore s")
    assert "restored snapshot" in r.stdout

    assert kernel.value("v") == "1"
    assert kernel.value("'in_subshell' in dir()") == "False"
    listed = _control(kernel.kc, "list_subshell_request")["content"]
    assert sub not in listed.get("subshell_id", []), listed
    assert _value(late, "v + 1") == "2", "a client connected after the snapshot keeps working"
    info = kernel.kc.kernel_info(reply=True, timeout=30)
    assert info["content"]["status"] == "ok"
    for i in range(20):
        assert kernel.value(f"v + {i}") == str(1 + i)
    newest = _new_client(kernel.km)  # and new clients can connect
    assert _value(newest, "v * 10") == "10"
    for c in (late, newest):
        c.stop_channels()


@pytest.mark.timeout(300)
def test_checkpoint_and_restore_refused_on_a_subshell(kernel) -> None:
    sub = _control(kernel.kc, "create_subshell_request")["content"]["subshell_id"]
    for code in ("%checkpoint", "%restore -1"):
        r = kernel.reply_to(_execute_in(kernel.kc, code, sub))
        assert r.status == "error" and "subshell" in r.content["evalue"], r.content
    kernel.ok("%checkpoint")  # the main shell is fine
