"""Per-process kernel state that is neither memory nor files: signal
dispositions, umask, working directory. Read and set with injected syscalls.
"""

from __future__ import annotations

import os
import signal

from ..image import SigAction
from ..proc import procfs
from ..proc.arch import current as arch
from ..proc.inject import Injector

_UNCHANGEABLE = {signal.SIGKILL, signal.SIGSTOP}


def capture_sigactions(inj: Injector, scratch: int) -> list[SigAction]:
    """Every signal's disposition. /proc says which are ignored and which have a
    handler; only handlers (a few) need an injected rt_sigaction for the details."""
    caught, ignored = procfs.signal_masks(inj.thread.pid)
    actions = []
    for signo in range(1, arch.NSIG + 1):
        bit = 1 << (signo - 1)
        if signo in _UNCHANGEABLE:
            continue
        if not caught & bit:
            actions.append(SigAction(signo, 1 if ignored & bit else 0, 0, 0, 0))
            continue
        if inj.call("rt_sigaction", signo, 0, scratch, arch.SIGSET_SIZE) < 0:
            continue
        raw = inj.mem.read(scratch, arch.SIGACTION_SIZE)
        actions.append(SigAction(signo, *arch.unpack_sigaction(raw)))
    return actions


def reconcile_sigactions(inj: Injector, scratch: int, want: list[SigAction]) -> list[int]:
    """Set every disposition that differs from `want`; returns the signals changed."""
    now = {a.signo: a for a in capture_sigactions(inj, scratch)}
    changed = []
    for action in want:
        if now.get(action.signo) != action:
            raw = arch.pack_sigaction(action.handler, action.flags, action.restorer, action.mask)
            inj.check("rt_sigaction", action.signo, inj.put(scratch, raw), 0, arch.SIGSET_SIZE)
            changed.append(action.signo)
    return changed


def reconcile_umask(inj: Injector, pid: int, want: int) -> bool:
    if procfs.umask(pid) == want:
        return False
    inj.check("umask", want)
    return True


def reconcile_cwd(inj: Injector, pid: int, scratch: int, path: str) -> str | None:
    """chdir to `path`; returns a note instead when that cannot be done."""
    if procfs.cwd(pid) == path:
        return None
    if not os.path.isdir(path):
        # Not worth failing the whole restore for: say so instead.
        return f"working directory {path} no longer exists; left unchanged"
    inj.check("chdir", inj.put(scratch, os.fsencode(path) + b"\0"))
    return None
