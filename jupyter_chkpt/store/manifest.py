"""The versioned manifest.json of a snapshot: building, serializing, validating.

The manifest carries the registers and memory layout the engine restores, so
it has its own checksum: a flipped digit must not reach a process.
"""

from __future__ import annotations

import binascii
import contextlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import xxhash

from ..errors import CorruptSnapshot, UnsupportedFormat
from ..image import PAGE_SIZE, ImageMeta
from .layout import ID_RE

FORMAT_NAME = "jupyter-chkpt-snapshot"
MAJOR, MINOR = 1, 3
MANIFEST = "manifest.json"
PAGEMAP = "pagemap.bin.zst"

_VERSION_RE = re.compile(r"(\d+)\.(\d+)")


@dataclass(frozen=True)
class SnapshotInfo:
    id: str
    pid: int
    created: float
    label: str
    parent: str | None
    mem_bytes: int  # bytes of page content in the image (npages*4096)
    stored_bytes: int  # compressed bytes this snapshot added to the store
    npages: int
    new_pages: int
    stats: dict[str, Any]  # meta.stats
    start_time: int = 0  # of the process (with pid: which process instance)
    tags: dict[str, Any] = field(default_factory=dict)  # set by the caller, e.g. the kernel side
    # why the snapshot cannot be restored ("" if it can, as far as a listing checks:
    # manifest, page map, every page in a pack; page contents are checked by loads)
    damage: str = ""

    def to_json(self) -> dict[str, Any]:
        """For listings and replies: the namespace summary (namespace.py) stays in
        the manifest (diffs read it from `tags`); its size is said instead."""
        out = asdict(self)
        ns = out["tags"].pop("namespace", None)
        if isinstance(ns, dict) and isinstance(ns.get("vars"), dict):
            out["tags"]["variables"] = len(ns["vars"]) + int(ns.get("more") or 0)
        return out

    @classmethod
    def from_manifest(cls, m: dict[str, Any]) -> SnapshotInfo:
        """From a manifest that passed parse()."""
        meta, pages = m["meta"], m["pages"]
        return cls(
            id=m["id"],
            pid=int(meta["process"]["pid"]),
            created=float(m["created"]),
            label=m["label"],
            parent=m["parent"],
            mem_bytes=pages["mem_bytes"],
            stored_bytes=pages["stored_bytes"],
            npages=pages["npages"],
            new_pages=pages["new_pages"],
            stats=dict(meta.get("stats", {})),
            start_time=int(meta["process"]["start_time"]),
            tags=dict(m.get("tags", {})),
        )


def salvage(snap_id: str, data: bytes | None, damage: str, created: float) -> SnapshotInfo:
    """What can still be told of a snapshot whose manifest is unreadable: whose it is
    (so that its kernel's listing shows it, with `damage`), when and its label, as far
    as they can be made out; pid 0 when they cannot. Never used to restore."""
    m: Any = None
    if data:
        try:
            m = json.loads(data)
        except ValueError:
            m = None
    found: dict[str, Any] = {}
    if isinstance(m, dict):
        meta = m["meta"] if isinstance(m.get("meta"), dict) else {}
        proc = meta["process"] if isinstance(meta.get("process"), dict) else {}
        found = {
            "pid": proc.get("pid"),
            "start_time": proc.get("start_time"),
            "created": m.get("created"),
            "label": m.get("label"),
            "parent": m.get("parent"),
            "tags": m.get("tags"),
        }
    elif data:  # truncated or garbled JSON: the canonical form puts these early
        if hit := _PROCESS_RE.search(data):
            found["pid"], found["start_time"] = int(hit[1]), int(hit[2])
        if hit := re.search(rb'"created":([0-9.e+]+)', data):
            with contextlib.suppress(ValueError):
                found["created"] = float(hit[1])
        if hit := re.search(rb'"label":("(?:[^"\\]|\\.)*")', data):
            with contextlib.suppress(ValueError):
                found["label"] = json.loads(hit[1])

    def typed(key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        v = found.get(key)
        return v if isinstance(v, kind) and not isinstance(v, bool) else default

    parent = found.get("parent")
    return SnapshotInfo(
        id=snap_id,
        pid=typed("pid", int, 0),
        created=float(typed("created", (int, float), created)),
        label=typed("label", str, ""),
        parent=parent if isinstance(parent, str) and ID_RE.fullmatch(parent) else None,
        mem_bytes=0,
        stored_bytes=0,
        npages=0,
        new_pages=0,
        stats={},
        start_time=typed("start_time", int, 0),
        tags=typed("tags", dict, {}),
        damage=damage,
    )


# the process identity in a canonical manifest: keys sorted, no spaces
_PROCESS_RE = re.compile(
    rb'"process":\{"boot_id":"[^"]*","exe":"(?:[^"\\]|\\.)*","pid":(\d+),"start_time":(\d+)'
)


def build(
    *,
    snap_id: str,
    created: float,
    label: str,
    parent: str | None,
    tags: dict[str, Any],
    meta: ImageMeta,
    npages: int,
    new_pages: int,
    stored_bytes: int,
    pagemap_data: bytes,
) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "version": f"{MAJOR}.{MINOR}",
        "id": snap_id,
        "created": created,
        "label": label,
        "parent": parent,
        "tags": tags,
        "pages": {
            "npages": npages,
            "new_pages": new_pages,
            "mem_bytes": npages * PAGE_SIZE,
            "stored_bytes": stored_bytes,
        },
        "pagemap": {
            "file": PAGEMAP,
            "records": npages,
            "xxh3_64": xxhash.xxh3_64_hexdigest(pagemap_data),
        },
        "meta": meta.to_json(),
    }


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _checksum(m: dict[str, Any]) -> str:
    return xxhash.xxh3_64_hexdigest(_canonical({k: v for k, v in m.items() if k != "checksum"}))


def dumps(m: dict[str, Any]) -> bytes:
    """The file content: canonical JSON with a fresh checksum."""
    return _canonical({**m, "checksum": _checksum(m)}) + b"\n"


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _problem(m: dict[str, Any], snap_id: str) -> str | None:
    """What is wrong with the fields of a checksummed manifest, if anything."""
    if m.get("id") != snap_id:
        return f"names snapshot {m.get('id')!r}"
    if not isinstance(m.get("created"), (int, float)) or isinstance(m.get("created"), bool):
        return "has no valid 'created'"
    if not isinstance(m.get("label"), str):
        return "has no valid 'label'"
    parent = m.get("parent", "")
    if parent is not None and not (isinstance(parent, str) and ID_RE.fullmatch(parent)):
        return "has no valid 'parent'"
    if not isinstance(m.get("tags", {}), dict):
        return "has no valid 'tags'"
    pages = m.get("pages")
    if not isinstance(pages, dict) or not all(
        _is_count(pages.get(k)) for k in ("npages", "new_pages", "mem_bytes", "stored_bytes")
    ):
        return "has no valid 'pages'"
    pm = m.get("pagemap")
    if not (
        isinstance(pm, dict)
        and isinstance(pm.get("file"), str)
        and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", pm["file"])
        and pm.get("records") == pages["npages"]
        and isinstance(pm.get("xxh3_64"), str)
    ):
        return "has no valid 'pagemap'"
    try:
        ImageMeta.from_json(m["meta"])
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as e:
        return f"has no valid 'meta' ({type(e).__name__}: {e})"
    return None


def parse(snap_id: str, data: bytes) -> dict[str, Any]:
    """Decode and validate manifest.json of `snap_id`."""
    where = f"snapshot {snap_id}: {MANIFEST}"
    try:
        m = json.loads(data)
    except ValueError as e:
        raise CorruptSnapshot(f"{where} is truncated or not JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
        raise CorruptSnapshot(f"{where} is not a jupyter-chkpt manifest")
    version = m.get("version")
    match = _VERSION_RE.fullmatch(version) if isinstance(version, str) else None
    if match is None:
        raise CorruptSnapshot(f"{where} has no valid 'version'")
    if int(match[1]) != MAJOR:
        # checked before the checksum: another major version may checksum differently
        raise UnsupportedFormat(
            f"snapshot {snap_id} has format version {version}; this jupyter-chkpt reads {MAJOR}.x"
        )
    if m.get("checksum") != _checksum(m):
        raise CorruptSnapshot(f"{where} does not match its checksum")
    problem = _problem(m, snap_id)
    if problem:
        raise CorruptSnapshot(f"{where} {problem}")
    return m
