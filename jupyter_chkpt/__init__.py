"""jupyter-chkpt: time travel for Jupyter kernels."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_chkpt.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-chkpt"}]


def load_ipython_extension(ip: Any) -> None:
    """`%load_ext jupyter_chkpt`: snapshots in a running ipykernel 7 kernel."""
    from IPython.core.error import UsageError

    kernel = getattr(ip, "kernel", None)
    if kernel is None or not hasattr(kernel, "shell_handlers"):
        raise UsageError(
            "jupyter_chkpt needs an ipykernel kernel (Jupyter), not a terminal IPython"
        )
    from importlib.metadata import version

    found = version("ipykernel")
    if int(found.split(".")[0]) < 7:
        raise UsageError(
            f"jupyter_chkpt needs ipykernel 7 or newer, this kernel runs {found}: "
            "pip install -U ipykernel, then restart the kernel"
        )
    from .kernel import enable

    enable(kernel)
