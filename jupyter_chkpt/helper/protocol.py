"""The helper's wire protocol, version 1 (docs/PROTOCOL.md).

One JSON object per line, UTF-8, over a Unix stream socket. Every request
has `v` (the protocol version), `id` (chosen by the client, echoed in the
reply) and `op`; every reply has `v`, `id` and either `ok: true` with
`result`, or `ok: false` with `error` {type, message, remedy}.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from ..errors import ChkptError, ProtocolError, error_by_name

VERSION = 1
MAX_LINE = 64 << 20  # a restore carries pending shell messages: allow large lines

OPS = ("register", "checkpoint", "restore", "list", "delete", "label", "status", "shutdown")
# Operations a process may only ask for itself (the helper checks the peer's pid).
SELF_ONLY = ("checkpoint", "restore")


def encode(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def request(req_id: int, op: str, **args: Any) -> dict[str, Any]:
    if {"v", "id", "op"} & args.keys():
        raise ValueError("v, id and op are the envelope's; name arguments otherwise")
    return {"v": VERSION, "id": req_id, "op": op, **args}


def ok(req_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"v": VERSION, "id": req_id, "ok": True, "result": result}


def failed(req_id: Any, error: BaseException) -> dict[str, Any]:
    if isinstance(error, ChkptError):
        err = {"type": type(error).__name__, "message": error.message, "remedy": error.remedy}
    else:
        err = {"type": "ChkptError", "message": f"{type(error).__name__}: {error}", "remedy": ""}
    return {"v": VERSION, "id": req_id, "ok": False, "error": err}


def decode(line: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(line)
    except ValueError as e:
        raise ProtocolError(f"not a JSON line: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a JSON object")
    if msg.get("v") != VERSION:
        raise ProtocolError(f"protocol version {msg.get('v')!r}; this side speaks {VERSION}")
    return msg


def raise_for(reply: dict[str, Any]) -> dict[str, Any]:
    """The result of a reply, or its error raised as the ChkptError it was."""
    if reply.get("ok"):
        result = reply.get("result")
        if not isinstance(result, dict):
            raise ProtocolError("reply without a result")
        return result
    err = reply.get("error") or {}
    cls = error_by_name(str(err.get("type", "")))
    raise cls(str(err.get("message", "the helper gave no reason")), err.get("remedy") or None)


class LineReader:
    """Reads newline-terminated messages from a stream socket.

    The buffer is part of the reader, not of the socket: after a restore the
    kernel's reader is exactly as it was at the snapshot (empty, waiting).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def read(self) -> bytes | None:
        """One line without its newline; None at end of stream."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return None
            self.buf += chunk
            if len(self.buf) > MAX_LINE:
                raise ProtocolError(f"a message longer than {MAX_LINE} bytes")
        line, self.buf = self.buf.split(b"\n", 1)
        return line
