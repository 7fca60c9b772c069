"""Bad input: each gives its own clear error and leaves the target as it was.

"As it was" means: no tracer left on any thread, no thread stopped, the
state still the one before the failed call (py_counter's ``verify N``) and
the target still working.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zdtm

from jupyter_chkpt.engine import checkpoint, restore
from jupyter_chkpt.errors import (
    ChkptError,
    CorruptSnapshot,
    ProcessAlreadyTraced,
    ProcessIsZombie,
    ProcessNotFound,
    ProcessNotOwned,
    ThreadsGone,
    UnknownSnapshot,
    WrongProcess,
)

pytestmark = pytest.mark.timeout(120)


def assert_untouched(target: zdtm.Target, counter: int) -> None:
    zdtm.assert_released(target.pid)
    assert target.ok(f"verify {counter}") == f"counter={counter}"
    target.ok("work")


def assert_clear(error: ChkptError) -> None:
    """A message plus a remedy, on one line, as the CLI will show it."""
    assert error.message and error.remedy
    assert "\n" not in str(error)


def gone_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    p = subprocess.Popen(["true"])
    p.wait()
    assert not os.path.exists(f"/proc/{p.pid}")
    return p.pid


def zombie() -> subprocess.Popen[bytes]:
    """A child that has exited and that we do not reap (yet)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while zdtm.status(p.pid)["State"][0] != "Z":  # not p.poll(): that would reap it
        assert time.monotonic() < deadline, "child did not exit"
        time.sleep(0.01)
    return p


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_chkpt", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_cli_error(res: subprocess.CompletedProcess[str], status: int = 1) -> None:
    assert res.returncode == status, (res.returncode, res.stdout, res.stderr)
    assert res.stderr.strip(), "no message on stderr"
    assert "Traceback" not in res.stderr


def test_pid_that_does_not_exist(spawn, store) -> None:
    pid = gone_pid()
    with pytest.raises(ProcessNotFound) as err:
        checkpoint(pid, store)
    assert_clear(err.value)
    target = spawn("py_counter.py")
    snap = checkpoint(target.pid, store)
    with pytest.raises(ProcessNotFound):
        restore(pid, store, snap.id)
    assert_untouched(target, 1)


def test_process_of_another_user(spawn, store, nonroot_user, user_dir: Path) -> None:
    """Even root may only act on its own processes."""
    target = spawn("py_counter.py", user=nonroot_user, cwd=user_dir)
    with pytest.raises(ProcessNotOwned) as err:
        checkpoint(target.pid, store)
    assert_clear(err.value)
    assert_untouched(target, 1)
    target.quit()


def test_zombie(store) -> None:
    child = zombie()
    try:
        with pytest.raises(ProcessIsZombie) as err:
            checkpoint(child.pid, store)
        assert_clear(err.value)
        assert zdtm.status(child.pid)["State"][0] == "Z"
    finally:
        child.wait(10)


def attach_tracer(kind: str, pid: int) -> subprocess.Popen[bytes]:
    """Put another tracer on `pid`: strace, or a python-ptrace stand-in."""
    if kind == "strace":
        if shutil.which("strace") is None:
            pytest.skip("strace is not installed")
        argv = ["strace", "-qq", "-o", "/dev/null", "-p", str(pid)]
    else:
        argv = [sys.executable, str(zdtm.TARGETS / "ptrace_holder.py"), str(pid)]
    tracer = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while zdtm.status(pid)["TracerPid"] != str(tracer.pid):
        if time.monotonic() > deadline or tracer.poll() is not None:
            tracer.kill()
            pytest.fail(f"{kind} did not attach to {pid}")
        time.sleep(0.01)
    return tracer


@pytest.mark.parametrize("tracer_kind", ["python-ptrace", "strace"])
def test_process_already_traced(spawn, store, tracer_kind: str) -> None:
    target = spawn("py_counter.py")
    snap = checkpoint(target.pid, store)
    target.ok("mutate")
    tracer = attach_tracer(tracer_kind, target.pid)
    try:
        with pytest.raises(ProcessAlreadyTraced) as err:
            checkpoint(target.pid, store)
        assert_clear(err.value)
        with pytest.raises(ProcessAlreadyTraced):
            restore(target.pid, store, snap.id)
        # the other tracer is left alone and the target works under it
        assert zdtm.status(target.pid)["TracerPid"] == str(tracer.pid)
        assert target.ok("verify 2") == "counter=2"
    finally:
        tracer.terminate()  # strace detaches; the stand-in's exit detaches it
        tracer.wait(10)
    assert_untouched(target, 2)
    target.quit()


def test_unknown_snapshot(spawn, store) -> None:
    target = spawn("py_counter.py")
    checkpoint(target.pid, store)  # the store is not empty: the id is simply not there
    for bogus in ("0123456789abcdef", "no-such-snapshot"):
        with pytest.raises(UnknownSnapshot) as err:
            restore(target.pid, store, bogus)
        assert_clear(err.value)
    assert_untouched(target, 1)
    target.quit()


def _flip_byte(store_dir: Path) -> None:
    """Flip one byte in the middle of the largest pack file."""
    files = [p for p in (store_dir / "packs").rglob("*") if p.is_file() and p.stat().st_size]
    assert files, "no pack files to corrupt"
    victim = max(files, key=lambda p: p.stat().st_size)
    with open(victim, "r+b") as f:
        f.seek(victim.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_corrupted_page_data(spawn, store, store_dir: Path) -> None:
    target = spawn("py_counter.py")
    snap = checkpoint(target.pid, store)
    target.ok("mutate")
    _flip_byte(store_dir)
    with pytest.raises(CorruptSnapshot) as err:
        restore(target.pid, store, snap.id)
    assert_clear(err.value)
    assert_untouched(target, 2)
    target.quit()


def test_truncated_manifest(spawn, store, store_dir: Path) -> None:
    target = spawn("py_counter.py")
    snap = checkpoint(target.pid, store)
    target.ok("mutate")
    manifest = store_dir / "snapshots" / snap.id / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[: manifest.stat().st_size // 2])
    with pytest.raises(CorruptSnapshot) as err:
        restore(target.pid, store, snap.id)
    assert_clear(err.value)
    assert_untouched(target, 2)
    target.quit()


def test_snapshot_of_another_process(spawn, store) -> None:
    a = spawn("py_counter.py")
    b = spawn("py_counter.py")
    snap = checkpoint(a.pid, store)
    b.ok("mutate")
    with pytest.raises(WrongProcess) as err:
        restore(b.pid, store, snap.id)
    assert_clear(err.value)
    assert_untouched(b, 2)
    assert_untouched(a, 1)
    a.quit()
    b.quit()


def test_thread_gone_since_old_format_snapshot(spawn, store, monkeypatch) -> None:
    """An image without thread state (format 1.1) cannot recreate a thread that
    exited since: refuse before touching anything."""
    import jupyter_chkpt.engine.dump as dump

    target = spawn("py_threads.py", "doomed")
    monkeypatch.setattr(dump, "capture_state", lambda *a: None)  # what 1.1 images lack
    snap = checkpoint(target.pid, store)
    monkeypatch.undo()
    target.ok("mutate")  # keeper-2 exits
    tasks = zdtm.tasks(target.pid)
    with pytest.raises(ThreadsGone) as err:
        restore(target.pid, store, snap.id)
    assert_clear(err.value)
    zdtm.assert_released(target.pid)
    assert zdtm.tasks(target.pid) == tasks
    assert target.ok("names") == "MainThread keeper-1"
    target.ok("work")
    target.quit()


# --- the same through the CLI: status 1 and a message on stderr ----------------------


def test_cli_errors(spawn, store_dir: Path) -> None:
    target = spawn("py_counter.py")
    store = str(store_dir)
    assert_cli_error(cli("snapshot", str(gone_pid()), "--store", store))
    assert_cli_error(cli("restore", str(target.pid), "0123456789abcdef", "--store", store))
    child = zombie()
    try:
        assert_cli_error(cli("snapshot", str(child.pid), "--store", store, "--json"))
    finally:
        child.wait(10)

    other = spawn("py_counter.py")
    res = cli("snapshot", str(other.pid), "--store", store)
    assert res.returncode == 0, res.stderr
    snap_id = res.stdout.strip()
    assert_cli_error(cli("restore", str(target.pid), snap_id, "--store", store))

    assert_cli_error(cli("snapshot", "not-a-pid", "--store", store), status=2)
    assert_cli_error(cli("frobnicate"), status=2)
    assert_untouched(target, 1)
    assert_untouched(other, 1)
    target.quit()
    other.quit()
