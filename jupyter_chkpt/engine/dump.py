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

from ..image import PAGE_SIZE, ImageMeta, Mapping, PageRuns, ThreadImage
from ..proc import procfs
from ..proc.arch import current as arch
from ..proc.maps import Pagemap, read_maps
from ..proc.memory import StagingBuffer
from .files import capture_files
from .freeze import Frozen, frozen
from .keeper import FdKeeper
from .layout import dumpable
from .task_state import capture_sigactions

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


def capture_threads(fz: Frozen) -> list[ThreadImage]:
    threads = []
    for tid, thread in sorted(fz.group.threads.items()):
        regs = arch.resolve_syscall_restart(arch.regs_to_dict(thread.get_regs()))
        threads.append(
            ThreadImage(
                tid=tid,
                regs=regs,
                xstate=thread.get_xstate(),
                sigmask=thread.get_sigmask(),
                name=procfs.thread_name(fz.pid, tid),
            )
        )
    return threads


def capture(
    fz: Frozen,
    staging: StagingBuffer,
    keeper: FdKeeper | None = None,
    key: str | None = None,
) -> tuple[ImageMeta, PageRuns]:
    """The image of a frozen process; its pages live in `staging` until the next capture.

    With a keeper, duplicates of the process's fds are held under `key`.

    Injected syscalls come last and are few: a helper killed while a thread runs
    one leaves that thread with the injected registers (see ARCHITECTURE.md), while
    one killed during the copy, which is nearly all of the freeze, harms nothing.
    """
    maps = read_maps(fz.pid)
    threads = capture_threads(fz)
    runs = page_runs(fz.pid, maps)
    total = sum(n for _, n in runs) * PAGE_SIZE
    buf = staging.view(total)[:total]
    off = 0
    for vaddr, n in runs:
        size = n * PAGE_SIZE
        fz.mem.read_into(vaddr, buf[off : off + size])
        off += size
    brk = fz.injector.check("brk", 0)
    started = time.monotonic()
    with fz.injector.scratch_kept() as scratch:
        sigactions = capture_sigactions(fz.injector, scratch)
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
    )
    # kernel state beyond memory: fds, signal dispositions, umask
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
            with frozen(pid) as fz:
                meta, pages = capture(fz, staging or _staging, keeper, pending)
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
