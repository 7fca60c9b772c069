"""A snapshot's pagemap: which page content sits at which virtual address.

`pagemap.bin.zst` is one zstd frame holding, for every page of the image in
address order, the record (vaddr u64 LE, 16-byte page hash).
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Iterable, Iterator

import zstandard

from ..image import PAGE_SIZE, Mapping, PageRuns
from .packs import decompress_exact

RECORD = struct.Struct("<Q16s")


def page_vaddrs(pages: PageRuns) -> Iterator[int]:
    for vaddr, n in pages.runs:
        yield from range(vaddr, vaddr + n * PAGE_SIZE, PAGE_SIZE)


def encode(pages: PageRuns, hashes: list[bytes], level: int) -> bytes:
    raw = b"".join(map(RECORD.pack, page_vaddrs(pages), hashes))
    data: bytes = zstandard.ZstdCompressor(level=level).compress(raw)
    return data


def decode(data: bytes, npages: int) -> tuple[list[int], list[bytes]]:
    """(vaddrs, hashes); ValueError says what is wrong."""
    expected = npages * RECORD.size
    raw = decompress_exact(data, expected)
    # comprehensions and map() rather than iter_unpack: a GiB image has 262144 records
    vaddrs = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, expected, RECORD.size)]
    hashes = [raw[i + 8 : i + 24] for i in range(0, expected, RECORD.size)]
    if any(map((PAGE_SIZE - 1).__and__, vaddrs)) or not all(map(operator.lt, vaddrs, vaddrs[1:])):
        raise ValueError("addresses are not sorted distinct pages")
    return vaddrs, hashes


def runs_from_vaddrs(vaddrs: list[int], mappings: Iterable[Mapping]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive pages, split where a mapping starts or ends.

    The pagemap keeps no run boundaries; this canonical form keeps every run
    inside one mapping however the engine had split them.
    """
    bounds = {m.start for m in mappings} | {m.end for m in mappings}
    runs: list[tuple[int, int]] = []
    start = count = 0
    for va in vaddrs:
        if count and va == start + count * PAGE_SIZE and va not in bounds:
            count += 1
        else:
            if count:
                runs.append((start, count))
            start, count = va, 1
    if count:
        runs.append((start, count))
    return runs
