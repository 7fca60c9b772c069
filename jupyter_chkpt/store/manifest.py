"""The versioned manifest.json of a snapshot: building, serializing, validating.

The manifest carries the registers and memory layout the engine restores, so
it has its own checksum: a flipped digit must not reach a process.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import xxhash

from ..errors import CorruptSnapshot, UnsupportedFormat
from ..image import PAGE_SIZE, ImageMeta
from .layout import ID_RE

FORMAT_NAME = "jupyter-chkpt-snapshot"
MAJOR, MINOR = 1, 2
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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

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
