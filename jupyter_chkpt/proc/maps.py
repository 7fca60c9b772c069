"""/proc/PID/maps and /proc/PID/pagemap."""

from __future__ import annotations

import dataclasses
import os
from array import array
from collections.abc import Iterator

from ..errors import ProcessNotFound
from ..image import PAGE_SIZE, Mapping
from .procfs import proc_path

# pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst)
PM_PRESENT = 1 << 63
PM_SWAPPED = 1 << 62
PM_FILE_OR_SHARED = 1 << 61

_PAGEMAP_CHUNK = 1 << 16  # entries per read: 512 KiB of pagemap


def parse_maps_line(line: str) -> Mapping:
    parts = line.split(maxsplit=5)
    start, end = parts[0].split("-")
    return Mapping(
        start=int(start, 16),
        end=int(end, 16),
        perms=parts[1],
        offset=int(parts[2], 16),
        dev=parts[3],
        inode=int(parts[4]),
        path=parts[5].rstrip("\n") if len(parts) > 5 else "",
    )


def read_maps(pid: int) -> list[Mapping]:
    try:
        with open(proc_path(pid, "maps")) as f:
            return [parse_maps_line(line) for line in f]
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessNotFound(f"no process with PID {pid}") from None


def find_mapping(pid: int, *, addr: int | None = None, path: str | None = None) -> Mapping | None:
    """The first mapping holding `addr`, or named `path`, parsing no more lines
    than it must (a process with numpy maps hundreds of files)."""
    try:
        with open(proc_path(pid, "maps")) as f:
            for line in f:
                if path is not None and not line.rstrip("\n").endswith(path):
                    continue
                if addr is not None:
                    start, _, rest = line.partition("-")
                    if not int(start, 16) <= addr < int(rest.split(" ", 1)[0], 16):
                        continue
                m = parse_maps_line(line)
                if path is None or m.path == path:
                    return m
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessNotFound(f"no process with PID {pid}") from None
    return None


def read_maps_with_flags(pid: int) -> list[Mapping]:
    """read_maps() plus each mapping's VmFlags (locked, DONTFORK, userfaultfd, ...).

    /proc/PID/smaps walks the page tables for its sizes: about 12 ms per GiB
    resident, so callers read it outside a freeze where they can (`with_flags`).
    """
    out: list[Mapping] = []
    try:
        with open(proc_path(pid, "smaps")) as f:
            for line in f:
                if line.startswith("VmFlags:"):
                    out[-1] = dataclasses.replace(out[-1], vmflags=line[8:].strip())
                elif not line[:1].isupper():
                    out.append(parse_maps_line(line))
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessNotFound(f"no process with PID {pid}") from None
    return out


def with_flags(maps: list[Mapping], flagged: list[Mapping] | None, pid: int) -> list[Mapping]:
    """`maps` with VmFlags, taken from `flagged` (read earlier) if it describes exactly
    the same mappings; otherwise read again now."""
    if flagged is not None and same_layout(flagged, maps):
        return flagged
    return read_maps_with_flags(pid)


def same_layout(a: list[Mapping], b: list[Mapping]) -> bool:
    """The same mappings, VmFlags aside."""
    return len(a) == len(b) and all(
        (x.start, x.end, x.perms, x.offset, x.inode, x.dev, x.path)
        == (y.start, y.end, y.perms, y.offset, y.inode, y.dev, y.path)
        for x, y in zip(a, b, strict=True)
    )


class Pagemap:
    """Page presence of another process, read in chunks."""

    def __init__(self, pid: int) -> None:
        self._fd = os.open(proc_path(pid, "pagemap"), os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Pagemap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def entries(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """(vaddr, entry) for every page in [start, end)."""
        for chunk_start in range(start, end, _PAGEMAP_CHUNK * PAGE_SIZE):
            chunk_end = min(end, chunk_start + _PAGEMAP_CHUNK * PAGE_SIZE)
            count = (chunk_end - chunk_start) // PAGE_SIZE
            raw = os.pread(self._fd, count * 8, chunk_start // PAGE_SIZE * 8)
            values = array("Q")
            values.frombytes(raw)
            for i, entry in enumerate(values):
                yield chunk_start + i * PAGE_SIZE, entry

    def runs(self, start: int, end: int, *, anon_only: bool) -> list[tuple[int, int]]:
        """Runs (vaddr, npages) of pages holding data of their own.

        Present or swapped pages; with `anon_only`, only anonymous ones, which in
        a private file mapping are exactly the pages that differ from the file.
        """
        runs: list[tuple[int, int]] = []
        run_start = -1
        prev = -1
        for vaddr, entry in self.entries(start, end):
            has_data = bool(entry & (PM_PRESENT | PM_SWAPPED)) and not (
                anon_only and entry & PM_FILE_OR_SHARED
            )
            if has_data:
                if run_start < 0:
                    run_start = vaddr
                prev = vaddr
            elif run_start >= 0:
                runs.append((run_start, (prev - run_start) // PAGE_SIZE + 1))
                run_start = -1
        if run_start >= 0:
            runs.append((run_start, (prev - run_start) // PAGE_SIZE + 1))
        return runs
