"""Timers: interval timers (setitimer, which `signal.alarm` and cell-timeout
helpers use) and POSIX timers (timer_create), read and set with injected syscalls.

Without this a timer armed after the snapshot fires after the restore, whose
signal dispositions may no longer expect it ("Alarm clock" kills the process),
and one that fired since never fires again. A restore arms every timer with the
time it had left at the snapshot, disarms the others, deletes POSIX timers
created since and recreates deleted ones under their old id
(PR_TIMER_CREATE_RESTORE_IDS, Linux 6.17+).
"""

from __future__ import annotations

import struct

from ..errors import EngineError
from ..image import PosixTimer, Timers
from ..proc import procfs
from ..proc.arch import current as arch
from ..proc.inject import Injector

ITIMERS = (0, 1, 2)  # ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF
SIGEV_THREAD_ID = 4
_NOTIFY = {"signal": 0, "none": 1, "thread": 2}
PR_TIMER_CREATE_RESTORE_IDS = 77
_US, _NS = 10**6, 10**9


def capture_timers(inj: Injector, scratch: int) -> Timers:
    itimers = []
    for which in ITIMERS:
        inj.check("getitimer", which, scratch)
        interval, value = arch.unpack_timer_pair(inj.mem.read(scratch, arch.TIMER_PAIR_SIZE))
        itimers.append([interval[0] * _US + interval[1], value[0] * _US + value[1]])
    return Timers(itimers=itimers, posix=_posix_timers(inj, scratch))


def _posix_timers(inj: Injector, scratch: int) -> list[PosixTimer]:
    timers = []
    for fields in _read_proc_timers(inj.thread.pid):
        inj.check("timer_gettime", fields["id"], scratch)
        interval, value = arch.unpack_timer_pair(inj.mem.read(scratch, arch.TIMER_PAIR_SIZE))
        timers.append(
            PosixTimer(
                **fields,
                interval_ns=interval[0] * _NS + interval[1],
                value_ns=value[0] * _NS + value[1],
            )
        )
    return timers


def _read_proc_timers(pid: int) -> list[dict[str, int]]:
    """/proc/PID/timers: "ID: 3", "signal: 14/00000000deadbeef",
    "notify: signal/tid.1234", "ClockID: 1" per timer."""
    out: list[dict[str, int]] = []
    with open(procfs.proc_path(pid, "timers")) as f:
        for line in f:
            key, _, value = line.partition(": ")
            value = value.strip()
            if key == "ID":
                out.append({"id": int(value)})
            elif key == "signal":
                signo, _, sigval = value.partition("/")
                out[-1].update(signo=int(signo), sigval=int(sigval, 16))
            elif key == "notify":
                kind, _, target = value.partition("/")
                who, _, num = target.partition(".")
                notify = _NOTIFY.get(kind, 0) | (SIGEV_THREAD_ID if who == "tid" else 0)
                out[-1].update(notify=notify, notify_tid=int(num) if who == "tid" else 0)
            elif key == "ClockID":
                out[-1]["clock"] = int(value)
    return out


def reconcile_timers(
    inj: Injector, scratch: int, want: Timers, tids: dict[int, int] | None = None
) -> list[str]:
    """Make the process's timers the snapshot's; returns what changed, for the result.

    `tids` maps snapshot tids to the live ones (threads recreated under a new tid),
    for timers that signal one thread. Timers are created before any is deleted,
    so a refusal leaves the process as it was.
    """
    changed: list[str] = []
    names = ("real", "virtual", "prof")
    for which, (interval, value) in zip(ITIMERS, want.itimers, strict=True):
        inj.check("getitimer", which, scratch)
        now = arch.unpack_timer_pair(inj.mem.read(scratch, arch.TIMER_PAIR_SIZE))
        if value == 0 and now[1] == (0, 0):
            continue  # disarmed then and now
        pair = arch.pack_timer_pair(divmod(interval, _US), divmod(value, _US))
        inj.check("setitimer", which, inj.put(scratch, pair), 0)
        changed.append(f"itimer {names[which]}")

    have = {t.id: t for t in _posix_timers(inj, scratch)}
    wanted = {t.id: t for t in want.posix}
    for t in want.posix:
        old = have.get(t.id)
        if old is not None and _same_timer(old, t, tids):
            continue
        if old is not None:  # the id was reused by another timer since
            inj.check("timer_delete", t.id)
        _create(inj, scratch, t, tids)
        changed.append(f"timer {t.id} recreated")
    for tid in have.keys() - wanted.keys():
        inj.check("timer_delete", tid)
        changed.append(f"timer {tid} deleted")
    for t in want.posix:
        spec = arch.pack_timer_pair(divmod(t.interval_ns, _NS), divmod(t.value_ns, _NS))
        inj.check("timer_settime", t.id, 0, inj.put(scratch, spec), 0)
    return changed


def _target(t: PosixTimer, tids: dict[int, int] | None) -> int:
    return (tids or {}).get(t.notify_tid, t.notify_tid)


def _same_timer(now: PosixTimer, want: PosixTimer, tids: dict[int, int] | None) -> bool:
    return (now.clock, now.signo, now.sigval, now.notify) == (
        want.clock,
        want.signo,
        want.sigval,
        want.notify,
    ) and now.notify_tid == (_target(want, tids) if want.notify & SIGEV_THREAD_ID else 0)


def _create(inj: Injector, scratch: int, t: PosixTimer, tids: dict[int, int] | None) -> None:
    if inj.call("prctl", PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0) < 0:
        raise EngineError(
            f"POSIX timer {t.id} was deleted since the snapshot, and this Linux cannot "
            "recreate a timer under its old id (PR_TIMER_CREATE_RESTORE_IDS needs Linux 6.17)"
        )
    try:
        sev = arch.pack_sigevent(t.sigval, t.signo, t.notify, _target(t, tids))
        id_at = scratch + 128
        inj.put(id_at, struct.pack("<i", t.id))
        inj.check("timer_create", t.clock, inj.put(scratch, sev), id_at)
        (got,) = struct.unpack("<i", inj.mem.read(id_at, 4))
    finally:
        inj.call("prctl", PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0)
    if got != t.id:
        inj.call("timer_delete", got)
        raise EngineError(f"the kernel recreated POSIX timer {t.id} as timer {got}")
