"""Which snapshots to prune: pure policy, used by the helper after each automatic
snapshot and by `jupyter-chkpt prune`.

Only automatic, unlabelled snapshots are ever chosen by count or size, oldest
first; snapshots the caller protects (a kernel's live one, what a restore journal
needs) never are. Snapshots of processes that have exited are chosen only when
asked (`dead`): they cannot be restored in place any more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .manifest import SnapshotInfo


def prunable(i: SnapshotInfo) -> bool:
    return bool(i.tags.get("auto")) and not i.label


def choose(
    infos: Iterable[SnapshotInfo],
    *,
    keep: int | None = None,
    max_bytes: int | None = None,
    dead: Callable[[SnapshotInfo], bool] | None = None,
    protect: Callable[[SnapshotInfo], bool] = lambda i: False,
) -> list[SnapshotInfo]:
    """The snapshots to delete, oldest first: those of exited processes (with
    `dead`), automatic ones beyond the newest `keep` of each process, then the
    oldest automatic ones until what stays stores at most `max_bytes`."""
    ordered = sorted(infos, key=lambda i: i.created)
    out: dict[str, SnapshotInfo] = {}
    if dead is not None:
        out.update((i.id, i) for i in ordered if dead(i) and not protect(i))
    if keep is not None:
        by_process: dict[tuple[int, int], list[SnapshotInfo]] = {}
        for i in ordered:
            if i.id not in out and prunable(i):
                by_process.setdefault((i.pid, i.start_time), []).append(i)
        for autos in by_process.values():
            for i in autos[: max(0, len(autos) - keep)]:
                if not protect(i):
                    out[i.id] = i
    if max_bytes is not None:
        total = sum(i.stored_bytes for i in ordered if i.id not in out)
        for i in ordered:
            if total <= max_bytes:
                break
            if i.id not in out and prunable(i) and not protect(i):
                out[i.id] = i
                total -= i.stored_bytes
    return sorted(out.values(), key=lambda i: i.created)
