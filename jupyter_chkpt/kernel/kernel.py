"""The "Python 3 (snapshots)" kernel: ipykernel's IPythonKernel with a Checkpointer."""

from __future__ import annotations

from ipykernel.ipkernel import IPythonKernel

from . import enable


class ChkptKernel(IPythonKernel):
    implementation = "jupyter_chkpt"
    implementation_version = "0.1.0"

    def start(self) -> None:
        super().start()
        enable(self)
