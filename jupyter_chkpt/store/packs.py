"""Content-addressed page packs and the in-memory index over them.

A pack is `<packid>.pack` (zstd frames of up to `frame_pages` pages each,
back to back) plus `<packid>.idx` (one fixed-size record per page). The idx is
written last and atomically, so a pack without an idx is an aborted write.
Layouts are specified in docs/FORMAT.md.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import secrets
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain, count, repeat
from pathlib import Path
from typing import NamedTuple, TypeVar

import xxhash
import zstandard

from ..image import PAGE_SIZE
from ..private import FILE_MODE
from . import layout

log = logging.getLogger(__name__)

IDX_MAGIC = b"JCKPIDX\0"
IDX_VERSION = (1, 0)
# magic, major, minor, record size, record count, xxh3_64 of all records
IDX_HEADER = struct.Struct("<8sHHIQQ")
# page hash, frame offset, frame length, slot in frame, pages in frame
IDX_RECORD = struct.Struct("<16sQIHH")
MAX_FRAME_PAGES = 4096  # slot and page count are u16; 16 MiB frames are plenty
SLOT_BITS = 16  # PackIndex packs (frame number, slot) into one int

T = TypeVar("T")
R = TypeVar("R")


class PackDamaged(Exception):
    """A pack cannot deliver a page; the caller names the snapshot."""

    def __init__(self, message: str, pack: str | None = None) -> None:
        super().__init__(message)
        self.pack = pack  # the pack at fault, if one is


class Frame(NamedTuple):
    """Where a frame is, and what it must decompress to."""

    pack: str
    offset: int
    length: int
    npages: int


class PackFrame(NamedTuple):
    """One frame as recorded in an idx: where it is and the pages it holds, by slot."""

    offset: int
    length: int
    hashes: list[bytes]


def hash_pages(buf: memoryview, npages: int) -> list[bytes]:
    digest = xxhash.xxh3_128_digest
    return [digest(buf[off : off + PAGE_SIZE]) for off in range(0, npages * PAGE_SIZE, PAGE_SIZE)]


# zstd contexts are not thread-safe but are worth reusing (~15 us to create)
_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("cctx", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "dctx"):
        _local.dctx = zstandard.ZstdDecompressor()
    dctx: zstandard.ZstdDecompressor = _local.dctx
    return dctx


def decompress_exact(data: bytes, size: int) -> bytes:
    """One zstd frame that must hold exactly `size` bytes; ValueError says what is wrong."""
    try:
        if zstandard.frame_content_size(data) != size:
            raise ValueError(f"does not hold {size} bytes")
        out: bytes = decompressor().decompress(data)
    except zstandard.ZstdError as e:
        raise ValueError(f"does not decompress ({e})") from None
    if len(out) != size:
        raise ValueError(f"does not hold {size} bytes")
    return out


def ordered_parallel(fn: Callable[[T], R], items: Iterable[T], threads: int) -> Iterator[R]:
    """map() over a thread pool, in order, with a bounded number of items in flight.

    Bounded so that a pack rewrite does not hold every decompressed frame at once.
    """
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@dataclass
class WrittenPack:
    """A pack written but not committed yet: `commit` gives it its names (under the
    store's exclusive lock, with the snapshot that uses it), `abort` takes back
    everything it put on disk.

    Where the file system has O_TMPFILE the pack and its idx are nameless files
    until `commit`: a writer that dies or runs out of space leaves nothing. Elsewhere
    the .pack has its name from the start and the idx waits as `<id>.idx.tmp`; the
    writer holds an exclusive flock on the .pack until it is committed or aborted,
    which tells gc and clean that it is neither debris nor dead (see pack_in_use).
    """

    pack_id: str
    frames: list[PackFrame]
    nbytes: int
    packs_dir: Path
    pack_fd: int = -1  # flock held on it until release()
    idx_fd: int = -1  # nameless idx (O_TMPFILE); -1: it is <id>.idx.tmp
    named: bool = False  # the .pack has its name already
    committed: bool = False

    def commit(self) -> None:
        """Make the pack visible to readers: the .pack first, then its idx (an idx
        appears whole, by link or rename), then fsync the directory."""
        d = self.packs_dir
        if not self.named:
            _link_fd(self.pack_fd, d, f"{self.pack_id}.pack")
            self.named = True
        if self.idx_fd >= 0:
            _link_fd(self.idx_fd, d, f"{self.pack_id}.idx")
        else:
            os.rename(d / f"{self.pack_id}.idx{layout.TMP_SUFFIX}", d / f"{self.pack_id}.idx")
        self.committed = True
        layout.fsync_dir(d)

    def abort(self) -> None:
        """Remove what this pack put on disk. Only while nobody could have used its
        pages: before commit, or under the exclusive lock that committed it."""
        d = self.packs_dir
        for name in (f"{self.pack_id}.idx", f"{self.pack_id}.idx{layout.TMP_SUFFIX}"):
            if self.committed or name.endswith(layout.TMP_SUFFIX):
                (d / name).unlink(missing_ok=True)
        if self.named:
            (d / f"{self.pack_id}.pack").unlink(missing_ok=True)
        self.committed = self.named = False
        self.release()

    def release(self) -> None:
        for attr in ("pack_fd", "idx_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)


def _link_fd(fd: int, directory: Path, name: str) -> None:
    """Give the nameless (O_TMPFILE) file `fd` a name; linkat through /proc follows the
    magic link where link() would refuse it."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=True)
    finally:
        os.close(dfd)


def _open_nameless(directory: Path) -> int:
    """A nameless 0600 file in `directory`, or -1 where the file system has no O_TMPFILE."""
    if not USE_TMPFILE:
        return -1
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, FILE_MODE)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return -1
        raise


# False forces the named-file way (file systems without O_TMPFILE); tests flip it.
USE_TMPFILE = True


def pack_in_use(packs_dir: Path, pack_id: str) -> bool:
    """Whether a writer still holds the pack (see WrittenPack)."""
    try:
        fd = os.open(packs_dir / f"{pack_id}.pack", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def write_pack(
    packs_dir: Path,
    frames: Iterable[tuple[list[bytes], bytes | memoryview]],
    *,
    level: int,
    threads: int,
) -> WrittenPack:
    """Compress (hashes, uncompressed pages) frames in parallel into a new pack, written
    and fsynced but not committed (see WrittenPack). On failure nothing is left."""
    pack_id = secrets.token_hex(8)

    def compress(frame: tuple[list[bytes], bytes | memoryview]) -> tuple[list[bytes], bytes]:
        hashes, data = frame
        return hashes, _compressor(level).compress(data)

    written = WrittenPack(pack_id, [], 0, packs_dir)
    try:
        written.pack_fd = _open_nameless(packs_dir)
        if written.pack_fd < 0:
            written.pack_fd = os.open(
                packs_dir / f"{pack_id}.pack",
                os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                FILE_MODE,
            )
            written.named = True
        fcntl.flock(written.pack_fd, fcntl.LOCK_EX)  # nobody else has it open yet: never waits
        offset = 0
        with os.fdopen(os.dup(written.pack_fd), "wb") as f:
            for hashes, blob in ordered_parallel(compress, frames, threads):
                f.write(blob)
                written.frames.append(PackFrame(offset, len(blob), hashes))
                offset += len(blob)
            f.flush()
            os.fsync(f.fileno())
        idx = encode_idx(written.frames)
        written.idx_fd = _open_nameless(packs_dir) if not written.named else -1
        if written.idx_fd >= 0:
            _write_all(written.idx_fd, idx)
        else:
            layout.write_file(packs_dir / f"{pack_id}.idx{layout.TMP_SUFFIX}", idx)
        written.nbytes = offset + len(idx)
    except BaseException:
        written.abort()
        raise
    return written


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def encode_idx(frames: list[PackFrame]) -> bytes:
    pack = IDX_RECORD.pack
    records = b"".join(
        chain.from_iterable(
            map(
                pack,
                fr.hashes,
                repeat(fr.offset),
                repeat(fr.length),
                count(),
                repeat(len(fr.hashes)),
            )
            for fr in frames
        )
    )
    header = IDX_HEADER.pack(
        IDX_MAGIC,
        *IDX_VERSION,
        IDX_RECORD.size,
        len(records) // IDX_RECORD.size,
        xxhash.xxh3_64_intdigest(records),
    )
    return header + records


def read_idx(path: Path) -> list[PackFrame]:
    """Parse and check an idx; ValueError says what is wrong with it."""
    data = path.read_bytes()
    if len(data) < IDX_HEADER.size:
        raise ValueError("idx is truncated")
    magic, major, _minor, rec_size, count, checksum = IDX_HEADER.unpack_from(data)
    if magic != IDX_MAGIC or major != IDX_VERSION[0] or rec_size != IDX_RECORD.size:
        raise ValueError("not a version 1 idx")
    records = memoryview(data)[IDX_HEADER.size :]
    if len(records) != count * IDX_RECORD.size:
        raise ValueError("idx is truncated")
    if xxhash.xxh3_64_intdigest(records) != checksum:
        raise ValueError("idx checksum mismatch")
    frames: list[PackFrame] = []
    end = npages_in_frame = 0  # frames are contiguous from offset 0, slots run 0..n-1
    for h, offset, length, slot, npages in IDX_RECORD.iter_unpack(records):
        if slot == 0:
            if frames and len(frames[-1].hashes) != npages_in_frame:
                raise ValueError(f"frame at offset {frames[-1].offset} lacks pages")
            if offset != end or not 0 < npages <= MAX_FRAME_PAGES:
                raise ValueError(f"bad frame record at offset {offset}")
            frames.append(PackFrame(offset, length, []))
            end, npages_in_frame = offset + length, npages
        elif not frames or (offset, length, slot, npages) != (
            frames[-1].offset,
            frames[-1].length,
            len(frames[-1].hashes),
            npages_in_frame,
        ):
            raise ValueError(f"bad page record in frame at offset {offset}")
        frames[-1].hashes.append(h)
    if frames and len(frames[-1].hashes) != npages_in_frame:
        raise ValueError(f"frame at offset {frames[-1].offset} lacks pages")
    return frames


def read_frame(fd: int, frame: Frame) -> bytes:
    """The uncompressed pages of `frame`, read from the open pack `fd`."""
    where = f"frame at offset {frame.offset} of pack {frame.pack}"
    data = os.pread(fd, frame.length, frame.offset)
    if len(data) != frame.length:
        raise PackDamaged(f"{where} is truncated", frame.pack)
    try:
        return decompress_exact(data, frame.npages * PAGE_SIZE)
    except ValueError as e:
        raise PackDamaged(f"{where} {e}", frame.pack) from None


def committed_packs(packs_dir: Path) -> dict[str, int]:
    """Packs that have both their .pack and their .idx: id -> the idx's inode (a
    rebuilt idx is a new file: readers that cached the old one notice)."""
    idx: dict[str, int] = {}
    names = set()
    with os.scandir(packs_dir) as entries:
        for e in entries:
            names.add(e.name)
            if e.name.endswith(".idx"):
                idx[e.name[: -len(".idx")]] = e.inode()
    return {p: ino for p, ino in idx.items() if f"{p}.pack" in names}


@dataclass
class PackScan:
    """A pack read without its idx (see scan_pack)."""

    frames: list[PackFrame]
    end: int  # bytes of whole, readable frames from offset 0
    size: int  # bytes in the file
    problem: str = ""  # why the walk stopped before `size`

    @property
    def npages(self) -> int:
        return sum(len(fr.hashes) for fr in self.frames)


_SCAN_CHUNK = 1 << 20
FRAME_HEADER_MAX = 18  # ZSTD_FRAMEHEADERSIZE_MAX


def scan_pack(path: Path) -> PackScan:
    """What an idx of the pack would say, from the pack alone: walk the zstd frames
    back to back (each frame's compressed length is what a decompressor consumed up
    to its end), decompress each and hash its pages. The walk stops at the first
    frame that cannot be read: the readable prefix is kept, a damaged tail is
    reported in `problem`. Raises OSError if the file cannot be opened."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if not size:
            return PackScan([], 0, 0)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    frames: list[PackFrame] = []
    offset, problem = 0, ""
    try:
        while offset < size:
            where = f"at offset {offset}"
            try:
                want = zstandard.frame_content_size(mm[offset : offset + FRAME_HEADER_MAX])
            except zstandard.ZstdError:
                problem = f"no zstd frame {where}"
                break
            if want <= 0 or want % PAGE_SIZE or want > MAX_FRAME_PAGES * PAGE_SIZE:
                problem = f"the frame {where} does not state a whole number of pages"
                break
            obj = decompressor().decompressobj()
            out, pos = [], offset
            try:
                while not obj.eof and pos < size:
                    chunk = mm[pos : pos + _SCAN_CHUNK]
                    out.append(obj.decompress(chunk))
                    pos += len(chunk)
            except zstandard.ZstdError as e:
                problem = f"the frame {where} does not decompress ({e})"
                break
            if not obj.eof:
                problem = f"the frame {where} is truncated"
                break
            data = b"".join(out)
            if len(data) != want:
                problem = f"the frame {where} does not hold the {want} bytes it states"
                break
            length = pos - len(obj.unused_data) - offset
            frames.append(
                PackFrame(offset, length, hash_pages(memoryview(data), want // PAGE_SIZE))
            )
            offset += length
    finally:
        mm.close()
    return PackScan(frames, offset, size, problem)


def frames_end(frames: list[PackFrame]) -> int:
    """Where the last frame of an idx ends: the pack's size, unless it was damaged."""
    return frames[-1].offset + frames[-1].length if frames else 0


class PackIndex:
    """Page hash -> where it is stored, over every readable committed pack.

    A Store keeps one and refreshes it under the store lock: packs only appear
    (commit) or disappear (gc), and an idx is only ever replaced whole (a rebuilt
    one), so comparing the directory listing with idx inodes is enough to notice
    another process's changes.
    """

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.pages: dict[bytes, int] = {}  # hash -> frame number << SLOT_BITS | slot
        self.packs: set[str] = set()  # packs whose pages are indexed
        self.ends: dict[str, int] = {}  # pack -> end of its last indexed frame
        self.unreadable: dict[str, str] = {}  # committed packs whose idx is damaged: why
        self._listing: dict[str, int] = {}
        self._mutex = threading.Lock()  # refreshes from several threads of one process

    @property
    def listing(self) -> dict[str, int]:
        """The committed packs (id -> idx inode) as of the last refresh."""
        return self._listing

    def refresh(self, packs_dir: Path) -> None:
        with self._mutex:
            listing = committed_packs(packs_dir)
            if listing == self._listing:
                return
            if any(listing.get(p) != ino for p, ino in self._listing.items()):
                # a pack went away, or its idx was rebuilt: start over
                self.frames, self.pages, self.packs, self.ends = [], {}, set(), {}
                self.unreadable, self._listing = {}, {}
            for pack_id in sorted(listing.keys() - self._listing.keys()):
                try:
                    self.add(pack_id, read_idx(packs_dir / f"{pack_id}.idx"))
                except (OSError, ValueError) as e:
                    # its pages count as absent: loads that need them fail and say why,
                    # commits store them again, clean and gc rebuild the idx
                    log.warning("ignoring pack %s with an unreadable idx: %s", pack_id, e)
                    self.unreadable[pack_id] = str(e)
            self._listing = listing

    def add(self, pack_id: str, frames: list[PackFrame]) -> None:
        for fr in frames:
            base = len(self.frames) << SLOT_BITS
            self.frames.append(Frame(pack_id, fr.offset, fr.length, len(fr.hashes)))
            self.pages.update(zip(fr.hashes, range(base, base + len(fr.hashes)), strict=True))
        self.packs.add(pack_id)
        self.ends[pack_id] = frames_end(frames)

    def note_written(self, packs_dir: Path, written: WrittenPack) -> None:
        """Index a pack this process just committed without reading its idx back."""
        with self._mutex:
            listing = committed_packs(packs_dir)
            ino = listing.pop(written.pack_id, None)
            if ino is not None and self._listing == listing:
                self.add(written.pack_id, written.frames)
                self._listing = {**listing, written.pack_id: ino}
