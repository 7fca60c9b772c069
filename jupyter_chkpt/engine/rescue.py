"""Rescue: end the stop of a process whose tracer died, with the process whole.

The journal (engine/journal.py) says how far the operation had come; the
process sits in its group stop meanwhile (proc/ptrace.py). By phase:

* `freezing`: no signal was sent: left as it is (a stop it is in is its user's).
* `stopping`: our SIGSTOP may have been sent, nothing else: SIGCONT.
* `frozen`: injected syscalls may have run (or be half-run) in some threads:
  every thread gets its registers and signal mask back, the scratch page its
  contents, fds opened since the freeze are closed.
* `changing`: a restore had begun: parked fds go back to their numbers and
  the safety image on disk is applied, as the restore's own rollback would.
* `committed`: a restore was past its point of no return: it is finished
  from the snapshot in the store (a full image; threads, files and layout
  converge from wherever the dead restore left them).

Who rescues: a guardian process the helper starts (`python -m
jupyter_chkpt.engine.rescue --guard PID`) as soon as the helper dies; every
freeze of a process whose journal a dead owner left (Journal.claim); a helper
at start; `jupyter-chkpt rescue`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import mmap
import os
import select
import signal
import sys
import time
from pathlib import Path

from ..errors import ChkptError, EngineError
from ..image import Image, ImageMeta, PageRuns
from ..proc import procfs
from ..proc.arch import current as arch
from ..proc.inject import SCRATCH_SIZE, Injector, find_syscall_gadget
from ..proc.maps import read_maps_with_flags
from ..proc.memory import ProcessMemory
from ..proc.ptrace import ThreadGroup
from ..store import Store
from .files import close_parked, unpark
from .freeze import Frozen, deadline_s
from .journal import (
    Journal,
    existing,
    handoff_path,
    journal_dir,
    locked,
    sweep_safety_files,
    tell,
)
from .keeper import FdKeeper
from .restore import RestoreResult, apply_image

log = logging.getLogger("jupyter_chkpt.rescue")


class RescueFailed(EngineError):
    remedy = (
        "The process was let run as it was left and may misbehave: save what you can and "
        "restart it. The helper log has the details"
    )


def rescue_all() -> list[str]:
    """Rescue every process whose journal's owner is gone; what was done."""
    done = []
    with locked():
        for path in existing():
            try:
                what = rescue_path(path)
            except Exception as e:  # one process's failure must not leave the others stopped
                log.exception("rescue of %s failed", path.name)
                what = str(e)
            if what:
                done.append(what)
    return done


def rescue_pid(pid: int, *, own: bool = False) -> str:
    """Rescue `pid` now; `own`: its journal is ours (a restore that failed past its
    point of no return hands the process over this way)."""
    with locked() as d:
        return rescue_path(d / f"{pid}.json", own=own) or f"PID {pid} needed no rescue"


def rescue_path(path: Path, *, own: bool = False) -> str | None:
    """Rescue the process of one journal (the caller holds journal.locked()); None
    if there is nothing to do (no journal, or its owner is still at work)."""
    try:
        j = Journal.load(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.error("removed the unreadable journal %s: %s", path, e)
        path.unlink(missing_ok=True)
        return f"removed the unreadable journal {path.name}"
    if j.owner_alive() and not (own and j.owner_pid == os.getpid()):
        return None
    pid = j.process.pid
    if j.process.boot_id != procfs.boot_id() or not procfs.running(pid, j.process.start_time):
        j.remove()
        handoff_path(pid).unlink(missing_ok=True)
        return f"PID {pid} has exited; its journal was removed"
    if j.phase == "freezing":  # no SIGSTOP was sent: a stop it is in is someone else's
        j.remove()
        return f"PID {pid} was left as it was (its {j.op} had not begun)"
    if j.phase in ("stopping", "released"):
        _continue(pid)  # only our SIGSTOP to end, or everything is final
        j.remove()
        return f"PID {pid} runs on (its {j.op} had {'not begun' if j.phase == 'stopping' else 'ended'})"
    if not _tracer_gone(pid):
        return None  # the dead owner's tracing thread is still on its way out: next time
    log.warning("rescuing PID %d from a %s left %s by process %d", pid, j.op, j.phase, j.owner_pid)
    group = ThreadGroup(pid)
    try:
        group.take_over(deadline_s())
    except ChkptError:
        j.remove()  # take_over let it run: there is nothing left to hold
        raise
    try:
        with ProcessMemory(pid, write=True) as mem:
            inj = Injector(group.main, find_syscall_gadget(pid, mem), mem)
            fz = Frozen(pid, j.process, group, mem, inj, time.monotonic(), j)
            if j.phase == "frozen":
                what = _put_back(fz, j)
                tell(j, "as it was", what)
            elif j.phase == "changing":
                what = _roll_back(fz, j)
                tell(j, "as it was", what)
            else:
                what = _roll_forward(fz, j)
                tell(j, "restored", what, {"notes": [f"the helper stopped; a rescue {what}"]})
    except Exception as e:
        log.exception("rescue of PID %d failed", pid)
        raise RescueFailed(f"could not rescue PID {pid} from its {j.phase} {j.op}: {e}") from e
    finally:
        group.release()
        j.remove()
    log.warning("PID %d: %s", pid, what)
    return f"PID {pid}: {what}"


def _tracer_gone(pid: int, wait_s: float = 5.0) -> bool:
    """Whether no thread of `pid` is traced any more. A killed tracer's threads may
    still be exiting (freeing its memory) when its main thread is a zombie already:
    its tracees are detached, and put back into their group stop, only after that."""
    end = time.monotonic() + wait_s
    while True:
        try:
            traced = [t for t in os.listdir(procfs.proc_path(pid, "task")) if _traced(pid, t)]
        except OSError:
            return True  # gone: the caller finds out
        if not traced:
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.01)


def _traced(pid: int, tid: str) -> bool:
    with open(procfs.proc_path(pid, "task", tid, "status")) as f:
        for line in f:
            if line.startswith("TracerPid:"):
                return line.split()[1] != "0"
    return False


def _continue(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        fd = os.pidfd_open(pid)
        try:
            signal.pidfd_send_signal(fd, signal.SIGCONT)
        finally:
            os.close(fd)


def _put_back(fz: Frozen, j: Journal) -> str:
    """Undo whatever injected syscalls left: fds, scratch page, registers, masks."""
    keep = set(j.fds)
    extra = [n for n in map(int, os.listdir(procfs.proc_path(fz.pid, "fd"))) if n not in keep]
    for n in extra:
        fz.injector.call("close", n)
    page = j.scratch_page()
    if page is not None:
        fz.mem.write(page[0], page[1][:SCRATCH_SIZE])
    _registers(fz, j)
    return f"put back as it was frozen for a {j.op}" + (f" (closed fds {extra})" if extra else "")


def _registers(fz: Frozen, j: Journal) -> None:
    for tid, rec in j.threads.items():
        thread = fz.group.threads.get(tid)
        if thread is None:
            continue
        # From a stop that is not the one they were seized in, the kernel restarts no
        # interrupted syscall: the registers do it.
        thread.set_regs(arch.without_pending_restart(arch.regs_from_dict(rec.regs)))
        thread.set_sigmask(rec.sigmask)


def _roll_back(fz: Frozen, j: Journal) -> str:
    """As the restore's own rollback: parked fds back, then the safety image."""
    unpark(fz)
    meta = ImageMeta.from_json(j.safety_meta())
    with open(j.safety_file, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        buf = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) if size else None
    view = memoryview(buf) if buf is not None else memoryview(b"")
    try:
        image = Image(meta, j.safety_present, [PageRuns(view, j.safety_runs)])
        _apply_fresh(fz, image, rollback=True)
    finally:
        view.release()  # before the close: an exported buffer cannot be closed
        if buf is not None:
            buf.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(j.safety_file)
    return f"rolled back to its state before the restore of snapshot {j.snapshot}"


def _roll_forward(fz: Frozen, j: Journal) -> str:
    """Finish the restore from the snapshot's full image."""
    meta, pages, target = Store(j.store).load_pages(j.snapshot)  # first: it may fail
    close_parked(fz)
    _apply_fresh(fz, Image(meta, target.runs(), [pages]))
    return f"finished the restore of snapshot {j.snapshot}"


def _apply_fresh(fz: Frozen, image: Image, *, rollback: bool = False) -> None:
    """Apply `image` without the dead helper's file duplicates: files come back from
    parked fds (done before) or by path."""
    keeper = FdKeeper()
    try:
        result = RestoreResult(snapshot_id="rescue", pid=fz.pid)
        apply_image(
            fz, image, result, keeper, None, read_maps_with_flags(fz.pid), rollback=rollback
        )
    finally:
        keeper.close()


# --- the guardian ---------------------------------------------------------------------


def guard(helper_pid: int) -> None:
    """Wait for the helper to end, then rescue what it left."""
    try:
        fd = os.pidfd_open(helper_pid)
    except ProcessLookupError:
        fd = -1
    if fd >= 0:
        try:
            select.select([fd], [], [])
        finally:
            os.close(fd)
    for what in rescue_all():
        log.warning("%s", what)
    sweep_safety_files()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_chkpt.engine.rescue")
    parser.add_argument("--guard", type=int, metavar="PID", help="rescue once PID has ended")
    args = parser.parse_args(argv)
    logging.basicConfig(format="[jupyter-chkpt rescue %(process)d] %(message)s")
    journal_dir()
    if args.guard:
        guard(args.guard)
    else:
        for what in rescue_all():
            print(what)
    return 0


if __name__ == "__main__":
    sys.exit(main())
