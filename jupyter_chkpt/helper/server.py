"""The helper daemon: serves one user's kernels over a Unix socket.

Security: the socket is 0600 in a 0700 directory; each connection's peer uid
must be ours (SO_PEERCRED). Only a process that registered itself can be
checkpointed or restored, and only at its own request: the peer pid of the
connection asking must be the registered pid. Others (the server extension,
the CLI) may list, label, delete and ask for status.

Concurrency: one thread per connection; one lock per kernel, so operations on
a kernel are serialized while different kernels proceed side by side (each
has its own staging buffers).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import __version__, namespace, refs
from ..engine import restore, space
from ..engine.dump import Taken, provisional, take
from ..engine.journal import refuse_if_needed, safety_file
from ..engine.keeper import FdKeeper
from ..engine.rescue import rescue_all
from ..engine.restore import RestoreResult
from ..engine.tracking import Tracking
from ..errors import (
    Cancelled,
    ChkptError,
    HelperUnavailable,
    NotRegistered,
    ProtocolError,
    RequestRefused,
    RequestTooLarge,
    SnapshotInUse,
    StoreError,
    UnknownSnapshot,
    UnsupportedState,
    as_chkpt_error,
)
from ..proc import procfs
from ..proc.memory import StagingBuffer
from ..store import SnapshotInfo, Store, retention
from . import args, paths, protocol
from .client import peer_credentials

log = logging.getLogger("jupyter_chkpt.helper")

PRUNE_INTERVAL = 1.0  # seconds between checks for kernels that have exited
# Deleted snapshots (retention, rm) leave their pages in packs until a gc: after this
# many deletions the helper runs one, in the background, so that a long session's
# store (on disk, and its page index in our memory) follows what its snapshots use.
GC_AFTER_DELETES = 20
SHUTDOWN_WAIT_S = 300.0  # at most, for operations in progress when asked to stop
STORE_NICE = 10  # background stores of automatic snapshots
CANCEL_POLL_S = 0.1  # how often a cancellable wait looks for a cancel
REFUSED_DRAIN_S = 10.0  # at most, reading what a refused peer still sends
REFUSED_DRAIN_BYTES = 1 << 20
MOVE_ENV = "JUPYTER_CHKPT_MOVE"  # "0": snapshots of earlier processes stay unrestorable
EARLIER_HOW = (
    "it belongs to an earlier process of this kernel (before a restart or a crash): "
    "restoring it moves its whole state into this kernel's process"
)
EARLIER_DISABLED = (
    "it belongs to an earlier process of this kernel (before a restart or a crash), and "
    f"moving snapshots into another process is turned off here ({MOVE_ENV}=0 in Jupyter's "
    "environment); start Jupyter without it to restore this one, or delete it to free its space"
)
EARLIER_OTHER_KERNEL = (
    "it was taken in another kernel of this notebook ({kernel}), whose connection (ports, "
    "key) is not this kernel's: the notebook could not reach its state here. It can only "
    "come back into a restart of that kernel; delete it to free its space"
)
EARLIER_OLD = (
    "it belongs to an earlier process of this kernel and was taken by an older "
    "jupyter-chkpt, which did not record what moving it into another process needs; "
    "delete it to free its space"
)


def _moving_enabled() -> bool:
    return os.environ.get(MOVE_ENV, "1") != "0"


def _same_connection(k: Kernel, snap: SnapshotInfo) -> bool:
    """Whether an earlier process's snapshot came from this kernel (a restart keeps the
    kernel id, and with it the connection file: ports and key). The restored memory
    holds its own kernel's sockets and key; another kernel of the same notebook has
    other ones, which its frontends do not use."""
    return bool(k.kernel_id) and snap.tags.get("kernel_id") == k.kernel_id


@dataclass
class Kernel:
    """A registered kernel process."""

    pid: int
    start_time: int
    kernel_id: str
    conn: Connection
    notebook: str = ""  # its notebook's path, as the server told the kernel
    # Held while the process is frozen or worked on (snapshot taken, restore); storing a
    # taken snapshot happens after, under `store_lock`, in order, while the next
    # snapshot may already be taken. Lock order: store_lock, then lock.
    lock: threading.Lock = field(default_factory=threading.Lock)
    store_lock: threading.Lock = field(default_factory=threading.Lock)
    retained: threading.Condition = field(default_factory=threading.Condition)  # see _store
    retaining: int = 0
    pending: dict[str, SnapshotInfo] = field(default_factory=dict)  # taken, not stored yet
    # identity of the chain of incremental snapshots since the last full one; a chain
    # whose snapshot could not be stored is broken: what builds on it cannot be stored
    chain: object = field(default_factory=object)
    broken_chains: set[int] = field(default_factory=set)
    live: str | None = None  # the snapshot the process is now derived from
    last_error: str | None = None  # of storing an automatic snapshot, said in status
    staging: StagingBuffer = field(default_factory=StagingBuffer)
    # a restore's safety image, in a file that outlives us for a rescue (engine/rescue.py)
    safety: StagingBuffer = field(init=False)
    tracking: Tracking = field(default_factory=Tracking)
    # snapshot id -> id of the checkpoint request during which it was taken: the
    # restored process wakes up waiting for the reply to exactly that request
    request_ids: dict[str, Any] = field(default_factory=dict)
    # ids of checkpoint/restore requests the kernel asked to cancel (op_cancel)
    cancelled: set[Any] = field(default_factory=set)
    # what is being done to it now, for progress displays: op, phase, bytes, since
    activity: dict[str, Any] | None = None

    def doing(self, op: str, phase: str, nbytes: int | None = None) -> None:
        self.activity = {"op": op, "phase": phase, "bytes": nbytes, "since": time.time()}

    def __post_init__(self) -> None:
        # a name of its own: another Kernel object of the same process (a reconnection)
        # removes its file when it goes
        self.safety = StagingBuffer(safety_file(f"kernel{self.pid}-{secrets.token_hex(4)}"))

    def describe(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "kernel_id": self.kernel_id,
            "notebook": self.notebook or None,
            "live": self.live,
            "activity": self.activity,
            "dirty_tracking": self.tracking.tracker is not None
            or (self.tracking.unavailable or "not started yet"),
            "last_error": self.last_error,
        }


class Connection:
    def __init__(self, server: HelperServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.peer_pid, self.peer_uid, _ = peer_credentials(sock)
        self.reader = protocol.LineReader(sock)
        self.send_lock = threading.Lock()
        self.kernel: Kernel | None = None
        self.closed = False

    def send(self, msg: dict[str, Any]) -> None:
        with self.send_lock:
            self.sock.sendall(protocol.encode(msg))

    def serve(self) -> None:
        try:
            if self.peer_uid != os.getuid():
                log.warning(
                    "refused a connection from uid %d (pid %d)", self.peer_uid, self.peer_pid
                )
                self.send(
                    protocol.failed(
                        None,
                        RequestRefused(
                            f"this helper serves uid {os.getuid()}, not uid {self.peer_uid}",
                            "Each user runs their own helper",
                        ),
                    )
                )
                self._drain()
                return
            while True:
                try:
                    line = self.reader.read()
                except RequestTooLarge as e:  # answered; the reader skips the rest of it
                    log.info("pid %d sent an over-long line", self.peer_pid)
                    self.send(protocol.failed(None, e))
                    continue
                if line is None:
                    return
                self.handle(line)
        except OSError as e:
            log.info("connection from pid %d ended: %s", self.peer_pid, e)
        finally:
            self.closed = True
            self.server.forget(self)
            with contextlib.suppress(OSError):
                self.sock.close()

    def _drain(self) -> None:
        """After the refusal: read (and drop) what the peer sends until it hangs up,
        so that a request it sends after we answered never meets a closed socket
        (EPIPE) before it reads the answer. Bounded: the peer is a stranger."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)  # the peer reads the refusal, then EOF
            self.sock.settimeout(REFUSED_DRAIN_S)
            left = REFUSED_DRAIN_BYTES
            while left > 0:
                chunk = self.sock.recv(min(left, 1 << 16))
                if not chunk:
                    return
                left -= len(chunk)

    def handle(self, line: bytes) -> None:
        req_id = None
        try:
            req = protocol.decode(line)
            req_id = req.get("id")
            op = req.get("op")
            if op not in protocol.OPS:
                raise ProtocolError(f"unknown operation {op!r}; known: {', '.join(protocol.OPS)}")
            with self.server.in_flight():
                result = getattr(self.server, f"op_{op}")(self, req)
        except Exception as e:
            if not isinstance(e, ChkptError):
                log.exception("request %r failed", line[:200])
            error = as_chkpt_error(e, f"the helper's log: {paths.log_path()}")
            self.send(protocol.failed(req_id, error))
            return
        if result is not None:  # None: the reply went out already (restore)
            self.send(protocol.ok(req_id, result))


class HelperServer:
    def __init__(self, store: Store | None = None) -> None:
        self.store = store or Store()
        self.keeper = FdKeeper()
        self.kernels: dict[int, Kernel] = {}
        # pid -> (start time, its dirty-page tracking), until the process exits
        self.trackings: dict[int, tuple[int, Tracking]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.started = time.time()
        self._deleted_since_gc = 0
        self._gc_lock = threading.Lock()
        # snapshot id -> the connection and request it was taken during: the restored
        # process waits for that request's reply (op_restore)
        self.taken_on: dict[str, tuple[Connection, Any]] = {}
        self.listener: socket.socket | None = None
        self._active = 0  # operations running; shutdown waits for them
        self.cleaned: list[str] = []  # what clean_store did at start, for status
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        self._begin()
        try:
            yield
        finally:
            self._end()

    def _begin(self) -> None:
        with self._idle:
            self._active += 1

    def _end(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    # --- life cycle ----------------------------------------------------------------

    def bind(self) -> None:
        """Take the helper lock and the socket; a stale socket of a dead helper is replaced."""
        lock_fd = os.open(paths.lock_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise HelperUnavailable(
                "another helper is already running for this user", "Use that one"
            ) from None
        self._lock_fd = lock_fd  # held for our lifetime: proves the socket is ours
        path = paths.socket_path()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # we hold the lock, so whatever is there is stale
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(64)
        sock.settimeout(0.5)
        self.listener = sock
        log.info("helper %d (jupyter-chkpt %s) listening on %s", os.getpid(), __version__, path)

    def serve_forever(self) -> None:
        assert self.listener is not None
        threading.Thread(target=self._prune_loop, name="prune", daemon=True).start()
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                raise
            sock.settimeout(None)
            conn = Connection(self, sock)
            threading.Thread(target=conn.serve, name=f"conn-{conn.peer_pid}", daemon=True).start()
        self.shutdown()

    def shutdown(self) -> None:
        """Stop accepting; wait for operations in progress (they detach from their
        kernels whatever happens), release every held file."""
        self.stopping.set()
        if self.listener is not None:
            with contextlib.suppress(OSError):
                os.unlink(paths.socket_path())
            self.listener.close()
            self.listener = None
        # Operations in progress finish first (new ones are refused once stopping is
        # set); exiting under one would kill its thread mid-injection.
        with self._idle:
            self._idle.wait_for(lambda: self._active == 0, timeout=SHUTDOWN_WAIT_S)
        self.keeper.close()
        for _, tracking in self.trackings.values():
            tracking.close()
        log.info("helper %d stopped", os.getpid())

    def clean_store(self) -> None:
        """At start: remove what interrupted commits (a helper killed mid-snapshot, say)
        left in the store and rebuild lost pack indexes, logging what was done; status
        reports it. Never removes anything a snapshot uses (Store.clean)."""
        with self.in_flight():
            try:
                result = self.store.clean()
            except Exception as e:
                log.exception("cleaning the store %s failed", self.store.root)
                self.cleaned = [f"cleaning the store failed: {e}"]
                return
            self.cleaned = result.lines()
            for line in self.cleaned:
                log.warning("store %s: %s", self.store.root, line)

    def _prune_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.keeper.wait_for_exit(PRUNE_INTERVAL)
                if self.stopping.is_set():
                    return
                for pid in self.keeper.prune():
                    log.info("released the files held for exited PID %d", pid)
                with self.lock:
                    gone = [
                        pid for pid, (start, _) in self.trackings.items() if not _alive(pid, start)
                    ]
                    closing = [self.trackings.pop(pid)[1] for pid in gone]
                for tracking in closing:
                    tracking.close()
            except Exception:
                log.exception("pruning held files failed; will try again")
                self.stopping.wait(PRUNE_INTERVAL)

    def forget(self, conn: Connection) -> None:
        with self.lock:
            # its snapshots' restored processes will read end-of-file there (op_restore)
            for sid in [s for s, (c, _) in self.taken_on.items() if c is conn]:
                del self.taken_on[sid]
            k = conn.kernel
            if k is not None and self.kernels.get(k.pid) is k:
                del self.kernels[k.pid]
                log.info("kernel %s (PID %d) disconnected", k.kernel_id, k.pid)

    # --- operations ------------------------------------------------------------------

    def op_register(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        pid, kernel_id, notebook, live = args.register(req, conn.peer_pid)
        if pid != conn.peer_pid:
            raise RequestRefused(f"PID {conn.peer_pid} tried to register PID {pid}")
        identity = procfs.identity(pid)
        k = Kernel(pid, identity.start_time, kernel_id, conn, notebook)
        with self.lock:
            old = self.kernels.get(pid)
            if old is not None and old.conn is not conn and old.start_time == k.start_time:
                k.live = old.live
            if k.live is None and live is not None and self._exists(live):
                k.live = live
            # tracking outlives connections: a reconnecting kernel keeps its tracker
            start, tracking = self.trackings.get(pid, (k.start_time, k.tracking))
            if start != k.start_time:
                tracking.close()
                tracking = k.tracking
            self.trackings[pid] = (k.start_time, tracking)
            k.tracking = tracking
            self.kernels[pid] = k
            conn.kernel = k
        log.info("kernel %s registered (PID %d)", k.kernel_id, pid)
        return {"helper_pid": os.getpid(), "version": __version__, "store": str(self.store.root)}

    def _exists(self, snap_id: str) -> bool:
        try:
            self.store.info(snap_id)
        except ChkptError:
            return False
        return True

    def _self(self, conn: Connection, op: str) -> Kernel:
        if self.stopping.is_set():
            raise HelperUnavailable("the helper is shutting down", "Try again in a moment")
        k = conn.kernel
        if k is None:
            raise NotRegistered(f"PID {conn.peer_pid} asked to {op} but has not registered")
        with self.lock:
            current = self.kernels.get(k.pid)
            if current is not k:
                if (current is not None and current.start_time != k.start_time) or not _alive(
                    k.pid, k.start_time
                ):
                    raise NotRegistered(f"PID {conn.peer_pid} asked to {op} but has not registered")
                # The same process, over a connection of its that a restore brought
                # back (it had registered again since, on another one): this one is
                # its connection again.
                if current is not None:
                    k.live = current.live
                start, tracking = self.trackings.get(k.pid, (k.start_time, k.tracking))
                if start == k.start_time:
                    k.tracking = tracking
                self.kernels[k.pid] = k
        return k

    def op_checkpoint(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        args.checkpoint(req)  # before anything is done: req's arguments are valid below
        k = self._self(conn, "checkpoint")
        tags = dict(req.get("tags") or {})
        tags.setdefault("kernel_id", k.kernel_id)
        snap_id = str(req.get("snap_id") or secrets.token_hex(4))
        try:
            return self._checkpoint(k, conn, req, tags, snap_id)
        finally:
            self._cancel_done(k, req)
            if k.activity is not None and k.activity["op"] == "checkpoint" and not k.pending:
                k.activity = None

    def _checkpoint(
        self, k: Kernel, conn: Connection, req: dict[str, Any], tags: dict[str, Any], snap_id: str
    ) -> dict[str, Any]:
        # released once the snapshot's page map is the tracker's base
        k.doing("checkpoint", "waiting for an earlier operation on the kernel")
        self._acquire(k.lock, k, conn, req, "snapshot")
        try:
            # refused before the freeze if clearly too big for the store's free space
            space.check_room(self.store, k.pid, k.tracking, self._last_stored(k))
            self._go_on(k, conn, req, "snapshot")
            # With tracking a snapshot moves little: a buffer of its own, so that the
            # next one can be taken while this one is being stored.
            tracked = k.tracking.unavailable is None
            staging = StagingBuffer() if tracked else k.staging
            k.doing("checkpoint", "freezing the kernel and copying its memory")
            taken = take(k.pid, self.keeper, staging=staging, tracking=k.tracking)
            parent, k.live = k.live, snap_id
            k.request_ids[snap_id] = req.get("id")
            self.taken_on[snap_id] = (conn, req.get("id"))
            info = provisional(taken, snap_id, parent, tags, str(req.get("label", "")))
            k.pending[snap_id] = info
            k.doing("checkpoint", "saving the snapshot", info.mem_bytes)
        except BaseException:
            k.lock.release()
            raise
        work = (k, taken, req, tags, parent, snap_id)
        if tags.get("auto"):
            # An automatic snapshot: the kernel needs nothing but its id, so it runs on
            # while the snapshot is hashed and stored; a restore to it, or a listing,
            # waits for it, the next snapshot only until its page map is known.
            self._begin()  # shutdown waits for it too
            threading.Thread(target=self._store_later, args=work, daemon=True).start()
            return {"snapshot": info.to_json(), "removed": [], "stored": False}
        # The kernel waits while it is stored; should it cancel (its user pressed
        # Interrupt), storing goes on in the background and the kernel is answered now.
        done: dict[str, Any] = {}
        finished = threading.Event()

        def store() -> None:
            try:
                done["result"] = self._prepare_and_store(*work)
            except BaseException as e:
                done["error"] = e
                if finished.is_set():  # nobody waits for it any more
                    log.error("PID %d: snapshot %s could not be stored: %s", k.pid, snap_id, e)
                    k.last_error = f"the snapshot {snap_id} could not be stored: {e}"
            finally:
                finished.set()
                self._end()

        self._begin()  # shutdown waits for it too
        threading.Thread(target=store, name=f"store-{snap_id}", daemon=True).start()
        while not finished.wait(CANCEL_POLL_S):
            if req.get("id") in k.cancelled:
                finished.set()
                log.info(
                    "PID %d: snapshot %s goes on being stored in the background", k.pid, snap_id
                )
                return {"snapshot": info.to_json(), "removed": [], "stored": False}
        if "error" in done:
            raise done["error"]
        stored, removed = done["result"]
        return {"snapshot": stored.to_json(), "removed": removed, "stored": True}

    def _go_on(self, k: Kernel, conn: Connection, req: dict[str, Any], what: str) -> None:
        """Raise Cancelled if the kernel cancelled this request or hung up: called
        before a freeze and while waiting for one."""
        if req.get("id") in k.cancelled or _hung_up(conn.sock):
            raise Cancelled(f"the {what} was cancelled before the kernel was frozen")

    def _acquire(
        self, lock: threading.Lock, k: Kernel, conn: Connection, req: dict[str, Any], what: str
    ) -> None:
        """Wait for `lock` (another operation on the kernel) as long as the kernel wants."""
        if lock.acquire(blocking=False):
            return
        log.info("PID %d: the %s waits for an earlier operation on the kernel", k.pid, what)
        while not lock.acquire(timeout=CANCEL_POLL_S):
            self._go_on(k, conn, req, what)

    @staticmethod
    def _cancel_done(k: Kernel, req: dict[str, Any]) -> None:
        # request ids grow on a connection: a cancel of this one or an earlier one is moot
        own = req.get("id")
        if isinstance(own, int):
            k.cancelled = {i for i in k.cancelled if isinstance(i, int) and i > own}

    def op_cancel(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        """A kernel cancels its own checkpoint or restore, from another connection (the
        one with the request waits for its answer); the answer to the request says
        whether it was cancelled: one past its freeze goes on."""
        request = args.cancel(req)
        with self.lock:
            k = self.kernels.get(conn.peer_pid)
        if k is None or not _alive(conn.peer_pid, k.start_time):
            raise NotRegistered(f"PID {conn.peer_pid} asked to cancel but has not registered")
        k.cancelled.add(request)
        log.info("PID %d: cancel of request %s asked for", k.pid, request)
        return {"request": request}

    def _last_stored(self, k: Kernel) -> SnapshotInfo | None:
        """The kernel's live snapshot, if it is stored (its sizes guide an estimate)."""
        if k.live is None or k.live in k.pending:
            return None
        try:
            return self.store.info(k.live)
        except StoreError:
            return None

    def _prepare_and_store(
        self,
        k: Kernel,
        taken: Taken,
        req: dict[str, Any],
        tags: dict[str, Any],
        parent: str | None,
        snap_id: str,
    ) -> tuple[SnapshotInfo, list[str]]:
        """With k.lock held (released here): the page map becomes the tracker's base,
        then the snapshot is stored, after the ones taken before it."""
        try:
            taken.prepare(self.store, snap_id)
            if taken.base is None:
                k.chain = object()  # a full image starts a chain
            chain = id(k.chain)
            k.store_lock.acquire()  # stores keep the order snapshots were taken in
        except BaseException:
            taken.discard()
            k.pending.pop(snap_id, None)
            if k.live == snap_id:
                k.live = parent
            raise
        finally:
            k.lock.release()
        return self._store(k, taken, req, tags, parent, snap_id, chain)

    def _store(
        self,
        k: Kernel,
        taken: Taken,
        req: dict[str, Any],
        tags: dict[str, Any],
        parent: str | None,
        snap_id: str,
        chain: int,
    ) -> tuple[SnapshotInfo, list[str]]:
        """Store a taken snapshot; called with k.store_lock held, releases it (before
        taking k.lock: a thread holding k.lock may be waiting for store_lock)."""
        try:
            if chain in k.broken_chains:
                raise StoreError(
                    f"snapshot {snap_id} builds on a snapshot that could not be stored",
                    "The next snapshot will be complete again; take one",
                )
            info = taken.commit(
                self.store,
                label=str(req.get("label", "")),
                parent=parent,
                snap_id=snap_id,
                tags=tags,
            )
        except BaseException:
            k.broken_chains.add(chain)  # before a later snapshot of the chain can be stored
            k.pending.pop(snap_id, None)
            k.store_lock.release()
            with k.lock:
                k.tracking.drop_base()  # the next snapshot reads everything
                if k.live == snap_id:
                    k.live = parent
                k.request_ids.pop(snap_id, None)
            raise
        k.pending.pop(snap_id, None)
        if not k.pending and k.activity is not None and k.activity["op"] == "checkpoint":
            k.activity = None
        # A listing waits for the store lock and then until no retention is due, so
        # that it never shows the automatic snapshots this one makes too many. No lock
        # is held while retention waits for `lock`: the next snapshot may hold that one
        # while it waits for the store lock.
        with k.retained:
            k.retaining += 1
        k.store_lock.release()
        try:
            with k.lock:
                self._release_buffers(k)
                removed = self._retain(k, req)
        finally:
            with k.retained:
                k.retaining -= 1
                k.retained.notify_all()
        log.info("PID %d: snapshot %s (%.3f s frozen)", k.pid, info.id, info.stats["pause_s"])
        return info, removed

    def _store_later(self, k: Kernel, *work: Any) -> None:
        # Below the threads that freeze kernels (and the compression threads it starts
        # inherit it): a freeze must not wait for the CPU behind a store.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), STORE_NICE)
        try:
            self._prepare_and_store(k, *work)
        except Exception as e:
            log.exception("PID %d: an automatic snapshot could not be stored", k.pid)
            k.last_error = f"the automatic snapshot {work[-1]} could not be stored: {e}"
            if not k.pending and k.activity is not None and k.activity["op"] == "checkpoint":
                k.activity = None
        finally:
            self._end()

    @staticmethod
    def _release_buffers(k: Kernel) -> None:
        """With dirty tracking an operation moves what changed, not the whole image:
        buffers sized for the first, full snapshot need not stay."""
        if k.tracking.tracker is not None:
            k.staging.release()
            k.safety.release()
            _trim_heap()

    def _retain(self, k: Kernel, req: dict[str, Any]) -> list[str]:
        """Automatic snapshots beyond the newest `keep`, then the oldest automatic ones
        while the kernel's snapshots store more than `max_bytes`, go (never the live
        one, a pending one or a labelled one: store/retention.py)."""
        keep, max_bytes = req.get("keep"), req.get("max_bytes")
        if keep is None and max_bytes is None:
            return []
        doomed = retention.choose(
            self._snapshots_of(k.pid, k.start_time),
            keep=keep,
            max_bytes=max_bytes,
            protect=lambda i: i.id == k.live or i.id in k.pending,
        )
        removed = []
        for i in doomed:
            try:
                self._delete(i.id)
            except SnapshotInUse as e:  # a rescue may still need it: next time
                log.info("PID %d: kept %s for now: %s", k.pid, i.id, e)
                continue
            removed.append(i.id)
        return removed

    def op_restore(self, conn: Connection, req: dict[str, Any]) -> None:
        args.restore(req)
        k = self._self(conn, "restore")
        k.doing("restore", "waiting for an earlier operation on the kernel")
        try:
            self._restore(k, conn, req)
        finally:
            self._cancel_done(k, req)
            k.activity = None

    def _restore(self, k: Kernel, conn: Connection, req: dict[str, Any]) -> None:
        ref = str(req.get("ref", ""))
        earlier = self._earlier_named(k, ref)
        if earlier is not None:
            if not _moving_enabled():
                raise UnsupportedState(
                    f"snapshot {earlier.id} cannot be restored: {EARLIER_DISABLED}"
                )
            if not _same_connection(k, earlier):
                other = EARLIER_OTHER_KERNEL.format(kernel=earlier.tags.get("kernel_id"))
                raise UnsupportedState(f"snapshot {earlier.id} cannot be restored: {other}")
            self._transplant(k, conn, req, earlier)
            return
        if self._resolve(k, ref).id in k.pending:
            # the snapshot must be stored first (stores go in order)
            self._acquire(k.store_lock, k, conn, req, "restore")
            k.store_lock.release()
        self._acquire(k.lock, k, conn, req, "restore")
        try:
            snap = self._resolve(k, str(req.get("ref", "")))
            # Taken by an earlier helper, or over a connection the kernel has dropped
            # since: restorable all the same. Files we hold no duplicates of get
            # stand-ins (engine/files.py), and the restored process learns it was
            # restored from the word the restore leaves (engine/journal.py tell).
            taken = self.taken_on.get(snap.id)
            result = self._engine_restore(
                k,
                conn,
                req,
                snap,
                "freezing the kernel and writing the snapshot's memory",
                tracking=k.tracking,
            )
            k.live = snap.id
            log.info("PID %d: restored %s (%.3f s frozen)", k.pid, snap.id, result.pause_s)
            # The process now waits for the reply to the checkpoint request during
            # which the snapshot was taken: that reply tells it it was restored. If
            # that connection is gone, the process reads end-of-file there instead
            # and takes the word.
            if taken is not None and not taken[0].closed:
                reply = {
                    "restored": {
                        "snapshot": snap.to_json(),
                        "result": result.to_json(),
                        "carry": req.get("carry") or {},
                    }
                }
                with contextlib.suppress(OSError):
                    taken[0].send(protocol.ok(taken[1], reply))
        finally:
            k.lock.release()

    def _engine_restore(
        self,
        k: Kernel,
        conn: Connection,
        req: dict[str, Any],
        snap: SnapshotInfo,
        doing: str,
        **how: Any,
    ) -> RestoreResult:
        """The engine's restore of `snap` into the kernel, as a request asked for it;
        `how`: tracking (in place) or into (a transplant)."""
        k.doing("restore", doing, snap.mem_bytes)
        try:
            return restore(
                k.pid,
                self.store,
                snap.id,
                keeper=self.keeper,
                safety=k.safety,
                handoff={"snapshot": snap.to_json(), "carry": req.get("carry") or {}},
                proceed=lambda: self._go_on(k, conn, req, "restore"),
                **how,
            )
        finally:
            self._release_buffers(k)

    def _earlier_named(self, k: Kernel, ref: str) -> SnapshotInfo | None:
        """The earlier process's snapshot `ref` names, if it names none of this one's."""
        try:
            self._resolve(k, ref)
            return None
        except UnknownSnapshot:
            earlier = self._earlier(k)
            if not earlier:
                raise
        return refs.resolve(
            earlier, ref, where="the earlier kernels of this notebook", listing="%snapshots"
        )

    def _transplant(
        self, k: Kernel, conn: Connection, req: dict[str, Any], snap: SnapshotInfo
    ) -> None:
        """Restore an earlier process's snapshot into this kernel's process: its state
        moves in whole (engine/transplant.py). The restored memory learns it from the
        word the restore leaves (its own connection to us was the earlier process's)."""
        self._acquire(k.lock, k, conn, req, "restore")
        try:
            result = self._engine_restore(
                k,
                conn,
                req,
                snap,
                "freezing the kernel and moving the earlier kernel's state into it",
                into=True,
            )
            k.tracking.drop_base()  # nothing of the tracked layout is left
            k.live = snap.id
            log.info(
                "PID %d: moved in %s of PID %d (%.3f s frozen)",
                k.pid,
                snap.id,
                snap.pid,
                result.pause_s,
            )
        finally:
            k.lock.release()

    def _snapshots_of(self, pid: int, start_time: int) -> list[SnapshotInfo]:
        found = {i.id: i for i in self.store.list(pid) if i.start_time == start_time}
        with self.lock:
            kernel = self.kernels.get(pid)
        if kernel is not None and kernel.start_time == start_time:
            for sid, info in list(kernel.pending.items()):  # taken, being stored
                found.setdefault(sid, info)
        return sorted(found.values(), key=lambda i: i.created)

    def _resolve(self, k: Kernel, ref: str) -> SnapshotInfo:
        """The snapshot `ref` names among this kernel's (refs.py has the syntax)."""
        mine = self._snapshots_of(k.pid, k.start_time)
        if not mine:
            raise UnknownSnapshot("this kernel has no snapshots", "Take one with %checkpoint")
        return refs.resolve(mine, ref, where="this kernel", listing="%snapshots")

    def _target(self, req: dict[str, Any]) -> Kernel:
        pid, kernel_id = args.scope(str(req.get("op")), req)
        with self.lock:
            found = [
                k
                for k in self.kernels.values()
                if k.pid == pid or (kernel_id and k.kernel_id == kernel_id)
            ]
        # after a restart the old process may not be pruned yet: the living, newest one
        found.sort(key=lambda k: (_alive(k.pid, k.start_time), k.start_time), reverse=True)
        if found:
            return found[0]
        raise NotRegistered(f"no registered kernel with {'PID ' + str(pid) if pid else 'that id'}")

    def _scoped(self, conn: Connection, req: dict[str, Any]) -> Kernel | None:
        """The kernel a request names (pid, kernel_id), else the caller's own, else None."""
        pid, kernel_id = args.scope(str(req.get("op")), req)
        return self._target(req) if (pid or kernel_id) else conn.kernel

    def _named(self, conn: Connection, req: dict[str, Any]) -> SnapshotInfo:
        """The snapshot `req["snapshot"]` names: among the snapshots of the kernel the
        request is scoped to (never another kernel's), else in the whole store."""
        ref = args.snapshot(req)
        k = self._scoped(conn, req)
        if k is None:
            return refs.resolve(self.store.list(), ref, where="the store", newest=False)
        earlier = [i for i in self._earlier(k) if i.id == ref]
        if earlier:  # an earlier process's snapshot, by its exact id only
            return earlier[0]
        info = self._resolve(k, ref)
        if info.id in k.pending:
            with k.store_lock:  # stored first (stores go in order)
                pass
        return info

    def op_list(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        k = self._scoped(conn, req)
        if k is None:
            raise NotRegistered("list needs a kernel: give pid or kernel_id")
        if not req.get("now"):
            # snapshots being stored are listed once stored and pruned; with `now`
            # (a kernel resolving a reference) as they are, pending ones included
            with k.store_lock:
                pass
            with k.retained:
                k.retained.wait_for(lambda: k.retaining == 0)
        mine = self._snapshots_of(k.pid, k.start_time)
        return {
            "kernel": k.describe(),
            "snapshots": [i.to_json() for i in mine],
            "usage": {"count": len(mine), "stored_bytes": sum(i.stored_bytes for i in mine)},
            "earlier": [self._earlier_json(k, i) for i in self._earlier(k)],
        }

    def _earlier_json(self, k: Kernel, info: SnapshotInfo) -> dict[str, Any]:
        try:
            movable = self.store.load_meta(info.id).mm is not None
        except ChkptError:
            movable = False
        enabled = _moving_enabled()
        same = _same_connection(k, info)
        if not movable:
            why = EARLIER_OLD
        elif not enabled:
            why = EARLIER_DISABLED
        elif not same:
            why = EARLIER_OTHER_KERNEL.format(kernel=info.tags.get("kernel_id"))
        else:
            why = EARLIER_HOW
        restorable = movable and enabled and same and not info.damage
        return {**info.to_json(), "restorable": restorable, "why": why}

    def _earlier(self, k: Kernel) -> list[SnapshotInfo]:
        """Snapshots of earlier processes of the same kernel (a restart keeps its id)
        or notebook: they cannot be restored into this process (a different one)."""

        def same(i: SnapshotInfo) -> bool:
            if (i.pid, i.start_time) == (k.pid, k.start_time):
                return False
            if k.kernel_id and i.tags.get("kernel_id") == k.kernel_id:
                return True
            return bool(k.notebook) and i.tags.get("notebook") == k.notebook

        # never a running process's (two live kernels may share a notebook path: the
        # name a kernel was started under stays when the notebook is renamed)
        candidates = [i for i in self.store.list() if same(i)]
        alive = {(i.pid, i.start_time) for i in candidates if _alive(i.pid, i.start_time)}
        return [i for i in candidates if (i.pid, i.start_time) not in alive]

    def op_diff(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        """What changed in the user's variables from snapshot a to snapshot b, as the
        kernel recorded them when each was taken (namespace.py): nothing is restored."""
        a_ref, b_ref = args.diff(req)
        k = self._scoped(conn, req)
        if k is None:
            raise NotRegistered("diff needs a kernel: give pid or kernel_id")
        a, b = self._resolve(k, a_ref), self._resolve(k, b_ref)
        if a.id in k.pending or b.id in k.pending:
            with k.store_lock:  # stored first
                pass
        missing = [i.id for i in (a, b) if "namespace" not in i.tags]
        if missing:
            raise UnknownSnapshot(
                f"snapshot {missing[0]} has no record of its variables",
                "Only snapshots taken by a snapshots kernel of jupyter-chkpt 0.2 or later "
                "have one: compare two of those",
            )
        return {
            "a": a.to_json(),
            "b": b.to_json(),
            **namespace.diff(a.tags["namespace"], b.tags["namespace"]),
        }

    def op_delete(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        info = self._named(conn, req)
        snap_id = info.id
        with self.lock:
            owner = self.kernels.get(info.pid)
        # not while its kernel is being restored: the restore may be using its files
        with owner.lock if owner is not None else contextlib.nullcontext():
            self._delete(snap_id)
        return {"deleted": snap_id}

    def _delete(self, snap_id: str) -> None:
        refuse_if_needed(self.store.root, snap_id)
        self.store.delete(snap_id)
        self.keeper.release_snapshot(snap_id)
        with self.lock:
            for k in self.kernels.values():
                k.request_ids.pop(snap_id, None)
            self.taken_on.pop(snap_id, None)
            self._deleted_since_gc += 1
            due = self._deleted_since_gc >= GC_AFTER_DELETES
            if due:
                self._deleted_since_gc = 0
        if due:
            threading.Thread(target=self._auto_gc, name="gc", daemon=True).start()

    def _auto_gc(self) -> None:
        if not self._gc_lock.acquire(blocking=False):
            return  # one is running
        try:
            result = self.store.gc()
            log.info("automatic gc: %s", result.lines()[0])
        except ChkptError as e:
            log.warning("automatic gc did not run: %s", e)
        except Exception:
            log.exception("automatic gc failed")
        finally:
            self._gc_lock.release()

    def op_label(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        label = args.label(req)
        snap_id = self._named(conn, req).id
        self.store.set_label(snap_id, label)
        return {"snapshot": self.store.info(snap_id).to_json()}

    def op_status(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            kernels = [k.describe() for k in self.kernels.values()]
        return {
            "helper_pid": os.getpid(),
            "version": __version__,
            "protocol": protocol.VERSION,
            "uptime_s": round(time.time() - self.started, 3),
            "kernels": kernels,
            "store": {
                "root": str(self.store.root),
                **self.store.usage(),
                "cleaned_at_start": self.cleaned,
            },
            "held_files": self.keeper.held_count(),
        }

    def op_shutdown(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        threading.Thread(target=self._stop_soon, daemon=True).start()
        return {"stopping": True}

    def _stop_soon(self) -> None:
        time.sleep(0.1)  # let the reply go out
        self.stopping.set()
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)


def _trim_heap() -> None:
    """Give the C heap's free memory back (glibc keeps what hashing and compression
    freed): an idle helper should be small."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _hung_up(sock: socket.socket) -> bool:
    """Whether the peer closed its end (read without taking anything)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _alive(pid: int, start_time: int) -> bool:
    try:
        return procfs.identity(pid).start_time == start_time
    except ChkptError:
        return False


def run(foreground: bool, store_root: str | None = None) -> int:
    """Entry point of `python -m jupyter_chkpt.helper start`."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s helper[%(process)d] %(levelname)s %(message)s",
    )
    ready = None if foreground else _daemonize()
    _raise_fd_limit()
    server = HelperServer(Store(store_root) if store_root else None)
    try:
        server.bind()
    except HelperUnavailable as e:
        if ready is not None:  # another client started one first: fine, unless it was not that
            os.write(ready, b"0" if "already running" in e.message else b"1")
        raise
    if ready is not None:
        os.write(ready, b"0")
        os.close(ready)
    _start_guardian()
    for what in rescue_all():  # what a helper before us left frozen
        log.warning("rescue: %s", what)
    # after the clients waiting for us are told we are up: under the store's lock,
    # cleaning waits for no commit and no commit for it but the moment it takes
    threading.Thread(target=server.clean_store, name="clean", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: server.stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server.serve_forever()
    return 0


def _start_guardian() -> None:
    """A small process that rescues whatever we leave frozen if we die (the OOM
    killer picks the helper: it holds the big buffers)."""
    import subprocess

    subprocess.Popen(
        [sys.executable, "-m", "jupyter_chkpt.engine.rescue", "--guard", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        cwd="/",
    )


def _raise_fd_limit() -> None:
    """The keeper holds each kernel's files: allow as many as the hard limit permits."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _daemonize() -> int:
    """Detach into a new session; the starting process exits once we listen (or
    failed to). Returns the pipe to report readiness on. Stdio goes nowhere: a
    held stdout would keep whoever reads it waiting for end-of-file."""
    r, w = os.pipe()
    if os.fork() > 0:
        os.close(w)
        status = os.read(r, 1)
        os._exit(0 if status == b"0" else 1)
    os.close(r)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    os.close(devnull)
    logfile = os.open(paths.log_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(logfile, 2)
    os.close(logfile)
    os.chdir("/")
    return w
