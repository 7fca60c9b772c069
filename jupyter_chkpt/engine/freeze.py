"""Freeze: hold every thread of a process stopped, with the tools to work on it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import UnsupportedState
from ..image import ProcessIdentity
from ..proc import procfs
from ..proc.arch import current as arch
from ..proc.arch import require_supported
from ..proc.inject import Injector, find_syscall_gadget
from ..proc.memory import ProcessMemory
from ..proc.ptrace import ThreadGroup


@dataclass
class Frozen:
    pid: int
    identity: ProcessIdentity
    group: ThreadGroup
    mem: ProcessMemory
    injector: Injector  # runs syscalls in the main thread
    frozen_at: float

    @property
    def paused_for(self) -> float:
        return time.monotonic() - self.frozen_at


@contextmanager
def frozen(pid: int) -> Iterator[Frozen]:
    """Stop all threads of `pid`; they run on when the block is left, whatever happens."""
    require_supported()
    status = procfs.check_can_act_on(pid)
    if arch.shadow_stack_enabled(status.thread_features):
        raise UnsupportedState(
            f"PID {pid} uses the x86 shadow stack ({status.thread_features}), which "
            "jupyter-chkpt cannot save or restore yet",
            "Nothing was changed; run the program without shadow stacks to use snapshots",
        )
    identity = procfs.identity(pid)
    group = ThreadGroup(pid)
    started = time.monotonic()
    group.seize_all()
    try:
        with ProcessMemory(pid, write=True) as mem:
            injector = Injector(group.main, find_syscall_gadget(pid, mem), mem)
            yield Frozen(pid, identity, group, mem, injector, started)
    finally:
        group.detach_all()
