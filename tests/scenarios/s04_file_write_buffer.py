"""A file open for writing with unflushed data in its buffer and its position."""

SETUP = """
import tempfile, os
s04_path = os.path.join(tempfile.mkdtemp(), "out.txt")
s04_fh = open(s04_path, "w+")
s04_fh.write("flushed\\n"); s04_fh.flush()
s04_fh.write("pending")  # still in the buffer
"""
FINGERPRINT = "(s04_fh.tell(), s04_fh.buffer.raw.tell(), s04_fh.closed)"
MUTATE = "s04_fh.write(' and more' * 100); s04_fh.flush()"
