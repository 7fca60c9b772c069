"""Kernel side: the Checkpointer (safe point, restore hand-off), magics, widgets.

Runs inside the kernel; talks to the helper daemon only, never to the engine.
"""

from __future__ import annotations

from typing import Any


def enable(kernel: Any) -> Any:
    """Attach a Checkpointer to a running ipykernel and register the magics (idempotent)."""
    from .controller import Checkpointer
    from .magics import ChkptMagics

    ctl = getattr(kernel, "_chkpt", None)
    if ctl is None:
        ctl = Checkpointer(kernel)
        ctl.attach()
        kernel.shell.register_magics(ChkptMagics(kernel.shell, ctl))
    return ctl
