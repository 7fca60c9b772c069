"""Memory malloc'd by C code, reachable only through a raw pointer."""

SETUP = """
import ctypes
s21_libc = ctypes.CDLL(None)
s21_libc.malloc.restype = ctypes.c_void_p
s21_ptr = s21_libc.malloc(1 << 20)
ctypes.memset(s21_ptr, 0x5A, 1 << 20)
"""
FINGERPRINT = "ctypes.string_at(s21_ptr, 8) + ctypes.string_at(s21_ptr + (1 << 20) - 8, 8)"
MUTATE = "ctypes.memset(s21_ptr, 0x11, 1 << 20)"
