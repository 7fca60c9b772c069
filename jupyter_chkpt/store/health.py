"""Whether a snapshot can still be restored, remembered so that listings stay cheap.

A listing says of every snapshot why it cannot be restored, if it cannot: its
manifest or page map is unreadable, or some of its pages are in no pack. Finding
out means reading the page map and looking every page up (about 0.1 s per GiB of
image), so the verdict is remembered with what it depends on:

* the page map file's inode, mtime and size (it is never rewritten);
* a sound snapshot's *dependencies*: the packs its pages are in, with how many
  bytes of each it needs. Packs are immutable and their ids never reused, so the
  verdict holds while each of those packs is committed, has a readable idx and is
  at least that long: new packs do not matter, which is what keeps a listing
  after every commit cheap;
* a damaged snapshot's verdict holds while the set of packs is exactly the same.

Page contents are not read: a load checks every page it hands out, and a load that
found a damaged frame is remembered here (while that pack file is unchanged), so
that listings say so from then on.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

from ..image import PageMap

StatKey = tuple[int, int, int]  # inode, mtime_ns, size
PackState = tuple[int, int, int]  # idx inode, .pack size, .pack mtime_ns


def stat_key(path: Path) -> StatKey | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class PackStates:
    """The committed packs as one listing saw them."""

    packs: dict[str, PackState]
    unreadable: dict[str, str]  # packs whose idx cannot be read: why
    unindexed: int  # .pack files without an idx (other than those being written)

    @classmethod
    def read(
        cls, packs_dir: Path, listing: dict[str, int], unreadable: dict[str, str]
    ) -> PackStates:
        """`listing` and `unreadable`: the pack index's, refreshed just before."""
        states: dict[str, PackState] = {}
        for pack_id, idx_ino in listing.items():
            try:
                st = os.stat(packs_dir / f"{pack_id}.pack")
            except FileNotFoundError:
                continue
            states[pack_id] = (idx_ino, st.st_size, st.st_mtime_ns)
        unindexed = sum(
            1 for n in os.listdir(packs_dir) if n.endswith(".pack") and n[:-5] not in listing
        )
        return cls(states, dict(unreadable), unindexed)

    def token(self) -> frozenset[tuple[str, PackState]]:
        return frozenset(self.packs.items())

    def fails(self, deps: dict[str, int]) -> bool:
        """Whether a pack of `deps` is gone, unreadable or shorter than needed."""
        for pack_id, end in deps.items():
            state = self.packs.get(pack_id)
            if state is None or pack_id in self.unreadable or state[1] < end:
                return True
        return False

    def truncated(self, deps: dict[str, int]) -> str:
        """What is wrong with the (present) packs of `deps`, "" if nothing."""
        for pack_id, end in sorted(deps.items()):
            state = self.packs.get(pack_id)
            if state is not None and state[1] < end:
                return f"pack {pack_id} is truncated ({state[1]} bytes; its idx needs {end})"
        return ""

    def index_hint(self) -> str:
        """Packs whose idx is missing or damaged hold pages nobody can find until
        their idx is rebuilt: say so where pages are missing."""
        n = len(self.unreadable) + self.unindexed
        return f"; {n} pack(s) of the store have a missing or damaged idx" if n else ""


@dataclass
class _Verdict:
    pagemap: StatKey | None
    damage: str
    deps: dict[str, int] | None  # of a sound snapshot
    token: frozenset[tuple[str, PackState]] | None  # of a damaged one


class Health:
    """Verdicts per snapshot id, and the dependencies of page maps in memory (so that
    an incremental commit need not look its base's pages up again)."""

    def __init__(self) -> None:
        self._verdicts: dict[str, _Verdict] = {}
        self._bad: dict[str, tuple[str, PackState | None, str]] = {}  # sid -> pack, state, why
        self._pms: dict[int, tuple[weakref.ref[PageMap], dict[str, int]]] = {}
        self._mutex = threading.Lock()

    def cached(self, sid: str, pagemap: StatKey | None, states: PackStates) -> str | None:
        """The verdict, if what it depends on has not changed; else None."""
        v = self._verdicts.get(sid)
        if v is None or v.pagemap != pagemap:
            return None
        if v.damage:
            return v.damage if v.token == states.token() else None
        assert v.deps is not None
        if states.fails(v.deps):
            return None
        return self.known_bad(sid, states)

    def record(
        self,
        sid: str,
        pagemap: StatKey | None,
        damage: str,
        deps: dict[str, int] | None,
        states: PackStates | None,
    ) -> None:
        token = states.token() if damage and states is not None else None
        self._verdicts[sid] = _Verdict(pagemap, damage, None if damage else deps, token)

    def committed(self, sid: str, pagemap_path: Path, deps: dict[str, int]) -> None:
        self.record(sid, stat_key(pagemap_path), "", deps, None)

    def found_bad(self, sid: str, pack: str | None, states: PackStates, why: str) -> None:
        """A load found a damaged frame in `pack`: listings say so while it is unchanged."""
        if pack is not None:
            self._bad[sid] = (pack, states.packs.get(pack), why)

    def known_bad(self, sid: str, states: PackStates) -> str:
        bad = self._bad.get(sid)
        if bad is None:
            return ""
        pack, state, why = bad
        if states.packs.get(pack) != state:
            del self._bad[sid]
            return ""
        return why

    def forget(self, sid: str) -> None:
        self._verdicts.pop(sid, None)
        self._bad.pop(sid, None)

    def pm_deps(self, pm: PageMap) -> dict[str, int] | None:
        """The packs that held every page of `pm` when this store last saw it whole."""
        with self._mutex:
            entry = self._pms.get(id(pm))
        if entry is None or entry[0]() is not pm:
            return None
        return entry[1]

    def remember_pm(self, pm: PageMap, deps: dict[str, int]) -> None:
        with self._mutex:
            for key in [k for k, (ref, _) in self._pms.items() if ref() is None]:
                del self._pms[key]
            self._pms[id(pm)] = (weakref.ref(pm), deps)
