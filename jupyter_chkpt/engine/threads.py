"""Threads: what the kernel holds for each one, matching them across a restore,
and recreating those that exited since the snapshot.

A snapshot keeps each thread's registers and its `ThreadState`: start time,
clear_child_tid address, robust futex list, rseq area, alternate signal stack,
affinity, scheduling and queued signals. A restore matches live threads to the
snapshot's by tid *and* start time (a new thread may reuse an old tid); those
born since exit (restore.py) and those gone are recreated here:

* before the point of no return: the main thread runs an injected `clone3`
  asking for the old tid (allowed with CAP_CHECKPOINT_RESTORE) or else `clone`,
  while we trace its clones, so the new thread is ours and stopped before its
  first instruction; it gets the snapshot's name, alternate stack, affinity and
  scheduling. It holds nothing of the process yet: a rollback just ends it.
* after the memory is written: `set_tid_address`, `set_robust_list` and `rseq`
  with the snapshot's addresses (all in restored memory), and where the kernel
  gave a new tid, the tid the restored memory believes in: glibc's pthread tid
  field (found as the clear_child_tid address) and the owner field of every
  robust mutex the thread holds. Python objects that cached the tid
  (`threading.Thread.native_id`) are the kernel side's business.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import os
import struct
from dataclasses import dataclass, field

from ..errors import EngineError, SyscallInjectionFailed
from ..image import ThreadImage, ThreadState
from ..proc import procfs
from ..proc.arch import current as arch
from ..proc.inject import Injector
from ..proc.ptrace import Thread, adopt
from .freeze import Frozen

PR_SET_NAME = 15
PR_GET_TID_ADDRESS = 40
SS_DISABLE, SS_AUTODISARM = 2, 1 << 31
CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND = 0x100, 0x200, 0x400, 0x800
CLONE_THREAD, CLONE_SYSVSEM = 0x10000, 0x40000
# What pthread_create asks for, minus TLS and tid bookkeeping, which we set ourselves.
THREAD_FLAGS = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM
FUTEX_TID_MASK = 0x3FFFFFFF
ROBUST_LIST_LIMIT = 2048  # the kernel's own bound when it walks a robust list

_libc = ctypes.CDLL(None, use_errno=True)


# --- at the snapshot ------------------------------------------------------------------


def capture_threads(fz: Frozen) -> list[ThreadImage]:
    """Registers of every thread (no injection: this comes before the memory copy)."""
    threads = []
    for tid, thread in sorted(fz.group.threads.items()):
        # as the freeze found them: an injection since (the tracker's userfaultfd) may
        # have set a thread to go on through its restart block, which an image cannot
        # carry (a restore would run another call's restart)
        raw = fz.at_freeze.get(tid) or arch.regs_to_dict(thread.get_regs())
        regs = arch.resolve_syscall_restart(raw)
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


def capture_state(fz: Frozen, thread: Thread, scratch: int) -> ThreadState:
    """The thread's kernel-side state; two syscalls injected into the thread itself."""
    inj = Injector(thread, fz.injector.gadget, fz.mem)
    inj.check("prctl", PR_GET_TID_ADDRESS, scratch)
    (clear_child_tid,) = struct.unpack("<Q", fz.mem.read(scratch, 8))
    inj.check("sigaltstack", 0, scratch)
    sp, flags, size = arch.unpack_stack_t(fz.mem.read(scratch, arch.STACK_T_SIZE))
    head, length = _robust_list(thread.tid)
    policy, priority, nice = _sched(thread.tid)
    return ThreadState(
        start_time=procfs.thread_start_time(fz.pid, thread.tid),
        clear_child_tid=clear_child_tid,
        robust_list=head,
        robust_len=length,
        rseq=None if (rseq := thread.rseq_config()) is None else list(rseq),
        altstack=[sp, flags, size],
        cpus=sorted(os.sched_getaffinity(thread.tid)),
        policy=policy,
        priority=priority,
        nice=nice,
        queued=[base64.b64encode(s).decode() for s in thread.queued_signals()],
    )


def _robust_list(tid: int) -> tuple[int, int]:
    head, length = ctypes.c_void_p(), ctypes.c_size_t()
    if _libc.syscall(arch.SYS["get_robust_list"], tid, ctypes.byref(head), ctypes.byref(length)):
        err = ctypes.get_errno()
        raise EngineError(f"get_robust_list of thread {tid} failed: {os.strerror(err)}")
    return int(head.value or 0), int(length.value)


def _sched(tid: int) -> tuple[int, int, int]:
    return (
        os.sched_getscheduler(tid),
        os.sched_getparam(tid).sched_priority,
        os.getpriority(os.PRIO_PROCESS, tid),
    )


# --- at a restore ---------------------------------------------------------------------


@dataclass
class ThreadPlan:
    """The snapshot's threads against the live ones."""

    kept: dict[int, Thread] = field(default_factory=dict)  # snapshot tid -> the same thread
    missing: list[ThreadImage] = field(default_factory=list)  # exited since: recreate
    leaving: list[int] = field(default_factory=list)  # born since: they exit
    # kept under another tid (the main thread of a transplant): set up like `missing`
    # once memory is written
    moved: list[ThreadImage] = field(default_factory=list)


def match(fz: Frozen, images: list[ThreadImage], leader: int) -> ThreadPlan:
    """Threads are the same if tid and start time agree (images before 1.2: tid).
    `leader` is the image's main thread: in another process (a transplant) it becomes
    that process's main thread, the one thread that cannot be recreated."""
    out = ThreadPlan()
    for image in images:
        live = fz.group.threads.get(image.tid)
        if image.tid == leader != fz.pid:
            out.kept[image.tid] = fz.group.main
            out.moved.append(image)
        elif live is not None and (
            image.state is None
            or procfs.thread_start_time(fz.pid, image.tid) == image.state.start_time
        ):
            out.kept[image.tid] = live
        else:
            out.missing.append(image)
    out.leaving = sorted(set(fz.group.threads) - {t.tid for t in out.kept.values()})
    return out


def recreate(fz: Frozen, image: ThreadImage, scratch: int) -> Thread:
    """A new, stopped thread in the process to stand in for `image`: its tid if the
    kernel lets us choose, else a new one. It runs nothing until we let it go."""
    main = fz.group.main
    main.trace_clones(True)
    try:
        tid = _clone(fz.injector, image.tid, scratch)
    except SyscallInjectionFailed as e:
        raise EngineError(
            f"could not recreate thread {image.tid} ({image.name}) of PID {fz.pid}: {e.message}",
            "The process may have reached its thread limit (ulimit -u); nothing was changed",
        ) from e
    finally:
        main.trace_clones(False)
    thread = adopt(fz.pid, tid)
    fz.group.threads[tid] = thread
    return thread


def _clone(inj: Injector, want_tid: int, scratch: int) -> int:
    set_tid = inj.put(scratch + 256, struct.pack("<i", want_tid))
    args = arch.pack_clone_args(THREAD_FLAGS, set_tid, 1)
    tid = inj.call("clone3", inj.put(scratch, args), len(args))
    if tid > 0:
        return tid
    if -tid not in (errno.EPERM, errno.EEXIST, errno.ENOSYS, errno.EINVAL):
        raise SyscallInjectionFailed(f"clone3 failed: {os.strerror(-tid)}")
    # Not allowed to choose the tid (or it is taken): the kernel picks one.
    return inj.check("clone", THREAD_FLAGS, 0, 0, 0, 0)


def reconcile_state(
    fz: Frozen, image: ThreadImage, thread: Thread, scratch: int, notes: list[str]
) -> None:
    """Name, alternate signal stack, affinity, scheduling: before the point of no
    return (a rollback sets them back). What the kernel refuses becomes a note."""
    inj = Injector(thread, fz.injector.gadget, fz.mem)
    if image.name and procfs.thread_name(fz.pid, thread.tid) != image.name:
        name = os.fsencode(image.name)[:15] + b"\0"
        inj.check("prctl", PR_SET_NAME, inj.put(scratch, name))
    state = image.state
    if state is None:
        return
    who = f"thread {thread.tid} ({image.name})"
    inj.check("sigaltstack", 0, scratch)
    now = arch.unpack_stack_t(fz.mem.read(scratch, arch.STACK_T_SIZE))
    if _altstack(*now) != _altstack(*state.altstack):
        sp, flags, size = state.altstack
        want = arch.pack_stack_t(sp, flags & (SS_DISABLE | SS_AUTODISARM), size)
        res = inj.call("sigaltstack", inj.put(scratch, want), 0)
        if res < 0:  # EPERM: the thread is running on its alternate stack right now
            notes.append(f"{who}: its alternate signal stack was not set back: {os.strerror(-res)}")
    try:
        if sorted(os.sched_getaffinity(thread.tid)) != state.cpus:
            os.sched_setaffinity(thread.tid, state.cpus)
    except OSError as e:
        notes.append(f"{who}: CPU affinity {state.cpus} not set back: {e.strerror}")
    policy, priority, nice = _sched(thread.tid)
    try:
        if (policy, priority) != (state.policy, state.priority):
            os.sched_setscheduler(thread.tid, state.policy, os.sched_param(state.priority))
        if nice != state.nice:
            os.setpriority(os.PRIO_PROCESS, thread.tid, state.nice)
    except OSError as e:
        notes.append(f"{who}: scheduling policy or nice value not set back: {e.strerror}")


def _altstack(sp: int, flags: int, size: int) -> tuple[int, int, int] | None:
    """What of a sigaltstack setting matters (SS_ONSTACK only says where the thread is)."""
    return None if flags & SS_DISABLE else (sp, size, flags & SS_AUTODISARM)


def finish_recreated(fz: Frozen, image: ThreadImage, thread: Thread, notes: list[str]) -> None:
    """After the memory is written: the kernel's pointers into the thread's memory,
    and the tid that memory believes in."""
    state = image.state
    assert state is not None
    inj = Injector(thread, fz.injector.gadget, fz.mem)
    inj.check("set_tid_address", state.clear_child_tid)
    if state.robust_list:
        inj.check("set_robust_list", state.robust_list, state.robust_len)
    if state.rseq is not None and thread.rseq_config() != tuple(state.rseq):
        addr, length, sig = state.rseq
        inj.check("rseq", addr, length, 0, sig)
    if thread.tid != image.tid:
        try:
            _retarget_tid(fz, state, image.tid, thread.tid)
        except EngineError as e:
            notes.append(f"thread {thread.tid} (was {image.tid}): tid not updated in memory: {e}")


def _retarget_tid(fz: Frozen, state: ThreadState, old: int, new: int) -> None:
    """Where restored memory holds the old tid as this thread's own: glibc's
    pthread tid (the clear_child_tid address) and robust mutexes it owns."""

    def fix(addr: int) -> None:
        (word,) = struct.unpack("<I", fz.mem.read(addr, 4))
        if word & FUTEX_TID_MASK == old:
            fz.mem.write(addr, struct.pack("<I", (word & ~FUTEX_TID_MASK) | new))

    if state.clear_child_tid:
        fix(state.clear_child_tid)
    if not state.robust_list:
        return
    # struct robust_list_head: the list, the futex word's offset from each entry, and
    # the entry being added or removed; bit 0 of an entry address marks a PI futex.
    nxt, offset, pending = arch.unpack_robust_head(
        fz.mem.read(state.robust_list, arch.ROBUST_HEAD_SIZE)
    )
    entry = nxt & ~1
    for _ in range(ROBUST_LIST_LIMIT):
        if entry in (0, state.robust_list):
            break
        fix(entry + offset)
        (nxt,) = struct.unpack("<Q", fz.mem.read(entry, 8))
        entry = nxt & ~1
    if pending & ~1:
        fix((pending & ~1) + offset)
