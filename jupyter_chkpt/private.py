"""Private files and directories, whatever the umask: snapshots, journals and the
helper's socket live below them. Imports nothing of the package (clients stay light)."""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dirs(path: Path) -> None:
    """Create `path` and its missing parents 0700; directories that already exist
    are left as they are."""
    missing = []
    for d in (path, *path.parents):
        if d.exists():
            break
        missing.append(d)
    for d in reversed(missing):
        with suppress(FileExistsError):  # someone else made it meanwhile: theirs
            os.mkdir(d, DIR_MODE)
            os.chmod(d, DIR_MODE)  # the umask may have taken bits away


def write_file(path: Path, data: bytes | memoryview, flags: int, *, sync: bool = False) -> None:
    """Open `path` (0600) with `flags`, write all of `data` (and fsync, with `sync`), close."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | flags, FILE_MODE)
    try:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def human_size(n: float) -> str:
    """1536 -> "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
