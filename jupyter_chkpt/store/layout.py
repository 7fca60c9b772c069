"""Where the store lives, who may read it, durable file writes, and the store lock.

Everything under the root is private to its owner: the root is 0700 and every
file 0600, because snapshots hold the complete memory of a process (secrets,
tokens, data). See docs/FORMAT.md for the layout.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

from ..errors import StorePermissionError, StoreUnavailable
from ..private import DIR_MODE, FILE_MODE, make_private_dirs
from ..private import write_file as write_private

ROOT_ENV = "JUPYTER_CHKPT_STORE"

PACKS = "packs"
SNAPSHOTS = "snapshots"
LOCK = "lock"
TMP_PREFIX = ".tmp-"  # a snapshot being committed
DEL_PREFIX = ".del-"  # a snapshot being deleted
TMP_SUFFIX = ".tmp"  # a file being replaced

ID_RE = re.compile(r"[0-9a-f]{8}")
PACK_ID_RE = re.compile(r"[0-9a-f]{16}")


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """The constructor argument wins over $JUPYTER_CHKPT_STORE, which wins over the default."""
    if root is None:
        root = os.environ.get(ROOT_ENV) or Path(jupyter_data_dir()) / "chkpt" / "store"
    return Path(root).expanduser().absolute()


def mkdir_private(path: Path) -> None:
    """mkdir 0700 whatever the umask; FileExistsError if it exists."""
    os.mkdir(path, DIR_MODE)
    if stat.S_IMODE(os.stat(path).st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)


def prepare_root(root: Path) -> None:
    """Create the store or check an existing one: ours, 0700, with its subdirectories."""
    try:
        make_private_dirs(root.parent)
        with suppress(FileExistsError):
            mkdir_private(root)
        st = os.stat(root)
        if not stat.S_ISDIR(st.st_mode):
            raise StoreUnavailable(f"snapshot store {root} is not a directory")
        if st.st_uid != os.geteuid():
            raise StorePermissionError(
                f"snapshot store {root} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()})"
            )
        if stat.S_IMODE(st.st_mode) != DIR_MODE:
            os.chmod(root, DIR_MODE)
        for sub in (PACKS, SNAPSHOTS):
            with suppress(FileExistsError):
                mkdir_private(root / sub)
        lock = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            if stat.S_IMODE(os.fstat(lock).st_mode) != FILE_MODE:
                os.fchmod(lock, FILE_MODE)  # a umask like 0o277 would lock us out of it
        finally:
            os.close(lock)
    except PermissionError as e:
        raise StorePermissionError(
            f"cannot use snapshot store {root}: {e.strerror} ({e.filename})"
        ) from None
    except OSError as e:  # a path under a regular file, a read-only or full file system, ...
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(root) else ""
        raise StoreUnavailable(f"cannot use snapshot store {root}: {e.strerror}{where}") from None


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system of `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def is_full(e: OSError) -> bool:
    """No space left, or the user's quota is used up."""
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def locked(root: Path, *, exclusive: bool) -> Iterator[None]:
    """flock on <root>/lock: shared for readers, exclusive for writers.

    Each call opens its own file description, so threads of one process
    exclude each other exactly like separate processes do.
    """
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_file(path: Path, data: bytes | memoryview) -> None:
    """Create a new 0600 file with `data` and fsync it; refuses to overwrite."""
    write_private(path, data, os.O_EXCL, sync=True)


def replace_file(path: Path, data: bytes | memoryview) -> None:
    """Atomically (re)place `path`: readers see the old content or the new, never a mix."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        write_private(tmp, data, os.O_TRUNC, sync=True)
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. the disk is full: leave nothing behind
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make renames and unlinks in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tree_size(path: Path) -> int:
    """Bytes in the regular files under `path` (or of `path` itself)."""
    if path.is_file():
        return path.stat().st_size
    return sum((Path(d) / f).stat().st_size for d, _, files in os.walk(path) for f in files)
