"""`python -m jupyter_chkpt.kernel -f CONNECTION_FILE`: the "Python 3 (snapshots)" kernel."""

from __future__ import annotations

from ipykernel.kernelapp import IPKernelApp

from .kernel import ChkptKernel

if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=ChkptKernel)
