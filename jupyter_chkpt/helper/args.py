"""The helper's request arguments, checked before anything is done (docs/PROTOCOL.md).

Each function takes a decoded request and returns its arguments with their
types checked, or raises BadRequest saying what is valid. JSON booleans are
not numbers here (Python's `True == 1` would let `"keep": true` mean 1).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .. import refs
from ..errors import BadRequest

MAX_TAGS = 64 << 10  # bytes of JSON
SNAP_ID = re.compile(r"[0-9a-f]{8}")


@dataclass(frozen=True)
class Checkpoint:
    snap_id: str | None
    label: str
    tags: dict[str, Any]
    keep: int | None
    max_bytes: int | None


def _bad(op: str, name: str, what: str) -> BadRequest:
    return BadRequest(f"{op}: {name} must be {what}", f"Nothing was done; {op} takes {_TAKES[op]}")


_TAKES = {
    "register": "pid (your own, an integer), kernel_id and optionally notebook (strings)",
    "checkpoint": "snap_id (8 hex digits or null), label (a string), tags (an object) and "
    "keep (a whole number of at least 1, or null) and max_bytes (a whole number or null)",
    "restore": "ref (a snapshot reference) and carry (an object)",
    "cancel": "request (the id of your checkpoint or restore request, an integer)",
    "list": "pid (an integer) or kernel_id (a string), or neither for your own",
    "delete": "snapshot (a reference) and optionally pid or kernel_id (whose snapshot it is)",
    "label": "snapshot (a reference), label (a string) and optionally pid or kernel_id",
    "diff": "a and b (snapshot references) and optionally pid or kernel_id",
}


def whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def register(req: dict[str, Any], peer_pid: int) -> tuple[int, str, str, str | None]:
    pid = req.get("pid", peer_pid)
    if not whole(pid):
        raise _bad("register", "pid", "an integer")
    kernel_id = req.get("kernel_id", "")
    if not isinstance(kernel_id, str) or len(kernel_id) > refs.MAX_LABEL:
        raise _bad("register", "kernel_id", f"a string of at most {refs.MAX_LABEL} characters")
    notebook = req.get("notebook") or ""
    if not isinstance(notebook, str) or len(notebook) > 4096:
        raise _bad("register", "notebook", "a path of at most 4096 characters")
    # the snapshot the kernel's state derives from, as the kernel knows it (a new
    # helper, or the process a snapshot was moved into, registers afresh)
    live = req.get("live")
    if live is not None and not (isinstance(live, str) and SNAP_ID.fullmatch(live)):
        raise _bad("register", "live", "8 lowercase hex digits or null")
    return pid, kernel_id, notebook, live


def checkpoint(req: dict[str, Any]) -> Checkpoint:
    snap_id = req.get("snap_id")
    if snap_id is not None and not (isinstance(snap_id, str) and SNAP_ID.fullmatch(snap_id)):
        raise _bad("checkpoint", "snap_id", "8 lowercase hex digits or null")
    try:
        label = refs.check_label(req.get("label", ""))
    except BadRequest as e:
        raise BadRequest(f"checkpoint: {e.message}", f"Nothing was done. {e.remedy}") from None
    tags = req.get("tags")
    tags = {} if tags is None else tags
    if not isinstance(tags, dict):
        raise _bad("checkpoint", "tags", "an object")
    if len(json.dumps(tags)) > MAX_TAGS:
        raise _bad("checkpoint", "tags", f"at most {MAX_TAGS >> 10} KiB of JSON")
    keep = req.get("keep")
    if keep is not None and not (whole(keep) and keep >= 1):
        raise _bad("checkpoint", "keep", "a whole number of at least 1, or null")
    max_bytes = req.get("max_bytes")
    if max_bytes is not None and not (whole(max_bytes) and max_bytes >= 0):
        raise _bad("checkpoint", "max_bytes", "a whole number of at least 0, or null")
    return Checkpoint(snap_id, label, dict(tags), keep, max_bytes)


def restore(req: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    ref = refs.check_ref(req.get("ref", ""))
    carry = req.get("carry")
    carry = {} if carry is None else carry
    if not isinstance(carry, dict):
        raise _bad("restore", "carry", "an object")
    return ref, carry


def cancel(req: dict[str, Any]) -> int:
    request = req.get("request")
    if not isinstance(request, int) or isinstance(request, bool):
        raise _bad("cancel", "request", "an integer")
    return request


def scope(op: str, req: dict[str, Any]) -> tuple[int | None, str | None]:
    """pid and kernel_id naming a registered kernel, or (None, None)."""
    pid, kernel_id = req.get("pid"), req.get("kernel_id")
    if pid is not None and not whole(pid):
        raise _bad(op, "pid", "an integer")
    if kernel_id is not None and not isinstance(kernel_id, str):
        raise _bad(op, "kernel_id", "a string")
    return pid, kernel_id or None


def snapshot(req: dict[str, Any]) -> str:
    return refs.check_ref(req.get("snapshot", ""))


def diff(req: dict[str, Any]) -> tuple[str, str]:
    try:
        return refs.check_ref(req.get("a", "")), refs.check_ref(req.get("b", ""))
    except BadRequest as e:
        raise BadRequest(
            f"diff: {e.message}", f"Nothing was done; diff takes {_TAKES['diff']}"
        ) from None


def label(req: dict[str, Any]) -> str:
    if "label" not in req:
        raise _bad("label", "label", "given (a string; empty removes the label)")
    return refs.check_label(req["label"])
