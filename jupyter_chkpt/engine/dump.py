"""Dump: copy a frozen process's state into an in-memory image, then store it.

The target is stopped only while its registers and pages are copied into a
staging buffer; hashing, compression and writing happen after it runs again.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ChkptError
from ..image import PAGE_SIZE, Image, ImageMeta, Mapping, PageMap, PageRuns
from ..proc import procfs
from ..proc.maps import read_maps, read_maps_with_flags, with_flags
from ..proc.memory import StagingBuffer
from . import runs, space
from .files import capture_files, note_sharers
from .freeze import Frozen, frozen
from .keeper import FdKeeper
from .layout import refuse_device_memory
from .runs import Run
from .task_state import (
    capture_children,
    capture_mapped_files,
    capture_rlimits,
    capture_sigactions,
    encode_siginfo,
)
from .threads import capture_state, capture_threads
from .timers import capture_timers
from .tracking import PageState, Tracker, Tracking, present_pages
from .transplant import vdso_hash

if TYPE_CHECKING:
    from ..store import SnapshotInfo, Store

# One staging buffer per helper process, reused across snapshots.
_staging = StagingBuffer()
_staging_lock = threading.Lock()


def capture(
    fz: Frozen,
    staging: StagingBuffer,
    keeper: FdKeeper | None = None,
    key: str | None = None,
    *,
    flagged: list[Mapping] | None = None,
    tracker: Tracker | None = None,
    rearm: bool = False,
    only: list[Run] | None = None,
    pages: PageState | None = None,
) -> Image:
    """The image of a frozen process; its pages live in `staging` until the next capture.

    With a keeper, duplicates of the process's fds are held under `key`.
    `flagged`: the mappings with their VmFlags as read just before the freeze
    (smaps is slow); used if the layout has not changed since.
    With a tracker that has a base, only the pages that may differ from the base
    are read (`rearm`: and tracking restarts from this moment); with `only`, just
    the pages with data within those runs (a restore's safety image). `pages`:
    which pages hold data, where the caller has just scanned them.

    Injected syscalls come last: a helper killed while a thread runs one leaves
    that thread with the injected registers (see ARCHITECTURE.md), while one
    killed during the copy, which is most of the freeze, harms nothing.
    """
    maps = with_flags(read_maps(fz.pid), flagged, fz.pid)
    refuse_device_memory(fz.pid, maps)
    threads = capture_threads(fz)
    state = pages or (
        tracker.scan(fz, maps, rearm=rearm) if tracker is not None else present_pages(fz.pid, maps)
    )
    read = runs.intersect(state.present, only) if only is not None else state.written
    total = runs.npages(read) * PAGE_SIZE
    buf = staging.view(total)[:total]
    off = 0
    for vaddr, n in read:
        size = n * PAGE_SIZE
        fz.mem.read_into(vaddr, buf[off : off + size])
        off += size
    started = time.monotonic()
    brk = fz.injector.check("brk", 0)
    with fz.injector.scratch_kept() as scratch:
        sigactions = capture_sigactions(fz.injector, scratch)
        timers = capture_timers(fz.injector, scratch)
        for image in threads:
            image.state = capture_state(fz, fz.group.threads[image.tid], scratch)
    files = capture_files(fz, keeper, key)
    meta = ImageMeta(
        process=fz.identity,
        brk=brk,
        start_brk=procfs.start_brk(fz.pid),
        cwd=procfs.cwd(fz.pid),
        threads=threads,
        mappings=maps,
        files=files,
        sigactions=sigactions,
        umask=procfs.umask(fz.pid),
        timers=timers,
        rlimits=capture_rlimits(fz.pid),
        personality=procfs.personality(fz.pid),
        children=capture_children(fz.pid),
        queued_signals=encode_siginfo(fz.group.main.queued_signals(shared=True)),
        mapped_files=capture_mapped_files(maps),
        mm=procfs.mm_fields(fz.pid),
        vdso_hash=vdso_hash(maps, fz.mem),
    )
    # kernel state beyond memory: threads, timers, fds, signals, limits, ...
    meta.stats["os_state_s"] = round(time.monotonic() - started, 6)
    return Image(meta, state.present, [PageRuns(buf, read)])


def checkpoint(
    pid: int,
    store: Store,
    label: str = "",
    parent: str | None = None,
    keeper: FdKeeper | None = None,
    *,
    snap_id: str | None = None,
    tags: dict[str, Any] | None = None,
    staging: StagingBuffer | None = None,
    tracking: Tracking | None = None,
) -> SnapshotInfo:
    """Snapshot process `pid` into `store`; the process runs on.

    With a keeper (a long-lived helper has one), duplicates of the process's
    fds are held under the new snapshot's id, so that a restore can put back
    files closed since; without one, only regular files can be reopened.
    With `tracking` (the helper keeps one per process) only the pages written
    since the last snapshot or restore are read, hashed and stored.
    A caller that snapshots several processes at once gives each its own
    `staging` buffer; otherwise snapshots share one and take turns.
    """
    # refused before the freeze if clearly too big for the store's free space
    space.check_room(store, pid, tracking, None)
    with contextlib.nullcontext() if staging else _staging_lock:
        taken = take(pid, keeper, staging=staging or _staging, tracking=tracking)
        return taken.commit(store, label=label, parent=parent, snap_id=snap_id, tags=tags)


@dataclass
class Taken:
    """A snapshot captured while the process was frozen (it runs on), not stored
    yet: its pages live in the staging buffer until `commit` or `discard`."""

    pid: int
    image: Image
    keeper: FdKeeper | None
    key: str  # under which the keeper holds its files until the commit
    tracker: Tracker | None
    base: PageMap | None  # what an incremental image is relative to
    prepared: tuple[list[bytes], PageMap] | None = None

    def prepare(self, store: Store, snap_id: str) -> PageMap:
        """Hash the pages read and work out the whole page map; the tracker's base
        becomes it at once, so the next snapshot can be taken before this one is
        stored (if storing fails, the caller must drop the base)."""
        pages = self.image.contents[0]
        present = self.image.present if self.base is not None else None
        self.prepared = store.page_map(pages, present=present, base=self.base)
        if self.tracker is not None:
            self.tracker.set_base(snap_id, self.prepared[1])
        return self.prepared[1]

    def commit(
        self,
        store: Store,
        *,
        label: str = "",
        parent: str | None = None,
        snap_id: str | None = None,
        tags: dict[str, Any] | None = None,
    ) -> SnapshotInfo:
        """Hash, compress and store; the tracker's base becomes this image."""
        try:
            if self.image.meta.files is not None:
                note_sharers(self.pid, self.image.meta.files, self.keeper)
            info, pm = store.commit_image(
                self.image.meta,
                self.image.contents[0],
                present=self.image.present if self.base is not None else None,
                base=self.base,
                prepared=self.prepared,
                label=label,
                parent=parent,
                snap_id=snap_id,
                tags=tags,
            )
        except BaseException:
            self.discard()
            raise
        if self.tracker is not None and self.prepared is None:
            self.tracker.set_base(info.id, pm)
        if self.keeper is not None:
            self.keeper.rename(self.pid, self.key, info.id)
        return info

    def discard(self) -> None:
        _abandon(self.pid, self.keeper, self.key, self.tracker)


def provisional(
    taken: Taken, snap_id: str, parent: str | None, tags: dict[str, Any], label: str = ""
) -> SnapshotInfo:
    """What a listing will say of a taken snapshot once stored (sizes aside)."""
    from ..store import SnapshotInfo

    meta = taken.image.meta
    npages = runs.npages(taken.image.present)
    return SnapshotInfo(
        id=snap_id,
        pid=taken.pid,
        created=time.time(),
        label=label,
        parent=parent,
        mem_bytes=npages * PAGE_SIZE,
        stored_bytes=0,
        npages=npages,
        new_pages=0,
        stats=meta.stats,
        start_time=meta.process.start_time,
        tags=tags,
    )


def _abandon(pid: int, keeper: FdKeeper | None, key: str, tracker: Tracker | None) -> None:
    """A snapshot that will not be stored."""
    if tracker is not None:  # armed, but no image to build on: start over
        tracker.set_base(None, None)
    if keeper is not None:  # nothing may stay held for it
        keeper.release(pid, key)


def take(
    pid: int,
    keeper: FdKeeper | None = None,
    *,
    staging: StagingBuffer,
    tracking: Tracking | None = None,
) -> Taken:
    """Freeze process `pid`, capture it into `staging`, let it run on."""
    key = f"pending-{uuid.uuid4().hex}"
    if keeper is not None:
        keeper.prune()
    tracker: Tracker | None = None
    try:
        flagged = _maps_with_flags(pid, tracking)  # slow: before the freeze
        _prepare_staging(staging, tracking, flagged)
        with frozen(pid) as fz:
            tracker = tracking.ensure(fz, keeper) if tracking is not None else None
            base = tracker.base if tracker is not None else None
            image = capture(fz, staging, keeper, key, flagged=flagged, tracker=tracker, rearm=True)
            pause = fz.paused_for
    except BaseException:
        _abandon(pid, keeper, key, tracker)
        raise
    meta = image.meta
    meta.stats.update(
        pause_s=round(pause, 6),
        bytes=image.nbytes,  # read while frozen
        incremental=base is not None,
        threads=len(meta.threads),
        mappings=len(meta.mappings),
    )
    return Taken(pid, image, keeper, key, tracker, base)


def _prepare_staging(
    staging: StagingBuffer, tracking: Tracking | None, maps: list[Mapping] | None
) -> None:
    """Size the buffer before the freeze for what the tracker sees written so far, so
    that the freeze copies into memory already there rather than faulting it in."""
    tracker = tracking.tracker if tracking is not None else None
    if tracker is None or tracker.base is None or maps is None:
        return
    with contextlib.suppress(OSError, ChkptError):
        staging.view(runs.npages(tracker.scan_unfrozen(maps).written) * PAGE_SIZE)


def _maps_with_flags(pid: int, tracking: Tracking | None = None) -> list[Mapping] | None:
    """None if they cannot be read: frozen() then says why, with its remedy."""
    try:
        return tracking.maps_with_flags(pid) if tracking is not None else read_maps_with_flags(pid)
    except (OSError, ChkptError):
        return None
