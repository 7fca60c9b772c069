"""Which pages hold data, and which were written since the last snapshot or restore.

`present_pages` finds the pages of a process that hold data of their own with
PAGEMAP_SCAN (falling back to reading /proc/PID/pagemap before Linux 6.7).

A `Tracker` (kept by the helper for each process it serves) adds dirty-page
tracking: a userfaultfd the process is made to create, in async write-protect
mode, on which the helper registers the process's private mappings. Every write
to a write-protected page clears the protection; PAGEMAP_SCAN then reports the
page written and can protect it again, in the same call, while the process is
frozen. Its `base` is the page map the process's memory equals but for the
pages written since it was armed: the last snapshot taken or restored.

What the tracker cannot vouch for counts as written: mappings not registered
with it (new, moved or replaced since the last arm: the kernel refuses the scan
with EPERM), shared anonymous memory (another process may write it), and
everything when there is no base.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from ..errors import EngineError
from ..image import Mapping, PageMap
from ..proc import fds, uffd
from ..proc.maps import Pagemap, read_maps, read_maps_with_flags, same_layout
from ..proc.pagescan import (
    PAGE_IS_FILE,
    PAGE_IS_PRESENT,
    PAGE_IS_SWAPPED,
    PAGE_IS_WRITTEN,
    NotSupported,
    PageScanner,
    Region,
    runs_of,
)
from . import runs as R
from .freeze import Frozen
from .keeper import FdKeeper
from .layout import dumpable

_DATA = PAGE_IS_PRESENT | PAGE_IS_SWAPPED


@dataclass
class PageState:
    """Pages with data of their own now, and those of them that may differ from the
    base image (all of them when nothing is tracked)."""

    present: list[R.Run]
    written: list[R.Run]
    scanned: bool = True  # False: /proc/PID/pagemap was read (no PAGEMAP_SCAN here)


def _regions(sc: PageScanner, maps: list[Mapping]) -> list[tuple[Mapping, Region]]:
    """Regions of pages with data of their own, per dumpable mapping, from one scan of
    the whole address space (one ioctl, whatever the number of mappings)."""
    dumpables = [m for m in maps if dumpable(m)]
    if not dumpables:
        return []
    regions = sc.scan(dumpables[0].start, dumpables[-1].end, anyof=_DATA)
    out: list[tuple[Mapping, Region]] = []
    i = 0
    for m in dumpables:
        while i < len(regions) and regions[i][1] <= m.start:
            i += 1
        j = i
        while j < len(regions) and regions[j][0] < m.end:
            start, end, cats = regions[j]
            # in a private file mapping only copied (anonymous) pages differ from the file
            if not (m.is_file and cats & PAGE_IS_FILE):
                out.append((m, (max(start, m.start), min(end, m.end), cats)))
            j += 1
    return out


def present_pages(pid: int, maps: list[Mapping]) -> PageState:
    """Pages with data of their own over all dumpable mappings, all counted written.

    Pages never touched (not present) are left out rather than stored as zeros.
    """
    try:
        with PageScanner(pid) as sc:
            runs = R.union(runs_of([r for _, r in _regions(sc, maps)]))
        return PageState(runs, runs)
    except NotSupported:
        pass
    present: list[R.Run] = []
    with Pagemap(pid) as pagemap:
        for m in maps:
            if dumpable(m):
                present.extend(pagemap.runs(m.start, m.end, anon_only=m.is_file))
    return PageState(present, present, scanned=False)


@dataclass
class Tracker:
    """Dirty-page tracking of one process, driven by the helper."""

    pid: int
    fd: int  # the process's userfaultfd, held by the helper
    base: PageMap | None = None  # what memory equals but for pages written since the arm
    base_id: str | None = None
    _base_runs: list[R.Run] = field(default_factory=list)

    @classmethod
    def start(cls, fz: Frozen, pidfd: int) -> Tracker:
        """Have the frozen process create its userfaultfd and hand it over.

        Raises OSError or EngineError where this cannot work (no pidfd_getfd, no
        async write-protect before Linux 6.7, userfaultfd forbidden)."""
        inj = fz.injector
        flags = os.O_CLOEXEC | os.O_NONBLOCK
        remote = inj.call("userfaultfd", flags)
        if remote == -errno.EPERM:  # vm.unprivileged_userfaultfd=0: user faults only
            remote = inj.call("userfaultfd", flags | uffd.UFFD_USER_MODE_ONLY)
        if remote < 0:
            raise EngineError(f"userfaultfd in PID {fz.pid} failed: {os.strerror(-remote)}")
        try:
            fd = fds.pidfd_getfd(pidfd, remote)
        finally:
            inj.call("close", remote)  # the process keeps no trace of it in its fd table
        try:
            uffd.enable_async_wp(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(fz.pid, fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # unregisters everything
            self.fd = -1
        self.set_base(None, None)

    def set_base(self, snap_id: str | None, pm: PageMap | None) -> None:
        self.base_id, self.base = snap_id, pm
        self._base_runs = pm.runs() if pm is not None else []

    @property
    def base_runs(self) -> list[R.Run]:
        return self._base_runs

    def scan_unfrozen(self, maps: list[Mapping]) -> PageState:
        """A look at a running process (nothing re-armed, nothing registered): what
        a restore is likely to have to write, to load before freezing."""
        return self._scan(self.pid, maps, rearm=False)

    def scan(self, fz: Frozen, maps: list[Mapping], *, rearm: bool) -> PageState:
        """While frozen: pages with data, and those that may differ from the base.

        With `rearm`, the written pages are write-protected again and mappings not
        tracked yet are registered, so that the next scan reports the writes from
        now on: only call it when the base is about to become what memory is now.
        """
        return self._scan(fz.pid, maps, rearm=rearm)

    def _scan(self, pid: int, maps: list[Mapping], *, rearm: bool) -> PageState:
        # A page shows as written unless a write-protection of ours is on it: so all
        # pages of mappings not registered with our uffd (new, moved, replaced since,
        # shared, or refused by the kernel) count as written, as they must.
        with PageScanner(pid) as sc:
            parts = _regions(sc, maps)
            if rearm:
                touched: dict[Mapping, tuple[int, int]] = {}
                for m, (start, end, cats) in parts:
                    if cats & PAGE_IS_WRITTEN and not m.is_shared_anon:
                        lo, hi = touched.get(m, (start, end))
                        touched[m] = (min(lo, start), max(hi, end))
                for m, (lo, hi) in touched.items():
                    try:
                        sc.scan(lo, hi, anyof=_DATA, write_protect=True)
                    except PermissionError:  # not ours yet: register the whole mapping
                        if uffd.register_wp(self.fd, m.start, m.end):
                            sc.scan(m.start, m.end, anyof=_DATA, write_protect=True)
        present = R.union(runs_of([r for _, r in parts]))
        written = runs_of([r for _, r in parts if r[2] & PAGE_IS_WRITTEN])
        if self.base is None:
            return PageState(present, present)
        # pages that came to hold data since (a read fault maps the zero page)
        return PageState(present, R.union(written, R.subtract(present, self._base_runs)))


@dataclass
class Tracking:
    """A helper's dirty-page tracking of one process: its tracker once started, or
    why none could be (then every snapshot reads everything, as without it)."""

    tracker: Tracker | None = None
    unavailable: str | None = None
    # the mappings with VmFlags as the last snapshot read them (smaps is slow)
    flagged: list[Mapping] | None = None

    def maps_with_flags(self, pid: int) -> list[Mapping]:
        """The mappings with VmFlags; reused from the last snapshot while the layout
        is the same (a flag changed on a whole mapping and nothing else is missed)."""
        if self.flagged is None or not same_layout(self.flagged, read_maps(pid)):
            self.flagged = read_maps_with_flags(pid)
        return self.flagged

    def ensure(self, fz: Frozen, keeper: FdKeeper | None) -> Tracker | None:
        if self.tracker is None and self.unavailable is None:
            try:
                if keeper is not None:
                    self.tracker = Tracker.start(fz, keeper.pidfd(fz.pid))
                else:
                    pidfd = os.pidfd_open(fz.pid)
                    try:
                        self.tracker = Tracker.start(fz, pidfd)
                    finally:
                        os.close(pidfd)
            except (OSError, EngineError) as e:
                self.unavailable = str(e)
        return self.tracker

    def drop_base(self) -> None:
        """Forget what memory was known to equal: the next snapshot reads everything."""
        if self.tracker is not None:
            self.tracker.set_base(None, None)

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None


def blocking_uffd(pid: int, maps: list[Mapping]) -> list[Mapping]:
    """Mappings registered with a userfaultfd whose faults wait for a handler (missing
    or minor faults, or synchronous write-protection): writing them while the process
    is frozen would hang. Async write-protection (a tracker's) never waits."""
    found = [m for m in maps if m.flags & {"um", "ui"}]
    wp = [m for m in maps if "uw" in m.flags and m not in found]
    if wp:
        with PageScanner(pid) as sc:
            for m in wp:
                try:
                    sc.scan(m.start, m.end, anyof=_DATA, tracked=True)
                except (PermissionError, NotSupported):
                    found.append(m)
    return found
