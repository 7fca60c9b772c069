"""FdKeeper: duplicates of a target's fds, held by the helper so that a restore
can put back files the process has closed since a snapshot.

A held duplicate keeps its open file description alive: a socket's peer sees
no close, a pipe's reader no end-of-file, until the duplicate is released. So
duplicates are owned by snapshots (one duplicate per description, shared by
all snapshots that contain it) and are closed when the last owning snapshot
is released, or all at once when the target exits (`prune`): nothing is held
for a process that can no longer be restored. docs/ARCHITECTURE.md has the
whole strategy.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from dataclasses import dataclass, field

from ..image import FileImage
from ..proc import fds


@dataclass
class _Held:
    fd: int  # ours
    dev: int
    ino: int
    owners: set[str] = field(default_factory=set)


@dataclass
class _Process:
    pidfd: int
    held: list[_Held] = field(default_factory=list)
    by_key: dict[str, dict[int, _Held]] = field(default_factory=dict)  # key -> target fd -> held


class FdKeeper:
    """Holds duplicates per (process, snapshot key); thread-safe."""

    def __init__(self) -> None:
        self._procs: dict[int, _Process] = {}
        self._lock = threading.Lock()
        # written when a process is added: wakes wait_for_exit to watch it too
        self._added = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def pidfd(self, pid: int) -> int:
        """Our pidfd for `pid`, opened on first use and kept until the process is pruned."""
        with self._lock:
            return self._proc(pid).pidfd

    def _proc(self, pid: int) -> _Process:
        if pid not in self._procs:
            self._procs[pid] = _Process(pidfd=os.pidfd_open(pid))
            os.eventfd_write(self._added, 1)
        return self._procs[pid]

    def wait_for_exit(self, timeout: float) -> None:
        """Return when a process we hold files for exits (or a new one is added, or
        `timeout` passes): `prune` then releases at once what it held. A kernel
        restart binds the same ports again right away: a held listening socket would
        make the new kernel fail to start."""
        poller = select.poll()
        poller.register(self._added, select.POLLIN)
        with self._lock:
            for p in self._procs.values():
                poller.register(p.pidfd, select.POLLIN)
        poller.poll(int(timeout * 1000))
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._added)

    def hold(self, pid: int, key: str, files: list[FileImage]) -> None:
        """Hold a duplicate of every listed fd of the (frozen) target under `key`."""
        with self._lock:
            proc = self._proc(pid)
            owned = proc.by_key.setdefault(key, {})
            for f in files:
                try:
                    held = self._find(pid, proc, f) or self._new(proc, f)
                except OSError as e:
                    if e.errno not in fds.NOT_PERMITTED:
                        raise
                    return  # this host forbids pidfd_getfd: nothing can be held
                held.owners.add(key)
                owned[f.fd] = held

    def _find(self, pid: int, proc: _Process, f: FileImage) -> _Held | None:
        for held in proc.held:
            if (held.dev, held.ino) == (f.dev, f.ino) and fds.same_file(
                pid, f.fd, os.getpid(), held.fd
            ):  # None (cannot tell): a duplicate of its own
                return held
        return None

    def _new(self, proc: _Process, f: FileImage) -> _Held:
        held = _Held(fds.pidfd_getfd(proc.pidfd, f.fd), f.dev, f.ino)
        proc.held.append(held)
        return held

    def lookup(self, pid: int, key: str, fd: int) -> int | None:
        """Our duplicate of what was the target's `fd` under `key`, if held."""
        with self._lock:
            proc = self._procs.get(pid)
            held = proc.by_key.get(key, {}).get(fd) if proc else None
            return held.fd if held else None

    def has(self, pid: int, key: str) -> bool:
        with self._lock:
            return pid in self._procs and key in self._procs[pid].by_key

    def rename(self, pid: int, old: str, new: str) -> None:
        with self._lock:
            proc = self._procs.get(pid)
            if proc is None or old not in proc.by_key:
                return
            proc.by_key[new] = proc.by_key.pop(old)
            for held in proc.by_key[new].values():
                held.owners.discard(old)
                held.owners.add(new)

    def release(self, pid: int, key: str) -> None:
        """Drop `key`'s claim; duplicates no other key owns are closed."""
        with self._lock:
            proc = self._procs.get(pid)
            if proc is None:
                return
            for held in proc.by_key.pop(key, {}).values():
                held.owners.discard(key)
            for held in [h for h in proc.held if not h.owners]:
                os.close(held.fd)
                proc.held.remove(held)

    def release_snapshot(self, key: str) -> None:
        """Drop `key` from every process (a deleted snapshot)."""
        for pid in list(self._procs):
            self.release(pid, key)

    def prune(self) -> list[int]:
        """Release everything held for processes that have exited; returns their PIDs."""
        with self._lock:
            gone = [pid for pid, p in self._procs.items() if _exited(p.pidfd)]
            for pid in gone:
                self._close(self._procs.pop(pid))
            return gone

    def held_count(self) -> int:
        with self._lock:
            return sum(len(p.held) for p in self._procs.values())

    def own_fds(self) -> set[int]:
        """Our fds that are duplicates (or pidfds): not evidence of sharing."""
        with self._lock:
            return {h.fd for p in self._procs.values() for h in p.held} | {
                p.pidfd for p in self._procs.values()
            }

    def close(self) -> None:
        with self._lock:
            for proc in self._procs.values():
                self._close(proc)
            self._procs.clear()
            if self._added >= 0:
                os.close(self._added)
                self._added = -1

    @staticmethod
    def _close(proc: _Process) -> None:
        for held in proc.held:
            os.close(held.fd)
        os.close(proc.pidfd)

    def __enter__(self) -> FdKeeper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _exited(pidfd: int) -> bool:
    # A pidfd becomes readable when its process exits. poll, not select: a helper
    # serving many kernels holds fd numbers above select's limit of 1024.
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))
