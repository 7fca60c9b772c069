"""Bulk reads and writes of another process's memory through /proc/PID/mem.

/proc/PID/mem is used for both directions: unlike process_vm_writev it can
write into read-only private pages (FOLL_FORCE), and large preadv/pwrite
calls run at memory-copy speed once the destination buffer is faulted in.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import weakref

from ..errors import EngineError, ProcessChanged
from ..image import PAGE_SIZE
from .procfs import proc_path

_IO_CHUNK = 64 << 20  # bound a single syscall so progress is steady


class ProcessMemory:
    def __init__(self, pid: int, *, write: bool = False) -> None:
        self.pid = pid
        flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_CLOEXEC
        try:
            self._fd = os.open(proc_path(pid, "mem"), flags)
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessChanged(f"PID {pid} exited") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ProcessMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_into(self, vaddr: int, dest: memoryview) -> None:
        done = 0
        while done < len(dest):
            n = min(len(dest) - done, _IO_CHUNK)
            try:
                got = os.preadv(self._fd, [dest[done : done + n]], vaddr + done)
            except OSError as e:
                raise EngineError(
                    f"cannot read memory of PID {self.pid} at {vaddr + done:#x}: {e.strerror}"
                ) from e
            if got <= 0:
                raise EngineError(f"short read of PID {self.pid} memory at {vaddr + done:#x}")
            done += got

    def read(self, vaddr: int, size: int) -> bytes:
        buf = bytearray(size)
        self.read_into(vaddr, memoryview(buf))
        return bytes(buf)

    def write(self, vaddr: int, data: memoryview | bytes) -> None:
        view = memoryview(data)
        done = 0
        while done < len(view):
            n = min(len(view) - done, _IO_CHUNK)
            try:
                put = os.pwrite(self._fd, view[done : done + n], vaddr + done)
            except OSError as e:
                raise EngineError(
                    f"cannot write memory of PID {self.pid} at {vaddr + done:#x}: {e.strerror}"
                ) from e
            if put <= 0:
                raise EngineError(f"short write of PID {self.pid} memory at {vaddr + done:#x}")
            done += put


def _unlink(path: str | os.PathLike[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class StagingBuffer:
    """A reusable buffer for page copies.

    Faulting in fresh destination pages costs more than the copy itself, so a
    long-lived helper keeps one buffer and only grows it. With `file`, the
    buffer is that file, shared-mapped: what is copied into it outlives us (a
    restore's safety image, for a rescue if we die), at the cost of nothing
    more than anonymous memory where the file is on a tmpfs.
    """

    def __init__(self, file: str | os.PathLike[str] | None = None) -> None:
        self._map: mmap.mmap | None = None
        self.file = file
        if file is not None:  # gone with us, however we end but killed (then: swept)
            weakref.finalize(self, _unlink, file)

    def view(self, size: int) -> memoryview:
        size = max(PAGE_SIZE, -(-size // PAGE_SIZE) * PAGE_SIZE)
        if self._map is None or len(self._map) < size:
            self.release()
            self._map = self._new(size)
        return memoryview(self._map)[:size]

    def _new(self, size: int) -> mmap.mmap:
        populate = getattr(mmap, "MAP_POPULATE", 0)
        if self.file is None:
            # populated at once: faulting pages in one by one costs more than the copy
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate
            return mmap.mmap(-1, size, flags=flags)
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, 0)  # nothing of an earlier, larger image lingers
            # allocated now: a full tmpfs is an error here, not a SIGBUS later
            os.posix_fallocate(fd, 0, size)
            return mmap.mmap(fd, size, flags=mmap.MAP_SHARED | populate)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(self.file)
            raise
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._map is not None:
            # BufferError: a view is still exported; the map is freed when it goes.
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None
        if self.file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.file)
