"""Python's default anonymous mmap (MAP_SHARED): shared memory only this process maps.
A page written after the snapshot must read as zero again."""

SETUP = """
import mmap
s28_map = mmap.mmap(-1, 1 << 22)
s28_map[:6] = b"shared"; s28_map[-4:] = b"tail"; s28_map.seek(64)
"""
FINGERPRINT = "(s28_map[:6], s28_map[-4:], s28_map.tell(), s28_map[8192:8196])"
MUTATE = "s28_map[:6] = b'XXXXXX'; s28_map[8192:8196] = b'born'"
