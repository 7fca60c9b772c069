"""C-extension objects with internal state: a hash mid-update, a compressor mid-stream."""

SETUP = """
import hashlib, zlib
s11_hash = hashlib.sha256(b"part one")
s11_z = zlib.compressobj(9)
s11_out = s11_z.compress(b"abc" * 1000)
"""
FINGERPRINT = "(s11_hash.copy().hexdigest(), len(s11_z.copy().flush()), len(s11_out))"
MUTATE = "s11_hash.update(b'more'); s11_out += s11_z.compress(b'xyz' * 5000)"
