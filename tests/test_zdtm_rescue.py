"""A tracer SIGKILLed at any instant of a snapshot or a restore costs nothing.

Each trial runs the engine in a process of its own (as the helper does), kills
it after a random delay (fixed seeds) and then does what the helper's guardian
does when the helper dies: rescue. The target must then run, untraced, in one
whole state, the one it had or the snapshot's (its `verify` checks memory,
files, fds and threads agree with one generation), keep working, and every
committed snapshot must stay restorable.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import zdtm

from jupyter_chkpt.engine import checkpoint, restore
from jupyter_chkpt.engine.journal import Journal, journal_dir
from jupyter_chkpt.engine.rescue import rescue_all, rescue_pid
from jupyter_chkpt.store import Store

TRIALS = 30
MIB = 256

TRACER = """
import os, sys
from jupyter_chkpt.engine import checkpoint, restore
from jupyter_chkpt.store import Store
op, pid, root, snap = sys.argv[1:5]
store = Store(root)
os.write(1, b"go\\n")
if op in ("restore", "transplant"):
    restore(int(pid), store, snap, into=op == "transplant")
else:
    checkpoint(int(pid), store)
os.write(1, b"done\\n")
"""


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "runtime"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(d))
    return d


class Tracer:
    """The engine at work in a process of its own, to be killed."""

    def __init__(self, op: str, pid: int, store: Store, snap: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TRACER, op, str(pid), str(store.root), snap],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == b"go\n", line + self.proc.communicate(timeout=60)[1]
        self.started = time.monotonic()

    def finish(self) -> float:
        out, err = self.proc.communicate(timeout=300)
        assert self.proc.returncode == 0 and out == b"done\n", err.decode()
        return time.monotonic() - self.started

    def frozen_for(self, journal: Path) -> float:
        """Run to the end; how long the process was frozen (its journal existed)."""
        first = last = None
        while self.proc.poll() is None:
            if journal.exists():
                last = time.monotonic()
                first = first or last
            time.sleep(0.0005)
        self.finish()
        assert first is not None and last is not None, "never saw the journal"
        return last - first

    def wait_frozen(self, journal: Path) -> None:
        while not journal.exists():
            assert self.proc.poll() is None, "finished before it froze the process"
            time.sleep(0.0005)

    def kill_after(self, delay: float, journal: Path) -> str:
        """SIGKILL after `delay` s; the phase its journal was in ("" if none)."""
        time.sleep(delay)
        try:
            phase = Journal.load(journal).phase
        except (OSError, ValueError):
            phase = ""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=60)
        return phase


def released(target: zdtm.Target, context: str = "") -> None:
    """Not stopped, not traced: within a moment (a rescue ends with SIGCONT)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            zdtm.assert_released(target.pid)
            return
        except AssertionError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{e} ({context})") from None
            time.sleep(0.01)


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("op", ["restore", "checkpoint"])
def test_tracer_killed_at_random(op: str, spawn, store: Store, runtime: Path) -> None:
    target = spawn("py_rescue.py", str(MIB))
    snap0 = checkpoint(target.pid, store)
    journal = journal_dir() / f"{target.pid}.json"
    target.ok("mutate")
    gen = 1
    # how long the operation takes, and keeps the process frozen, when nobody interferes
    took = Tracer(op, target.pid, store, snap0.id).finish()
    if op == "restore":
        assert target.ok("verify") == "0"
        target.ok("mutate")
    window = Tracer(op, target.pid, store, snap0.id).frozen_for(journal)
    if op == "restore":
        assert target.ok("verify") == "0"
        target.ok("mutate")
    rng = random.Random(f"rescue-{op}")
    phases: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for trial in range(TRIALS):
        tracer = Tracer(op, target.pid, store, snap0.id)
        if trial % 3 == 0:  # anywhere in the operation
            delay = rng.uniform(0, 1.2 * took)
        else:  # while the process is frozen, which is what matters
            tracer.wait_frozen(journal)
            delay = rng.uniform(0, 1.1 * window)
        phase = tracer.kill_after(delay, journal)
        phases[phase] = phases.get(phase, 0) + 1
        done = rescue_all()  # what the helper's guardian does
        released(target, f"trial {trial}, killed in phase {phase!r}: {done}")
        assert not journal.exists(), done
        reply = target.ok("verify")
        want = {str(gen), "0"} if op == "restore" else {str(gen)}
        assert reply in want, f"trial {trial}: {reply} ({done})"
        outcomes[reply] = outcomes.get(reply, 0) + 1
        target.ok("work")
        if reply == "0":
            target.ok("mutate")
            gen = 1
        elif op == "checkpoint":
            target.ok("mutate")
            gen += 1
    # The test means something only if it caught operations in the act.
    print(f"{op}: killed in phases {phases}; outcomes {outcomes}")
    assert TRIALS - phases.get("", 0) >= TRIALS // 3, (phases, outcomes)
    # Committed snapshots stay restorable; the store holds nothing half-written
    # that a listing shows.
    restore(target.pid, store, snap0.id)
    assert target.ok("verify") == "0"
    target.ok("work")
    assert snap0.id in {s.id for s in store.list(target.pid)}
    assert not list(journal_dir().glob("*.json"))


@pytest.mark.timeout(300)
def test_a_restore_past_its_point_of_no_return_is_finished(
    spawn, store: Store, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after threads exited cannot roll back: the process is finished
    from the snapshot instead, and runs on in the snapshot's state."""
    import importlib

    from jupyter_chkpt.errors import RestoreFailed

    restore_module = importlib.import_module("jupyter_chkpt.engine.restore")
    target = spawn("py_rescue.py", "32")
    snap0 = checkpoint(target.pid, store)
    target.ok("mutate")
    real = restore_module._drop_pages_born_since
    calls: list[int] = []

    def fail_once(*args: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("injected failure past the point of no return")
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(restore_module, "_drop_pages_born_since", fail_once)
    with pytest.raises(RestoreFailed, match="finished from the snapshot"):
        restore(target.pid, store, snap0.id)
    released(target)
    assert target.ok("verify") == "0"
    target.ok("work")
    assert rescue_pid(target.pid).endswith("needed no rescue")
    assert os.listdir(journal_dir()) in ([], [".lock"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("where", ["reconcile_sigactions", "_drop_pages_born_since"])
def test_an_interrupt_mid_restore_never_leaves_it_half_done(
    where: str, spawn, store: Store, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (any BaseException) while the process is being changed: before the
    point of no return it is rolled back, after it the restore is finished."""
    import importlib

    restore_module = importlib.import_module("jupyter_chkpt.engine.restore")
    target = spawn("py_rescue.py", "32")
    snap0 = checkpoint(target.pid, store)
    target.ok("mutate")
    real = getattr(restore_module, where)
    calls: list[int] = []

    def interrupted(*args: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(restore_module, where, interrupted)
    with pytest.raises(KeyboardInterrupt):
        restore(target.pid, store, snap0.id)
    released(target)
    want = "1" if where == "reconcile_sigactions" else "0"
    assert target.ok("verify") == want
    target.ok("work")
    assert not list(journal_dir().glob("*.json"))


@pytest.mark.timeout(1800)
def test_tracer_killed_at_random_during_a_transplant(spawn, store: Store, runtime: Path) -> None:
    """A snapshot of a process that died, moved into a new process of the same program
    (issue 13) by a tracer killed at a random instant: the new process runs on, whole,
    as itself (its generation 1) or as the snapshot (0), and can take the snapshot
    afterwards. Its layout, vDSO, threads and fds all move, so the window is wide."""
    first = spawn("py_rescue.py", str(MIB // 4), "named")
    snap0 = checkpoint(first.pid, store)
    first.kill()

    def fresh() -> zdtm.Target:
        t = spawn("py_rescue.py", str(MIB // 4), "named")
        t.ok("mutate")  # its own state, generation 1
        return t

    target = fresh()
    journal = journal_dir() / f"{target.pid}.json"
    took = Tracer("transplant", target.pid, store, snap0.id).finish()
    assert target.ok("verify") == "0"
    target.ok("work")
    target.kill()
    target = fresh()
    journal = journal_dir() / f"{target.pid}.json"
    window = Tracer("transplant", target.pid, store, snap0.id).frozen_for(journal)
    target.kill()
    rng = random.Random("rescue-transplant")
    phases: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for trial in range(TRIALS):
        target = fresh()
        journal = journal_dir() / f"{target.pid}.json"
        tracer = Tracer("transplant", target.pid, store, snap0.id)
        if trial % 3 == 0:
            delay = rng.uniform(0, 1.2 * took)
        else:
            tracer.wait_frozen(journal)
            delay = rng.uniform(0, 1.1 * window)
        phase = tracer.kill_after(delay, journal)
        phases[phase] = phases.get(phase, 0) + 1
        done = rescue_all()
        released(target, f"trial {trial}, killed in phase {phase!r}: {done}")
        assert not journal.exists(), done
        reply = target.ok("verify")
        assert reply in {"0", "1"}, f"trial {trial}: {reply} ({done})"
        outcomes[reply] = outcomes.get(reply, 0) + 1
        target.ok("work")
        if reply == "1":  # rolled back: the move can still be made
            restore(target.pid, store, snap0.id, into=True)
            assert target.ok("verify") == "0"
            target.ok("work")
        target.kill()
    print(f"transplant: killed in phases {phases}; outcomes {outcomes}")
    assert TRIALS - phases.get("", 0) >= TRIALS // 3, (phases, outcomes)
    assert snap0.id in {s.id for s in store.list()}
    assert not list(journal_dir().glob("*.json"))
    for leftover in Path(tempfile.gettempdir()).glob("chkpt-rescue-named-*"):
        leftover.unlink()
