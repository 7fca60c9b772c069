"""The fidelity corpus (tests/scenarios/): kernel states pickling-based tools lose.

One snapshots kernel runs every scenario in turn: SETUP, %checkpoint,
fingerprint A, MUTATE, fingerprint (must differ from A), %restore, fingerprint
(must equal A). A scenario with BACK_AND_FORTH = True is also snapshotted after
MUTATE and restored to both snapshots in turn. See tests/scenarios/README.md.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kernels
import pytest

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("s*.py"))


def load(path: Path) -> dict[str, Any]:
    ns: dict[str, Any] = {"BACK_AND_FORTH": False, "MOVES": True}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    return {k: ns[k] for k in ("SETUP", "FINGERPRINT", "MUTATE", "BACK_AND_FORTH", "MOVES")}


@pytest.fixture(scope="module")
def shared_kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kernels.Kernel]:
    base = tmp_path_factory.mktemp("fidelity")
    (base / "runtime").mkdir(mode=0o700)
    k = kernels.Kernel(kernels.kernel_env(base / "runtime", base / "store"))
    helper = None
    try:
        k.ok("%checkpoint -m start")
        helper = int(k.value("get_ipython().kernel._chkpt.client.helper_pid"))
        yield k
    finally:
        k.shutdown()
        if helper:
            os.kill(helper, signal.SIGTERM)


def test_corpus_is_big_enough() -> None:
    assert len(SCENARIOS) >= 25


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(shared_kernel: kernels.Kernel, path: Path) -> None:
    k, s, label = shared_kernel, load(path), path.stem
    k.ok(s["SETUP"])
    k.ok(f"%checkpoint -m {label}")
    before = k.value(s["FINGERPRINT"])
    k.ok(s["MUTATE"])
    if s["BACK_AND_FORTH"]:
        k.ok(f"%checkpoint -m {label}-after")
    mutated = k.run(s["FINGERPRINT"])
    assert (mutated.value or mutated.error) != before, "MUTATE does not change the fingerprint"
    r = k.ok(f"%restore {label}")
    assert "restored snapshot" in r.stdout
    assert k.value(s["FINGERPRINT"]) == before
    if s["BACK_AND_FORTH"]:
        for _ in range(3):
            k.ok(f"%restore {label}-after")
            assert k.value(s["FINGERPRINT"]) == mutated.value
            k.ok(f"%restore {label}")
            assert k.value(s["FINGERPRINT"]) == before


@pytest.mark.timeout(600)
def test_corpus_survives_a_move_into_a_new_process(tmp_path: Path) -> None:
    """Transplant mode: every scenario set up in one kernel, one snapshot, the kernel
    SIGKILLed and started again by its manager, the snapshot moved into the new
    process: every fingerprint as before, and then every MUTATE still runs. Scenarios
    with `MOVES = False` hold child processes, which a new process cannot have (the
    move is refused: test_zdtm_transplant.py)."""
    (tmp_path / "runtime").mkdir(mode=0o700)
    env = kernels.kernel_env(tmp_path / "runtime", tmp_path / "store")
    k = kernels.Kernel(env)
    helper = None
    try:
        scenarios = {p.stem: s for p in SCENARIOS if (s := load(p))["MOVES"]}
        assert len(scenarios) >= len(SCENARIOS) - 2
        for s in scenarios.values():
            k.ok(s["SETUP"])
        snap = k.chkpt("checkpoint", label="corpus").content["snapshot"]["id"]
        before = {name: k.value(s["FINGERPRINT"]) for name, s in scenarios.items()}
        helper = int(k.value("get_ipython().kernel._chkpt.client.helper_pid"))
        old = k.pid
        os.kill(old, signal.SIGKILL)
        k.km.provisioner.process.wait(30)  # type: ignore[union-attr]
        k.km.restart_kernel(now=True)
        k.kc.wait_for_ready(timeout=60)
        assert k.pid != old
        r = k.ok(f"%restore {snap}")
        assert f"(PID {old})" in r.stdout, r.stdout
        after = {name: k.value(s["FINGERPRINT"]) for name, s in scenarios.items()}
        differ = {n: (before[n], after[n]) for n in before if before[n] != after[n]}
        assert not differ, differ
        for s in scenarios.values():
            k.ok(s["MUTATE"])  # the state works on, not just reads back
        assert k.value("__import__('os').getpid()") == str(k.pid)
    finally:
        k.shutdown()
        if helper:
            os.kill(helper, signal.SIGTERM)
