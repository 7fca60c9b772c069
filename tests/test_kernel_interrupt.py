"""Interrupt while the helper works for the kernel: nothing waits forever.

Pressing Interrupt while a snapshot is being stored hands the kernel back at
once (storing goes on in the background); while a restore waits to begin it
calls the restore off, leaving the kernel as it was; and a helper that does not
answer at all (here: stopped with SIGSTOP) is given up on after a bounded wait.

The helper is held up deterministically, not by timing: the test holds the
store's lock shared (a flock on <store>/lock), so reads go on but the
helper's commit, which takes it exclusively, blocks until the test lets go;
/proc/locks shows the blocked waiter.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

WAIT_S = 60.0


def until(what: str, ok: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


@contextlib.contextmanager
def store_locked(store: Path) -> Iterator[int]:
    """Hold the store's lock shared; yields the lock file's inode."""
    fd = os.open(store / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield os.fstat(fd).st_ino
    finally:
        os.close(fd)


def lock_waiters(inode: int) -> int:
    """How many flock requests wait for the lock file with this inode."""
    n = 0
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and fields[-3].endswith(f":{inode}"):
            n += 1
    return n


def helper_log(runtime: Path) -> str:
    p = runtime / "chkpt" / "helper.log"
    return p.read_text(errors="replace") if p.exists() else ""


def failure(r: Any) -> str:
    """What a failed cell said (a UsageError has no error message on IOPub)."""
    assert r.status == "error", r.content
    return f"{r.content.get('ename')}: {r.content.get('evalue')}"


def start(kernel: Any) -> None:
    kernel.ok("x = 1")
    kernel.ok("%checkpoint -m warm-up")  # the helper runs and the store exists


def checkpoint_held_up(kernel: Any, store_inode: int) -> str:
    """Send `%checkpoint -m a` and return once its commit waits for the store's lock."""
    msg_id: str = kernel.kc.execute("%checkpoint -m a")
    until("the commit waits for the store's lock", lambda: lock_waiters(store_inode) > 0)
    return msg_id


def test_interrupt_while_a_snapshot_is_stored(kernel: Any, helper_dirs: Any) -> None:
    _, store = helper_dirs
    start(kernel)
    with store_locked(store) as inode:
        msg_id = checkpoint_held_up(kernel, inode)
        kernel.km.interrupt_kernel()
        r = kernel.reply_to(msg_id)
        # answered while the store is still held: the kernel did not wait for it
        assert lock_waiters(inode) > 0
    assert r.status == "ok", r.error
    assert "interrupted: it is being stored in the background" in r.stdout, r.stdout
    kernel.ok("x = 2")
    # stored once the store is free again: restorable (the restore waits for the store)
    kernel.ok("%restore a")
    assert kernel.value("x") == "1"
    assert kernel.value("x + 1") == "2"  # and it keeps working


def test_interrupt_while_a_restore_waits_cancels_it(kernel: Any, helper_dirs: Any) -> None:
    runtime, store = helper_dirs
    start(kernel)
    with store_locked(store) as inode:
        msg_id = checkpoint_held_up(kernel, inode)
        kernel.km.interrupt_kernel()
        assert kernel.reply_to(msg_id).status == "ok"
        kernel.ok("x = 2")
        # 'a' is not stored yet: the restore waits for it, and can be called off
        msg_id = kernel.kc.execute("%restore a")
        until("the restore waits", lambda: "the restore waits" in helper_log(runtime))
        kernel.km.interrupt_kernel()
        r = kernel.reply_to(msg_id)
    said = failure(r)
    assert "was cancelled before the kernel was frozen" in said, said
    assert "Nothing was changed" in said, said
    assert kernel.value("x") == "2", "a cancelled restore changed the kernel"
    kernel.ok("%restore a")
    assert kernel.value("x") == "1"
    assert kernel.value("x + 1") == "2"


def test_a_stuck_helper_is_given_up_on(kernel: Any, helper_dirs: Any) -> None:
    from jupyter_chkpt.helper.client import HelperClient

    _, store = helper_dirs
    start(kernel)
    with HelperClient(start=False) as c:
        helper = c.helper_pid
    with store_locked(store) as inode:
        msg_id = checkpoint_held_up(kernel, inode)
        os.kill(helper, signal.SIGSTOP)
        try:
            kernel.km.interrupt_kernel()
            r = kernel.reply_to(msg_id)
        finally:
            os.kill(helper, signal.SIGCONT)
    said = failure(r)
    assert "did not take the interrupt" in said and "runs on" in said, said
    kernel.ok("x = 2")
    assert kernel.value("x") == "2"
    # the snapshot the helper had taken was stored after all, and can be restored
    kernel.ok("%restore a")
    assert kernel.value("x") == "1"
    kernel.ok("%checkpoint -m b")  # and the kernel goes on working with the helper
