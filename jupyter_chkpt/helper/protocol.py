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

from ..errors import (
    BadRequest,
    ProtocolError,
    RequestTooLarge,
    as_chkpt_error,
    error_by_name,
)

VERSION = 1
MAX_LINE = 64 << 20  # bytes, newline excluded; a restore carries pending shell messages
CHUNK = 1 << 20  # bytes per recv

OPS = (
    "register",
    "checkpoint",
    "restore",
    "cancel",
    "list",
    "delete",
    "label",
    "diff",
    "status",
    "shutdown",
)
# Operations a process may only ask for itself (the helper checks the peer's pid).
SELF_ONLY = ("checkpoint", "restore", "cancel")
LINE_RULES = (
    f"Nothing was done. Requests are one JSON object per line, at most {MAX_LINE >> 20} MiB, "
    "as docs/PROTOCOL.md describes"
)


def encode(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def request(req_id: int, op: str, **args: Any) -> dict[str, Any]:
    if {"v", "id", "op"} & args.keys():
        raise ValueError("v, id and op are the envelope's; name arguments otherwise")
    return {"v": VERSION, "id": req_id, "op": op, **args}


def ok(req_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"v": VERSION, "id": req_id, "ok": True, "result": result}


def failed(req_id: Any, error: BaseException) -> dict[str, Any]:
    e = as_chkpt_error(error)
    err = {"type": type(e).__name__, "message": e.message, "remedy": e.remedy}
    return {"v": VERSION, "id": req_id, "ok": False, "error": err}


def decode(line: bytes) -> dict[str, Any]:
    """A message; BadRequest if it is no JSON object, ProtocolError for another version."""
    try:
        msg = json.loads(line)
    except ValueError as e:
        raise BadRequest(f"not a JSON line: {e}", LINE_RULES) from None
    except RecursionError:
        raise BadRequest("a JSON line nested too deeply", LINE_RULES) from None
    if not isinstance(msg, dict):
        raise BadRequest("a message must be a JSON object", LINE_RULES)
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
    """Reads newline-terminated messages from a stream socket, in time linear in
    their length (a 64 MiB line is read in 64 receives and searched once).

    The buffer is part of the reader, not of the socket: after a restore the
    kernel's reader is exactly as it was at the snapshot (empty, waiting).
    """

    def __init__(self, sock: socket.socket, limit: int = MAX_LINE) -> None:
        self.sock = sock
        self.limit = limit
        self.buf = bytearray()
        self._searched = 0  # no newline in buf[:_searched]
        self._skipping = False  # the rest of an over-long line is still to come

    def read(self) -> bytes | None:
        """One line without its newline; None at end of stream. A line over the
        limit raises RequestTooLarge; the next read skips the rest of it."""
        if self._skipping and not self._skip():
            return None
        while True:
            end = self.buf.find(b"\n", self._searched)
            if end >= 0:
                line = bytes(self.buf[:end]) if end <= self.limit else None
                del self.buf[: end + 1]  # cheap: bytearray drops its head in place
                self._searched = 0
                if line is None:
                    raise RequestTooLarge(f"a message longer than {self.limit} bytes", LINE_RULES)
                return line
            self._searched = len(self.buf)
            if len(self.buf) > self.limit:
                self.buf.clear()
                self._searched = 0
                self._skipping = True
                raise RequestTooLarge(f"a message longer than {self.limit} bytes", LINE_RULES)
            chunk = self.sock.recv(CHUNK)
            if not chunk:
                return None
            self.buf += chunk

    def _skip(self) -> bool:
        """Discard through the newline that ends an over-long line; False at end of stream."""
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                del self.buf[: end + 1]
                self._skipping = False
                return True
            self.buf.clear()
            chunk = self.sock.recv(CHUNK)
            if not chunk:
                return False
            self.buf += chunk
