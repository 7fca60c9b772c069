"""Dump: copy a frozen process's state into an in-memory image, then store it.

The target is stopped only while its registers and pages are copied into a
staging buffer; hashing, compression and writing happen after it runs again.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from ..errors import ChkptError
from ..image import PAGE_SIZE, ImageMeta, Mapping, PageRuns
from ..proc import procfs
from ..proc.maps import Pagemap, read_maps, read_maps_with_flags, with_flags
from ..proc.memory import StagingBuffer
from .files import capture_files
from .freeze import Frozen, frozen
from .keeper import FdKeeper
from .layout import dumpable, refuse_device_memory
from .task_state import (
    capture_children,
    capture_mapped_files,
    capture_rlimits,
    capture_sigactions,
    encode_siginfo,
)
from .threads import capture_state, capture_threads
from .timers import capture_timers

if TYPE_CHECKING:
    from ..store import SnapshotInfo, Store

# One staging buffer per helper process, reused across snapshots.
_staging = StagingBuffer()
_staging_lock = threading.Lock()


def page_runs(pid: int, maps: list[Mapping]) -> list[tuple[int, int]]:
    """Runs of pages that hold data of their own, over all dumpable mappings.

    Pages never touched (not present) are left out rather than stored as zeros.
    A later dirty-page tracker narrows this list further.
    """
    runs: list[tuple[int, int]] = []
    with Pagemap(pid) as pagemap:
        for m in maps:
            if dumpable(m):
                runs.extend(pagemap.runs(m.start, m.end, anon_only=m.is_file))
    return runs


def capture(
    fz: Frozen,
    staging: StagingBuffer,
    keeper: FdKeeper | None = None,
    key: str | None = None,
    *,
    flagged: list[Mapping] | None = None,
) -> tuple[ImageMeta, PageRuns]:
    """The image of a frozen process; its pages live in `staging` until the next capture.

    With a keeper, duplicates of the process's fds are held under `key`.
    `flagged`: the mappings with their VmFlags as read just before the freeze
    (smaps is slow); used if the layout has not changed since.

    Injected syscalls come last: a helper killed while a thread runs one leaves
    that thread with the injected registers (see ARCHITECTURE.md), while one
    killed during the copy, which is most of the freeze, harms nothing.
    """
    maps = with_flags(read_maps(fz.pid), flagged, fz.pid)
    refuse_device_memory(fz.pid, maps)
    threads = capture_threads(fz)
    runs = page_runs(fz.pid, maps)
    total = sum(n for _, n in runs) * PAGE_SIZE
    buf = staging.view(total)[:total]
    off = 0
    for vaddr, n in runs:
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
    )
    # kernel state beyond memory: threads, timers, fds, signals, limits, ...
    meta.stats["os_state_s"] = round(time.monotonic() - started, 6)
    return meta, PageRuns(buf, runs)


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
) -> SnapshotInfo:
    """Snapshot process `pid` into `store`; the process runs on.

    With a keeper (a long-lived helper has one), duplicates of the process's
    fds are held under the new snapshot's id, so that a restore can put back
    files closed since; without one, only regular files can be reopened.
    A caller that snapshots several processes at once gives each its own
    `staging` buffer; otherwise snapshots share one and take turns.
    """
    pending = f"pending-{uuid.uuid4().hex}"
    if keeper is not None:
        keeper.prune()
    with contextlib.nullcontext() if staging else _staging_lock:
        try:
            flagged = _maps_with_flags(pid)  # slow: before the freeze
            with frozen(pid) as fz:
                meta, pages = capture(fz, staging or _staging, keeper, pending, flagged=flagged)
                pause = fz.paused_for
            meta.stats.update(
                pause_s=round(pause, 6),
                bytes=pages.nbytes,
                threads=len(meta.threads),
                mappings=len(meta.mappings),
            )
            info = store.commit(meta, pages, label=label, parent=parent, snap_id=snap_id, tags=tags)
        except BaseException:
            if keeper is not None:  # no snapshot: nothing may stay held for it
                keeper.release(pid, pending)
            raise
        if keeper is not None:
            keeper.rename(pid, pending, info.id)
        return info


def _maps_with_flags(pid: int) -> list[Mapping] | None:
    """None if they cannot be read: frozen() then says why, with its remedy."""
    try:
        return read_maps_with_flags(pid)
    except (OSError, ChkptError):
        return None
