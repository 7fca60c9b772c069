"""userfaultfd in async write-protect mode: the kernel keeps, per page, whether it
was written since it was last write-protected, and nobody has to handle faults.

The uffd must be created by the process whose memory it tracks (it belongs to
that process's mm); the helper has the process create one (an injected syscall),
takes it with pidfd_getfd and drives it from outside: registering ranges here,
reading and re-arming the written set with PAGEMAP_SCAN (`pagescan.py`).
Closing the last fd of it unregisters everything.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl

UFFD_API = 0xAA
UFFD_USER_MODE_ONLY = 1
UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
UFFD_FEATURE_WP_ASYNC = 1 << 15
FEATURES = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED
UFFDIO_REGISTER_MODE_WP = 1 << 1


class UffdioApi(ctypes.Structure):
    _fields_ = [
        ("api", ctypes.c_uint64),
        ("features", ctypes.c_uint64),
        ("ioctls", ctypes.c_uint64),
    ]
    api: int
    features: int
    ioctls: int


class UffdioRange(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64)]
    start: int
    len: int


class UffdioRegister(ctypes.Structure):
    _fields_ = [("range", UffdioRange), ("mode", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]
    range: UffdioRange
    mode: int
    ioctls: int


def _iowr(kind: int, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | nr


def _ior(kind: int, nr: int, size: int) -> int:
    return (2 << 30) | (size << 16) | (kind << 8) | nr


UFFDIO_API = _iowr(0xAA, 0x3F, ctypes.sizeof(UffdioApi))
UFFDIO_REGISTER = _iowr(0xAA, 0x00, ctypes.sizeof(UffdioRegister))
UFFDIO_UNREGISTER = _ior(0xAA, 0x01, ctypes.sizeof(UffdioRange))


def enable_async_wp(fd: int) -> None:
    """The API handshake, asking for async write-protection of populated and
    unpopulated pages; OSError if this kernel lacks it (before Linux 6.7)."""
    api = UffdioApi(api=UFFD_API, features=FEATURES)
    fcntl.ioctl(fd, UFFDIO_API, api, True)
    if api.features & FEATURES != FEATURES:
        raise OSError(0, "this kernel has no async write-protect userfaultfd")


def register_wp(fd: int, start: int, end: int) -> bool:
    """Register [start, end) for write-protect tracking; False where the kernel refuses
    (such a range is simply treated as written every time)."""
    reg = UffdioRegister(
        range=UffdioRange(start=start, len=end - start), mode=UFFDIO_REGISTER_MODE_WP
    )
    try:
        fcntl.ioctl(fd, UFFDIO_REGISTER, reg, True)
    except OSError:
        return False
    return True


def unregister(fd: int, start: int, end: int) -> None:
    rng = UffdioRange(start=start, len=end - start)
    with contextlib.suppress(OSError):  # gone already: nothing to undo
        fcntl.ioctl(fd, UFFDIO_UNREGISTER, rng, True)
