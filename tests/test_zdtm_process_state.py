"""Process state beyond memory and files (tests/targets/py_process.py): timers,
queued signals, personality, files under private mappings; and what a snapshot
or a restore must refuse: device memory, userfaultfd-registered and sealed memory."""

from __future__ import annotations

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
