"""Python target for the address-space scenarios; the mode is the first argument.

mmap_new     large mappings created after the snapshot must be gone after restore
mmap_free    large mappings freed after the snapshot must be back, content intact
late_import  numpy and a ctypes library loaded after the snapshot must be unloaded
mprotect     protections changed after the snapshot must be back (rw writable again)

verify compares against what was recorded when ``ready`` was printed; since
that record lives in this process's memory, a restore brings it back too.
"""

from __future__ import annotations

import ctypes
import importlib
import mmap
import os
import sys

from _proto import Fail, address_of, check, digest, maps, perms_of, serve

MiB = 1 << 20
LARGE = 32 * MiB  # mappings at least this big count as "large"
PROT_NONE = 0  # the mmap module has PROT_READ and PROT_WRITE but no PROT_NONE


def anon(size: int) -> mmap.mmap:
    """A private anonymous mapping full of random bytes."""
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for off in range(0, size, 16 * MiB):
        m[off : off + 16 * MiB] = os.urandom(min(16 * MiB, size - off))
    return m


def large_anon_maps() -> set[tuple[int, int]]:
    return {(s, e) for s, e, _, path in maps() if not path and e - s >= LARGE}


def mapped_files() -> set[str]:
    return {path for *_, path in maps() if path.startswith("/")}


def scribble(m: mmap.mmap) -> None:
    """Overwrite a few spots spread over the buffer: it must be writable."""
    for off in range(0, len(m) - 4096, len(m) // 7):
        m[off : off + 4096] = os.urandom(4096)


class MmapNew:
    def __init__(self) -> None:
        import numpy

        self.np = numpy
        self.base = anon(4 * MiB)
        self.base_digest = digest(self.base)
        self.large0 = large_anon_maps()
        self.extra: list[object] = []

    def mutate(self) -> None:
        self.extra.append(anon(128 * MiB))
        self.extra.append(self.np.random.default_rng(1).integers(0, 256, 64 * MiB, dtype="u1"))
        added = sum(e - s for s, e in large_anon_maps() - self.large0)
        check(added >= 192 * MiB, "the new buffers are not mappings of their own")

    def verify(self) -> None:
        new = large_anon_maps() - self.large0
        check(not new, "new large mappings: " + " ".join(f"{s:x}-{e:x}" for s, e in sorted(new)))
        check(not self.extra, f"{len(self.extra)} buffers from mutate are still referenced")
        check(digest(self.base) == self.base_digest, "base buffer differs")

    def work(self) -> None:
        m = anon(128 * MiB)
        scribble(m)
        m.close()
        a = self.np.ones(16 * MiB, dtype="u8")
        check(int(a.sum()) == 16 * MiB, "numpy sum is wrong")
        check(digest(self.base) == self.base_digest, "base buffer changed during work")


class MmapFree:
    def __init__(self) -> None:
        import numpy

        self.maps = [anon(128 * MiB), anon(64 * MiB)]
        self.arr: numpy.ndarray | None = numpy.random.default_rng(2).integers(
            0, 256, 96 * MiB, dtype="u1"
        )
        self.regions = [(address_of(m), len(m)) for m in self.maps]
        self.regions.append((self.arr.ctypes.data, self.arr.nbytes))
        self.digests = [digest(b) for b in (*self.maps, self.arr)]

    def mutate(self) -> None:
        for m in self.maps:
            m.close()
        self.arr = None  # numpy's data is its own mapping at this size: freeing unmaps it
        for addr, size in self.regions:
            check(perms_of(addr, size) == {""}, f"region {addr:#x} is still mapped")

    def verify(self) -> None:
        for addr, size in self.regions:
            perms = perms_of(addr, size)
            check(perms == {"rw-p"}, f"region {addr:#x} has perms {perms}")
        check(not any(m.closed for m in self.maps), "an mmap is closed")
        check(self.arr is not None, "the numpy array is gone")
        got = [digest(b) for b in (*self.maps, self.arr)]
        check(got == self.digests, "buffer content differs")

    def work(self) -> None:
        # After a mutate without a restore some buffers are gone: use what is left.
        for m in self.maps:
            if not m.closed:
                scribble(m)
        if self.arr is not None:
            self.arr += 1
            if not any(m.closed for m in self.maps):
                self.digests = [digest(b) for b in (*self.maps, self.arr)]
        anon(64 * MiB).close()


class LateImport:
    def __init__(self, lib: str) -> None:
        check("numpy" not in sys.modules, "numpy imported before the snapshot")
        self.lib_path = lib
        self.files0 = mapped_files()
        self.loaded: list[object] = []

    def _use(self) -> None:
        np = importlib.import_module("numpy")
        check(int(np.arange(1000).sum()) == 499500, "numpy gives a wrong sum")
        lib = ctypes.CDLL(self.lib_path)
        check(lib.probe_value() == 0x5EED, "probe_value() is wrong")
        check(lib.probe_add(2, 3) == 5, "probe_add(2, 3) is wrong")
        self.loaded += [np, lib]

    def mutate(self) -> None:
        self._use()
        check(self.lib_path in mapped_files(), "the library is not mapped")

    def verify(self) -> None:
        diff = mapped_files() ^ self.files0
        check(not diff, f"mapped files differ: {sorted(diff)[:3]}")
        mods = sorted(m for m in sys.modules if m == "numpy" or m.startswith("numpy."))
        check(not mods, f"modules loaded after the snapshot: {mods[:3]}")
        check(not self.loaded, "references from mutate are still there")

    def work(self) -> None:
        self._use()
        self.loaded.clear()


class Mprotect:
    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.rw = anon(16 * MiB)
        self.ro = anon(4 * MiB)
        self.rw_addr, self.ro_addr = address_of(self.rw), address_of(self.ro)
        self._protect(self.ro_addr, len(self.ro), mmap.PROT_READ)
        self.rw_digest, self.ro_digest = digest(self.rw), digest(self.ro)
        self.mutated = False

    def _protect(self, addr: int, size: int, prot: int) -> None:
        if self.libc.mprotect(addr, size, prot):
            raise Fail(f"mprotect: {os.strerror(ctypes.get_errno())}")

    def mutate(self) -> None:
        half = len(self.rw) // 2
        self._protect(self.rw_addr, half, mmap.PROT_READ)
        self._protect(self.rw_addr + half, half, PROT_NONE)
        self._protect(self.ro_addr, len(self.ro), mmap.PROT_READ | mmap.PROT_WRITE)
        self.ro[:4096] = bytes(4096)
        self.mutated = True

    def verify(self) -> None:
        # Perms first: touching a PROT_NONE page would kill us instead of failing.
        got = perms_of(self.rw_addr, len(self.rw))
        check(got == {"rw-p"}, f"rw region has perms {got}")
        got = perms_of(self.ro_addr, len(self.ro))
        check(got == {"r--p"}, f"ro region has perms {got}")
        check(digest(self.rw) == self.rw_digest, "rw region content differs")
        check(digest(self.ro) == self.ro_digest, "ro region content differs")

    def work(self) -> None:
        if self.mutated:  # part of rw is PROT_NONE until a restore: leave it alone
            return
        scribble(self.rw)  # SIGSEGV here if the restore left it read-only
        self.rw_digest = digest(self.rw)
        check(digest(self.ro) == self.ro_digest, "ro region content differs")


MODES = {
    "mmap_new": MmapNew,
    "mmap_free": MmapFree,
    "late_import": LateImport,
    "mprotect": Mprotect,
}

if __name__ == "__main__":
    state = MODES[sys.argv[1]](*sys.argv[2:])
    serve({"mutate": state.mutate, "verify": state.verify, "work": state.work})
