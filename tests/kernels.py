"""Harness for tests against real "Python 3 (snapshots)" kernels through jupyter_client.

Every test gets its own Jupyter runtime directory and store (so its own helper
daemon, started on demand by the kernel as in real use) and shuts it down after.
"""

from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

KERNEL = "python3-chkpt"
TIMEOUT = 120.0


@dataclass
class Result:
    """What one request produced: its reply, and the IOPub messages it parented."""

    reply: dict[str, Any]
    iopub: list[dict[str, Any]] = field(default_factory=list)

    @property
    def content(self) -> dict[str, Any]:
        return dict(self.reply["content"])

    @property
    def status(self) -> str:
        return str(self.content["status"])

    def stream(self, name: str) -> str:
        return "".join(
            m["content"]["text"]
            for m in self.iopub
            if m["msg_type"] == "stream" and m["content"]["name"] == name
        )

    @property
    def stdout(self) -> str:
        return self.stream("stdout")

    @property
    def stderr(self) -> str:
        return self.stream("stderr")

    @property
    def value(self) -> str | None:
        for m in self.iopub:
            if m["msg_type"] == "execute_result":
                return str(m["content"]["data"]["text/plain"])
        return None

    @property
    def error(self) -> str | None:
        for m in self.iopub:
            if m["msg_type"] == "error":
                return f"{m['content']['ename']}: {m['content']['evalue']}"
        return None

    def types(self) -> list[str]:
        return [m["msg_type"] for m in self.iopub]


class Kernel:
    """A running snapshots kernel and a blocking client on it."""

    def __init__(
        self, env: dict[str, str], kernel_name: str = KERNEL, connection_file: str = ""
    ) -> None:
        self.km = KernelManager(kernel_name=kernel_name)
        if connection_file:  # some tools parse the kernel id out of "kernel-<id>.json"
            self.km.connection_file = connection_file
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=TIMEOUT)
        self._stash: list[dict[str, Any]] = []

    @property
    def pid(self) -> int:
        provisioner = self.km.provisioner
        assert provisioner is not None
        return int(provisioner.process.pid)  # type: ignore[attr-defined]

    def _iopub_until_idle(self, msg_id: str, timeout: float) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        keep: list[dict[str, Any]] = []
        for m in self._stash:
            (got if m["parent_header"].get("msg_id") == msg_id else keep).append(m)
        self._stash = keep
        if any(_is_idle(m) for m in got):
            return got
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no idle for {msg_id} within {timeout} s; got {got}"
                ) from None
            if m["parent_header"].get("msg_id") != msg_id:
                self._stash.append(m)
                continue
            got.append(m)
            if _is_idle(m):
                return got

    def reply_to(self, msg_id: str, timeout: float = TIMEOUT) -> Result:
        """Wait for the reply and the idle of one request."""
        reply = self.shell_reply(msg_id, timeout)
        return Result(reply, self._iopub_until_idle(msg_id, timeout))

    def shell_reply(self, msg_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The reply to `msg_id`, reading IOPub meanwhile as frontends do: a SUB
        socket subscribes (again, after its connection was reset) only when its own
        thread takes it in, and the kernel waits for that before it publishes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return dict(self.kc._recv_reply(msg_id, timeout=0.05))
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
            while True:
                try:
                    self._stash.append(self.kc.get_iopub_msg(timeout=0))
                except queue.Empty:
                    break

    def run(self, code: str, timeout: float = TIMEOUT) -> Result:
        return self.reply_to(self.kc.execute(code), timeout)

    def ok(self, code: str, timeout: float = TIMEOUT) -> Result:
        """Run a cell that must succeed; returns its result."""
        r = self.run(code, timeout)
        assert r.status == "ok" and r.error is None, f"{code!r}: {r.error or r.content}\n{r.stderr}"
        return r

    def value(self, expr: str) -> str:
        r = self.ok(expr)
        assert r.value is not None, f"{expr!r} has no value"
        return r.value

    def chkpt(self, operation: str, timeout: float = TIMEOUT, **content: Any) -> Result:
        msg = self.kc.session.msg("chkpt_request", {"operation": operation, **content})
        self.kc.shell_channel.send(msg)
        return self.reply_to(msg["header"]["msg_id"], timeout)

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=True)


def _is_idle(m: dict[str, Any]) -> bool:
    return m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"


def kernel_env(runtime: Path, store: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["JUPYTER_RUNTIME_DIR"] = str(runtime)
    env["JUPYTER_CHKPT_STORE"] = str(store)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env
