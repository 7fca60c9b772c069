"""PAGEMAP_SCAN (Linux 6.7): another process's pages by category, a range per result.

One ioctl on /proc/PID/pagemap walks the page tables in the kernel and returns
runs of pages sharing categories (present, swapped, file-backed, written), so
finding the pages of a GiB that hold data costs a fraction of reading 8 bytes
of pagemap per page. With `write_protect`, the pages it reports are also
write-protected for a userfaultfd registered in async write-protect mode: the
next write to one clears the protection and marks it written (dirty tracking,
see `proc/uffd.py`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os

from ..image import PAGE_SIZE
from .procfs import proc_path

# include/uapi/linux/fs.h
PAGE_IS_WPALLOWED = 1 << 0
PAGE_IS_WRITTEN = 1 << 1
PAGE_IS_FILE = 1 << 2
PAGE_IS_PRESENT = 1 << 3
PAGE_IS_SWAPPED = 1 << 4
PAGE_IS_PFNZERO = 1 << 5
PM_SCAN_WP_MATCHING = 1 << 0
PM_SCAN_CHECK_WPASYNC = 1 << 1
ALL_CATEGORIES = (1 << 9) - 1

_VEC_LEN = 4096  # regions per ioctl; more regions mean more calls, never a miss


class PageRegion(ctypes.Structure):
    _fields_ = [
        ("start", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("categories", ctypes.c_uint64),
    ]
    start: int
    end: int
    categories: int


class PmScanArg(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "size",
            "flags",
            "start",
            "end",
            "walk_end",
            "vec",
            "vec_len",
            "max_pages",
            "category_inverted",
            "category_mask",
            "category_anyof_mask",
            "return_mask",
        )
    ]
    size: int
    flags: int
    start: int
    end: int
    walk_end: int
    vec: int
    vec_len: int
    max_pages: int
    category_inverted: int
    category_mask: int
    category_anyof_mask: int
    return_mask: int


def _iowr(kind: int, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | nr


PAGEMAP_SCAN = _iowr(ord("f"), 16, ctypes.sizeof(PmScanArg))

Region = tuple[int, int, int]  # start, end, categories


class NotSupported(Exception):
    """This kernel has no PAGEMAP_SCAN (before Linux 6.7)."""


class PageScanner:
    """PAGEMAP_SCAN on one process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd = os.open(proc_path(pid, "pagemap"), os.O_RDONLY | os.O_CLOEXEC)
        self._vec = (PageRegion * _VEC_LEN)()
        self._arg = PmScanArg(size=ctypes.sizeof(PmScanArg), vec=ctypes.addressof(self._vec))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PageScanner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scan(
        self,
        start: int,
        end: int,
        *,
        anyof: int = 0,
        require: int = 0,
        invert: int = 0,
        report: int = ALL_CATEGORIES,
        tracked: bool = False,
        write_protect: bool = False,
    ) -> list[Region]:
        """Regions of [start, end) whose pages have a category of `anyof` and all of
        `require` (after flipping the `invert` ones), each with its `report`ed
        categories. With `tracked`, a range not registered with a userfaultfd in
        async write-protect mode raises PermissionError; with `write_protect` the
        pages found are write-protected again (and the range must be tracked)."""
        arg = self._arg
        arg.flags = (PM_SCAN_CHECK_WPASYNC if tracked or write_protect else 0) | (
            PM_SCAN_WP_MATCHING if write_protect else 0
        )
        arg.end = end
        arg.vec_len = _VEC_LEN
        arg.category_inverted = invert
        arg.category_mask = require
        arg.category_anyof_mask = anyof
        arg.return_mask = report
        out: list[Region] = []
        pos = start
        while pos < end:
            arg.start = pos
            try:
                n = fcntl.ioctl(self._fd, PAGEMAP_SCAN, arg, True)
            except OSError as e:
                if e.errno == errno.ENOTTY:
                    raise NotSupported(str(e)) from None
                raise
            vec = self._vec
            for i in range(n):
                r = vec[i]
                if out and out[-1][1] == r.start and out[-1][2] == r.categories:
                    out[-1] = (out[-1][0], r.end, r.categories)
                else:
                    out.append((r.start, r.end, r.categories))
            pos = arg.walk_end
        return out


def runs_of(regions: list[Region]) -> list[tuple[int, int]]:
    """(vaddr, npages) runs of the regions, adjacent ones merged."""
    runs: list[tuple[int, int]] = []
    for start, end, _ in regions:
        n = (end - start) // PAGE_SIZE
        if runs and runs[-1][0] + runs[-1][1] * PAGE_SIZE == start:
            runs[-1] = (runs[-1][0], runs[-1][1] + n)
        else:
            runs.append((start, n))
    return runs
