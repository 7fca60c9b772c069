"""Process state beyond memory and files (tests/targets/py_process.py): timers,
queued signals, personality, files under private mappings; and what a snapshot
or a restore must refuse: device memory, userfaultfd-registered and sealed memory."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest
import zdtm

from jupyter_chkpt.engine import checkpoint, restore
from jupyter_chkpt.errors import UnsupportedState
from jupyter_chkpt.proc.arch import current as arch

pytestmark = pytest.mark.timeout(120)


def roundtrip(target, store, tracking=None) -> object:
    info = checkpoint(target.pid, store, tracking=tracking)
    target.ok("mutate")
    result = restore(target.pid, store, info.id, tracking=tracking)
    zdtm.assert_released(target.pid)
    target.ok("verify")
    return result


def test_timers(spawn, store, tracked) -> None:
    """A POSIX timer deleted since comes back under its id, armed; one created since
    goes; an interval timer armed since (SIGALRM: would end the process) is disarmed."""
    target = spawn("py_process.py", "timers")
    result = roundtrip(target, store, tracked)
    assert "itimer real" in result.timers_changed, result.timers_changed
    assert any("recreated" in c for c in result.timers_changed), result.timers_changed
    time.sleep(2.5)  # past the moment the interval timer armed since would have fired
    target.ok("work")
    target.ok("verify")
    target.quit()


def test_queued_signals(spawn, store, tracked) -> None:
    """Signals queued at the snapshot and taken since are queued again; one that
    arrived since stays queued, and the result says so."""
    target = spawn("py_process.py", "signals")
    result = roundtrip(target, store, tracked)
    assert any("SIGUSR2 arrived since the snapshot" in n for n in result.notes), result.notes
    target.ok("work")
    target.quit()


def test_main_thread_in_a_timed_wait(spawn, store) -> None:
    """Registers are saved as the freeze found them. The first snapshot with dirty
    tracking injects a syscall into the main thread (the tracker's userfaultfd)
    before they are read; a thread in a timed wait (poll with a timeout, restarted
    through the kernel's per-thread restart block) must be saved as interrupted
    (-EINTR), never as "run restart_syscall": a restore would run that with the
    restart block the thread has then, another call's (it corrupted a kernel's stack)."""
    from jupyter_chkpt.engine.tracking import Tracking

    target = spawn("py_process.py", "timed_wait")
    zdtm.wait_blocked(target.pid, {target.pid: zdtm.SYS_POLL})
    tracking = Tracking()
    try:
        info = checkpoint(target.pid, store, tracking=tracking)
        [main] = [t for t in store.load_meta(info.id).threads if t.tid == target.pid]
        assert main.regs["rax"] != arch.SYS["restart_syscall"], main.regs
        assert main.regs["rax"] == (-errno.EINTR) & (2**64 - 1), main.regs
        target.ok("mutate")
        restore(target.pid, store, info.id, tracking=tracking)
        zdtm.assert_released(target.pid)
        target.ok("verify")
        target.ok("work")
        target.quit()
    finally:
        tracking.close()


def test_personality(spawn, store, tracked) -> None:
    target = spawn("py_process.py", "personality")
    roundtrip(target, store, tracked)
    target.quit()


def test_file_under_a_private_mapping_changed(spawn, store, tmp_path: Path) -> None:
    path = tmp_path / "mapped.bin"
    target = spawn("py_process.py", "mapped", str(path))
    result = roundtrip(target, store)
    assert any(str(path) in n and "changed on disk" in n for n in result.notes), result.notes
    target.ok("work")
    target.quit()


def refused(target, store, *, at_snapshot: bool = False) -> UnsupportedState:
    tasks = zdtm.tasks(target.pid)
    with pytest.raises(UnsupportedState) as err:
        if at_snapshot:
            target.ok("mutate")
            checkpoint(target.pid, store)
        else:
            info = checkpoint(target.pid, store)
            target.ok("mutate")
            restore(target.pid, store, info.id)
    zdtm.assert_released(target.pid)
    assert zdtm.tasks(target.pid) == tasks
    assert "Nothing was changed" in str(err.value)
    target.ok("work")
    target.quit()
    return err.value


def test_userfaultfd_memory_is_refused_at_restore(spawn, store) -> None:
    target = spawn("py_process.py", "uffd")
    assert "userfaultfd" in refused(target, store).message


def test_device_memory_is_refused_at_snapshot(spawn, store) -> None:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("no /dev/kvm to map a device's memory from")
    target = spawn("py_process.py", "device", "/dev/kvm")
    assert "device memory (anon_inode:kvm-vcpu" in refused(target, store, at_snapshot=True).message


def test_sealed_memory_is_refused_at_restore(spawn, store) -> None:
    target = spawn("py_process.py", "sealed")
    probe = spawn("py_process.py", "sealed")
    if probe.send("mutate").startswith("fail mseal"):
        pytest.skip("this kernel has no mseal()")
    assert "sealed memory" in refused(target, store).message


def test_shadow_stack_is_recognised() -> None:
    assert arch.shadow_stack_enabled("shstk wrss")
    assert arch.shadow_stack_enabled("shstk")
    assert not arch.shadow_stack_enabled("")
    assert not arch.shadow_stack_enabled("wrss")
