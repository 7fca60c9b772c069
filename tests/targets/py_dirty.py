"""Python target for dirty-page tracking: memory changed in every way a tracker could miss.

Usage: py_dirty.py [threads]. Each command changes memory one way and replies ``ok``;
the test snapshots incrementally and fully at the same moment and compares.
With ``threads``, two threads keep writing to their own buffers all the time.

  write N      N random 8-byte writes into a 64 MiB anonymous mapping
  dontneed     MADV_DONTNEED on 1 MiB of it (the pages read as zero, hold no data)
  rewrite      DONTNEED on another MiB, then writes into half of it
  remap        munmap 2 MiB of a mapping and mmap anew at the same address, written
  mremap       grow a mapping (mremap may move it) and write its new end
  mprotect     a written range made read-only, then writable, written again
  fork         a child writes its copy and exits; the parent writes a page too
  huge         MADV_HUGEPAGE on an aligned 8 MiB range, one byte written per 2 MiB
  shared       a shared anonymous mapping written by a forked child only
  readfault    untouched pages read (the zero page is mapped: present, not written)
  verify/work  (protocol) nothing to check here: the comparison is the test's
"""

from __future__ import annotations

import ctypes
import mmap
import os
import random
import sys
import threading

from _proto import address_of, serve

MiB = 1 << 20
PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MAP_FIXED = 0x10
MADV_DONTNEED, MADV_HUGEPAGE = 4, 14


class Dirty:
    def __init__(self, threads: bool) -> None:
        self.rng = random.Random(7)
        self.big = mmap.mmap(-1, 64 * MiB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.big.write(os.urandom(16 * MiB))
        self.base = address_of(self.big)
        self.grow = mmap.mmap(-1, 4 * MiB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.grow[:] = b"g" * (4 * MiB)
        # 8 MiB, 2 MiB-aligned, for transparent huge pages
        raw = libc.mmap(None, 10 * MiB, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        self.huge_at = (raw + 2 * MiB - 1) & ~(2 * MiB - 1)
        self.shared = mmap.mmap(-1, 1 * MiB)  # MAP_SHARED | MAP_ANONYMOUS
        self.shared[:4] = b"shar"
        self.stop = threading.Event()
        if threads:
            for i in range(2):
                threading.Thread(target=self._scribble, args=(i,), daemon=True).start()

    def _scribble(self, i: int) -> None:
        buf = bytearray(8 * MiB)
        rng = random.Random(i)
        while not self.stop.is_set():
            at = rng.randrange(0, len(buf) - 8)
            buf[at : at + 8] = rng.randbytes(8)

    def write(self, n: str = "1000") -> None:
        for _ in range(int(n)):
            at = self.rng.randrange(0, 64 * MiB - 8)
            self.big[at : at + 8] = self.rng.randbytes(8)

    def dontneed(self) -> None:
        libc.madvise(self.base + 4 * MiB, MiB, MADV_DONTNEED)

    def rewrite(self) -> None:
        libc.madvise(self.base + 8 * MiB, MiB, MADV_DONTNEED)
        for off in range(8 * MiB, 8 * MiB + MiB // 2, PAGE):
            self.big[off : off + 4] = b"back"

    def remap(self) -> None:
        at = self.base + 10 * MiB
        libc.munmap(at, 2 * MiB)
        got = libc.mmap(at, 2 * MiB, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED, -1, 0)
        assert got == at
        ctypes.memset(at, 0x5A, 3 * PAGE)

    def mremap(self) -> None:
        size = len(self.grow)
        self.grow.resize(size + MiB)
        self.grow[size : size + 4] = b"end!"

    def mprotect(self) -> None:
        at = self.base + 12 * MiB
        ctypes.memset(at, 1, 4 * PAGE)
        libc.mprotect(at, MiB, 1)
        libc.mprotect(at, MiB, 3)
        ctypes.memset(at + PAGE, 2, PAGE)

    def fork(self) -> None:
        pid = os.fork()
        if pid == 0:
            self.big[:4096] = b"c" * 4096  # the child's copy only
            os._exit(0)
        os.waitpid(pid, 0)
        self.big[PAGE : PAGE + 4] = b"prnt"

    def huge(self) -> None:
        libc.madvise(self.huge_at, 8 * MiB, MADV_HUGEPAGE)
        for off in range(0, 8 * MiB, 2 * MiB):
            ctypes.memset(self.huge_at + off + 100, off // MiB + 1, 1)

    def shared_child(self) -> None:
        pid = os.fork()
        if pid == 0:
            self.shared[100:104] = b"kid!"
            os._exit(0)
        os.waitpid(pid, 0)

    def readfault(self) -> None:
        view = (ctypes.c_ubyte * (2 * MiB)).from_address(self.base + 40 * MiB)
        sum(view[i] for i in range(0, 2 * MiB, PAGE))  # read only


if __name__ == "__main__":
    state = Dirty(threads="threads" in sys.argv[1:])
    commands = {
        name: getattr(state, name)
        for name in (
            "write",
            "dontneed",
            "rewrite",
            "remap",
            "mremap",
            "mprotect",
            "fork",
            "huge",
            "readfault",
        )
    }
    commands["shared"] = state.shared_child
    serve({**commands, "mutate": state.write, "verify": lambda: None, "work": lambda: None})
    state.stop.set()
