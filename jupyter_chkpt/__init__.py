"""jupyter-chkpt: time travel for Jupyter kernels."""

__version__ = "0.1.0"
