"""Fixtures for the zdtm-style scenario tests (harness in zdtm.py)."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zdtm

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture(scope="session")
def c_targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The C targets, built once per session: {'heap': path, 'libprobe.so': path, ...}."""
    return zdtm.compile_targets(tmp_path_factory.mktemp("targets"))


@pytest.fixture
def spawn(tmp_path: Path, c_targets: dict[str, Path]) -> Iterator[Callable[..., zdtm.Target]]:
    """Start targets, ready to talk to; whatever is still running at teardown is killed.

    spawn("heap", "grow") runs a C target, spawn("py_counter.py") a Python one;
    user=<pwd entry> runs it as that user (a C target from a copy in `cwd`).
    """
    started: list[zdtm.Target] = []

    def start(
        name: str,
        *args: str,
        user: Any = None,
        cwd: Path | None = None,
        pass_fds: tuple[int, ...] = (),
        stderr: Any = None,
    ) -> zdtm.Target:
        if name.endswith(".py"):
            argv = zdtm.python_argv(name, *args)
        elif user is not None:  # the build directory is root's: give the user a copy
            exe = (cwd or tmp_path) / name
            shutil.copy(c_targets[name], exe)
            exe.chmod(0o755)
            argv = [str(exe), *args]
        else:
            argv = [str(c_targets[name]), *args]
        env = dict(os.environ) if user is None else zdtm.user_env(user)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        log = tmp_path / f"{name}-{len(started)}.stderr"
        target = zdtm.Target(
            argv,
            name=name,
            log=log,
            user=user,
            env=env,
            cwd=cwd or tmp_path,
            pass_fds=pass_fds,
            stderr=stderr,
        )
        started.append(target)
        return target

    yield start
    for target in started:
        target.kill()


@pytest.fixture
def keeper() -> Iterator[Any]:
    """The helper's fd keeper, as a long-lived helper process holds one."""
    from jupyter_chkpt.engine.keeper import FdKeeper

    with FdKeeper() as k:
        yield k


@pytest.fixture(params=["full", "tracked"])
def tracked(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Each scenario twice: every page read and written, and with dirty-page tracking
    (a Tracking, as the helper keeps per process: only what changed moves)."""
    if request.param == "full":
        yield None
        return
    from jupyter_chkpt.engine.tracking import Tracking

    t = Tracking()
    yield t
    t.close()


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_dir: Path) -> Any:
    from jupyter_chkpt.store import Store  # here: the target self-check needs no engine

    return Store(store_dir)


# --- a second, unprivileged user --------------------------------------------------


def _let_others_through(path: Path) -> None:
    """Add the search (x) bit for others on directories above `path` that lack it.

    The test user must run this interpreter, which may live under /root (a
    pyenv install): it needs to pass through, not to list anything.
    """
    for d in reversed(path.parents):
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            d.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


@pytest.fixture(scope="session")
def nonroot_user() -> Any:
    """The pwd entry of an unprivileged user who can run the interpreter and the repo."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create the test user and switch to it")
    try:
        user = pwd.getpwnam(zdtm.TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "-m", zdtm.TEST_USER], check=True, capture_output=True, timeout=60
        )
        user = pwd.getpwnam(zdtm.TEST_USER)
    for path in (Path(sys.executable).resolve(), zdtm.TARGETS / "_proto.py"):
        _let_others_through(path)
    res = subprocess.run(
        [sys.executable, "-c", "import jupyter_chkpt.engine"],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        env=zdtm.user_env(user),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    if res.returncode != 0:
        pytest.fail(f"{zdtm.TEST_USER} cannot import the package: {res.stderr}")
    return user


@pytest.fixture
def user_dir(nonroot_user: Any) -> Iterator[Path]:
    """A fresh directory owned by the test user, mode 0700."""
    d = Path(tempfile.mkdtemp(prefix="chkpt-test-"))
    os.chown(d, nonroot_user.pw_uid, nonroot_user.pw_gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --- real kernels ---------------------------------------------------------------------


@pytest.fixture
def helper_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """A runtime directory and a store of this test's own; its helper is stopped after."""
    runtime, store = tmp_path / "runtime", tmp_path / "chkpt-store"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("JUPYTER_CHKPT_STORE", str(store))
    yield runtime, store
    from jupyter_chkpt.errors import HelperUnavailable
    from jupyter_chkpt.helper.client import HelperClient

    try:
        with HelperClient(start=False) as c:
            pid = c.helper_pid
            c.call("shutdown", timeout=10)
        if not zdtm.exited(pid):
            os.kill(pid, 9)
    except HelperUnavailable:
        pass


@pytest.fixture
def kernel_factory(helper_dirs: tuple[Path, Path]) -> Iterator[Callable[..., Any]]:
    """Start snapshots kernels (through jupyter_client); all are shut down after."""
    import kernels

    started: list[Any] = []

    def start(kernel_name: str = kernels.KERNEL) -> Any:
        k = kernels.Kernel(kernels.kernel_env(*helper_dirs), kernel_name)
        started.append(k)
        return k

    yield start
    for k in started:
        k.shutdown()


@pytest.fixture
def kernel(kernel_factory: Callable[..., Any]) -> Any:
    return kernel_factory()
