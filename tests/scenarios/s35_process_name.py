"""The name the kernel shows for the process (prctl PR_SET_NAME, as setproctitle-like
libraries do): thread names are set back too."""

SETUP = """
import ctypes
s35_libc = ctypes.CDLL(None)
s35_libc.prctl(15, b"s35-kernel", 0, 0, 0)
"""
FINGERPRINT = "open('/proc/self/comm').read().strip()"
MUTATE = "s35_libc.prctl(15, b'renamed', 0, 0, 0)"
