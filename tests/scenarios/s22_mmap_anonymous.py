"""An anonymous private mmap and a memoryview into a bytearray."""

SETUP = """
import mmap
s22_map = mmap.mmap(-1, 1 << 22, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
s22_map[:6] = b"mapped"; s22_map.seek(100)
s22_buf = bytearray(b"0123456789")
s22_view = memoryview(s22_buf)[2:6]
"""
FINGERPRINT = "(s22_map[:6], s22_map.tell(), bytes(s22_view))"
MUTATE = "s22_map[:6] = b'XXXXXX'; s22_map.seek(0); s22_buf[2:6] = b'abcd'"
