"""An open file handle with its position (and the reader's buffer)."""

SETUP = """
import tempfile, os
s03_path = os.path.join(tempfile.mkdtemp(), "lines.txt")
with open(s03_path, "w") as f:
    f.write("".join(f"line {i}\\n" for i in range(1000)))
s03_fh = open(s03_path)
[s03_fh.readline() for _ in range(10)]
"""
FINGERPRINT = "(s03_fh.tell(), s03_fh.readline(), s03_fh.readline())"
MUTATE = "s03_fh.seek(0); [s03_fh.readline() for _ in range(500)]"
