"""Snapshots as a tree (restores create branches), as text. Pure logic."""

from __future__ import annotations

import time
from typing import Any


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def describe(s: dict[str, Any]) -> str:
    """One line: id, time, [execution count], label, first line of the cell, stored size,
    and why it cannot be restored if it cannot."""
    tags = s.get("tags") or {}
    when = time.strftime("%H:%M:%S", time.localtime(float(s.get("created", 0))))
    count = tags.get("execution_count")
    parts = [s["id"], when, f"[{count}]" if count is not None else "[?]"]
    if s.get("label"):
        parts.append(repr(s["label"]))
    if tags.get("auto"):
        parts.append("(auto)")
    if tags.get("cell"):
        cell = str(tags["cell"])
        parts.append(cell if len(cell) <= 40 else cell[:39] + "…")
    parts.append(_size(float(s.get("stored_bytes", 0))))
    if s.get("damage"):  # listed, but it cannot be restored: say why
        parts.append(f"DAMAGED: {s['damage']}")
    return "  ".join(parts)


def ordered(snapshots: list[dict[str, Any]]) -> list[tuple[int, bool, dict[str, Any]]]:
    """(depth, is_last_child, snapshot) in tree order: children after their
    parent, oldest first; snapshots whose parent is gone are roots."""
    ids = {s["id"] for s in snapshots}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in sorted(snapshots, key=lambda s: float(s.get("created", 0))):
        parent = s.get("parent") if s.get("parent") in ids else None
        children.setdefault(parent, []).append(s)
    out: list[tuple[int, bool, dict[str, Any]]] = []

    def walk(parent: str | None, depth: int) -> None:
        kids = children.get(parent, [])
        for i, s in enumerate(kids):
            out.append((depth, i == len(kids) - 1, s))
            walk(s["id"], depth + 1)

    walk(None, 0)
    return out


def render(snapshots: list[dict[str, Any]], live: str | None) -> str:
    """The tree with box-drawing branches; `*` marks the live snapshot."""
    if not snapshots:
        return "no snapshots yet: take one with %checkpoint"
    lines = []
    open_levels: list[bool] = []  # per depth: does a later sibling follow?
    for depth, last, s in ordered(snapshots):
        del open_levels[depth:]
        prefix = "".join("│  " if more else "   " for more in open_levels[1:]) if depth else ""
        branch = ("└─ " if last else "├─ ") if depth else ""
        mark = "*" if s["id"] == live else " "
        lines.append(f"{mark} {prefix}{branch}{describe(s)}")
        open_levels.append(not last)
    return "\n".join(lines)


def render_diff(result: dict[str, Any]) -> str:
    """A namespace diff (namespace.diff) as text, for %snapshots diff."""

    def one(v: dict[str, Any]) -> str:
        value = f" = {v['repr']}" if v.get("repr") is not None else ""
        return f"{v['type']}, {_size(float(v['size']))}{value}"

    lines = [f"+ {v['name']}: {one(v)}" for v in result["added"]]
    lines += [f"- {v['name']}: {one(v)}" for v in result["removed"]]
    lines += [f"~ {c['name']}: {one(c['from'])} -> {one(c['to'])}" for c in result["changed"]]
    if not lines:
        lines.append("no variable differs")
    lines.append(f"({result['same']} unchanged)")
    if result.get("incomplete"):
        lines.append("(some variables were not recorded: over the summary's limits)")
    return "\n".join(lines)
