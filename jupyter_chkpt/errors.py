"""One error hierarchy for the whole product.

Every error carries a `remedy`: what the user can do about it. The CLI, the
magics and the REST API show `str(error)`, which includes the remedy, so a
message never ends at "what went wrong".
"""

from __future__ import annotations

import errno
import os


class ChkptError(Exception):
    """Base class: `message` says what happened, `remedy` what to do."""

    remedy: str = ""

    def __init__(self, message: str, remedy: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if remedy is not None:
            self.remedy = remedy

    def __str__(self) -> str:
        return f"{self.message}. {self.remedy}" if self.remedy else self.message


# --- the target process -----------------------------------------------------


class ProcessError(ChkptError):
    """The target process cannot be acted on."""


class ProcessNotFound(ProcessError):
    remedy = "Check the PID (e.g. with `ps`); the process may have exited"


class ProcessNotOwned(ProcessError):
    remedy = "Run jupyter-chkpt as the user who owns the process; snapshots of other users' processes are refused"


class ProcessIsZombie(ProcessError):
    remedy = "The process has exited and only waits for its parent to reap it; there is nothing left to snapshot"


class ProcessAlreadyTraced(ProcessError):
    remedy = "Detach the other tracer (debugger, strace) first, then try again"


class PtraceDenied(ProcessError):
    """The kernel refused PTRACE_SEIZE; the remedy names what this machine may be doing."""

    def __init__(self, message: str, remedy: str | None = None) -> None:
        super().__init__(message, remedy if remedy is not None else ptrace_remedy())


YAMA_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"


def ptrace_remedy(scope_path: str = YAMA_SCOPE) -> str:
    """What may forbid tracing here: Yama only where this machine has it."""
    check = "`jupyter-chkpt check` shows what this machine allows"
    others = (
        "the process may be non-dumpable (a setuid program, prctl(PR_SET_DUMPABLE, 0)), "
        "hold capabilities you lack, or a security module (AppArmor, SELinux) may forbid it"
    )
    try:
        with open(scope_path) as f:
            scope: int | None = int(f.read())
    except (OSError, ValueError):
        scope = None
    if scope is None:
        return f"This machine has no Yama, so {others}; {check}"
    if scope == 1:
        return (
            "Yama ptrace_scope is 1: only a declared tracer may attach. Kernels declare the "
            "helper themselves; another process must call prctl(PR_SET_PTRACER, <tracer PID>), "
            f"or an administrator can set kernel.yama.ptrace_scope=0; {check}"
        )
    if scope == 2:
        return (
            "Yama ptrace_scope is 2: only CAP_SYS_PTRACE may trace; run as root or have an "
            f"administrator lower kernel.yama.ptrace_scope; {check}"
        )
    if scope >= 3:
        return f"Yama ptrace_scope is {scope}: tracing is off until the next reboot; {check}"
    return f"Yama allows tracing here (ptrace_scope 0), so {others}; {check}"


class ProcessStopped(ProcessError):
    remedy = "Resume it (`kill -CONT PID`, or `fg` in its shell), then try again"


class ProcessBusy(ProcessError):
    """Another jupyter-chkpt process (a helper, the CLI) is freezing or changing it."""

    remedy = "Wait for that snapshot or restore to finish, then try again"


class ProcessChanged(ProcessError):
    """The process died or changed in a way the operation cannot cope with."""

    remedy = "Take a new snapshot of the process as it is now"


class WrongProcess(ProcessError):
    remedy = (
        "Restore it into the process it was taken from (list its snapshots with "
        "`jupyter-chkpt ls PID`), or into a fresh process of the same program with "
        "`jupyter-chkpt restore --into PID ID`"
    )


class Incompatible(ProcessError):
    """A transplant was refused: the new process cannot become the snapshot."""

    remedy = (
        "Nothing was changed; the process keeps running as it was. A snapshot can only be "
        "restored into a process of the same program, with the same libraries, on the same "
        "kernel"
    )


class ThreadsGone(ProcessError):
    remedy = (
        "Nothing was changed; the process keeps running as it was. Restore a snapshot taken "
        "after those threads exited, or take a new one"
    )


class UnsupportedState(ProcessError):
    """The process holds state that jupyter-chkpt cannot save or put back."""

    remedy = "Nothing was changed; the process keeps running as it was"


class FilesLost(ProcessError):
    """A restore would lose files the snapshot's memory still uses."""

    remedy = (
        "Nothing was changed. A one-shot command holds no duplicates of a process's files "
        "between snapshot and restore; with --force they get stand-ins (sockets and pipes "
        "that read as closed, fresh eventfds and epolls), which a process may not survive. "
        "Restore anyway with --force, or restore a snapshot taken after they changed"
    )


class UnsupportedPlatform(ChkptError):
    remedy = "jupyter-chkpt supports Linux on x86_64; run `jupyter-chkpt check` for details"


# --- the engine ---------------------------------------------------------------


class EngineError(ChkptError):
    """A snapshot or restore step failed."""


class FreezeTimeout(EngineError):
    remedy = (
        "Nothing was changed and the process runs on. A thread waiting in the kernel "
        "uninterruptibly (NFS, FUSE, a vfork parent, heavy swapping) cannot be stopped "
        "until that wait ends: try again in a moment"
    )


class SyscallInjectionFailed(EngineError):
    remedy = "The target was left as it was; run `jupyter-chkpt check` and report the message if it persists"


class RestoreFailed(EngineError):
    """The restore failed; the target was rolled back to its state just before the restore."""

    remedy = (
        "The process was rolled back to the state it had just before the restore and keeps running"
    )


class RollbackFailed(EngineError):
    remedy = "The process could not be put back after a failed restore and may misbehave: save what you can and restart it"


# --- the store ------------------------------------------------------------------


class StoreError(ChkptError):
    """Snapshot storage problems."""


class UnknownSnapshot(StoreError):
    remedy = "List the available snapshots with `jupyter-chkpt ls`"


class AmbiguousSnapshot(StoreError):
    remedy = "Give more characters of the snapshot id"


class CorruptSnapshot(StoreError):
    remedy = (
        "This snapshot cannot be used; delete it with `jupyter-chkpt rm ID` and restore another one"
    )


class StorePermissionError(StoreError):
    remedy = "The snapshot directory must belong to you with mode 0700; fix its owner and mode or choose another with --store"


class UnsupportedFormat(StoreError):
    remedy = "The snapshot was written by a different version of jupyter-chkpt; use that version to restore it"


class StoreUnavailable(StoreError):
    """The store's directory cannot be created or used (a path under a regular file, a
    read-only file system, ...)."""

    remedy = "Choose a directory you can create and write: --store DIR, or set JUPYTER_CHKPT_STORE"


class SnapshotInUse(StoreError):
    """A restore of the snapshot is under way, or a rescue still needs it to finish one."""

    remedy = "Nothing was deleted; delete it once that restore is done (its kernel runs again)"


class StoreFull(StoreError):
    """The snapshot does not fit on the store's file system; nothing was left behind."""

    remedy = (
        "Nothing was stored and the process runs on. Free disk space, delete snapshots you no "
        "longer need (`jupyter-chkpt rm ID`, then `jupyter-chkpt gc`), or choose a store on a "
        "larger file system with JUPYTER_CHKPT_STORE"
    )


# --- the helper daemon and its clients --------------------------------------------


class HelperError(ChkptError):
    """Talking to the helper daemon failed."""


class HelperUnavailable(HelperError):
    remedy = (
        "Check the helper's log (chkpt/helper.log in the Jupyter runtime directory, "
        "`jupyter --runtime-dir`); `jupyter-chkpt helper status` shows whether one runs"
    )


class HelperStopped(HelperUnavailable):
    """The helper ended while it worked on our request (killed, crashed): whatever
    it had frozen was rescued (engine/rescue.py), the request is not repeated."""

    remedy = (
        "The kernel runs on, whole; see the helper's log (chkpt/helper.log in the Jupyter "
        "runtime directory) for why it stopped. A new helper starts with the next request"
    )


class HelperTimeout(HelperUnavailable):
    remedy = "The helper is busy or stuck; see its log, or stop it with `jupyter-chkpt helper stop`"


class Cancelled(HelperError):
    """The requester interrupted a checkpoint or restore before the process was frozen."""

    remedy = "Nothing was changed: the kernel runs on as it was"


class ProtocolError(HelperError):
    """The other side speaks another version of the helper protocol."""

    remedy = "The helper and this process run different versions of jupyter-chkpt; restart the helper (`jupyter-chkpt helper stop`) and the kernel"


class RequestRefused(HelperError):
    remedy = "Only a kernel can snapshot or restore itself: run %checkpoint / %restore in that kernel, or use the JupyterLab buttons"


class NotRegistered(HelperError):
    remedy = (
        'Start the kernel as "Python 3 (snapshots)" or run `%load_ext jupyter_chkpt` in it first'
    )


# --- requests ------------------------------------------------------------------------


class BadRequest(ChkptError):
    """A request's arguments are invalid: the remedy says what is valid. Nothing was done."""

    remedy = "Nothing was done; see docs/PROTOCOL.md for the valid arguments"


class RequestTooLarge(BadRequest):
    remedy = "Nothing was done; see docs/PROTOCOL.md for the size limits"


class NothingToUndo(ChkptError):
    """Undo or redo has nowhere to go: the remedy says why and what works."""


class HostError(ChkptError):
    """The operating system refused something (disk full, a path, a limit)."""


class InternalError(ChkptError):
    """An error jupyter-chkpt did not expect: a bug."""

    remedy = "This is a bug in jupyter-chkpt: please report it with the command that caused it"


_OS_REMEDIES = {
    errno.ENOSPC: "Free space on that disk: delete snapshots you no longer need (`jupyter-chkpt rm`, "
    "then `jupyter-chkpt gc`), or use a store on another disk (--store, $JUPYTER_CHKPT_STORE)",
    errno.EDQUOT: "Your disk quota is used up: delete snapshots you no longer need (`jupyter-chkpt "
    "rm`, then `jupyter-chkpt gc`), or use a store on another disk (--store, $JUPYTER_CHKPT_STORE)",
    errno.EACCES: "Check the owner and mode of that path and of the directories above it",
    errno.EPERM: "Check the owner and mode of that path and of the directories above it",
    errno.EROFS: "That file system is read-only: use a store on another one (--store, $JUPYTER_CHKPT_STORE)",
    errno.EEXIST: "Something is in the way at that path: a directory is needed there; move it or "
    "choose another directory (--store, $JUPYTER_CHKPT_STORE)",
    errno.ENOTDIR: "A part of that path is a file where a directory is needed; move it or choose "
    "another directory (--store, $JUPYTER_CHKPT_STORE)",
    errno.ENOENT: "A part of that path is missing; check it",
    errno.EMFILE: "Too many open files: raise the limit (`ulimit -n`) and try again",
    errno.ENFILE: "The system has too many open files: close some programs and try again",
    errno.ENOMEM: "The system is out of memory: free some and try again",
}


def as_chkpt_error(error: BaseException, details: str = "") -> ChkptError:
    """`error` as a ChkptError with a remedy. `details` says where to find more
    (a log) for errors that are bugs."""
    if isinstance(error, ChkptError):
        return error
    if isinstance(error, OSError) and error.errno is not None:
        what = error.strerror or os.strerror(error.errno)
        if error.filename is not None:
            what = f"{what}: {error.filename}"
        remedy = _OS_REMEDIES.get(error.errno, "Check the system's state and try again")
        return HostError(what, remedy)
    remedy = InternalError.remedy + (f" ({details})" if details else "")
    return InternalError(f"unexpected {type(error).__name__}: {error}", remedy)


# --- kernels as the server extension sees them -------------------------------------


class KernelRequestError(ChkptError):
    """A kernel could not take a request from the REST API."""


class NotSnapshotsKernel(KernelRequestError):
    # short: JupyterLab's notifications show 140 characters
    remedy = 'Switch to "Python 3 (snapshots)" or run %load_ext jupyter_chkpt'


class KernelBusy(KernelRequestError):
    remedy = 'Wait until the kernel is idle, or send the request with "wait": true to queue it'


class KernelGone(KernelRequestError):
    remedy = "Restart the kernel; its snapshots cannot be restored into a new process"


class KernelTimeout(KernelRequestError):
    remedy = "The kernel may be stuck in a cell: interrupt it, then try again"


def error_by_name(name: str) -> type[ChkptError]:
    """The error class called `name` (for errors that crossed the helper's socket)."""
    found = _all_errors().get(name)
    return found if found is not None else ChkptError


def _all_errors() -> dict[str, type[ChkptError]]:
    out: dict[str, type[ChkptError]] = {}
    todo: list[type[ChkptError]] = [ChkptError]
    while todo:
        cls = todo.pop()
        out[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return out
