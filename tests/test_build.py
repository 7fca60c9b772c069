"""Building the package from source: without Node.js 20+ the JupyterLab extension's build
(build_labextension.py, pyproject.toml's build-function) stops with one line saying so."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
NEEDS = "jupyter-chkpt: building the JupyterLab extension needs Node.js 20+"


def build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_labextension", ROOT / "build_labextension.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source_tree(dest: Path) -> Path:
    """What pip builds from in a fresh checkout: the sources without a built extension."""
    for name in ["pyproject.toml", "build_labextension.py", "README.md", "LICENSE"]:
        shutil.copy(ROOT / name, dest / name)
    skip = shutil.ignore_patterns("__pycache__", "labextension", "node_modules", "lib", ".yarn")
    for name in ["jupyter_chkpt", "share", "jupyter-config"]:
        shutil.copytree(ROOT / name, dest / name, ignore=skip)
    shutil.copytree(ROOT / "labextension", dest / "labextension", ignore=skip)
    assert not (dest / "jupyter_chkpt" / "labextension").exists()
    return dest


@pytest.mark.timeout(180)
def test_pip_without_node_stops_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    src = source_tree(tmp_path / "src")
    no_node = tmp_path / "bin"  # PATH: pip runs Python by its path; this has no node
    no_node.mkdir()
    env = {**os.environ, "PATH": str(no_node)}
    for skip in ["HATCH_JUPYTER_BUILDER_SKIP_NPM", "SKIP_JUPYTER_BUILDER"]:
        env.pop(skip, None)
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=170,
        env=env,
        cwd=tmp_path,
    )
    output = res.stdout + res.stderr
    if "Installing build dependencies: finished with status 'error'" in output:
        pytest.skip("pip cannot install the build dependencies here (no package index?)")
    assert res.returncode != 0, output
    lines = [line.strip() for line in output.splitlines() if "jupyter-chkpt:" in line]
    assert len(lines) == 1 and lines[0].startswith(NEEDS + " (node not found on PATH): "), output
    assert "Traceback" not in output, output
    assert not list(tmp_path.glob("dist/*.whl"))


def test_an_old_node_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    node = tmp_path / "node"
    node.write_text("#!/bin/sh\necho v18.19.1\n")
    node.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("HATCH_JUPYTER_BUILDER_SKIP_NPM", raising=False)
    with pytest.raises(SystemExit) as stopped:
        build_module().build("wheel", "standard", path="labextension", npm=["jlpm"])
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert (
        err.startswith(f"{NEEDS} ({node} is Node.js v18.19.1): install it") and err.count("\n") == 1
    ), err
