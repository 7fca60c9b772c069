"""Weak references: a WeakValueDictionary whose entries live only while held elsewhere."""

SETUP = """
import weakref
class S09:
    def __init__(self, n): self.n = n
s09_keep = [S09(i) for i in range(5)]
s09_cache = weakref.WeakValueDictionary({i: o for i, o in enumerate(s09_keep)})
s09_ref = weakref.ref(s09_keep[2])
"""
FINGERPRINT = "(sorted(s09_cache), s09_ref() is s09_keep[2] if s09_keep else s09_ref())"
MUTATE = "s09_keep.clear(); import gc; gc.collect()"
