"""Readers for /proc/PID: who a process is, what state it is in, its threads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from ..errors import (
    ProcessAlreadyTraced,
    ProcessIsZombie,
    ProcessNotFound,
    ProcessNotOwned,
)
from ..image import ProcessIdentity


def proc_path(pid: int, *parts: str) -> str:
    return os.path.join("/proc", str(pid), *parts)


@dataclass(frozen=True)
class Status:
    state: str  # one letter, e.g. "S", "t", "Z"
    uid: int  # real uid
    tracer_pid: int
    # architecture-specific features the process turned on (x86: shstk, wrss), if shown
    thread_features: str = ""


def read_status(pid: int) -> Status:
    fields: dict[str, str] = {}
    try:
        with open(proc_path(pid, "status")) as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessNotFound(f"no process with PID {pid}") from None
    return Status(
        state=fields["State"].split()[0],
        uid=int(fields["Uid"].split()[0]),
        tracer_pid=int(fields["TracerPid"]),
        thread_features=fields.get("x86_Thread_features", ""),
    )


def _stat_fields(pid: int, tid: int | None = None) -> list[str]:
    path = proc_path(pid, "stat") if tid is None else proc_path(pid, "task", str(tid), "stat")
    try:
        with open(path) as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessNotFound(f"no process with PID {pid}") from None
    # comm may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def running(pid: int, start_time: int) -> bool:
    """Whether that process instance exists and has not exited (a zombie has: its
    parent just has not reaped it yet)."""
    try:
        fields = _stat_fields(pid)
    except ProcessNotFound:
        return False
    return fields[0] not in ("Z", "X") and int(fields[22 - 3]) == start_time


@cache
def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def identity(pid: int) -> ProcessIdentity:
    fields = _stat_fields(pid)  # fields[0] is field 3 of stat(5)
    try:
        exe = os.readlink(proc_path(pid, "exe"))
    except OSError:
        exe = ""
    return ProcessIdentity(
        pid=pid,
        start_time=int(fields[22 - 3]),
        boot_id=boot_id(),
        exe=exe,
        uid=read_status(pid).uid,
    )


def start_brk(pid: int) -> int:
    return int(_stat_fields(pid)[47 - 3])


# The memory-map fields of stat(5), by field number: what prctl(PR_SET_MM_MAP) sets.
MM_FIELDS = {
    "start_code": 26,
    "end_code": 27,
    "start_stack": 28,
    "start_data": 45,
    "end_data": 46,
    "start_brk": 47,
    "arg_start": 48,
    "arg_end": 49,
    "env_start": 50,
    "env_end": 51,
}


def mm_fields(pid: int) -> dict[str, int]:
    """Where the kernel believes code, data, heap, stack, arguments and environment are
    (0 unless we may ptrace the process)."""
    fields = _stat_fields(pid)
    return {name: int(fields[n - 3]) for name, n in MM_FIELDS.items()}


def thread_ids(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(proc_path(pid, "task")))
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessNotFound(f"no process with PID {pid}") from None


def thread_states(pid: int) -> dict[int, str]:
    """tid -> its state letter (R, S, D, T, t, Z...); threads that exit meanwhile are left out."""
    out = {}
    for tid in thread_ids(pid):
        try:
            out[tid] = _stat_fields(pid, tid)[0]
        except ProcessNotFound:
            continue
    if not out:
        raise ProcessNotFound(f"no process with PID {pid}")
    return out


def thread_start_time(pid: int, tid: int) -> int:
    """When the thread started (clock ticks since boot): with the tid, it names one thread."""
    return int(_stat_fields(pid, tid)[22 - 3])


def children(pid: int) -> list[int]:
    """PIDs of the process's children (forked by any of its threads)."""
    out: list[int] = []
    for tid in thread_ids(pid):
        try:
            with open(proc_path(pid, "task", str(tid), "children")) as f:
                out.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread exited meanwhile
    return sorted(set(out))


def personality(pid: int) -> int:
    with open(proc_path(pid, "personality")) as f:
        return int(f.read(), 16)


def thread_name(pid: int, tid: int) -> str:
    try:
        with open(proc_path(pid, "task", str(tid), "comm")) as f:
            return f.read().rstrip("\n")
    except OSError:
        return ""


def cwd(pid: int) -> str:
    return os.readlink(proc_path(pid, "cwd"))


def signal_masks(pid: int) -> tuple[int, int]:
    """(caught, ignored): the process's signals with a handler, and those ignored."""
    fields: dict[str, str] = {}
    with open(proc_path(pid, "status")) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["SigCgt"], 16), int(fields["SigIgn"], 16)


def umask(pid: int) -> int:
    with open(proc_path(pid, "status")) as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    raise ProcessNotFound(f"PID {pid} shows no umask in /proc/{pid}/status")


def check_can_act_on(pid: int) -> Status:
    """Refuse, with the reason, processes this user must not or cannot trace."""
    if pid <= 0:
        raise ProcessNotFound(f"{pid} is not a valid PID")
    if pid == os.getpid():
        raise ProcessNotOwned(
            f"PID {pid} is jupyter-chkpt itself",
            "A process cannot snapshot itself; run the helper as a separate process",
        )
    status = read_status(pid)
    if status.uid != os.getuid():
        raise ProcessNotOwned(
            f"PID {pid} belongs to uid {status.uid}, not to you (uid {os.getuid()})"
        )
    if status.state in ("Z", "X"):
        raise ProcessIsZombie(f"PID {pid} is a zombie")
    if status.tracer_pid != 0:
        raise ProcessAlreadyTraced(
            f"PID {pid} is already traced by PID {status.tracer_pid} ({comm(status.tracer_pid)})"
        )
    return status


def comm(pid: int) -> str:
    try:
        with open(proc_path(pid, "comm")) as f:
            return f.read().strip()
    except OSError:
        return "unknown"
