"""The snapshot store: commit, read, label, delete and garbage-collect snapshots."""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import logging
import mmap
import os
import re
import secrets
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import xxhash

from .. import refs
from ..errors import (
    AmbiguousSnapshot,
    CorruptSnapshot,
    StoreError,
    StoreFull,
    UnknownSnapshot,
)
from ..image import PAGE_SIZE, ImageMeta, PageMap, PageRuns
from ..private import human_size
from . import health, layout, manifest, packs, pagemap
from .health import PackStates
from .manifest import SnapshotInfo
from .packs import SLOT_BITS, Frame, PackDamaged, PackFrame

log = logging.getLogger(__name__)

_SLOT_MASK = (1 << SLOT_BITS) - 1


# In a snapshot being committed (.tmp-<id>/): the id of the pack committed with it.
PACK_MARKER = "pack" + layout.TMP_SUFFIX

COMMIT_ATTEMPTS = 3  # plans, when gc removed a pack the planned snapshot counted on


@dataclass(frozen=True)
class CleanResult:
    """What clean() did: paths are relative to the store's root."""

    removed: tuple[str, ...] = ()  # debris of interrupted commits, deletes, gcs
    repaired: tuple[str, ...] = ()  # pack indexes rebuilt from their packs
    damaged: tuple[str, ...] = ()  # what could not be read and was left alone: why
    bytes_freed: int = 0

    def lines(self) -> builtins.list[str]:
        """For people: one line per thing done or found."""
        out = []
        if self.removed:
            out.append(
                f"removed {len(self.removed)} leftover(s) of interrupted operations "
                f"({human_size(self.bytes_freed)}): {', '.join(self.removed)}"
            )
        out += [f"repaired: {r}" for r in self.repaired]
        out += [f"damaged: {d}" for d in self.damaged]
        return out


@dataclass(frozen=True)
class GcResult:
    packs_removed: int
    packs_rewritten: int
    bytes_freed: int  # net: removed minus what rewritten packs take; debris included
    cleaned: CleanResult = CleanResult()
    damaged: tuple[str, ...] = ()  # snapshots some of whose pages are in no pack
    # what was kept and why (informative: not compared)
    packs_kept: int = field(default=0, compare=False)  # whole: every page of them in use
    pages_kept: int = field(default=0, compare=False)  # pages snapshots use, counted once
    snapshots: int = field(default=0, compare=False)  # whose pages were kept
    busy: tuple[str, ...] = field(default=(), compare=False)  # a commit was writing them

    def lines(self) -> builtins.list[str]:
        """For people: what gc removed, what it kept and why."""
        out = [
            f"removed {self.packs_removed} pack(s) no snapshot uses, rewrote "
            f"{self.packs_rewritten} partly used one(s), freed {human_size(self.bytes_freed)}",
            f"kept {self.packs_kept} pack(s) whole and {self.pages_kept} page(s) in all: "
            f"the pages of {self.snapshots} snapshot(s)",
        ]
        out += [f"kept pack {p}: a snapshot being committed is writing it" for p in self.busy]
        out += self.cleaned.lines()
        if self.damaged:
            out.append(
                f"damaged: snapshot(s) {', '.join(self.damaged)} lack pages no pack holds; "
                "they cannot be restored (`jupyter-chkpt ls` says why; delete them with "
                "`jupyter-chkpt rm ID`)"
            )
        return out


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
        self._infos: dict[str, tuple[health.StatKey, SnapshotInfo, dict[str, Any]]] = {}
        self._health = health.Health()

    def free_bytes(self) -> int:
        """Bytes still free for us on the store's file system."""
        return layout.free_bytes(self.root)

    def ensure_room(self, needed: int, what: str) -> None:
        """StoreFull if fewer than `needed` bytes are free: `what` says what they are
        for and how they were counted (a caller's estimate, made before it acts)."""
        free = self.free_bytes()
        if free < needed:
            raise StoreFull(
                f"the snapshot would not fit in the store {self.root}: {what} need at least "
                f"{human_size(needed)}, and {human_size(free)} is free; nothing was done"
            )

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

        A snapshot that does not fit raises StoreFull and leaves nothing behind.
        """
        if parent is not None and not layout.ID_RE.fullmatch(parent):
            raise ValueError(f"parent {parent!r} is not a snapshot id")
        if snap_id is not None and not layout.ID_RE.fullmatch(snap_id):
            raise ValueError(f"{snap_id!r} is not a snapshot id (8 lowercase hex digits)")
        buf, _ = _page_buffer(pages)
        # hashing and the pagemap need no lock: keep other processes' wait short
        hashes, pm = prepared or self.page_map(pages, present=present, base=base)
        pagemap_data = pagemap.encode(pm)
        incremental = present is not None
        new: dict[bytes, int] = {}
        try:
            for _ in range(COMMIT_ATTEMPTS):
                with layout.locked(self.root, exclusive=False):
                    self._index.refresh(self._packs)
                    new, deps = self._plan(hashes, pm, base if incremental else None)
                # Compress and write the pages with no store lock (readers are not kept
                # waiting for seconds of compression); the pack is committed with the
                # snapshot. Two commits may store a page twice: harmless.
                written = (
                    packs.write_pack(
                        self._packs,
                        self._new_frames(buf, new),
                        level=self.level,
                        threads=self.threads,
                    )
                    if new
                    else None
                )
                try:
                    done = self._commit_snapshot(
                        meta,
                        pm,
                        pagemap_data,
                        written,
                        deps,
                        label,
                        parent,
                        snap_id,
                        tags,
                        len(new),
                    )
                finally:
                    if written is not None:
                        written.release()
                if done is not None:
                    return done
            raise StoreError(
                "the store kept losing packs this snapshot's pages are in (gc ran meanwhile)",
                "Take the snapshot again",
            )
        except OSError as e:
            if layout.is_full(e):
                raise self._full(e, len(new)) from None
            raise

    def _plan(
        self, hashes: builtins.list[bytes], pm: PageMap, base: PageMap | None
    ) -> tuple[dict[bytes, int], dict[str, int]]:
        """Under the shared lock: the pages to store (hash -> page number of its first
        occurrence in the buffer) and the packs the others are in (pack -> bytes of it
        needed). Incremental (`base`): the pages not read must still be in the store."""
        index = self._index
        locs = builtins.list(map(index.pages.get, hashes))
        new: dict[bytes, int] = {}
        if None in locs:
            for i, loc in enumerate(locs):
                if loc is None:
                    new.setdefault(hashes[i], i)
        deps = self._deps_of_locs(locs)
        if base is not None:
            known = self._health.pm_deps(base)
            if known is not None and known.keys() <= index.listing.keys():
                # the packs that held all of the base's pages are all still there
                for pack_id, end in known.items():
                    deps[pack_id] = max(deps.get(pack_id, 0), end)
            else:
                all_locs = builtins.list(map(index.pages.get, pagemap.hash_list(pm)))
                lost = sum(
                    1
                    for h, loc in zip(pagemap.hash_list(pm), all_locs, strict=True)
                    if loc is None and h not in new
                )
                if lost:
                    raise StoreError(
                        f"{lost} pages the snapshot shares with the one before it are no "
                        "longer in the store (deleted and garbage-collected since)",
                        "The next snapshot reads everything again; take one",
                    )
                deps = self._deps_of_locs(all_locs)
        return new, deps

    def _deps_of_locs(self, locs: builtins.list[int | None]) -> dict[str, int]:
        """Pack -> end of the last frame of it that the pages at `locs` are in."""
        frames = self._index.frames
        deps: dict[str, int] = {}
        for fno in {loc >> SLOT_BITS for loc in locs if loc is not None}:
            fr = frames[fno]
            end = fr.offset + fr.length
            if deps.get(fr.pack, 0) < end:
                deps[fr.pack] = end
        return deps

    def _commit_snapshot(
        self,
        meta: ImageMeta,
        pm: PageMap,
        pagemap_data: bytes,
        written: packs.WrittenPack | None,
        deps: dict[str, int],
        label: str,
        parent: str | None,
        snap_id: str | None,
        tags: dict[str, Any] | None,
        new_pages: int,
    ) -> tuple[SnapshotInfo, PageMap] | None:
        """Commit the pack and the snapshot together; None if a pack the snapshot's
        other pages are in went away since `_plan` (gc): the caller plans again."""
        with layout.locked(self.root, exclusive=True):
            self._index.refresh(self._packs)
            if not deps.keys() <= self._index.listing.keys():
                if written is not None:
                    written.abort()
                return None
            tmp: Path | None = None
            done = False
            try:
                stored_bytes = 0
                if written is not None:
                    stored_bytes = written.nbytes
                    deps = {**deps, written.pack_id: packs.frames_end(written.frames)}
                snap_id, tmp = self._claim_id(snap_id)
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
                if written is not None:
                    # names the pack for clean() should we die between its commit and
                    # the rename below: then nothing uses it, it is debris (FORMAT.md §7)
                    layout.write_file(tmp / PACK_MARKER, written.pack_id.encode())
                layout.fsync_dir(tmp)
                if written is not None:
                    written.commit()
                    self._index.note_written(self._packs, written)
                os.rename(tmp, self._snaps / snap_id)
                done, tmp = True, None
                layout.fsync_dir(self._snaps)
            except BaseException:
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
                if written is not None and not done:
                    # nobody can have used its pages: we held the exclusive lock all along
                    written.abort()
                raise
            if written is not None:
                # a leftover marker in a committed snapshot means nothing (clean removes it)
                with contextlib.suppress(OSError):
                    os.unlink(self._snaps / snap_id / PACK_MARKER)
            self._health.committed(snap_id, self._snaps / snap_id / manifest.PAGEMAP, deps)
        self._health.remember_pm(pm, deps)
        return SnapshotInfo.from_manifest(m), pm

    def _full(self, e: OSError, new_pages: int) -> StoreFull:
        raw = new_pages * PAGE_SIZE
        return StoreFull(
            f"the snapshot does not fit in the store {self.root} ({e.strerror}): its "
            f"{new_pages} new pages are {human_size(raw)} before compression, plus its page map, "
            f"and {human_size(self.free_bytes())} is free; nothing was stored"
        )

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
                    layout.mkdir_private(tmp)
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
            try:
                layout.replace_file(self._snaps / sid / manifest.MANIFEST, manifest.dumps(m))
            except OSError as e:
                if layout.is_full(e):
                    raise StoreFull(
                        f"no space left in {self.root} to change the label "
                        f"({human_size(self.free_bytes())} free); the label is unchanged"
                    ) from None
                raise

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
            self._health.forget(sid)
            self._infos.pop(sid, None)

    # --- reading ------------------------------------------------------------

    def list(self, pid: int | None = None) -> builtins.list[SnapshotInfo]:
        """Oldest first, damaged snapshots included: their `damage` says why they
        cannot be restored. Of a snapshot whose manifest is unreadable only what can
        be made out is told (see manifest.salvage; pid 0 if not even whose it is)."""
        infos = []
        with layout.locked(self.root, exclusive=False):
            states = self._states()
            for sid in self._ids():
                info = self._checked_info(sid, states)
                if pid is None or info.pid == pid:
                    infos.append(info)
        return sorted(infos, key=lambda i: (i.created, i.id))

    def check(self, snap_id: str) -> str:
        """Why the snapshot cannot be restored, "" if it can as far as a listing
        checks (pages are verified when loaded)."""
        with layout.locked(self.root, exclusive=False):
            return self._checked_info(self._resolve(snap_id), self._states()).damage

    def _states(self) -> PackStates:
        self._index.refresh(self._packs)
        return PackStates.read(self._packs, self._index.listing, self._index.unreadable)

    def _checked_info(self, sid: str, states: PackStates) -> SnapshotInfo:
        try:
            info, desc = self._info(sid)
        except StoreError as e:
            return self._salvage(sid, e)
        damage = self._damage(sid, desc, states)
        return dataclasses.replace(info, damage=damage) if damage else info

    def _salvage(self, sid: str, error: StoreError) -> SnapshotInfo:
        path = self._snaps / sid / manifest.MANIFEST
        try:
            data: bytes | None = path.read_bytes()
        except OSError:
            data = None
        try:
            created = os.stat(self._snaps / sid).st_mtime
        except OSError:
            created = 0.0
        damage = error.message.removeprefix(f"snapshot {sid}: ")
        return manifest.salvage(sid, data, damage, created)

    def _damage(self, sid: str, desc: dict[str, Any], states: PackStates) -> str:
        """The cached verdict of health.py, or a fresh one: page map readable, every
        page in a committed pack with a readable idx, those packs long enough."""
        path = self._snaps / sid / desc["file"]
        key = health.stat_key(path)
        cached = self._health.cached(sid, key, states)
        if cached is not None:
            return cached
        deps: dict[str, int] | None = None
        try:
            pm = self._pagemap(sid, desc)
        except CorruptSnapshot as e:
            damage = e.message.removeprefix(f"snapshot {sid}: ")
        else:
            damage, deps = self._locate(pm, states)
            if not damage:
                self._health.remember_pm(pm, deps)
                damage = self._health.known_bad(sid, states)
        self._health.record(sid, key, damage, deps, states)
        return damage

    def _locate(self, pm: PageMap, states: PackStates) -> tuple[str, dict[str, int]]:
        """What is wrong with where the pages of `pm` are ("" if nothing), and the
        packs they are in."""
        locs = builtins.list(map(self._index.pages.get, pagemap.hash_list(pm)))
        deps = self._deps_of_locs(locs)
        if None in locs:
            first = int(pm.vaddrs[locs.index(None)])
            return (
                f"{locs.count(None)} of its pages are in no pack of the store "
                f"(the first at {first:#x}){states.index_hint()}",
                deps,
            )
        return states.truncated(deps), deps

    def _info(self, sid: str) -> tuple[SnapshotInfo, dict[str, Any]]:
        """A manifest is parsed and checked once (a kernel's is hundreds of KiB of
        JSON); only a relabel rewrites it, which changes its file. Also returns
        its `pagemap` member."""
        key = health.stat_key(self._snaps / sid / manifest.MANIFEST)
        if key is None:
            raise CorruptSnapshot(f"snapshot {sid}: {manifest.MANIFEST} is missing")
        cached = self._infos.get(sid)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        m = self._manifest(sid)
        info = SnapshotInfo.from_manifest(m)
        self._infos[sid] = (key, info, m["pagemap"])
        return info, m["pagemap"]

    def resolve(self, ref: str) -> str:
        """The id of the snapshot `ref` names: a full id or a unique prefix of 4+ characters."""
        with layout.locked(self.root, exclusive=False):
            return self._resolve(ref)

    def info(self, snap_id: str) -> SnapshotInfo:
        with layout.locked(self.root, exclusive=False):
            return self._info(self._resolve(snap_id))[0]

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
        """The image's meta and page map, checked, and refused if some of its pages
        are in no pack (as a listing would say); no page contents."""
        with layout.locked(self.root, exclusive=False):
            sid = self._resolve(snap_id)
            m = self._manifest(sid)
            pm = self._pagemap(sid, m["pagemap"])
            states = self._states()
            damage, deps = self._locate(pm, states)
            damage = damage or self._health.known_bad(sid, states)
            if damage:
                raise self._corrupt(sid, damage, states)
            self._health.remember_pm(pm, deps)
            return ImageMeta.from_json(m["meta"]), pm

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
                meta, pm = ImageMeta.from_json(m["meta"]), self._pagemap(sid, m["pagemap"])
            part = pm if runs is None else pm.select(runs)
            self._index.refresh(self._packs)
            out = _page_memory(len(part) * PAGE_SIZE)
            try:
                self._fill(out, part.vaddrs.tolist(), pagemap.hash_list(part))
            except PackDamaged as e:
                states = self._states()
                self._health.found_bad(sid, e.pack, states, str(e))
                raise self._corrupt(sid, str(e), states) from None
        return meta, PageRuns(out, pagemap.runs_from_vaddrs(part.vaddrs, meta.mappings)), pm

    def _corrupt(self, sid: str, damage: str, states: PackStates) -> CorruptSnapshot:
        hint = states.index_hint()
        if "in no pack" in damage and hint:
            if hint not in damage:
                damage += hint
            return CorruptSnapshot(
                f"snapshot {sid}: {damage}",
                "Run `jupyter-chkpt gc`: it rebuilds missing or damaged pack indexes from "
                "their packs (and removes nothing a snapshot uses); if pages are still "
                "missing, delete the snapshot with `jupyter-chkpt rm ID`",
            )
        return CorruptSnapshot(f"snapshot {sid}: {damage}")

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
                    raise PackDamaged(f"pack {pack_id} is missing", pack_id) from None
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

    # --- cleaning and garbage collection -------------------------------------

    def clean(self) -> CleanResult:
        """Remove what interrupted commits, deletes, relabels and gcs left behind, and
        rebuild missing or damaged pack indexes from their packs; cheap unless there
        is such a pack (then every page map is read, to know whether its pages are
        needed). A pack a writer holds is never touched; nothing a snapshot uses is
        removed; a pack that cannot be read is left alone and reported."""
        with layout.locked(self.root, exclusive=True):
            self._reread_indexes()
            removed, freed, orphans = self._remove_snapshot_debris()
            result = self._clean_packs(None, orphans)
            return dataclasses.replace(
                result,
                removed=tuple(removed) + result.removed,
                bytes_freed=freed + result.bytes_freed,
            )

    def gc(self) -> GcResult:
        """clean(), then remove the pages no snapshot uses. Nothing a snapshot uses is
        ever removed: gc refuses if a snapshot is unreadable (it cannot know which
        pages that one needs), or if pages some snapshot needs are in no readable
        pack while a pack cannot be read whole (they may be in it)."""
        with layout.locked(self.root, exclusive=True):
            self._reread_indexes()
            removed, freed, orphans = self._remove_snapshot_debris()
            live = self._live_pages()  # raises for an unreadable snapshot
            cleaned = self._clean_packs(live, orphans)
            cleaned = dataclasses.replace(
                cleaned,
                removed=tuple(removed) + cleaned.removed,
                bytes_freed=freed + cleaned.bytes_freed,
            )
            freed = cleaned.bytes_freed
            self._index.refresh(self._packs)
            missing = {h: sid for h, sid in live.items() if h not in self._index.pages}
            if missing:
                suspects = self._unreadable_packs()
                users = sorted(set(missing.values()))
                if suspects:
                    raise CorruptSnapshot(
                        f"snapshot(s) {', '.join(users)} use {len(missing)} page(s) found in no "
                        f"readable pack, and {'; '.join(suspects)}: they may be in it, so gc "
                        "stopped before removing any pack a snapshot may need",
                        "Put the damaged packs back from a backup, or delete the snapshots "
                        f"that lack pages (`jupyter-chkpt rm {' '.join(users)}`), then run "
                        "`jupyter-chkpt gc` again",
                    )
            claimed: set[bytes] = set()  # a page copied into several packs lives in the first
            dead: builtins.list[str] = []
            busy: builtins.list[str] = []
            whole = 0
            partial: builtins.list[
                tuple[str, builtins.list[tuple[PackFrame, builtins.list[int]]]]
            ] = []
            for pack_id in sorted(self._index.packs):
                if packs.pack_in_use(self._packs, pack_id):
                    busy.append(pack_id)
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
                else:
                    whole += 1
            if partial:
                # the new pack is committed before any old one goes: a crash leaves duplicates, never holes
                try:
                    written = packs.write_pack(
                        self._packs,
                        self._live_frames(partial, live),
                        level=self.level,
                        threads=self.threads,
                    )
                except OSError as e:
                    if layout.is_full(e):
                        raise StoreFull(
                            f"gc needs room to copy the pages still in use out of partly "
                            f"unused packs, and {human_size(self.free_bytes())} is free in "
                            f"{self.root}; gc removed nothing but debris",
                            "Delete snapshots you no longer need, or free disk space, "
                            "then run gc again",
                        ) from None
                    raise
                try:
                    written.commit()
                finally:
                    written.release()
                freed -= written.nbytes
            for pack_id in dead + [p for p, _ in partial]:
                # idx first: a crash in between leaves an idx-less pack, which is debris
                freed += _remove(self._packs / f"{pack_id}.idx") + _remove(
                    self._packs / f"{pack_id}.pack"
                )
            layout.fsync_dir(self._packs)
            self._index.refresh(self._packs)
            return GcResult(
                packs_removed=len(dead),
                packs_rewritten=len(partial),
                bytes_freed=freed,
                cleaned=cleaned,
                damaged=tuple(sorted(set(missing.values()))),
                packs_kept=whole,
                pages_kept=len(claimed),
                snapshots=len(self._ids()),
                busy=tuple(busy),
            )

    def _reread_indexes(self) -> None:
        """Forget what this process read of the pack indexes: an idx damaged in place
        since then (same inode) must be seen as it is now before deciding what to remove."""
        self._index = packs.PackIndex()

    def _remove_snapshot_debris(self) -> tuple[builtins.list[str], int, builtins.list[str]]:
        """Entries of snapshots/ that are not snapshots (.tmp-, .del-) and *.tmp files
        in snapshot directories: made and finished under the exclusive lock, so
        whatever is left of them now was interrupted. Also returns the packs that
        interrupted commits named in their PACK_MARKER (committed, maybe, but for
        a snapshot that never was)."""
        removed, freed, orphans = [], 0, []
        for name in sorted(os.listdir(self._snaps)):
            path = self._snaps / name
            if name.startswith("."):
                if name.startswith(layout.TMP_PREFIX):
                    with contextlib.suppress(OSError, UnicodeDecodeError):
                        pack_id = (path / PACK_MARKER).read_bytes().decode()
                        if layout.PACK_ID_RE.fullmatch(pack_id):
                            orphans.append(pack_id)
                freed += _remove(path)
                removed.append(f"{layout.SNAPSHOTS}/{name}")
            elif layout.ID_RE.fullmatch(name) and path.is_dir():
                for stray in sorted(path.glob("*" + layout.TMP_SUFFIX)):
                    freed += _remove(stray)
                    removed.append(f"{layout.SNAPSHOTS}/{name}/{stray.name}")
        if removed:
            layout.fsync_dir(self._snaps)
        return removed, freed, orphans

    def _clean_packs(
        self, live: dict[bytes, str] | None, orphans: builtins.list[str]
    ) -> CleanResult:
        """Debris in packs/ and packs without a readable idx (see clean). `live`: every
        page a snapshot uses, if known; else worked out here if needed, and if a
        snapshot is unreadable, idx-less packs are repaired but never removed.
        `orphans`: committed packs of interrupted commits; removed unless a snapshot
        committed since uses pages that only they hold."""
        removed: builtins.list[str] = []
        repaired: builtins.list[str] = []
        damaged: builtins.list[str] = []
        freed = 0
        self._index.refresh(self._packs)
        names = set(os.listdir(self._packs))
        candidates: builtins.list[tuple[str, str]] = []  # (pack id, what is wrong)
        for name in sorted(names):
            pack_id, _, ext = name.partition(".")
            if name.endswith(layout.TMP_SUFFIX) or (
                ext == "idx" and f"{pack_id}.pack" not in names
            ):
                # an idx being written, or one that describes nothing
                if not packs.pack_in_use(self._packs, pack_id):
                    freed += _remove(self._packs / name)
                    removed.append(f"{layout.PACKS}/{name}")
            elif ext == "pack":
                if f"{pack_id}.idx" not in names:
                    # Empty: a writer without O_TMPFILE may be between creating it and
                    # taking its flock (pack_in_use cannot tell yet): leave it be.
                    if (self._packs / name).stat().st_size and not packs.pack_in_use(
                        self._packs, pack_id
                    ):
                        candidates.append((pack_id, "it had no idx"))
                elif pack_id in self._index.unreadable and not packs.pack_in_use(
                    self._packs, pack_id
                ):
                    candidates.append(
                        (pack_id, f"its idx was damaged ({self._index.unreadable[pack_id]})")
                    )
        if candidates:
            scans: dict[str, packs.PackScan] = {}
            for pack_id, _ in candidates:
                try:
                    scans[pack_id] = packs.scan_pack(self._packs / f"{pack_id}.pack")
                except OSError as e:
                    scans[pack_id] = packs.PackScan([], 0, 0, f"cannot be opened ({e.strerror})")
            if live is None:
                try:
                    live = self._live_pages()
                except StoreError as e:
                    log.warning("clean: packs without an idx are kept: %s", e)
            present = self._index.pages
            found = {h for sc in scans.values() for fr in sc.frames for h in fr.hashes}
            missing = (
                None if live is None else {h for h in live if h not in present and h not in found}
            )
            for pack_id, why in candidates:
                sc = scans[pack_id]
                name = f"{layout.PACKS}/{pack_id}"
                needed = live is None or any(
                    h in live and h not in present for fr in sc.frames for h in fr.hashes
                )
                tail = f", unreadable from byte {sc.end} on: {sc.problem}" if sc.problem else ""
                if sc.frames and needed:
                    layout.replace_file(self._packs / f"{pack_id}.idx", packs.encode_idx(sc.frames))
                    repaired.append(
                        f"{name}.idx rebuilt from its pack ({sc.npages} pages; {why}{tail})"
                    )
                elif sc.problem and (missing is None or missing):
                    damaged.append(
                        f"{name}.pack left alone: {why}, and it cannot be read "
                        f"{'whole' if sc.frames else 'at all'} ({sc.problem}), while "
                        + (
                            "a snapshot is unreadable"
                            if missing is None
                            else f"{len(missing)} page(s) snapshots use are in no readable pack"
                        )
                    )
                else:  # nothing in it that a snapshot needs and cannot find elsewhere
                    for ext in ("idx", "pack"):
                        if (self._packs / f"{pack_id}.{ext}").exists():
                            freed += _remove(self._packs / f"{pack_id}.{ext}")
                            removed.append(f"{name}.{ext}")
        orphans = [
            p
            for p in dict.fromkeys(orphans)
            if p in self._index.packs and not packs.pack_in_use(self._packs, p)
        ]
        if orphans and live is None:
            try:
                live = self._live_pages()
            except StoreError as e:
                log.warning("clean: packs of interrupted commits are kept: %s", e)
        if orphans and live is not None:
            frames, pages = self._index.frames, self._index.pages
            only_there: dict[str, int] = {}  # pages snapshots find in that pack alone
            for h in live:
                loc = pages.get(h)
                if loc is not None and frames[loc >> SLOT_BITS].pack in orphans:
                    pack_id = frames[loc >> SLOT_BITS].pack
                    only_there[pack_id] = only_there.get(pack_id, 0) + 1
            for pack_id in orphans:
                name = f"{layout.PACKS}/{pack_id}"
                if only_there.get(pack_id):
                    log.info(
                        "clean: kept %s of an interrupted commit: snapshots committed since "
                        "use %d of its pages",
                        name,
                        only_there[pack_id],
                    )
                    continue
                for ext in ("idx", "pack"):  # idx first: see gc
                    freed += _remove(self._packs / f"{pack_id}.{ext}")
                    removed.append(f"{name}.{ext}")
        if removed or repaired:
            layout.fsync_dir(self._packs)
            self._index.refresh(self._packs)
        return CleanResult(tuple(removed), tuple(repaired), tuple(damaged), freed)

    def _unreadable_packs(self) -> builtins.list[str]:
        """Packs that may hold pages no idx describes: idx-less packs left alone, and
        committed packs with bytes beyond their last indexed frame (a damaged tail
        that a rebuilt idx could not cover)."""
        out = []
        names = set(os.listdir(self._packs))
        for name in sorted(names):
            pack_id, _, ext = name.partition(".")
            if ext != "pack":
                continue
            if f"{pack_id}.idx" not in names or pack_id in self._index.unreadable:
                out.append(f"pack {pack_id} has no readable idx and cannot be read")
            elif pack_id in self._index.ends:
                extra = (self._packs / name).stat().st_size - self._index.ends[pack_id]
                if extra > 0:
                    out.append(f"pack {pack_id} has {extra} bytes its idx does not describe")
        return out

    def _live_pages(self) -> dict[bytes, str]:
        """Every page some snapshot uses -> one such snapshot."""
        live: dict[bytes, str] = {}
        for sid in self._ids():
            try:
                hashes = pagemap.hash_list(self._pagemap(sid, self._manifest(sid)["pagemap"]))
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
        if not key:
            raise UnknownSnapshot(
                "no snapshot given", "Give a snapshot id or a unique prefix of it"
            )
        ids = self._ids()
        if key in ids:
            return key
        if not re.fullmatch(r"[0-9a-f]{1,8}", key):
            raise UnknownSnapshot(f"{ref!r} is not a snapshot id (ids are 8 hex digits)")
        if len(key) < refs.MIN_PREFIX:  # the one minimum for the store, the helper and the CLI
            raise AmbiguousSnapshot(
                f"snapshot prefix {ref!r} is too short: at least {refs.MIN_PREFIX} characters "
                "are needed"
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

    def _pagemap(self, sid: str, pm: dict[str, Any]) -> PageMap:
        """The page map a manifest's `pagemap` member describes, checked."""
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
