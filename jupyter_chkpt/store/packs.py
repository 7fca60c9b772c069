"""Content-addressed page packs and the in-memory index over them.

A pack is `<packid>.pack` (zstd frames of up to `frame_pages` pages each,
back to back) plus `<packid>.idx` (one fixed-size record per page). The idx is
written last and atomically, so a pack without an idx is an aborted write.
Layouts are specified in docs/FORMAT.md.
"""

from __future__ import annotations

import fcntl
import logging
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
    """A pack just committed; while `lock_fd` is open its writer holds an exclusive
    flock on the .pack, which tells gc the pack is not debris or dead but about to
    be used by a snapshot being committed (its writer releases it then)."""

    pack_id: str
    frames: list[PackFrame]
    nbytes: int
    lock_fd: int = -1

    def release(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


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
    """Compress (hashes, uncompressed pages) frames in parallel into a new committed pack."""
    pack_id = secrets.token_hex(8)
    pack_path = packs_dir / f"{pack_id}.pack"

    def compress(frame: tuple[list[bytes], bytes | memoryview]) -> tuple[list[bytes], bytes]:
        hashes, data = frame
        return hashes, _compressor(level).compress(data)

    written: list[PackFrame] = []
    offset = 0
    lock_fd = os.open(
        pack_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, layout.FILE_MODE
    )
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # nobody else has it open yet: never waits
        with os.fdopen(os.dup(lock_fd), "wb") as f:
            for hashes, blob in ordered_parallel(compress, frames, threads):
                f.write(blob)
                written.append(PackFrame(offset, len(blob), hashes))
                offset += len(blob)
            f.flush()
            os.fsync(f.fileno())
        idx = encode_idx(written)
        layout.replace_file(packs_dir / f"{pack_id}.idx", idx)
    except BaseException:
        pack_path.unlink(missing_ok=True)
        os.close(lock_fd)
        raise
    return WrittenPack(pack_id, written, offset + len(idx), lock_fd)


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
        raise PackDamaged(f"{where} is truncated")
    try:
        return decompress_exact(data, frame.npages * PAGE_SIZE)
    except ValueError as e:
        raise PackDamaged(f"{where} {e}") from None


def committed_packs(packs_dir: Path) -> frozenset[str]:
    """Ids of the packs that have both their .pack and their .idx."""
    names = set(os.listdir(packs_dir))
    return frozenset(
        n[: -len(".idx")]
        for n in names
        if n.endswith(".idx") and n[: -len(".idx")] + ".pack" in names
    )


class PackIndex:
    """Page hash -> where it is stored, over every readable committed pack.

    A Store keeps one and refreshes it under the store lock: packs only appear
    (commit) or disappear (gc), so comparing the directory listing is enough to
    notice another process's changes.
    """

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.pages: dict[bytes, int] = {}  # hash -> frame number << SLOT_BITS | slot
        self.packs: set[str] = set()  # packs whose pages are indexed
        self._listing: frozenset[str] = frozenset()
        self._mutex = threading.Lock()  # refreshes from several threads of one process

    def refresh(self, packs_dir: Path) -> None:
        with self._mutex:
            listing = committed_packs(packs_dir)
            if listing == self._listing:
                return
            if self._listing - listing:  # a pack went away: start over
                self.frames, self.pages, self.packs = [], {}, set()
                self._listing = frozenset()
            for pack_id in sorted(listing - self._listing):
                try:
                    self.add(pack_id, read_idx(packs_dir / f"{pack_id}.idx"))
                except (OSError, ValueError) as e:
                    # its pages count as absent: loads that need them fail, commits store them again
                    log.warning("ignoring unreadable pack %s: %s", pack_id, e)
            self._listing = listing

    def add(self, pack_id: str, frames: list[PackFrame]) -> None:
        for fr in frames:
            base = len(self.frames) << SLOT_BITS
            self.frames.append(Frame(pack_id, fr.offset, fr.length, len(fr.hashes)))
            self.pages.update(zip(fr.hashes, range(base, base + len(fr.hashes)), strict=True))
        self.packs.add(pack_id)

    def note_written(self, packs_dir: Path, written: WrittenPack) -> None:
        """Index a pack this process just wrote without reading its idx back."""
        with self._mutex:
            if self._listing == committed_packs(packs_dir) - {written.pack_id}:
                self.add(written.pack_id, written.frames)
                self._listing = self._listing | {written.pack_id}
