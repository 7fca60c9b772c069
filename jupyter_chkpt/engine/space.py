"""Room a snapshot needs at least, estimated before its process is frozen.

A snapshot that does not fit fails either way with StoreFull and leaves nothing
behind (the store takes back what it wrote). This estimate only refuses early,
before the process is stopped, when the space is *clearly* too small: it counts
what cannot be avoided, never what deduplication might save.

* Every page the image will hold has a 16-byte hash in the page map, which does
  not compress (docs/FORMAT.md §6), plus the manifest.
* With dirty-page tracking, the pages written since the last snapshot are new
  content as a rule: they are counted at half the compression ratio the
  process's last snapshot achieved for its new pages. Without tracking, or with
  no such ratio, pages are not counted (they may all be stored already).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ChkptError
from ..image import PAGE_SIZE
from ..proc.maps import read_maps_with_flags
from ..store import SnapshotInfo, Store
from . import runs
from .tracking import Tracking, present_pages

HASH_BYTES = 16  # per page, in the page map: incompressible
MANIFEST_BYTES = 4096  # a manifest is at least this (meta, threads' registers, mappings)
RATIO_MARGIN = 0.5  # of the last snapshot's ratio: clearly, not probably


@dataclass(frozen=True)
class Estimate:
    pages: int  # the image will hold this many pages
    written: int | None  # of them, written since the last snapshot (None: not tracked)
    ratio: float | None  # stored bytes per byte of a new page, from the last snapshot
    needed: int  # bytes the store needs at least

    def describe(self) -> str:
        what = f"its page map ({self.pages} pages) and manifest"
        if self.written is not None and self.ratio is not None:
            what += (
                f" and the {self.written} pages written since the last snapshot "
                f"(counted at {self.ratio * RATIO_MARGIN:.0%} of their size, half the "
                "compression the last snapshot achieved)"
            )
        return what


def last_ratio(info: SnapshotInfo | None) -> float | None:
    """Stored bytes per byte of new page in snapshot `info`, if it stored pages."""
    if info is None or info.new_pages <= 0 or info.stored_bytes <= 0:
        return None
    return info.stored_bytes / (info.new_pages * PAGE_SIZE)


def estimate(pid: int, tracking: Tracking | None, ratio: float | None) -> Estimate | None:
    """What a snapshot of `pid` needs at least; None if the process cannot be looked
    at (the snapshot itself then says why, with its remedy)."""
    try:
        maps = tracking.maps_with_flags(pid) if tracking is not None else read_maps_with_flags(pid)
        tracker = tracking.tracker if tracking is not None else None
        if tracker is not None and tracker.base is not None:
            state = tracker.scan_unfrozen(maps)
            written: int | None = runs.npages(state.written)
        else:
            state, written = present_pages(pid, maps), None
    except (OSError, ChkptError):
        return None
    pages = runs.npages(state.present)
    needed = pages * HASH_BYTES + MANIFEST_BYTES
    if written is not None and ratio is not None:
        needed += int(written * PAGE_SIZE * ratio * RATIO_MARGIN)
    return Estimate(pages, written, ratio, needed)


def check_room(
    store: Store, pid: int, tracking: Tracking | None, last: SnapshotInfo | None
) -> Estimate | None:
    """StoreFull, before anything is frozen, if the snapshot clearly does not fit."""
    est = estimate(pid, tracking, last_ratio(last))
    if est is not None:
        store.ensure_room(est.needed, est.describe())
    return est
