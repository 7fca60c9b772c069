"""Environment variables, as Python and as C code (getenv) see them."""

SETUP = """
import os, ctypes
os.environ["S14_VAR"] = "original"
s14_libc = ctypes.CDLL(None)
s14_libc.getenv.restype = ctypes.c_char_p
"""
FINGERPRINT = "(os.environ.get('S14_VAR'), s14_libc.getenv(b'S14_VAR'), 'S14_NEW' in os.environ)"
MUTATE = "os.environ['S14_VAR'] = 'changed'; os.environ['S14_NEW'] = '1'"
