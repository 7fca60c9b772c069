"""A shared anonymous mmap closed (unmapped) after the snapshot: recreated with its content."""

SETUP = """
import mmap
s29_map = mmap.mmap(-1, 1 << 20)
s29_map[100:110] = b"0123456789"
"""
FINGERPRINT = "(s29_map.closed, s29_map[100:110])"
MUTATE = "s29_map.close()"
