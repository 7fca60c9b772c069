"""Freeze: hold every thread of a process stopped, with the tools to work on it.

Every freeze is journaled (engine/journal.py): if we die while the process is
stopped, a rescue (engine/rescue.py) ends the stop with the process whole.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..errors import ProcessAlreadyTraced, UnsupportedState
from ..image import ProcessIdentity
from ..proc import procfs
from ..proc.arch import current as arch
from ..proc.arch import require_supported
from ..proc.inject import SCRATCH_SIZE, Injector, find_syscall_gadget
from ..proc.memory import ProcessMemory
from ..proc.ptrace import ThreadGroup
from .journal import Journal, ThreadRecord, refuse_if_busy


@dataclass
class Frozen:
    pid: int
    identity: ProcessIdentity
    group: ThreadGroup
    mem: ProcessMemory
    injector: Injector  # runs syscalls in the main thread
    frozen_at: float
    journal: Journal | None = None
    # set after a failure past a restore's point of no return: the process stays
    # stopped, with its journal, for a rescue to finish
    keep_stopped: bool = False
    # every thread's registers as the freeze found them, before any injection: an
    # injection leaves a thread that was in a syscall set to restart it through its
    # restart block (Injector.call), right for this process but not for an image
    at_freeze: dict[int, dict[str, int]] = field(default_factory=dict)

    @property
    def paused_for(self) -> float:
        return time.monotonic() - self.frozen_at


log = logging.getLogger(__name__)

DEADLINE_ENV = "JUPYTER_CHKPT_FREEZE_DEADLINE"
DEADLINE_S = 10.0  # for every thread to stop; a thread in uninterruptible sleep may not


def deadline_s() -> float:
    return float(os.environ.get(DEADLINE_ENV) or DEADLINE_S)


def record(fz: Frozen, journal: Journal) -> None:
    """What a rescue needs to put the process back as it was frozen."""
    fz.at_freeze = {tid: arch.regs_to_dict(t.get_regs()) for tid, t in fz.group.threads.items()}
    journal.threads = {
        tid: ThreadRecord(fz.at_freeze[tid], t.get_sigmask()) for tid, t in fz.group.threads.items()
    }
    addr = fz.injector.scratch()
    journal.scratch = (addr, base64.b64encode(fz.mem.read(addr, SCRATCH_SIZE)).decode())
    journal.fds = sorted(int(n) for n in os.listdir(procfs.proc_path(fz.pid, "fd")))
    journal.write("frozen")


@contextmanager
def frozen(pid: int, op: str = "snapshot") -> Iterator[Frozen]:
    """Stop all threads of `pid`; they run on when the block is left, whatever happens
    (unless a restore failed past its point of no return: see Frozen.keep_stopped)."""
    require_supported()
    try:
        status = procfs.check_can_act_on(pid)
    except ProcessAlreadyTraced:
        refuse_if_busy(pid)  # traced by another jupyter-chkpt: say so
        raise
    if arch.shadow_stack_enabled(status.thread_features):
        raise UnsupportedState(
            f"PID {pid} uses the x86 shadow stack ({status.thread_features}), which "
            "jupyter-chkpt cannot save or restore yet",
            "Nothing was changed; run the program without shadow stacks to use snapshots",
        )
    identity = procfs.identity(pid)
    journal = Journal(identity, op)
    journal.claim()
    group = ThreadGroup(pid)
    started = time.monotonic()
    try:
        group.freeze(deadline_s(), before_stop=lambda: journal.write("stopping"))
    except BaseException:
        journal.remove()
        raise
    fz: Frozen | None = None
    rescue_now = False
    try:
        with ProcessMemory(pid, write=True) as mem:
            injector = Injector(group.main, find_syscall_gadget(pid, mem), mem)
            fz = Frozen(pid, identity, group, mem, injector, started, journal)
            record(fz, journal)
            yield fz
    except BaseException:
        # Anything but an error the restore handles itself (Ctrl-C in the CLI, a
        # BaseException from deep down) once the process is being changed: never let it
        # run half-changed; the rescue rolls it back or forward as the journal says.
        if fz is not None and not fz.keep_stopped and journal.phase in ("changing", "committed"):
            fz.keep_stopped = rescue_now = True
        raise
    finally:
        if fz is not None and fz.keep_stopped:
            group.leave_stopped()  # journaled: rescue.py takes it from here
        else:
            group.detach_all()  # every register is final: a rescue need only SIGCONT
            journal.write("released")
            group.release()
            journal.remove()
        if rescue_now:
            from .rescue import rescue_pid  # rescue builds on this module

            try:
                rescue_pid(pid, own=True)
            except Exception:
                log.exception("PID %d: could not rescue it after the failure", pid)
