"""Restore: return a running process, in place, to a snapshot's state.

Order matters (docs/ARCHITECTURE.md): validate everything first; take a
safety image; brk, then the rest of the layout; threads that exited since
are recreated (stopped); cwd, files, signal dispositions, umask, timers; then
the point of no return (threads born since the snapshot exit); memory; the
recreated threads' kernel pointers; registers; queued signals. A failure
before the point of no return rolls the process back to the safety image.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import (
    ChkptError,
    EngineError,
    RestoreFailed,
    RollbackFailed,
    ThreadsGone,
    UnsupportedState,
    WrongProcess,
)
from ..image import PAGE_SIZE, Child, Image, ImageMeta, Mapping, PageMap
from ..proc import procfs
from ..proc.arch import current as arch
from ..proc.inject import SCRATCH_SIZE, Injector
from ..proc.maps import read_maps, read_maps_with_flags, with_flags
from ..proc.memory import StagingBuffer
from ..proc.ptrace import Thread
from . import runs, transplant
from .dump import capture
from .files import FilesReport, close_parked, reconcile_files, unpark
from .freeze import Frozen, frozen
from .journal import safety_file, tell
from .keeper import FdKeeper
from .layout import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MAP_SHARED,
    Flags,
    Map,
    Op,
    Protect,
    Unmap,
    carry_flags,
    describe,
    flags_to_restore,
    plan,
    prot_of,
    refuse_device_memory,
    regions,
    touches_sealed,
)
from .runs import Run
from .task_state import (
    changed_mapped_files,
    compare_children,
    reconcile_cwd,
    reconcile_personality,
    reconcile_rlimits,
    reconcile_sigactions,
    reconcile_umask,
    requeue_signals,
)
from .threads import finish_recreated, match, reconcile_state, recreate
from .timers import reconcile_timers
from .tracking import PageState, Tracker, Tracking, blocking_uffd, present_pages

if TYPE_CHECKING:
    from ..store import Store

O_RDONLY, O_RDWR, O_CLOEXEC = 0, 2, 0o2000000
AT_FDCWD = -100
MADV_DONTNEED = 4
MADV_REMOVE = 9
MLOCK_ONFAULT = 1
# VmFlags set back with madvise: the advice that sets it, the one that clears it
# (MADV_DONTFORK/DOFORK, WIPEONFORK/KEEPONFORK, DONTDUMP/DODUMP, HUGEPAGE/NOHUGEPAGE,
# MERGEABLE/UNMERGEABLE)
_ADVICE = {"dc": (10, 11), "wf": (18, 19), "dd": (16, 17), "hg": (14, 15), "mg": (12, 13)}
# Pages to drop in runs shorter than this are zeroed by a write instead of an
# injected madvise: one write is cheaper than one injected syscall.
_ZERO_BY_WRITE_PAGES = 16

_safety: StagingBuffer | None = None  # made on first use: it is a file
_restore_lock = threading.Lock()


def _shared_safety() -> StagingBuffer:
    global _safety
    if _safety is None:
        _safety = StagingBuffer(safety_file("engine"))
    return _safety


@dataclass
class RestoreResult:
    snapshot_id: str
    pid: int
    pause_s: float = 0.0
    bytes_written: int = 0
    threads_exited: list[int] = field(default_factory=list)
    # [snapshot tid, live tid] of threads that had exited and were created again
    threads_recreated: list[list[int]] = field(default_factory=list)
    layout_ops: int = 0
    files: FilesReport = field(default_factory=FilesReport)
    signals_changed: list[int] = field(default_factory=list)
    timers_changed: list[str] = field(default_factory=list)
    umask_changed: bool = False
    bytes_loaded: int = 0  # page contents read from the store for this restore
    # children that ended since the snapshot, and children started since that still run
    children_gone: list[Child] = field(default_factory=list)
    children_started: list[Child] = field(default_factory=list)
    # what could not be put back, and what was done instead
    notes: list[str] = field(default_factory=list)
    past_no_return: bool = field(default=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("past_no_return")
        return d


def restore(
    pid: int,
    store: Store,
    ref: str,
    keeper: FdKeeper | None = None,
    *,
    safety: StagingBuffer | None = None,
    tracking: Tracking | None = None,
    handoff: dict[str, Any] | None = None,
    proceed: Callable[[], None] | None = None,
    into: bool = False,
) -> RestoreResult:
    """Restore snapshot `ref` (id or unique prefix) into process `pid`.

    With `into`, `pid` may be another process than the snapshot's, a fresh one of
    the same program, which then becomes the snapshot (a transplant: transplant.py).

    `keeper` should be the one the snapshot was taken with: its duplicates put
    back files the process closed since. Restores of different processes at
    once need a `safety` buffer each; otherwise they share one and take turns.
    With `tracking` whose tracker knows a base image, only the pages that may
    differ between the process and the snapshot are loaded, saved and written.
    `handoff`: what the restored process is to be told should a rescue have to
    finish the restore (journal.py). `proceed` is called last before the freeze:
    it may raise to cancel (the requester changed its mind while we loaded).
    """
    snap_id = store.resolve(ref)
    wanted_meta = store.load_meta(snap_id)
    wanted = wanted_meta.process
    procfs.check_can_act_on(pid)
    moving = transplant.moves(wanted_meta, pid)
    if moving and into:
        transplant.check(wanted_meta, pid)
        tracking = None  # the whole image is written: nothing of it is there yet
    elif moving:
        raise WrongProcess(
            f"snapshot {snap_id} was taken from PID {wanted.pid} ({wanted.exe}), "
            f"which is not the process now running as PID {pid}"
            if wanted.pid == pid
            else f"snapshot {snap_id} was taken from PID {wanted.pid}, not from PID {pid}"
        )
    tracker = tracking.tracker if tracking is not None else None
    # Every page to be written is verified before the process is touched.
    if tracker is None or tracker.base is None:
        meta, pages, target = store.load_pages(snap_id)
        loaded: list[Run] | None = None
    else:
        meta, target = store.load_pagemap(snap_id)
        assert tracker.base is not None
        differ = target.differing(tracker.base)
        state = tracker.scan_unfrozen(read_maps(pid))  # most of what will differ
        loaded = _to_write(target, differ, state)
        _, pages, _ = store.load_pages(snap_id, loaded, known=(meta, target))
    image = Image(meta, target.runs(), [pages])
    result = RestoreResult(snapshot_id=snap_id, pid=pid)
    # Slow, so before the freeze; read afresh (no cache): the refusals below go by
    # these flags, and a mapping replaced at the same place keeps none of its old ones.
    flagged = read_maps_with_flags(pid)
    if proceed is not None:
        proceed()
    lock = contextlib.nullcontext() if safety else _restore_lock
    with lock, frozen(pid, "restore") as fz:
        assert fz.journal is not None
        fz.journal.store, fz.journal.snapshot = os.fspath(store.root), snap_id
        fz.journal.handoff = handoff
        now: PageState | None = None
        failed: PastNoReturn | None = None
        if loaded is not None:
            assert tracker is not None
            # what was written between that look and the freeze
            now = tracker.scan(fz, read_maps(fz.pid), rearm=False)
            # and the scratch page the restore passes syscall arguments through
            scratch = runs.intersect(
                [(fz.injector.scratch(), SCRATCH_SIZE // PAGE_SIZE)], target.runs()
            )
            extra = runs.subtract(runs.union(_to_write(target, differ, now), scratch), loaded)
            if extra:
                image.contents.append(store.load_pages(snap_id, extra, known=(meta, target))[1])
        try:
            restore_frozen(
                fz,
                image,
                result,
                keeper,
                snap_id,
                safety or _shared_safety(),
                flagged,
                tracker,
                now=now,
            )
        except PastNoReturn as e:
            failed = e
        else:
            # before it runs: should we die before our caller answers the process
            tell(fz.journal, "restored", "restored", result.to_json())
        if tracker is not None:
            tracker.set_base(snap_id, target)  # re-armed right after the memory write
        if tracking is not None:
            tracking.flagged = None  # the layout is the snapshot's: read it anew next time
        result.pause_s = round(fz.paused_for, 6)
    if failed is not None:
        # The process is stopped, journaled "committed": finish it from the snapshot.
        from .rescue import rescue_pid

        try:
            done = rescue_pid(pid, own=True)
        except Exception as second:
            raise RollbackFailed(
                f"restoring PID {pid} failed past the point of no return ({failed.cause}), "
                f"and so did finishing it from the snapshot ({second})"
            ) from second
        raise RestoreFailed(
            f"restoring PID {pid} failed past the point of no return ({failed.cause}); "
            f"it was finished from the snapshot instead: {done}",
            "The process is in the snapshot's state; the frontend may need a reconnect",
        ) from failed
    result.bytes_loaded = image.nbytes
    return result


class PastNoReturn(Exception):
    """A restore failed after its point of no return: the process stays stopped for
    a rescue to roll it forward."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _to_write(target: PageMap, differ: list[Run], state: PageState) -> list[Run]:
    """Pages of the snapshot that the process may not hold as they are there: those
    that differ between the base and the snapshot (`differ`), written since the
    base, or without data now."""
    want = target.runs()
    return runs.intersect(
        want, runs.union(differ, state.written, runs.subtract(want, state.present))
    )


def restore_frozen(
    fz: Frozen,
    image: Image,
    result: RestoreResult,
    keeper: FdKeeper | None = None,
    key: str | None = None,
    staging: StagingBuffer | None = None,
    flagged: list[Mapping] | None = None,
    tracker: Tracker | None = None,
    *,
    now: PageState | None = None,
) -> None:
    """Apply `image` to the frozen process, or leave it as it was. Without `now`
    the image is full (every page's contents); with it, `now` is what the tracker
    says of the process, and the image holds only the pages that may differ."""
    staging = staging or _shared_safety()
    current = with_flags(read_maps(fz.pid), flagged, fz.pid)
    ops = _refuse_early(fz, image.meta, current)

    # The safety image holds duplicates of every current fd, so that a
    # rollback can put back what the restore closed. Without a keeper of the
    # caller's (the CLI) a temporary one holds them; it has none of the
    # snapshot's, so files are then reopened by path where possible.
    own_keeper = keeper is None
    keeper = FdKeeper() if keeper is None else keeper
    safety_key = f"safety-{uuid.uuid4().hex}"
    # Incremental: save only what the restore may change: the pages it writes or
    # drops, and those of mappings the layout changes.
    only = None
    if now is not None:
        written = runs.union(*(p.runs for p in image.contents))
        # Mappings the snapshot lacks are unmapped last, when nothing can fail any
        # more: their contents need no saving, however large (arrays made since).
        gone = runs.subtract(now.present, image.present)
        gone = runs.subtract(runs.union(gone), runs.union(regions(ops, Unmap)))
        scratch = [(fz.injector.scratch(), SCRATCH_SIZE // PAGE_SIZE)]
        only = runs.union(written, gone, regions(ops, Map), scratch)
    try:
        safety = capture(
            fz,
            staging,
            keeper,
            safety_key,
            flagged=current,
            only=only,
            pages=None if now is None else PageState(now.present, now.present),
        )
        _journal_safety(fz, safety, staging)
        _apply_or_roll_back(fz, image, result, keeper, key, safety, safety_key, current, tracker)
    except (RollbackFailed, RestoreFailed):
        # after a rollback memory is as it was, but the re-arm may already have
        # forgotten what was written since the base
        if tracker is not None:
            tracker.set_base(None, None)
        raise
    finally:
        keeper.release(fz.pid, safety_key)
        if own_keeper:
            keeper.close()


def _journal_safety(fz: Frozen, safety: Image, staging: StagingBuffer) -> None:
    """Before the first change: the safety image where a rescue finds it if we die."""
    j = fz.journal
    if j is None:
        return
    [pages] = safety.contents
    j.write_safety(
        safety.meta.to_json(),
        pages.runs,
        safety.present,
        file=staging.file,
        pages=None if staging.file is not None else pages.buffer[: pages.nbytes],
    )
    j.write("changing")


def _refuse_early(fz: Frozen, meta: ImageMeta, current: list[Mapping]) -> list[Op]:
    """What would make the restore fail halfway, checked before any change; returns
    the layout plan."""
    pid = fz.pid
    old = [i.tid for i in match(fz, meta.threads, meta.process.pid).missing if i.state is None]
    if old:
        raise ThreadsGone(
            f"threads {', '.join(map(str, old))} of PID {pid} existed at the snapshot but have "
            "exited since, and the snapshot (taken by an older jupyter-chkpt) lacks what "
            "recreating them needs"
        )
    refuse_device_memory(pid, current)
    blocking = blocking_uffd(pid, current)
    if blocking:
        m = blocking[0]
        raise UnsupportedState(
            f"PID {pid} has memory registered with a userfaultfd ({m.path or '[anon]'} at "
            f"{m.start:#x}): writing it back would wait for the process's own fault handler, "
            "which is frozen",
            "Nothing was changed. Unregister it in the process (or close the userfaultfd), "
            "then restore again",
        )
    ops = plan(meta.mappings, current)
    sealed = touches_sealed(ops, current)
    if sealed:
        raise UnsupportedState(
            f"PID {pid} has sealed memory (mseal) at {sealed[0].start:#x} that the snapshot's "
            "layout would have to change",
            "Nothing was changed; restore a snapshot taken after that memory was sealed",
        )
    _check_files(ops)
    return ops


def _apply_or_roll_back(
    fz: Frozen,
    image: Image,
    result: RestoreResult,
    keeper: FdKeeper,
    key: str | None,
    safety: Image,
    safety_key: str,
    flagged: list[Mapping],
    tracker: Tracker | None = None,
) -> None:
    """Apply the image; on failure apply the safety image (files held under `safety_key`)."""
    try:
        apply_image(fz, image, result, keeper, key, flagged, tracker)
    except Exception as error:
        if result.past_no_return:
            if fz.journal is None:
                raise RollbackFailed(
                    f"restoring PID {fz.pid} failed past the point of no return: {error}"
                ) from error
            fz.keep_stopped = True
            raise PastNoReturn(error) from error
        try:
            unpark(fz)
            apply_image(
                fz,
                safety,
                RestoreResult(snapshot_id="safety", pid=fz.pid),
                keeper,
                safety_key,
                read_maps_with_flags(fz.pid),  # the failed attempt may have changed flags
                rollback=True,
            )
        except Exception as second:
            raise RollbackFailed(
                f"restoring PID {fz.pid} failed ({error}) and so did rolling it back ({second})"
            ) from second
        if fz.journal is not None:
            fz.journal.write("frozen")  # as it was frozen again: nothing for a rescue to undo
        reason = error.message if isinstance(error, ChkptError) else str(error)
        raise RestoreFailed(f"could not restore PID {fz.pid}: {reason}") from error


def apply_image(
    fz: Frozen,
    image: Image,
    result: RestoreResult,
    keeper: FdKeeper,
    key: str | None,
    flagged: list[Mapping],
    tracker: Tracker | None = None,
    *,
    rollback: bool = False,
) -> None:
    """Make the frozen process `image`. Past the point of no return (result says
    so) a failure leaves it neither; a rescue rolls it forward from the journal."""
    meta = image.meta
    inj = fz.injector
    scratch = inj.scratch()

    # Threads born after the snapshot must exit while their own memory is
    # still mapped: the kernel touches their rseq area and stack when they
    # resume, and their exit writes clear_child_tid. Layout changes that
    # touch those pages wait until the threads are gone.
    threads = match(fz, meta.threads, meta.process.pid)
    busy = _pages_in_use(fz, threads.leaving)
    # Another process's image (or the rollback of one): the kernel's view of the
    # address space and the vDSO first (transplant.py).
    relocating = transplant.needed(fz, meta)
    if relocating:
        scratch = transplant.relocate(fz, meta, scratch, busy)

    # Layout. brk first: glibc's idea of the break lives in memory we are
    # about to restore, and the kernel must agree with it.
    _set_brk(inj, meta.brk, meta.mappings, fz.pid)
    ops = plan(meta.mappings, carry_flags(read_maps(fz.pid), flagged))
    result.layout_ops += len(ops)
    deferred = [
        op
        for op in ops
        if not isinstance(op, Flags)
        and any(op.start < end and start < op.end for start, end in busy)
    ]
    # Unmaps go last (nothing maps over them): a failure before them loses nothing.
    late = [op for op in ops if isinstance(op, Unmap) and op not in deferred]
    for op in _ordered([op for op in ops if op not in deferred and op not in late]):
        _execute(inj, op, scratch)
    _expect_left(meta, fz.pid, [*deferred, *late])

    # Threads that exited since come back, stopped, holding nothing yet.
    live = dict(threads.kept)
    for image_thread in threads.missing:
        live[image_thread.tid] = recreate(fz, image_thread, scratch)
        result.threads_recreated.append([image_thread.tid, live[image_thread.tid].tid])
    for t in meta.threads:
        reconcile_state(fz, t, live[t.tid], scratch, result.notes)
    _task_state(fz, meta, result, keeper, key, scratch, {t: th.tid for t, th in live.items()})

    # Point of no return.
    result.past_no_return = True
    if fz.journal is not None and not rollback:
        fz.journal.write("committed")
    close_parked(fz, shutdown=not rollback)
    for tid in threads.leaving:
        Injector(fz.group.threads[tid], inj.gadget, fz.mem).exit_thread()
        fz.group.forget(tid)
        result.threads_exited.append(tid)
    for op in _ordered(deferred):
        _execute(inj, op, scratch)
    _expect_left(meta, fz.pid, late)

    _drop_pages_born_since(fz, meta.mappings, image.present)
    for pages in image.contents:
        for vaddr, data in pages.iter_runs():
            fz.mem.write(vaddr, data)
            result.bytes_written += len(data)
    if tracker is not None:
        # Memory equals the image now: tracking starts over from here, and what follows
        # (tids rewritten in memory, rseq areas) counts as written since.
        tracker.scan(fz, read_maps(fz.pid), rearm=True)

    for t in [*threads.missing, *threads.moved]:
        finish_recreated(fz, t, live[t.tid], result.notes)
    if threads.moved:
        try:
            transplant.retarget_pid_caches(
                fz, meta, (run for pages in image.contents for run in pages.iter_runs())
            )
        except Exception as e:  # past the point of no return: say it, go on
            result.notes.append(f"pids the restored memory caches were not all updated: {e}")
    if relocating:
        for t in meta.threads:
            if t.state is not None and t not in threads.missing + threads.moved:
                transplant.rseq_back(fz, t.state.rseq, live[t.tid])
    if meta.rlimits is not None:
        result.notes.extend(reconcile_rlimits(fz.pid, meta.rlimits))
    for t in meta.threads:
        thread = live[t.tid]
        thread.set_regs(arch.regs_from_dict(t.regs))
        thread.set_xstate(t.xstate)
        thread.set_sigmask(t.sigmask)
    for op in late:
        _execute(inj, op, scratch)
    _expect_left(meta, fz.pid, [])
    _report(fz, meta, result, live)


def _expect_left(meta: ImageMeta, pid: int, ops: Sequence[Op]) -> None:
    """The layout now differs from the snapshot's by exactly `ops` (not yet run)."""
    left = plan(meta.mappings, read_maps(pid))
    if set(left) != set(ops):
        raise EngineError(f"the address space still differs from the snapshot's: {describe(left)}")


def _ordered(ops: Sequence[Op]) -> list[Op]:
    """Unmaps first (they make room), then mprotects, then maps."""
    return sorted(ops, key=lambda o: (not isinstance(o, Unmap), not isinstance(o, Protect)))


def _pages_in_use(fz: Frozen, tids: list[int]) -> list[tuple[int, int]]:
    """Address ranges the given threads need to exit cleanly: TCB and stack top."""
    ranges = []
    for tid in tids:
        regs = fz.group.threads[tid].get_regs()
        for addr in (arch.thread_pointer(regs), arch.stack_pointer(regs)):
            page = addr & ~(PAGE_SIZE - 1)
            ranges.append((page - PAGE_SIZE, page + 2 * PAGE_SIZE))
    return ranges


def _set_brk(inj: Injector, target: int, snapshot_maps: list[Mapping], pid: int) -> None:
    if inj.call("brk", target) == target:
        return
    # Something mapped since the snapshot sits where the heap must grow: clear it.
    heap_start = procfs.start_brk(pid)
    top = -(-target // PAGE_SIZE) * PAGE_SIZE
    for op in plan(snapshot_maps, read_maps(pid)):
        if isinstance(op, Unmap | Map) and op.start < top and op.end > heap_start:
            inj.check("munmap", op.start, op.end - op.start)
    got = inj.call("brk", target)
    if got != target:
        raise EngineError(
            f"the kernel set the program break to {got:#x}, not the snapshot's {target:#x}"
        )


def _execute(inj: Injector, op: Op, scratch: int) -> None:
    size = op.end - op.start
    if isinstance(op, Unmap):
        inj.check("munmap", op.start, size)
    elif isinstance(op, Protect):
        inj.check("mprotect", op.start, size, prot_of(op.perms))
    elif isinstance(op, Flags):
        _set_flags(inj, op.start, size, op.want, op.have)
    else:
        _map(inj, op, scratch)


def _set_flags(
    inj: Injector, start: int, size: int, want: frozenset[str], have: frozenset[str]
) -> None:
    """madvise / mlock until the VmFlags of RESTORED_FLAGS are `want`."""
    if "lo" in want and ("lo" not in have or ("lf" in want) != ("lf" in have)):
        inj.check("mlock2", start, size, MLOCK_ONFAULT if "lf" in want else 0)
    elif "lo" in have and "lo" not in want:
        inj.check("munlock", start, size)
    for flag, (on, off) in _ADVICE.items():
        if (flag in want) != (flag in have):
            inj.check("madvise", start, size, on if flag in want else off)


def _map(inj: Injector, op: Map, scratch: int) -> None:
    src = op.source
    prot = prot_of(src.perms)
    share = MAP_SHARED if src.shared else MAP_PRIVATE
    if "gd" in src.flags:
        share |= MAP_GROWSDOWN
    if "nr" in src.flags:
        share |= MAP_NORESERVE
    if not src.is_file:
        got = inj.check(
            "mmap",
            op.start,
            op.end - op.start,
            prot,
            share | MAP_FIXED | MAP_ANONYMOUS,
            arch.unsigned(-1),
            0,
        )
    else:
        mode = O_RDWR if src.shared and "w" in src.perms else O_RDONLY
        path = inj.put(scratch, os.fsencode(src.path) + b"\0")
        fd = inj.check("openat", arch.unsigned(AT_FDCWD), path, mode | O_CLOEXEC, 0)
        try:
            got = inj.check(
                "mmap", op.start, op.end - op.start, prot, share | MAP_FIXED, fd, op.file_offset
            )
        finally:
            inj.call("close", fd)
    if got != op.start:
        raise EngineError(f"mmap placed {op.start:#x} at {got:#x}")
    if flags_to_restore(src):
        _set_flags(inj, op.start, op.end - op.start, flags_to_restore(src), frozenset())


def _check_files(ops: list[Op]) -> None:
    """Refuse early when a file mapping to recreate cannot be reopened as it was."""
    for op in ops:
        if isinstance(op, Map) and op.source.is_file:
            src = op.source
            problem = ""
            try:
                st = os.stat(src.path)
                if (
                    st.st_ino != src.inode
                    or f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}" != src.dev
                ):
                    problem = "has been replaced by another file"
            except OSError as e:
                problem = f"cannot be opened ({e.strerror})"
            if problem:
                raise EngineError(
                    f"the snapshot maps {src.path} at {op.start:#x}, but that file {problem}",
                    "Nothing was changed; the process keeps running as it was. Restore a snapshot taken after that file changed",
                )


def _task_state(
    fz: Frozen,
    meta: ImageMeta,
    result: RestoreResult,
    keeper: FdKeeper,
    key: str | None,
    scratch: int,
    tids: dict[int, int],
) -> None:
    """cwd, files, signal dispositions, umask, timers, personality: kernel state
    beyond memory, all of which a rollback sets back. `tids`: snapshot tid -> live tid."""
    inj = fz.injector
    note = reconcile_cwd(inj, fz.pid, scratch, meta.cwd)
    if note:
        result.notes.append(note)
    if meta.files is None:
        result.notes.append(
            "the snapshot has no fd table (taken by an older jupyter-chkpt): files, signal "
            "dispositions and umask were left as they are"
        )
        return
    moving = not meta.process.same_process(fz.identity)
    result.files = reconcile_files(fz, meta.files, keeper, key, scratch, moving=moving)
    result.notes.extend(result.files.notes)
    if meta.sigactions is not None:
        result.signals_changed = reconcile_sigactions(inj, scratch, meta.sigactions)
    if meta.umask is not None:
        result.umask_changed = reconcile_umask(inj, fz.pid, meta.umask)
    if meta.timers is not None:
        result.timers_changed = reconcile_timers(inj, scratch, meta.timers, tids)
    if meta.personality is not None:
        reconcile_personality(inj, fz.pid, meta.personality)


def _report(fz: Frozen, meta: ImageMeta, result: RestoreResult, live: dict[int, Thread]) -> None:
    """Last, with the registers in place: queued signals, and what can only be said."""
    with fz.injector.scratch_kept() as scratch:
        for image in meta.threads:
            if image.state is not None:
                inj = Injector(live[image.tid], fz.injector.gadget, fz.mem)
                result.notes.extend(requeue_signals(inj, scratch, inj.thread, image.state.queued))
        if meta.queued_signals is not None:
            result.notes.extend(
                requeue_signals(
                    fz.injector, scratch, fz.group.main, meta.queued_signals, shared=True
                )
            )
    if meta.children is not None:
        result.children_gone, result.children_started = compare_children(fz.pid, meta.children)
        if result.children_gone:
            result.notes.append(
                "child processes of the snapshot have ended since and cannot come back: "
                + ", ".join(f"{c.pid} ({c.comm})" for c in result.children_gone)
            )
        if result.children_started:
            result.notes.append(
                "child processes started since the snapshot still run, unknown to the restored "
                "state: " + ", ".join(f"{c.pid} ({c.comm})" for c in result.children_started)
            )
    result.notes.extend(changed_mapped_files(meta))


def _drop_pages_born_since(fz: Frozen, maps: list[Mapping], keep: list[Run]) -> None:
    """Pages with data now that had none at the snapshot go back to zero
    (anonymous) or to the file's content (private file mappings)."""
    have = present_pages(fz.pid, maps).present
    by_addr = sorted(maps, key=lambda m: m.start)
    starts = [m.start for m in by_addr]
    zeros = bytes(_ZERO_BY_WRITE_PAGES * PAGE_SIZE)
    inj = fz.injector
    for vaddr, n in runs.subtract(have, keep):
        owner = by_addr[bisect.bisect_right(starts, vaddr) - 1]
        size = n * PAGE_SIZE
        locked = "lo" in owner.flags
        if not owner.is_file and not owner.is_shared_anon and (locked or n < _ZERO_BY_WRITE_PAGES):
            # locked memory refuses madvise; its pages stay resident anyway
            for at in range(vaddr, vaddr + size, len(zeros)):
                fz.mem.write(at, zeros[: min(len(zeros), vaddr + size - at)])
            continue
        if locked:  # madvise refuses locked memory: unlock around it (the limit was met before)
            inj.check("munlock", vaddr, size)
        # DONTNEED only unmaps shared memory; REMOVE frees it, so it reads as zero
        advice = MADV_REMOVE if owner.is_shared_anon else MADV_DONTNEED
        inj.check("madvise", vaddr, size, advice)
        if locked:
            inj.check("mlock2", vaddr, size, MLOCK_ONFAULT if "lf" in owner.flags else 0)
