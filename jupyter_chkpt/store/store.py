"""The snapshot store: commit, read, label, delete and garbage-collect snapshots."""

from __future__ import annotations

import builtins
import logging
import mmap
import os
import re
import secrets
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import xxhash

from ..errors import AmbiguousSnapshot, CorruptSnapshot, StoreError, UnknownSnapshot
from ..image import PAGE_SIZE, ImageMeta, PageMap, PageRuns
from . import layout, manifest, packs, pagemap
from .manifest import SnapshotInfo
from .packs import SLOT_BITS, Frame, PackDamaged, PackFrame

log = logging.getLogger(__name__)

_SLOT_MASK = (1 << SLOT_BITS) - 1


@dataclass(frozen=True)
class GcResult:
    packs_removed: int
    packs_rewritten: int
    bytes_freed: int  # net: removed minus what rewritten packs take


class Store:
    """Snapshots on disk, safe to share between processes and threads.

    Every method taking a snapshot id also accepts what `resolve` accepts.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        level: int = 1,
        frame_pages: int = 64,
        threads: int | None = None,
    ) -> None:
        if not 1 <= frame_pages <= packs.MAX_FRAME_PAGES:
            raise ValueError(f"frame_pages must be in 1..{packs.MAX_FRAME_PAGES}")
        self.root = layout.resolve_root(root)
        self.level = level
        self.frame_pages = frame_pages
        self.threads = threads or len(os.sched_getaffinity(0))
        layout.prepare_root(self.root)
        self._packs = self.root / layout.PACKS
        self._snaps = self.root / layout.SNAPSHOTS
        self._index = packs.PackIndex()
        self._infos: dict[str, tuple[tuple[int, int, int], SnapshotInfo]] = {}

    # --- writing ------------------------------------------------------------

    def commit(
        self,
        meta: ImageMeta,
        pages: PageRuns,
        *,
        label: str = "",
        parent: str | None = None,
        snap_id: str | None = None,
        tags: dict[str, Any] | None = None,
    ) -> SnapshotInfo:
        """Store a snapshot; `snap_id` asks for that id (8 hex digits, not yet used)."""
        info, _ = self.commit_image(
            meta, pages, label=label, parent=parent, snap_id=snap_id, tags=tags
        )
        return info

    def commit_image(
        self,
        meta: ImageMeta,
        pages: PageRuns,
        *,
        present: builtins.list[tuple[int, int]] | None = None,
        base: PageMap | None = None,
        prepared: tuple[builtins.list[bytes], PageMap] | None = None,
        label: str = "",
        parent: str | None = None,
        snap_id: str | None = None,
        tags: dict[str, Any] | None = None,
    ) -> tuple[SnapshotInfo, PageMap]:
        """Store a snapshot and return its page map too.

        Incremental: `pages` holds only the pages read anew; the image holds the
        pages of `present`, and those not read have the content `base` records
        (the page map of the snapshot the process's memory was known to equal
        but for the pages read). The stored snapshot is complete all the same
        (FORMAT.md §13). `prepared`: what `page_map` returned for these pages.
        """
        if parent is not None and not layout.ID_RE.fullmatch(parent):
            raise ValueError(f"parent {parent!r} is not a snapshot id")
        if snap_id is not None and not layout.ID_RE.fullmatch(snap_id):
            raise ValueError(f"{snap_id!r} is not a snapshot id (8 lowercase hex digits)")
        buf, _ = _page_buffer(pages)
        # hashing and the pagemap need no lock: keep other processes' wait short
        hashes, pm = prepared or self.page_map(pages, present=present, base=base)
        pagemap_data = pagemap.encode(pm)
        with layout.locked(self.root, exclusive=False):
            self._index.refresh(self._packs)
            known = self._index.pages
            new: dict[bytes, int] = {}  # hash -> page number of its first occurrence
            for i, h in enumerate(hashes):
                if h not in known:
                    new.setdefault(h, i)
        # Compress and write the pages with no store lock (readers are not kept waiting
        # for seconds of compression): the pack's own flock keeps gc off it until the
        # snapshot that uses it is committed. Two commits may store a page twice:
        # harmless.
        written = (
            packs.write_pack(
                self._packs, self._new_frames(buf, new), level=self.level, threads=self.threads
            )
            if new
            else None
        )
        try:
            return self._commit_snapshot(
                meta, pm, pagemap_data, written, label, parent, snap_id, tags, len(new)
            )
        finally:
            if written is not None:
                written.release()

    def _commit_snapshot(
        self,
        meta: ImageMeta,
        pm: PageMap,
        pagemap_data: bytes,
        written: packs.WrittenPack | None,
        label: str,
        parent: str | None,
        snap_id: str | None,
        tags: dict[str, Any] | None,
        new_pages: int,
    ) -> tuple[SnapshotInfo, PageMap]:
        with layout.locked(self.root, exclusive=True):
            stored_bytes = 0
            if written is not None:
                self._index.note_written(self._packs, written)
                stored_bytes = written.nbytes
            snap_id, tmp = self._claim_id(snap_id)
            try:
                m = manifest.build(
                    snap_id=snap_id,
                    created=time.time(),
                    label=label,
                    parent=parent,
                    tags=tags or {},
                    meta=meta,
                    npages=len(pm),
                    new_pages=new_pages,
                    stored_bytes=stored_bytes,
                    pagemap_data=pagemap_data,
                )
                layout.write_file(tmp / manifest.PAGEMAP, pagemap_data)
                layout.write_file(tmp / manifest.MANIFEST, manifest.dumps(m))
                layout.fsync_dir(tmp)
                os.rename(tmp, self._snaps / snap_id)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            layout.fsync_dir(self._snaps)
        return SnapshotInfo.from_manifest(m), pm

    def page_map(
        self,
        pages: PageRuns,
        *,
        present: builtins.list[tuple[int, int]] | None = None,
        base: PageMap | None = None,
    ) -> tuple[builtins.list[bytes], PageMap]:
        """The hashes of `pages` and the page map of the image (see commit_image); no
        lock, no I/O: a caller may work it out early and commit later."""
        buf, npages = _page_buffer(pages)
        hashes = packs.hash_pages(buf, npages)
        read = pagemap.of_pages(pages, hashes)
        pm = read if present is None else pagemap.merged(present, read, base or PageMap.empty())
        return hashes, pm

    def _new_frames(
        self, buf: memoryview, new: dict[bytes, int]
    ) -> Iterator[tuple[builtins.list[bytes], bytes | memoryview]]:
        items = builtins.list(new.items())
        for k in range(0, len(items), self.frame_pages):
            chunk = items[k : k + self.frame_pages]
            first, last = chunk[0][1], chunk[-1][1]
            if last - first == len(chunk) - 1:  # consecutive in the buffer: no copy
                data: bytes | memoryview = buf[first * PAGE_SIZE : (last + 1) * PAGE_SIZE]
            else:
                data = b"".join(buf[i * PAGE_SIZE : (i + 1) * PAGE_SIZE] for _, i in chunk)
            yield [h for h, _ in chunk], data

    def _claim_id(self, wanted: str | None = None) -> tuple[str, Path]:
        """A fresh id and its tmp dir; mkdir is the claim, so leftovers are never reused."""
        while True:
            snap_id = wanted or secrets.token_hex(4)
            tmp = self._snaps / f"{layout.TMP_PREFIX}{snap_id}"
            if not (self._snaps / snap_id).exists():
                try:
                    os.mkdir(tmp, layout.DIR_MODE)
                    return snap_id, tmp
                except FileExistsError:
                    pass
            if wanted:
                raise StoreError(
                    f"snapshot id {wanted} is already taken",
                    "Ask for another id, or let the store choose one",
                )

    def set_label(self, snap_id: str, label: str) -> None:
        with layout.locked(self.root, exclusive=True):
            sid = self._resolve(snap_id)
            m = self._manifest(sid)
            m["label"] = label
            layout.replace_file(self._snaps / sid / manifest.MANIFEST, manifest.dumps(m))

    def delete(self, snap_id: str) -> None:
        """Remove the snapshot; its pages stay until gc()."""
        with layout.locked(self.root, exclusive=True):
            sid = self._resolve(snap_id)
            doomed = self._snaps / f"{layout.DEL_PREFIX}{sid}"
            shutil.rmtree(doomed, ignore_errors=True)
            # one rename makes it vanish at once; a crash during rmtree leaves debris for gc
            os.rename(self._snaps / sid, doomed)
            layout.fsync_dir(self._snaps)
            shutil.rmtree(doomed)

    # --- reading ------------------------------------------------------------

    def list(self, pid: int | None = None) -> builtins.list[SnapshotInfo]:
        """Oldest first; unreadable snapshots are skipped with a warning."""
        infos = []
        with layout.locked(self.root, exclusive=False):
            for sid in self._ids():
                try:
                    info = self._info(sid)
                except StoreError as e:
                    log.warning("skipping snapshot %s: %s", sid, e)
                    continue
                if pid is None or info.pid == pid:
                    infos.append(info)
        return sorted(infos, key=lambda i: (i.created, i.id))

    def _info(self, sid: str) -> SnapshotInfo:
        """A manifest is parsed and checked once (a kernel's is hundreds of KiB of
        JSON); only a relabel rewrites it, which changes its file."""
        try:
            st = os.stat(self._snaps / sid / manifest.MANIFEST)
        except FileNotFoundError:
            raise CorruptSnapshot(f"snapshot {sid}: {manifest.MANIFEST} is missing") from None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._infos.get(sid)
        if cached is not None and cached[0] == key:
            return cached[1]
        info = SnapshotInfo.from_manifest(self._manifest(sid))
        self._infos[sid] = (key, info)
        return info

    def resolve(self, ref: str) -> str:
        """The id of the snapshot `ref` names: a full id or a unique prefix of 4+ characters."""
        with layout.locked(self.root, exclusive=False):
            return self._resolve(ref)

    def info(self, snap_id: str) -> SnapshotInfo:
        with layout.locked(self.root, exclusive=False):
            return self._info(self._resolve(snap_id))

    def manifest(self, snap_id: str) -> dict[str, Any]:
        with layout.locked(self.root, exclusive=False):
            return self._manifest(self._resolve(snap_id))

    def load_meta(self, snap_id: str) -> ImageMeta:
        return ImageMeta.from_json(self.manifest(snap_id)["meta"])

    def load(self, snap_id: str) -> tuple[ImageMeta, PageRuns]:
        """The image with every page checked against its hash.

        Runs come back maximal within each mapping (see pagemap.runs_from_vaddrs).
        """
        meta, pages, _ = self.load_pages(snap_id)
        return meta, pages

    def load_pagemap(self, snap_id: str) -> tuple[ImageMeta, PageMap]:
        """The image's meta and page map, checked; no page contents."""
        with layout.locked(self.root, exclusive=False):
            sid = self._resolve(snap_id)
            m = self._manifest(sid)
            return ImageMeta.from_json(m["meta"]), self._pagemap(sid, m)

    def load_pages(
        self,
        snap_id: str,
        runs: builtins.list[tuple[int, int]] | None = None,
        known: tuple[ImageMeta, PageMap] | None = None,
    ) -> tuple[ImageMeta, PageRuns, PageMap]:
        """The image's meta, the contents of its pages in `runs` (all by default),
        each checked against its hash, and its whole page map (`known`: what
        load_pagemap returned for it, not read again)."""
        with layout.locked(self.root, exclusive=False):
            sid = self._resolve(snap_id)
            if known is not None:
                meta, pm = known
            else:
                m = self._manifest(sid)
                meta, pm = ImageMeta.from_json(m["meta"]), self._pagemap(sid, m)
            part = pm if runs is None else pm.select(runs)
            self._index.refresh(self._packs)
            out = _page_memory(len(part) * PAGE_SIZE)
            try:
                self._fill(out, part.vaddrs.tolist(), pagemap.hash_list(part))
            except PackDamaged as e:
                raise CorruptSnapshot(f"snapshot {sid}: {e}") from None
        return meta, PageRuns(out, pagemap.runs_from_vaddrs(part.vaddrs, meta.mappings)), pm

    def _fill(
        self, out: memoryview, vaddrs: builtins.list[int], hashes: builtins.list[bytes]
    ) -> None:
        """Decompress each needed frame once, check its pages, copy them to their places.

        Pages are planned as segments, (slot, dest, count) = consecutive slots of
        one frame going to consecutive pages of `out`, so that per-page work
        stays in C except for hashing: a freshly stored image is one segment
        per frame, while a page repeated in the image (zero pages) makes
        one-page segments.
        """
        found = builtins.list(map(self._index.pages.get, hashes))
        if None in found:
            raise PackDamaged(
                f"{found.count(None)} of its pages are in no pack of the store "
                f"(the first at {vaddrs[found.index(None)]:#x})"
            )
        if not found:
            return
        locs = cast("builtins.list[int]", found)
        # a segment starts where locs stop counting up; loc + 1 never reaches the next frame
        starts = [0] + [i for i in range(1, len(locs)) if locs[i] != locs[i - 1] + 1]
        segments: defaultdict[int, builtins.list[tuple[int, int, int]]] = defaultdict(builtins.list)
        for start, end in zip(starts, [*starts[1:], len(locs)], strict=True):
            segments[locs[start] >> SLOT_BITS].append(
                (locs[start] & _SLOT_MASK, start, end - start)
            )
        frames = self._index.frames
        digest = xxhash.xxh3_128_digest

        def fill_frame(item: tuple[int, builtins.list[tuple[int, int, int]]]) -> None:
            fno, todo = item
            frame = frames[fno]
            data = memoryview(packs.read_frame(fds[frame.pack], frame))
            for slot, dest, n in todo:
                src = data[slot * PAGE_SIZE : (slot + n) * PAGE_SIZE]
                got = [digest(src[o : o + PAGE_SIZE]) for o in range(0, n * PAGE_SIZE, PAGE_SIZE)]
                if got != hashes[dest : dest + n]:
                    bad = dest + next(i for i, h in enumerate(got) if h != hashes[dest + i])
                    raise PackDamaged(
                        f"page at {vaddrs[bad]:#x} does not match its hash "
                        f"(frame at offset {frame.offset} of pack {frame.pack})"
                    )
                out[dest * PAGE_SIZE : (dest + n) * PAGE_SIZE] = src

        fds: dict[str, int] = {}
        try:
            for pack_id in {frames[fno].pack for fno in segments}:
                try:
                    fds[pack_id] = os.open(
                        self._packs / f"{pack_id}.pack", os.O_RDONLY | os.O_CLOEXEC
                    )
                except FileNotFoundError:
                    raise PackDamaged(f"pack {pack_id} is missing") from None
            for _ in packs.ordered_parallel(fill_frame, segments.items(), self.threads):
                pass
        finally:
            for fd in fds.values():
                os.close(fd)

    def usage(self) -> dict[str, int]:
        with layout.locked(self.root, exclusive=False):
            self._index.refresh(self._packs)
            return {
                "snapshots": len(self._ids()),
                "packs": len(self._index.packs),
                "bytes_on_disk": layout.tree_size(self.root),
                "unique_pages": len(self._index.pages),
            }

    # --- garbage collection -------------------------------------------------

    def gc(self) -> GcResult:
        """Remove debris and pages no snapshot uses; nothing is removed if a snapshot is unreadable."""
        with layout.locked(self.root, exclusive=True):
            freed = self._remove_debris()
            live = self._live_pages()
            self._index.refresh(self._packs)
            claimed: set[bytes] = set()  # a page copied into several packs lives in the first
            dead: builtins.list[str] = []
            partial: builtins.list[
                tuple[str, builtins.list[tuple[PackFrame, builtins.list[int]]]]
            ] = []
            for pack_id in sorted(self._index.packs):
                if packs.pack_in_use(self._packs, pack_id):
                    continue  # a commit is about to use it: neither dead nor rewritable
                keep = []  # (frame, live slots)
                total = kept = 0
                for fr in packs.read_idx(self._packs / f"{pack_id}.idx"):
                    slots = []
                    for slot, h in enumerate(fr.hashes):
                        if h in live and h not in claimed:
                            claimed.add(h)
                            slots.append(slot)
                    if slots:
                        keep.append((fr, slots))
                    total += len(fr.hashes)
                    kept += len(slots)
                if not kept:
                    dead.append(pack_id)
                elif kept < total:
                    partial.append((pack_id, keep))
            if partial:
                # the new pack is committed before any old one goes: a crash leaves duplicates, never holes
                written = packs.write_pack(
                    self._packs,
                    self._live_frames(partial, live),
                    level=self.level,
                    threads=self.threads,
                )
                written.release()  # committed, and under our exclusive lock already
                freed -= written.nbytes
            for pack_id in dead + [p for p, _ in partial]:
                # idx first: a crash in between leaves an idx-less pack, which is debris
                freed += _remove(self._packs / f"{pack_id}.idx") + _remove(
                    self._packs / f"{pack_id}.pack"
                )
            layout.fsync_dir(self._packs)
            self._index.refresh(self._packs)
            return GcResult(
                packs_removed=len(dead), packs_rewritten=len(partial), bytes_freed=freed
            )

    def _remove_debris(self) -> int:
        """Remove what interrupted commits, deletes, relabels and gcs left behind."""
        freed = 0
        for name in os.listdir(self._snaps):
            path = self._snaps / name
            if name.startswith("."):
                freed += _remove(path)
            elif layout.ID_RE.fullmatch(name):
                for stray in path.glob("*" + layout.TMP_SUFFIX):
                    freed += _remove(stray)
        names = set(os.listdir(self._packs))
        for name in names:
            stem, ext = os.path.splitext(name)
            if (
                name.endswith(layout.TMP_SUFFIX)
                or (ext == ".pack" and f"{stem}.idx" not in names)
                or (ext == ".idx" and f"{stem}.pack" not in names)
            ) and not packs.pack_in_use(self._packs, name.split(".", 1)[0]):
                freed += _remove(self._packs / name)
        layout.fsync_dir(self._snaps)
        layout.fsync_dir(self._packs)
        return freed

    def _live_pages(self) -> dict[bytes, str]:
        """Every page some snapshot uses -> one such snapshot."""
        live: dict[bytes, str] = {}
        for sid in self._ids():
            try:
                hashes = pagemap.hash_list(self._pagemap(sid, self._manifest(sid)))
            except StoreError as e:
                # guessing what an unreadable snapshot uses could destroy pages it needs
                raise type(e)(
                    f"{e.message}; gc stopped before removing any page", e.remedy
                ) from None
            live.update(dict.fromkeys(hashes, sid))
        return live

    def _live_frames(
        self,
        partial: builtins.list[tuple[str, builtins.list[tuple[PackFrame, builtins.list[int]]]]],
        live: dict[bytes, str],
    ) -> Iterator[tuple[builtins.list[bytes], bytes]]:
        """The live pages of partly dead packs, checked, regrouped into full frames."""
        digest = xxhash.xxh3_128_digest
        hashes: builtins.list[bytes] = []
        pages: builtins.list[memoryview] = []
        for pack_id, keep in partial:
            fd = os.open(self._packs / f"{pack_id}.pack", os.O_RDONLY | os.O_CLOEXEC)
            try:
                for fr, slots in keep:
                    try:
                        frame = Frame(pack_id, fr.offset, fr.length, len(fr.hashes))
                        data = memoryview(packs.read_frame(fd, frame))
                        for slot in slots:
                            page = data[slot * PAGE_SIZE : (slot + 1) * PAGE_SIZE]
                            if digest(page) != fr.hashes[slot]:
                                raise PackDamaged(
                                    f"a page in the frame at offset {fr.offset} "
                                    f"of pack {pack_id} does not match its hash"
                                )
                            hashes.append(fr.hashes[slot])
                            pages.append(page)
                            if len(hashes) == self.frame_pages:
                                yield hashes, b"".join(pages)
                                hashes, pages = [], []
                    except PackDamaged as e:
                        user = live[fr.hashes[slots[0]]]
                        raise CorruptSnapshot(
                            f"snapshot {user}: {e}; gc stopped before removing any page"
                        ) from None
            finally:
                os.close(fd)
        if hashes:
            yield hashes, b"".join(pages)

    # --- helpers ------------------------------------------------------------

    def _ids(self) -> builtins.list[str]:
        return sorted(n for n in os.listdir(self._snaps) if layout.ID_RE.fullmatch(n))

    def _resolve(self, ref: str) -> str:
        key = ref.strip().lower()
        ids = self._ids()
        if key in ids:
            return key
        if not re.fullmatch(r"[0-9a-f]{1,8}", key):
            raise UnknownSnapshot(f"{ref!r} is not a snapshot id (ids are 8 hex digits)")
        if len(key) < 4:
            raise AmbiguousSnapshot(
                f"snapshot prefix {ref!r} is too short: at least 4 characters are needed"
            )
        matches = [i for i in ids if i.startswith(key)]
        if not matches:
            raise UnknownSnapshot(f"no snapshot {ref!r} in {self.root}")
        if len(matches) > 1:
            raise AmbiguousSnapshot(
                f"{ref!r} matches {len(matches)} snapshots: {', '.join(matches)}"
            )
        return matches[0]

    def _manifest(self, sid: str) -> dict[str, Any]:
        try:
            data = (self._snaps / sid / manifest.MANIFEST).read_bytes()
        except FileNotFoundError:
            raise CorruptSnapshot(f"snapshot {sid}: {manifest.MANIFEST} is missing") from None
        return manifest.parse(sid, data)

    def _pagemap(self, sid: str, m: dict[str, Any]) -> PageMap:
        pm = m["pagemap"]
        where = f"snapshot {sid}: {pm['file']}"
        try:
            data = (self._snaps / sid / pm["file"]).read_bytes()
        except FileNotFoundError:
            raise CorruptSnapshot(f"{where} is missing") from None
        if xxhash.xxh3_64_hexdigest(data) != pm["xxh3_64"]:
            raise CorruptSnapshot(f"{where} does not match its checksum")
        try:
            return pagemap.decode(data, pm["records"])
        except ValueError as e:
            raise CorruptSnapshot(f"{where} {e}") from None


def _page_buffer(pages: PageRuns) -> tuple[memoryview, int]:
    """Check what the engine hands over; the store trusts it from here on."""
    end = 0
    for vaddr, n in pages.runs:
        if vaddr % PAGE_SIZE or n < 0 or vaddr < end:
            raise ValueError(
                f"runs must be page-aligned, sorted and disjoint; got ({vaddr:#x}, {n})"
            )
        end = vaddr + n * PAGE_SIZE
    buf = memoryview(pages.buffer).cast("B")
    npages = pages.npages
    if len(buf) < npages * PAGE_SIZE:
        raise ValueError(f"buffer holds {len(buf)} bytes, the runs need {npages * PAGE_SIZE}")
    return buf, npages


def _page_memory(nbytes: int) -> memoryview:
    """Zeroed memory that the kernel faults in at once: a GiB bytearray is
    memset page fault by page fault, several times slower."""
    if not nbytes:
        return memoryview(bytearray())
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE
    return memoryview(mmap.mmap(-1, nbytes, flags=flags))


def _remove(path: Path) -> int:
    """Delete a file or tree; the bytes it took."""
    size = layout.tree_size(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    return size
