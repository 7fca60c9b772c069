"""Builds the JupyterLab extension into the wheel: the build-function pyproject.toml gives
hatch-jupyter-builder (which skips it when the extension is built already).

Before hatch-jupyter-builder's npm_builder runs `jlpm` it checks for Node.js 20+ (what
JupyterLab 4.6's `jupyter labextension build` needs): without it the build stops at once with
one line saying so, not minutes later with a traceback from jlpm. It also says what the long
build is doing (pip shows it with `pip install -v`, or when the build fails).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Any

NODE_MAJOR = 20


def node_problem() -> str:
    """Why the `node` on PATH cannot build the extension; "" if it can."""
    node = shutil.which("node")
    if node is None:
        return "node not found on PATH"
    try:
        out = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=60
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"{node} --version failed: {e}"
    match = re.fullmatch(r"v(\d+)\.\S*", out)
    if match is None:
        return f"{node} --version printed {out!r}"
    if int(match.group(1)) < NODE_MAJOR:
        return f"{node} is Node.js {out}"
    return ""


def build(target_name: str, version: str, **kwargs: Any) -> None:
    skip = "--skip-npm" in sys.argv or os.environ.get("HATCH_JUPYTER_BUILDER_SKIP_NPM") == "1"
    if not skip:  # (npm_builder's own test for "build nothing")
        problem = node_problem()
        if problem:
            print(
                f"jupyter-chkpt: building the JupyterLab extension needs Node.js {NODE_MAJOR}+ "
                f"({problem}): install it (e.g. apt-get install nodejs, where the distribution's "
                f"is {NODE_MAJOR}+; else from nodejs.org) or install a wheel built where it is "
                "(`pip wheel --no-deps .`)",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1)
        print(
            "jupyter-chkpt: building the JupyterLab extension (about 3 minutes on a fresh "
            "machine: npm packages from the registry, then TypeScript and webpack)...",
            file=sys.stderr,
            flush=True,
        )
    from hatch_jupyter_builder import npm_builder

    npm_builder(target_name, version, **kwargs)
