"""Transplant: turn a fresh process of the same program into a snapshot of another.

An in-place restore (restore.py) rewinds the process a snapshot came from. A
transplant rebuilds a different process into the one the snapshot's process was:
typically a kernel the kernel manager started again after a crash or a restart,
to which the frontends are already connected. It is the same restore, journal
and rollback included, with these differences, all made here:

* `check`, before the freeze, refuses what cannot be made whole: another program
  file, another kernel (the [vdso] is code the restored memory calls into),
  child processes or System V shared memory the snapshot depends on, another
  user, a snapshot too old to hold what a transplant needs. Files mapped from
  disk are checked to be the same files where they are mapped (restore.py).
* `relocate`, first of all changes: the kernel's idea of where code, data, heap,
  stack, arguments and environment are (prctl(PR_SET_MM_MAP), which needs no
  privilege) and the vDSO area, moved to the snapshot's address with
  arch_prctl(ARCH_MAP_VDSO_64) once the current one is gone (as CRIU does; the
  syscalls meanwhile run through a `syscall` instruction in the program's own
  code); and the main thread's rseq area is unregistered (it lies in memory
  about to be replaced).
* The snapshot's main thread becomes the new main thread, which cannot be
  recreated (threads.match); every other thread is recreated (threads.py). Once
  memory is written the main thread gets its kernel pointers back like a
  recreated thread, and the tid its memory believes in is rewritten.

A rollback of a failed transplant goes through `relocate` as well: it moves the
vDSO and the mm fields back to the safety image's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from typing import NoReturn

import numpy as np

from ..errors import EngineError, Incompatible, SyscallInjectionFailed
from ..image import ImageMeta, Mapping
from ..proc import procfs
from ..proc.arch import current as arch
from ..proc.inject import SCRATCH_SIZE, find_syscall_gadget
from ..proc.maps import read_maps
from ..proc.memory import ProcessMemory
from ..proc.ptrace import Thread
from .freeze import Frozen

PR_SET_MM, PR_SET_MM_MAP = 35, 14
ARCH_MAP_VDSO_64 = 0x2003
RSEQ_FLAG_UNREGISTER = 1
PROT_READ, PROT_WRITE = 1, 2
MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE = 0x02, 0x20, 0x100000
_HOLDER = b"_RunningLoopHolder\0"
_USER, _USER_END = 1 << 16, 1 << 47  # where user-space pointers can point
_NEAR_SIGNALER = 160  # bytes: a mailbox's mutex, handle and poller, then its owner's fields
VDSO_AREA = ("[vvar]", "[vvar_vclock]", "[vdso]")
# struct prctl_mm_map: eleven addresses, the auxv pointer, its size, an exe fd
_MM_ORDER = (
    "start_code",
    "end_code",
    "start_data",
    "end_data",
    "start_brk",
    "brk",
    "start_stack",
    "arg_start",
    "arg_end",
    "env_start",
    "env_end",
)
_MM_MAP = struct.Struct("<11QQII")
_NO_EXE_FD = 0xFFFFFFFF
_OLD_SNAPSHOT = (
    "Nothing was changed. Snapshots taken before jupyter-chkpt 0.13 lack what moving them "
    "into another process needs; take a new snapshot"
)


# --- at the snapshot --------------------------------------------------------------------


def vdso_hash(maps: list[Mapping], mem: ProcessMemory) -> str | None:
    vdso = next((m for m in maps if m.path == "[vdso]"), None)
    return None if vdso is None else hashlib.sha256(mem.read(vdso.start, vdso.size)).hexdigest()


# --- before the freeze ------------------------------------------------------------------


def moves(meta: ImageMeta, pid: int) -> bool:
    """Whether restoring `meta` into `pid` is a transplant."""
    return not meta.process.same_process(procfs.identity(pid))


def check(meta: ImageMeta, pid: int) -> None:
    """Refuse, before any change, a transplant that cannot make `pid` whole."""
    was = meta.process
    where = f"the snapshot of PID {was.pid} ({was.exe})"
    if meta.mm is None or meta.vdso_hash is None or meta.files is None:
        raise Incompatible(f"{where} was taken by an older jupyter-chkpt", _OLD_SNAPSHOT)
    lacking = [t.tid for t in meta.threads if t.state is None]
    if lacking:
        raise Incompatible(f"{where} lacks the state of threads {lacking}", _OLD_SNAPSHOT)
    now = procfs.identity(pid)
    if now.uid != was.uid:
        raise Incompatible(f"PID {pid} runs as uid {now.uid}, {where} ran as uid {was.uid}")
    exe = next((m for m in meta.mappings if m.path == was.exe), None)
    if now.exe != was.exe or exe is None:
        raise Incompatible(f"PID {pid} runs {now.exe or 'an unknown program'}, not {was.exe}")
    st = os.stat(procfs.proc_path(pid, "exe"))
    if (st.st_ino, _dev(st)) != (exe.inode, exe.dev):
        _replaced(was.exe, where)
    # the program and every library: the pages the snapshot did not store are read
    # from these files, so they must be the very same
    for f in meta.mapped_files or []:
        try:
            st = os.stat(f.path)
        except OSError:
            _replaced(f.path, where)
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (f.dev, f.ino, f.size, f.mtime_ns):
            _replaced(f.path, where)
    with ProcessMemory(pid) as mem:
        if vdso_hash(read_maps(pid), mem) != meta.vdso_hash:
            raise Incompatible(
                f"the running Linux kernel is not the one {where} was taken on (its vDSO differs)",
                "Nothing was changed. Restore it after booting the kernel it was taken on",
            )
    if meta.children:
        kids = ", ".join(f"{c.pid} ({c.comm})" for c in meta.children)
        raise Incompatible(
            f"{where} had child processes ({kids}), which a new process cannot have",
            "Nothing was changed. Restore a snapshot taken when the process had no children",
        )
    sysv = [m for m in meta.mappings if m.path.startswith("/SYSV")]
    if sysv:
        raise Incompatible(
            f"{where} attached System V shared memory ({sysv[0].path}), shared with other "
            "processes that a new process cannot be joined to",
            "Nothing was changed. Restore a snapshot taken before it attached that memory",
        )


def _replaced(path: str, where: str) -> NoReturn:
    raise Incompatible(
        f"{path} has been replaced or changed since {where} was taken (an upgrade?)",
        "Nothing was changed. A snapshot can only be restored into the program and "
        "libraries it was taken with; reinstall those versions to restore it",
    )


def _dev(st: os.stat_result) -> str:
    return f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"


# --- while frozen -----------------------------------------------------------------------


def needed(fz: Frozen, meta: ImageMeta) -> bool:
    """Whether the process's mm fields or vDSO area differ from `meta`'s (a transplant,
    or the rollback of one)."""
    if meta.mm is None:
        return False
    return procfs.mm_fields(fz.pid) != meta.mm or _area(read_maps(fz.pid)) != _area(meta.mappings)


def relocate(fz: Frozen, meta: ImageMeta, scratch: int, busy: list[tuple[int, int]]) -> int:
    """mm fields, vDSO area and the main thread's rseq as the image needs them, before
    its layout is made. Returns the scratch address to use from now on: the usual one
    (below the stack pointer) unless the image maps something there. `busy`: ranges
    threads about to exit still need."""
    assert meta.mm is not None
    want = _area(meta.mappings)
    scratch = _safe_scratch(fz, meta, scratch, want)
    if want is not None and any(want[0] < end and start < want[1] for start, end in busy):
        raise EngineError(
            f"the snapshot's vDSO area {want[0]:#x}-{want[1]:#x} lies where a thread of PID "
            f"{fz.pid} keeps its stack",
            "Nothing was changed; try again with a new process of the program",
        )
    _set_mm(fz, meta.mm, meta.brk, scratch)
    if want is not None and _area(read_maps(fz.pid)) != want:
        _move_vdso(fz, want)
    rseq = fz.group.main.rseq_config()
    if rseq is not None:
        addr, length, sig = rseq
        fz.injector.check("rseq", addr, length, RSEQ_FLAG_UNREGISTER, sig)
    return scratch


def retarget_pid_caches(fz: Frozen, meta: ImageMeta, runs: Iterable[tuple[int, memoryview]]) -> int:
    """After the memory is written: pids the restored memory holds as its own that a
    program checks against getpid(), so that it does not believe it was forked.
    libzmq's signalers (every socket's and I/O thread's mailbox) are `{int w, r;
    pid_t pid}`, `w == r` an eventfd: found by that shape, with the snapshot's
    eventfd numbers; a mismatch makes every wait fail as if after fork (a busy
    loop). The object holding a mailbox keeps its own copy a few fields further
    (the reaper's `_pid`: a mismatch makes it spin), as do the mailbox mutexes
    the main thread held (owner tid = pid): the old pid within `_NEAR_SIGNALER`
    bytes after a signaler is the process's own too. CPython's records of running
    asyncio loops, found by their type's name (`_loop_holder`). Python-level caches
    are the kernel side's business. Returns how many were rewritten."""
    old, new = meta.process.pid, fz.pid
    efds = {f.fd for f in meta.files or [] if f.kind == "eventfd"}
    if not efds or old == new:
        return 0
    needle = struct.pack("<i", old)
    fixed = 0
    types: dict[int, bool] = {}
    for vaddr, data in runs:
        for at in _find_aligned(data, old):
            if at < 8:
                continue
            if at >= 24 and _loop_holder(fz, struct.unpack_from("<Q", data, at - 16)[0], types):
                fz.mem.write(vaddr + at, struct.pack("<i", new))
                fixed += 1
                continue
            w, r = struct.unpack_from("<ii", data, at - 8)
            if w != r or w not in efds:
                continue
            near = bytes(data[at : at + _NEAR_SIGNALER])
            for off in range(0, len(near) - 3, 4):
                if near[off : off + 4] == needle:
                    fz.mem.write(vaddr + at + off, struct.pack("<i", new))
                    fixed += 1
    return fixed


def _loop_holder(fz: Frozen, type_addr: int, seen: dict[int, bool]) -> bool:
    """Whether `type_addr` is CPython 3.11's `_RunningLoopHolder` type: asyncio's
    record of each thread's running loop, `{PyObject_HEAD; loop; pid_t pid}`, which
    `get_running_loop()` ignores when the pid is not getpid() ("no running event
    loop" in every thread that runs one)."""
    if type_addr in seen:
        return seen[type_addr]
    found = False
    if type_addr % 8 == 0 and _USER <= type_addr < _USER_END:
        with contextlib.suppress(EngineError, OSError, ValueError, struct.error):
            (name,) = struct.unpack("<Q", fz.mem.read(type_addr + 24, 8))  # tp_name
            if _USER <= name < _USER_END:
                found = fz.mem.read(name, len(_HOLDER)) == _HOLDER
    seen[type_addr] = found
    return found


def _find_aligned(data: memoryview, value: int, chunk: int = 16 << 20) -> Iterator[int]:
    """Offsets (multiples of 4) of the int32 `value` in `data`, compared in place a
    chunk of words at a time (a 1 GiB image: a fifth of a second, no copy of it)."""
    words = np.frombuffer(data, dtype="<i4", count=len(data) // 4)
    for start in range(0, len(words), chunk):
        for i in np.flatnonzero(words[start : start + chunk] == value):
            yield (start + int(i)) * 4


def rseq_back(fz: Frozen, image_rseq: list[int] | None, thread: Thread) -> None:
    """A kept thread whose rseq area `relocate` unregistered gets the image's back."""
    if image_rseq is not None and thread.rseq_config() is None:
        addr, length, sig = image_rseq
        inj = type(fz.injector)(thread, fz.injector.gadget, fz.mem)
        inj.check("rseq", addr, length, 0, sig)


def _area(maps: list[Mapping]) -> tuple[int, int] | None:
    parts = [m for m in maps if m.path in VDSO_AREA]
    return (min(m.start for m in parts), max(m.end for m in parts)) if parts else None


def _free(fz: Frozen, meta: ImageMeta) -> int:
    """A page mapped by neither the process nor the image, for scratch memory."""
    taken = sorted(
        (m.start, m.end) for m in [*read_maps(fz.pid), *meta.mappings] if m.path != "[vsyscall]"
    )
    at = 1 << 32  # above what 32-bit-minded code and mmap_min_addr care about
    for start, end in taken:
        if start >= at + SCRATCH_SIZE:
            break
        at = max(at, end)
    return at


def _safe_scratch(fz: Frozen, meta: ImageMeta, scratch: int, want: tuple[int, int] | None) -> int:
    """The scratch page, unless the image (or its vDSO area) maps something there."""
    hit = any(m.start < scratch + SCRATCH_SIZE and scratch < m.end for m in meta.mappings)
    if not hit and (want is None or not (want[0] < scratch + SCRATCH_SIZE and scratch < want[1])):
        return scratch
    at = _free(fz, meta)
    got = fz.injector.check(
        "mmap",
        at,
        SCRATCH_SIZE,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
        arch.unsigned(-1),
        0,
    )
    if got != at:
        raise EngineError(f"scratch memory for PID {fz.pid} landed at {got:#x}, not {at:#x}")
    return at  # the image lacks it: the layout's late unmaps remove it


def _set_mm(fz: Frozen, mm: dict[str, int], brk: int, scratch: int) -> None:
    if procfs.mm_fields(fz.pid) == mm:
        return
    values = {**mm, "brk": brk}
    raw = _MM_MAP.pack(*(values[k] for k in _MM_ORDER), 0, 0, _NO_EXE_FD)
    inj = fz.injector
    result = inj.call("prctl", PR_SET_MM, PR_SET_MM_MAP, inj.put(scratch, raw), len(raw))
    if result < 0:
        raise EngineError(
            f"the kernel refused to set the memory map of PID {fz.pid} "
            f"(prctl PR_SET_MM_MAP: {os.strerror(-result)})",
            "Nothing was changed. The kernel needs CONFIG_CHECKPOINT_RESTORE for a snapshot "
            "to move into another process",
        )


def _move_vdso(fz: Frozen, want: tuple[int, int]) -> None:
    """Unmap the vDSO area and whatever lies where the image has it; map it there."""
    inj = fz.injector
    try:
        inj.gadget = find_syscall_gadget(fz.pid, fz.mem, vdso=False, avoid=want)
    except SyscallInjectionFailed as e:
        raise EngineError(f"cannot move the vDSO of PID {fz.pid}: {e.message}") from e
    for m in read_maps(fz.pid):
        if m.path in VDSO_AREA:
            inj.check("munmap", m.start, m.size)
        elif m.start < want[1] and want[0] < m.end and m.path != "[vsyscall]":
            start, end = max(m.start, want[0]), min(m.end, want[1])
            inj.check("munmap", start, end - start)
    result = inj.call("arch_prctl", ARCH_MAP_VDSO_64, want[0])
    if result < 0 or _area(read_maps(fz.pid)) != want:
        raise EngineError(
            f"could not map the vDSO of PID {fz.pid} at {want[0]:#x}"
            + (f" ({os.strerror(-result)})" if result < 0 else "")
        )
    inj.gadget = find_syscall_gadget(fz.pid, fz.mem)
