"""The machine probes behind `jupyter-chkpt check`, run for real on this machine."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_chkpt.proc import capabilities
from jupyter_chkpt.proc.capabilities import Capability, probe, snapshots_possible

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_USER = "chkpt-test"
NAMES = [
    "architecture",
    "kernel",
    "ptrace",
    "yama ptrace_scope",
    "/proc/PID/mem write",
    "process_vm_readv",
    "pidfd_getfd",
    "kcmp",
    "thread ids",
    "POSIX timer ids",
    "userfaultfd WP_ASYNC",
    "PAGEMAP_SCAN",
    "soft-dirty",
]
MUST_WORK_HERE = {
    "architecture",
    "kernel",
    "ptrace",
    "/proc/PID/mem write",
    "pidfd_getfd",
    "kcmp",
}


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def children() -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is this one, zombies and stopped ones included."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat_line = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        state, ppid = stat_line.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid():
            found.append((int(entry), state))
    return found


def test_probe_reports_every_capability() -> None:
    caps = probe()
    assert [cap.name for cap in caps] == NAMES
    for cap in caps:
        assert isinstance(cap, Capability)
        assert cap.detail, f"{cap.name} gives no detail"
    # pidfd_getfd and kcmp must work here but are optional: without them restores degrade
    # (tests/test_restricted_host.py)
    assert {cap.name for cap in caps if cap.required} == (
        MUST_WORK_HERE - {"pidfd_getfd", "kcmp"}
    ) | {"yama ptrace_scope"}


def test_this_machine_can_snapshot() -> None:
    caps = {cap.name: cap for cap in probe()}
    for name in MUST_WORK_HERE:
        assert caps[name].ok, f"{name}: {caps[name].detail}"
    assert caps["kernel"].detail.startswith(os.uname().release)
    assert snapshots_possible(list(caps.values()))


def test_probe_leaves_no_process_or_fd_behind() -> None:
    fds_before = open_fds()
    assert children() == []
    probe()
    assert children() == []
    assert open_fds() == fds_before


def test_each_probe_is_quick() -> None:
    for name, _required, fn in capabilities._PROBES:
        start = time.monotonic()
        fn()
        assert time.monotonic() - start < 3, f"{name} took too long"
    start = time.monotonic()
    probe()
    assert time.monotonic() - start < 10


def test_failure_with_a_stopped_child_leaves_nothing_behind() -> None:
    fds_before = open_fds()

    def failing_probe() -> tuple[bool, str]:
        with capabilities._Child() as child, capabilities._seized(child.pid):
            assert children() == [(child.pid, "t")]  # ptrace-stopped right now
            raise OSError(5, "simulated failure")

    cap = capabilities._run("failing", True, failing_probe)
    assert cap == Capability("failing", False, "EIO: simulated failure", True)
    assert children() == []
    assert open_fds() == fds_before


def test_refused_ptrace_becomes_a_detail() -> None:
    def interrupt_init() -> tuple[bool, str]:
        # PID 1 is not traced by us, so the kernel answers ESRCH.
        capabilities._ptrace(capabilities._PTRACE_INTERRUPT, 1)
        return True, "unexpected"

    cap = capabilities._run("x", True, interrupt_init)
    assert cap == Capability("x", False, "ESRCH: PTRACE_INTERRUPT: No such process", True)


@pytest.mark.parametrize(
    ("scope", "cap_sys_ptrace", "ok", "says"),
    [
        (None, False, True, "not present"),
        (0, False, True, "scope 0"),
        (1, False, True, "PR_SET_PTRACER"),
        (2, True, True, "CAP_SYS_PTRACE"),
        (2, False, False, "run as root"),
        (3, True, False, "disabled until reboot"),
    ],
)
def test_yama_verdict(scope: int | None, cap_sys_ptrace: bool, ok: bool, says: str) -> None:
    verdict_ok, detail = capabilities._yama_verdict(scope, cap_sys_ptrace)
    assert verdict_ok is ok
    assert says in detail


def test_snapshots_possible_needs_every_required_capability() -> None:
    fine = [Capability("a", True, "", True), Capability("b", False, "", False)]
    assert snapshots_possible(fine)
    assert not snapshots_possible([*fine, Capability("c", False, "broken", True)])


# --- as an ordinary user ---------------------------------------------------------------

PROBE_SCRIPT = """
import json, re
from dataclasses import asdict
from jupyter_chkpt.proc.capabilities import probe, snapshots_possible
caps = probe()
cap_eff = re.search(r"CapEff:\\s*(\\w+)", open("/proc/self/status").read())[1]
print(json.dumps({"caps": [asdict(c) for c in caps], "possible": snapshots_possible(caps), "cap_eff": cap_eff}))
"""


@pytest.fixture
def unprivileged_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("needs root to create and switch to a test user")
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not available")
    subprocess.run(["useradd", "-m", TEST_USER], check=True, capture_output=True)
    return pwd.getpwnam(TEST_USER)


@pytest.fixture
def readable_site() -> Iterator[Path]:
    """python-ptrace copied where the test user can read it: root's site-packages may not be."""
    import ptrace

    site = Path(tempfile.mkdtemp(prefix="chkpt-site-"))
    try:
        site.chmod(0o755)
        shutil.copytree(
            Path(ptrace.__file__).parent,
            site / "ptrace",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        for path in site.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield site
    finally:
        shutil.rmtree(site)


def run_as(
    user: pwd.struct_passwd, argv: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],  # else root's supplementary groups would stay
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )


def runs_as(user: pwd.struct_passwd, python: str, code: str, env: dict[str, str]) -> bool:
    try:
        return run_as(user, [python, "-c", code], env).returncode == 0
    except OSError:  # e.g. EACCES on a directory on the way to the interpreter
        return False


def test_probe_as_unprivileged_user(
    unprivileged_user: pwd.struct_passwd, readable_site: Path
) -> None:
    for parent in [REPO_ROOT, *REPO_ROOT.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            pytest.skip(f"{parent} is not accessible to other users, so neither is the repo")
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{REPO_ROOT}:{readable_site}",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    # This interpreter may live under /root, which the test user cannot enter.
    candidates = [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]
    check = "import ctypes, sys; assert sys.version_info >= (3, 10)"
    python = next((p for p in candidates if runs_as(unprivileged_user, p, check, env)), None)
    if python is None:
        pytest.skip(f"no Python >= 3.10 that {TEST_USER} may run")

    result = run_as(unprivileged_user, [python, "-c", PROBE_SCRIPT], env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert int(report["cap_eff"], 16) == 0, "the probe did not run unprivileged"
    caps = {cap["name"]: cap for cap in report["caps"]}
    assert list(caps) == NAMES
    for name in MUST_WORK_HERE:
        assert caps[name]["ok"], f"{name} as {TEST_USER}: {caps[name]['detail']}"
    assert report["possible"]
