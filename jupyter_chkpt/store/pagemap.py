"""A snapshot's pagemap: which page content sits at which virtual address.

`pagemap.bin.zst` is one zstd frame holding, for every page of the image in
address order, the record (vaddr u64 LE, 16-byte page hash). In memory it is a
`PageMap` (two arrays), so that an incremental snapshot can take its parent's
records for the pages it did not read, and a restore can compare two images
without looking at page contents.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import zstandard

from ..image import PAGE_SIZE, Mapping, PageMap, PageRuns
from .packs import decompress_exact

RECORD = np.dtype([("vaddr", "<u8"), ("hash", "V16")])
# Hashes do not compress; a fast negative level keeps a GiB's pagemap (6 MiB) at ~7 ms.
LEVEL = -5


def vaddrs_of(runs: Iterable[tuple[int, int]]) -> np.ndarray:
    """Every page address of the runs, in order."""
    parts = [np.arange(v, v + n * PAGE_SIZE, PAGE_SIZE, dtype=np.uint64) for v, n in runs]
    return np.concatenate(parts) if parts else np.empty(0, np.uint64)


def hashes_array(hashes: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(hashes), "V16") if hashes else np.empty(0, "V16")


def hash_list(pm: PageMap) -> list[bytes]:
    raw = pm.hashes.tobytes()
    return [raw[i : i + 16] for i in range(0, len(raw), 16)]


def of_pages(pages: PageRuns, hashes: list[bytes]) -> PageMap:
    return PageMap(vaddrs_of(pages.runs), hashes_array(hashes))


def merged(present: list[tuple[int, int]], read: PageMap, base: PageMap) -> PageMap:
    """The page map of an image holding the pages of `present`: those in `read`
    with their new hashes, all others as `base` has them. ValueError if `base`
    lacks one of the others (the caller read too little)."""
    vaddrs = vaddrs_of(present)
    hashes = np.empty(len(vaddrs), "V16")
    fresh = np.zeros(len(vaddrs), bool)
    if len(read):
        at = np.searchsorted(vaddrs, read.vaddrs)
        if np.any(at >= len(vaddrs)) or np.any(
            vaddrs[np.minimum(at, len(vaddrs) - 1)] != read.vaddrs
        ):
            raise ValueError("pages were read that the image does not hold")
        hashes[at] = read.hashes
        fresh[at] = True
    rest = vaddrs[~fresh]
    at = np.searchsorted(base.vaddrs, rest)
    found = at < len(base.vaddrs)
    found[found] = base.vaddrs[at[found]] == rest[found]
    if not np.all(found):
        missing = int(rest[~found][0])
        raise ValueError(f"page {missing:#x} was neither read nor in the base image")
    hashes[~fresh] = base.hashes[at]
    return PageMap(vaddrs, hashes)


def encode(pm: PageMap, level: int = LEVEL) -> bytes:
    records = np.empty(len(pm), RECORD)
    records["vaddr"] = pm.vaddrs
    records["hash"] = pm.hashes
    data: bytes = zstandard.ZstdCompressor(level=level).compress(records.tobytes())
    return data


def decode(data: bytes, npages: int) -> PageMap:
    """ValueError says what is wrong."""
    raw = decompress_exact(data, npages * RECORD.itemsize)
    records = np.frombuffer(raw, RECORD)
    vaddrs = records["vaddr"].astype(np.uint64)
    if np.any(vaddrs % PAGE_SIZE) or np.any(np.diff(vaddrs.astype(np.int64)) <= 0):
        raise ValueError("addresses are not sorted distinct pages")
    return PageMap(vaddrs, records["hash"].copy())


def runs_from_vaddrs(vaddrs: np.ndarray, mappings: Iterable[Mapping]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive pages, split where a mapping starts or ends.

    The pagemap keeps no run boundaries; this canonical form keeps every run
    inside one mapping however the engine had split them.
    """
    if not len(vaddrs):
        return []
    bounds = np.array(sorted({m.start for m in mappings} | {m.end for m in mappings}), np.uint64)
    v = vaddrs.astype(np.uint64)
    at = np.minimum(np.searchsorted(bounds, v[1:]), max(len(bounds) - 1, 0))
    on_bound = bounds[at] == v[1:] if len(bounds) else np.zeros(len(v) - 1, bool)
    cut = np.flatnonzero((np.diff(v) != PAGE_SIZE) | on_bound) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [len(v)]))
    return [(int(v[a]), int(b - a)) for a, b in zip(starts, ends, strict=True)]
