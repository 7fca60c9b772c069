"""Per-process kernel state that is neither memory nor files: signal
dispositions and queued signals, umask, working directory, resource limits,
personality; and what a restore can only report: children that came or went,
files under private mappings that changed on disk.
"""

from __future__ import annotations

import base64
import collections
import os
import resource
import signal

from ..errors import ProcessNotFound
from ..image import Child, ImageMeta, MappedFile, Mapping, SigAction
from ..proc import procfs
from ..proc.arch import current as arch
from ..proc.inject import Injector
from ..proc.ptrace import Thread

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
    return _set_if_changed(inj, "umask", procfs.umask(pid), want)


def _set_if_changed(inj: Injector, syscall: str, now: int, want: int) -> bool:
    if now == want:
        return False
    inj.check(syscall, want)
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


# --- queued signals ---------------------------------------------------------------------


def encode_siginfo(raw: list[bytes]) -> list[str]:
    return [base64.b64encode(s).decode() for s in raw]


def requeue_signals(
    inj: Injector, scratch: int, thread: Thread, want: list[str], *, shared: bool = False
) -> list[str]:
    """Queue again the signals queued at the snapshot that were taken since (for
    `thread`, or with `shared` for the process); returns notes on the others."""
    have = collections.Counter(encode_siginfo(thread.queued_signals(shared=shared)))
    notes = []
    for item in want:
        if have[item]:
            have[item] -= 1
            continue
        raw = base64.b64decode(item)
        signo = int.from_bytes(raw[:4], "little")
        at = inj.put(scratch, raw)
        # From the thread itself (or the main thread, for the process): the kernel
        # lets only the receiver queue siginfo that claims to come from the kernel.
        if shared:
            res = inj.call("rt_sigqueueinfo", thread.pid, signo, at)
        else:
            res = inj.call("rt_tgsigqueueinfo", thread.pid, thread.tid, signo, at)
        if res < 0:
            notes.append(
                f"signal {_signame(signo)} queued at the snapshot could not be queued again: {os.strerror(-res)}"
            )
    for item, n in have.items():
        if n > 0:
            signo = int.from_bytes(base64.b64decode(item)[:4], "little")
            where = "for the process" if shared else f"for thread {thread.tid}"
            notes.append(
                f"signal {_signame(signo)} arrived since the snapshot and is queued {where}: it will be delivered"
            )
    return notes


def _signame(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return str(signo)


# --- resource limits, personality ----------------------------------------------------------


_RLIMITS = {n: getattr(resource, n) for n in dir(resource) if n.startswith("RLIMIT_")}
_RLIMITS.pop("RLIMIT_OFILE", None)  # another name for RLIMIT_NOFILE


def capture_rlimits(pid: int) -> dict[str, list[int]]:
    return {name: list(resource.prlimit(pid, r)) for name, r in _RLIMITS.items()}


def reconcile_rlimits(pid: int, want: dict[str, list[int]]) -> list[str]:
    """Set back every limit that differs; a hard limit raised needs privilege: a note."""
    notes = []
    for name, (soft, hard) in want.items():
        r = _RLIMITS.get(name)
        if r is None or list(resource.prlimit(pid, r)) == [soft, hard]:
            continue
        try:
            resource.prlimit(pid, r, (soft, hard))
        except (OSError, ValueError) as e:
            notes.append(f"resource limit {name} not set back to {soft}/{hard}: {e}")
    return notes


def reconcile_personality(inj: Injector, pid: int, want: int) -> bool:
    return _set_if_changed(inj, "personality", procfs.personality(pid), want)


# --- what a restore reports --------------------------------------------------------------


def capture_children(pid: int) -> list[Child]:
    out = []
    for child in procfs.children(pid):
        try:
            out.append(Child(child, procfs.identity(child).start_time, procfs.comm(child)))
        except ProcessNotFound:
            continue
    return out


def compare_children(pid: int, want: list[Child]) -> tuple[list[Child], list[Child]]:
    """(children of the snapshot gone now, children started since that still run)."""
    now = capture_children(pid)
    key = {(c.pid, c.start_time) for c in now}
    then = {(c.pid, c.start_time) for c in want}
    return [c for c in want if (c.pid, c.start_time) not in key], [
        c for c in now if (c.pid, c.start_time) not in then
    ]


def capture_mapped_files(maps: list[Mapping]) -> list[MappedFile]:
    """Files under private mappings, as they are on disk now."""
    out: dict[str, MappedFile] = {}
    for m in maps:
        if m.is_file and not m.shared and not m.is_special and m.path not in out:
            try:
                st = os.stat(m.path)
            except OSError:
                continue  # deleted, or not a path ("anon_inode:...")
            if st.st_ino == m.inode:
                out[m.path] = MappedFile(m.path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return list(out.values())


def changed_mapped_files(meta: ImageMeta) -> list[str]:
    notes = []
    for f in meta.mapped_files or []:
        try:
            st = os.stat(f.path)
        except OSError:
            continue
        if st.st_ino == f.ino and (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
            notes.append(
                f"{f.path} changed on disk since the snapshot: the pages of its private "
                "mappings that the process never wrote now read the new content"
            )
    return notes
