"""What a snapshot's variables were, recorded at snapshot time, and what changed
between two snapshots, without restoring either (`%snapshots diff`, the panel).

The kernel summarizes its user namespace at the safe point into the snapshot's
tags ("namespace"): per name its type, an approximate size, its value where it
is small, and a fingerprint. Two summaries are then compared by name. Pure
logic, duck-typed: no numpy or pandas import.

The fingerprint sees a rebinding (a new object) and any change to a small value;
for a large object it covers its length/shape and a sample of its data (numpy:
the first and last 64 KiB), so an in-place change elsewhere in a large object
can go unseen. That is the price of a summary that costs milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from typing import Any

MAX_NAMES = 400  # variables summarized per snapshot (the rest: counted)
MAX_REPR = 120  # characters of a value shown
MAX_BYTES = 40 << 10  # of JSON for the whole summary (tags are at most 64 KiB)
BUDGET_S = 0.05  # summarizing stops here: a snapshot must not wait for it
SAMPLE = 64 << 10  # bytes of a large array's data hashed, at each end
SKIP = {"In", "Out", "exit", "quit", "get_ipython", "open"}
SMALL_SCALARS = (int, float, complex, bool, type(None), str, bytes)


def _type(value: Any) -> str:
    t = type(value)
    mod = getattr(t, "__module__", "builtins")
    return t.__qualname__ if mod == "builtins" else f"{mod}.{t.__qualname__}"


def _is_ndarray(value: Any) -> bool:
    """A plain numpy array (not a subclass such as np.matrix), known without numpy."""
    t = type(value)
    return t.__name__ == "ndarray" and t.__module__ == "numpy"


def _is_pandas(value: Any) -> bool:
    mod = type(value).__module__
    return mod == "pandas" or mod.startswith("pandas.")


def _size(value: Any) -> int:
    """Bytes, an estimate. Only types known to answer cheaply are asked beyond
    sys.getsizeof: a user's __getattr__ may do anything."""
    if _is_ndarray(value) or isinstance(value, memoryview):
        return int(value.nbytes)
    if _is_pandas(value) and hasattr(value, "memory_usage"):
        total = value.memory_usage(deep=False)
        return int(total.sum() if hasattr(total, "sum") else total)
    return int(sys.getsizeof(value))


def _short(v: Any) -> bool:
    return isinstance(v, SMALL_SCALARS) and not (isinstance(v, (str, bytes)) and len(v) > MAX_REPR)


def _small_repr(value: Any) -> str | None:
    """repr of a value small enough to compute and show; None otherwise. Only types
    whose repr is known to be cheap and bounded."""
    t = type(value)
    if t in SMALL_SCALARS:
        if isinstance(value, (str, bytes)) and len(value) > 4 * MAX_REPR:
            return None
    elif t in (list, tuple, set, frozenset, dict):
        if len(value) > 16:  # before anything is copied: a big container costs nothing
            return None
        items = list(value.items()) if t is dict else list(value)
        if not all(
            _short(k) and _short(v) for k, v in (items if t is dict else ((0, v) for v in items))
        ):
            return None
    elif _is_ndarray(value) or t.__module__ == "numpy":  # small arrays, numpy scalars
        if getattr(value, "size", MAX_REPR) > 16:
            return None
    else:
        return None
    text = repr(value)
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 1] + "…"


def _fingerprint(value: Any, shown: str | None) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(_type(value).encode())
    if shown is not None:  # small: compared by value
        h.update(shown.encode())
        return h.hexdigest()
    h.update(str(id(value)).encode())  # large: a rebinding is a change
    t = type(value)
    if t in (list, tuple, dict, set, frozenset, str, bytes, bytearray):
        h.update(str(len(value)).encode())
    elif _is_ndarray(value):
        h.update(repr(value.shape).encode())
        if value.flags.c_contiguous and value.nbytes:
            raw = memoryview(value).cast("B")  # no copy
            h.update(raw[:SAMPLE])
            h.update(raw[-SAMPLE:])
    elif _is_pandas(value) and hasattr(value, "shape"):
        h.update(repr(value.shape).encode())
    return h.hexdigest()


def summarize(ns: dict[str, Any], hidden: dict[str, Any] | None = None) -> dict[str, Any]:
    """The user's variables: {"vars": {name: [type, size, repr|None, fingerprint]},
    "more": how many were left out (over the limits)}."""
    deadline = time.monotonic() + BUDGET_S
    hidden = hidden or {}
    out: dict[str, list[Any]] = {}
    more = 0
    used = 0
    for name in sorted(ns):
        if name.startswith("_") or name in SKIP:
            continue
        value = ns[name]
        if name in hidden and hidden[name] is value:
            continue
        if type(value).__name__ == "module":
            continue
        if len(out) >= MAX_NAMES or used > MAX_BYTES or time.monotonic() > deadline:
            more += 1
            continue
        try:
            shown = _small_repr(value)
            entry = [_type(value), _size(value), shown, _fingerprint(value, shown)]
            text = json.dumps(entry)
        except Exception:  # an object that misbehaves: left out, counted
            more += 1
            continue
        used += len(name) + len(text)
        out[name] = entry
    return {"vars": out, "more": more}


def _var(name: str, entry: list[Any]) -> dict[str, Any]:
    return {"name": name, "type": entry[0], "size": entry[1], "repr": entry[2]}


def diff(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    """Variables added, removed and changed from summary `a` to summary `b`."""
    va = (a or {}).get("vars", {})
    vb = (b or {}).get("vars", {})
    added = [_var(n, vb[n]) for n in sorted(vb.keys() - va.keys())]
    removed = [_var(n, va[n]) for n in sorted(va.keys() - vb.keys())]
    changed, same = [], 0
    for n in sorted(va.keys() & vb.keys()):
        if list(va[n]) == list(vb[n]):
            same += 1
        else:
            changed.append({"name": n, "from": _var(n, va[n]), "to": _var(n, vb[n])})
    return {
        "added": added,
        "removed": removed,
        "changed": changed,
        "same": same,
        "incomplete": bool((a or {}).get("more") or (b or {}).get("more")),
    }
