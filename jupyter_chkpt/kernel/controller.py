"""Kernel side: the safe point, the restore hand-off, and the shell message bookkeeping.

A `Checkpointer` attaches to a running ipykernel (our kernel class does it at
start; `%load_ext jupyter_chkpt` does it in a stock ipykernel 7). It talks to
the helper daemon, never to the engine: a kernel does not trace itself.

Snapshot: `%checkpoint` (or a `chkpt_request`, or auto mode) only marks one as
wanted. It is taken at the *safe point*: on the main thread, after the shell
message was handled and its output flushed, just before `idle` is published.
There the main thread writes out IPython's history, lets IOPub drain, and asks
the helper for the snapshot; it is blocked in that request while frozen.

Restore: the restored main thread wakes up inside that same request, at the
snapshot's safe point; the helper's reply says "restored" and carries what the
pre-restore process handed over: the request that asked for the restore, the
shell messages it had received but not handled, and the ids it had handled
since. `_after_restore` answers the requester, drops stale messages that come
back from the image, replays the pending ones, and starts a new history session.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import ctypes
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from .. import namespace, refs
from ..errors import (
    BadRequest,
    Cancelled,
    ChkptError,
    HelperStopped,
    HelperTimeout,
    HelperUnavailable,
    NothingToUndo,
    UnknownSnapshot,
    as_chkpt_error,
)
from ..helper.client import HelperClient
from ..helper.paths import handoff_path
from ..helper.paths import log_path as helper_log

log = logging.getLogger("jupyter_chkpt.kernel")

PR_SET_PTRACER = 0x59616D61
HANDLED_MEMORY = 10_000  # ids of handled shell messages remembered (stale-request filter)
IOPUB_DRAIN_S = 0.05  # at most, for zmq's IO threads to send what the IOPub thread sent
REGISTER_ATTEMPTS = 3  # a new connection to a helper that turns out to be dying
RECONNECT_WAIT_S = 5.0  # at most, for frontends whose connections the restore reset
ZMTP_SETTLE_S = 0.1  # after their TCP connections are back, for zmq's handshakes
SUBSCRIBE_WAIT_S = 2.0  # at most, for a reconnected IOPub subscriber's subscription
CANCEL_TIMEOUT_S = 10.0  # at most, for the helper to take a cancel
# helper operations that change nothing: a helper that died during one is asked again
READ_ONLY_OPS = frozenset({"list", "diff", "status"})
POOL_REFILL_S = 5.0  # at most, for a multiprocessing Pool to replace workers gone since


@dataclass
class PendingCheckpoint:
    snap_id: str
    label: str = ""
    auto: bool = False
    reply_to: dict[str, Any] | None = None  # a chkpt_request to answer when taken


@dataclass
class HeldReply:
    """A message of a cell that ran %checkpoint, held back by the safe point: its
    execute_result (sent once the snapshot is stored, else dropped) or its
    execute_reply (sent then, or turned into an error)."""

    args: tuple[Any, ...]  # Session.send's positional arguments
    kwargs: dict[str, Any]

    @property
    def content(self) -> dict[str, Any]:
        return dict(self.args[2])

    @property
    def parent(self) -> dict[str, Any]:
        return dict(self.args[3])


@dataclass
class Settings:
    """The user's preferences: a restore keeps the current ones (they travel in the
    carry), whatever the snapshot's memory says."""

    auto: bool = False
    keep: int = 10  # automatic snapshots kept per kernel
    max_mib: int = 0  # automatic snapshots pruned, oldest first, above this (0: no limit)

    @property
    def max_bytes(self) -> int | None:
        return self.max_mib << 20 if self.max_mib > 0 else None


@dataclass
class Requester:
    """The shell request a restore answers, as the restored process needs it."""

    msg_type: str  # execute_request, chkpt_request, or comm (a widget: nothing to answer)
    msg: dict[str, Any]  # header, parent_header, metadata (no content)
    idents: list[str]  # base64
    execution_count: int


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _frames_bytes(msg: list[Any]) -> list[bytes]:
    return [f.bytes if hasattr(f, "bytes") else bytes(f) for f in msg]


class Checkpointer:
    def __init__(self, kernel: Any, *, client: HelperClient | None = None) -> None:
        self.kernel = kernel
        self.shell = kernel.shell
        self.settings = Settings()
        self.pending: PendingCheckpoint | None = None
        self.live: str | None = None
        self._client = client
        # shell messages for the main thread: received, not yet dispatched (by identity)
        self._received: dict[int, list[Any]] = {}
        self._handled: collections.deque[str] = collections.deque(maxlen=HANDLED_MEMORY)
        self._seen_since_restore = _BoundedSet(2 * HANDLED_MEMORY)
        self._replays: set[int] = set()  # messages we re-dispatch after a restore
        # the main shell message being handled: an async cell awaits inside it while a
        # widget's restore runs from the event loop (restore_soon)
        self._running: list[Any] | None = None
        self.restores = 0
        self._subscribed = threading.Event()
        # CLOCK_MONOTONIC of the latest IOPub subscriptions (XPUB_VERBOSE: every one)
        self._subscriptions: collections.deque[float] = collections.deque(maxlen=256)
        self._tasks: set[asyncio.Future[None]] = set()
        self._cell_count = 0  # the count of the main shell's last execute_input
        self._held: HeldReply | None = None
        self._held_results: list[HeldReply] = []
        # Undo/redo. _dirty: cells ran since the live snapshot (the state is in no
        # snapshot); _redo: where %chkpt redo goes, newest last (cleared by a cell);
        # both travel in the carry, as the settings do.
        self._dirty = True
        self._redo: list[str] = []
        self._history_cell = False  # the running request is an undo/redo
        # we are a "state left" a restore just brought back: the id of the old request
        # that finishes now (its idle is not a safe point, its execute_reply is dropped)
        self._resumed = ""
        # chkpt_request ids a frontend cancelled (the control channel) while they
        # waited for a running cell; the request being served, and its interrupt
        self._cancelled: _BoundedSet = _BoundedSet(1000)
        self._serving: str | None = None
        self._interrupt: threading.Event | None = None

    # --- attaching ------------------------------------------------------------------

    def attach(self) -> None:
        k = self.kernel
        self._orig_publish = k._publish_status_and_flush
        self._orig_dispatch = k.dispatch_shell
        k._publish_status_and_flush = self._publish_status_and_flush
        k.dispatch_shell = self._dispatch_shell
        self._orig_execute_input = k._publish_execute_input
        k._publish_execute_input = self._publish_execute_input
        k.shell_handlers["chkpt_request"] = self._chkpt_request
        k.control_handlers["chkpt_request"] = self._chkpt_control
        self._wrap_session_send()
        self._wrap_main_receive()
        self._wrap_iopub_subscriptions()
        k._chkpt = self
        try:
            self.client  # noqa: B018 - register now, so a Yama host lets the helper in
        except ChkptError as e:
            log.warning("jupyter-chkpt: %s", e)

    def _main_stream(self) -> Any:
        k = self.kernel
        if getattr(k, "shell_channel_thread", None):
            return k.shell_channel_thread.manager._shell_channel_to_main.to_stream
        return k.shell_stream

    def _publish_execute_input(self, code: str, parent: Any, execution_count: int) -> None:
        # The count a cell runs as: IPython's own counter is already past it during
        # the cell in IPython 9.18+ and not before.
        if threading.current_thread() is threading.main_thread():
            self._cell_count = execution_count
        self._orig_execute_input(code, parent, execution_count)

    def _wrap_session_send(self) -> None:
        """Hold back the execute_result and the execute_reply of a cell that asked for
        a snapshot: the cell succeeded, and the id it returned names a snapshot, only
        if the snapshot is stored, which is known at the safe point."""
        session = self.kernel.session
        send = self._session_send = session.send

        def held_send(*args: Any, **kwargs: Any) -> Any:
            if (
                self._resumed
                and len(args) >= 4
                and args[1] == "execute_reply"
                and isinstance(args[3], dict)
                and args[3].get("header", {}).get("msg_id") == self._resumed
            ):  # a resumed old request's second reply: its frontend had one
                return session.msg("execute_reply", args[2], args[3], None, kwargs.get("metadata"))
            want = self.pending
            if (
                want is None
                or want.auto
                or want.reply_to is not None
                or threading.current_thread() is not threading.main_thread()
                or len(args) < 2
            ):
                return send(*args, **kwargs)
            if isinstance(args[1], dict) and args[1].get("msg_type") == "execute_result":
                self._held_results.append(HeldReply(args, kwargs))  # e.g. %checkpoint's id
                return args[1]
            if args[1] == "execute_reply" and len(args) >= 4:
                self._held = HeldReply(args, kwargs)
                # what ipykernel looks at: the status (it aborts the queue on errors)
                return session.msg("execute_reply", args[2], args[3], None, kwargs.get("metadata"))
            return send(*args, **kwargs)

        session.send = held_send

    def _release_results(self, send: bool) -> None:
        """The held execute_results: sent once the snapshot is stored, else dropped
        (the id %checkpoint returned names nothing)."""
        held, self._held_results = self._held_results, []
        for h in held if send else ():
            self._session_send(*h.args, **h.kwargs)

    def _send_held(self, error: BaseException | None) -> None:
        """The held execute_reply; with `error`, as a failed cell (and the queue
        aborted, as for any failed cell)."""
        self._release_results(error is None)
        held, self._held = self._held, None
        if held is None:
            return
        args, kwargs = held.args, dict(held.kwargs)
        content, parent = held.content, held.parent
        if error is not None and content.get("status") == "ok":
            e = as_chkpt_error(error, "the kernel's log")
            ename = type(e).__name__
            evalue = f"snapshot failed: {e}"
            text = [f"jupyter-chkpt: {evalue}"]  # no traceback: the message says it all
            self._publish("error", {"ename": ename, "evalue": evalue, "traceback": text}, parent)
            content.update(status="error", ename=ename, evalue=evalue, traceback=text)
            kwargs["metadata"] = {**(kwargs.get("metadata") or {}), "status": "error"}
            args = (*args[:2], content, *args[3:])
            request = parent.get("content", {})
            if request.get("stop_on_error", True) and not request.get("silent", False):
                with contextlib.suppress(Exception):
                    self.kernel._abort_queues(None)
        elif error is not None:  # the cell had failed already: say it as well
            e = as_chkpt_error(error, "the kernel's log")
            self._stream(parent, f"jupyter-chkpt: snapshot failed: {e}\n", "stderr")
        self._session_send(*args, **kwargs)

    def _wrap_main_receive(self) -> None:
        """Record every shell message for the main thread when it arrives."""
        from ipykernel.utils import _async_in_context

        dispatch = _async_in_context(lambda msg: self.kernel.shell_main(None, msg))

        async def handle(msg: list[Any]) -> None:
            try:
                await dispatch(msg)
            finally:
                self._received.pop(id(msg), None)

        def on_recv(msg: list[Any]) -> Any:
            # Recorded at once: the task that handles it may not start before a
            # restore, and then only this record knows the message exists.
            self._received[id(msg)] = msg
            return handle(msg)

        self._on_main_recv = on_recv
        self._main_stream().on_recv(on_recv, copy=False)

    def _wrap_iopub_subscriptions(self) -> None:
        iopub = self.kernel.iopub_thread
        stream = getattr(iopub, "_xpub_stream", None)
        if stream is None:
            return
        original = iopub._handle_subscription

        def on_subscription(frames: list[bytes]) -> None:
            if any(f[:1] == b"\x01" for f in frames):
                self._subscriptions.append(time.monotonic())
                self._subscribed.set()
            original(frames)

        def install() -> None:
            import zmq

            # Every subscription, not just a topic's first: after a restore, a
            # reconnected frontend's "" may arrive while the pipe of its old connection
            # (which subscribed "" too) is still being torn down.
            with contextlib.suppress(zmq.ZMQError):
                stream.socket.setsockopt(zmq.XPUB_VERBOSE, 1)
            stream.on_recv(on_subscription)

        iopub.schedule(install)

    @property
    def client(self) -> HelperClient:
        if self._client is None:
            for attempt in range(REGISTER_ATTEMPTS):
                client = HelperClient()
                try:
                    reply = client.call(
                        "register",
                        timeout=30,
                        pid=os.getpid(),
                        kernel_id=self._kernel_id(),
                        # jupyter_server names the notebook for its kernels
                        notebook=os.environ.get("JPY_SESSION_NAME", "")[:4096],
                        live=self.live,
                    )
                except HelperStopped:
                    # connected to a helper that was dying (killed: its socket still took
                    # connections for a moment); registering again is harmless
                    client.close()
                    if attempt + 1 == REGISTER_ATTEMPTS:
                        raise
                    time.sleep(0.05)
                    continue
                except BaseException:
                    client.close()
                    raise
                _allow_ptrace_by(int(reply["helper_pid"]))
                self._client = client
                break
        assert self._client is not None
        return self._client

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _kernel_id(self) -> str:
        conn = getattr(self.kernel, "connection_file", "") or ""
        with contextlib.suppress(Exception):
            from ipykernel.kernelapp import IPKernelApp

            conn = IPKernelApp.instance().connection_file or conn
        name = os.path.basename(conn)
        return name.removeprefix("kernel-").removesuffix(".json")

    def call(
        self,
        op: str,
        timeout: float | None = 60,
        waiting: Callable[[], None] | None = None,
        **args: Any,
    ) -> dict[str, Any]:
        """A helper request; a helper that went away is restarted once."""
        try:
            return self.client.call(op, timeout=timeout, waiting=waiting, **args)
        except HelperTimeout:
            self._drop_client()
            raise  # the helper is alive but slow: a retry would not help
        except HelperStopped:
            self._drop_client()
            if op in READ_ONLY_OPS:  # nothing was changed: ask the next helper
                return self.client.call(op, timeout=timeout, waiting=waiting, **args)
            raise  # it may have done part of the work: the caller asks the rescue's word
        except HelperUnavailable:
            self._drop_client()
            return self.client.call(op, timeout=timeout, waiting=waiting, **args)

    # --- what users ask for -------------------------------------------------------

    def request_checkpoint(
        self, label: str = "", *, auto: bool = False, reply_to: dict[str, Any] | None = None
    ) -> str:
        """Mark a snapshot as wanted at this request's safe point; returns its id,
        which names a snapshot only once the safe point says it was stored."""
        _on_main_thread("%checkpoint")
        refs.check_label(label)
        self.client  # noqa: B018 - fail now, in the cell, if there is no helper
        snap_id = secrets.token_hex(4)
        self.pending = PendingCheckpoint(snap_id, label, auto, reply_to)
        return snap_id

    def restore(
        self, ref: str, requester: Requester, *, mode: str = "restore", keep_left: bool = True
    ) -> None:
        """Restore now. On success this never returns: the process continues, as
        it was, at the snapshot's safe point. On failure it raises, unchanged.

        First the state being left is kept as a snapshot (unless it is one already,
        or keep_left is False), so that the restore can be undone: the reply says
        which (`left`). When that snapshot is restored later, the process wakes up
        here, and this returns. mode "undo" puts `left` on the redo list, "redo"
        takes the newest off it, a plain restore clears it."""
        _on_main_thread("%restore")
        left: str | None = None
        if keep_left:
            # named before the state left joins the snapshots (-1 must not mean it), and
            # a reference that names nothing fails before anything is taken
            ref, listing = self._resolve(ref)
            left, resumed = self._keep_state_left(requester, listing)
            if resumed:
                return
        redo = {"undo": [*self._redo, left] if left else list(self._redo), "redo": self._redo[:-1]}
        self._quiesce()
        early = self._drain_main_socket()
        pending = [[_b64(f) for f in _frames_bytes(m)] for m in self._pending_messages(early)]
        carry = {
            "requester": requester.__dict__,
            "pending": pending,
            "handled": list(self._handled),
            "peers": {name: _established(port) for name, port in self._ports().items()},
            "asked": time.monotonic(),
            "settings": asdict(self.settings),
            "redo": redo.get(mode, []),
            "left": left,
            # requests a frontend cancelled: still cancelled when replayed from `pending`
            "cancelled": list(self._cancelled),
        }
        running = self._running
        answered = requester.msg_type != "comm" and self._msg_id(
            running or []
        ) == requester.msg.get("msg_id")  # the restored process answers its requester anyway
        if running is not None and not answered:
            # a cell that awaits while this restore runs: the restored state never ran
            # it, so the restored process answers it (else its frontend waits forever)
            carry["running"] = {
                "frames": [_b64(f) for f in _frames_bytes(running)],
                "execution_count": self.kernel.execution_count,
            }
        log.debug("restore %s: %d pending shell messages", ref, len(pending))
        try:
            with self._cancel_on_interrupt() as waiting:
                self.call("restore", timeout=None, waiting=waiting, ref=ref, carry=carry)
        except BaseException as e:
            for msg in early:  # taken from the socket: hand them back
                self._feed(msg)
            if isinstance(e, HelperStopped):
                raise ChkptError(
                    f"the helper stopped during the restore; the kernel is as it was before "
                    f"%restore{_what(_rescue_word())}",
                    "Snapshots taken by that helper cannot be restored in place any more (it "
                    "held the kernel's connection and files as they were): take a new one. "
                    "The helper's log (chkpt/helper.log in the runtime directory) says why it "
                    "stopped",
                ) from e
            raise
        raise ChkptError("the helper answered a restore that should not return")

    def _resolve(self, ref: str) -> tuple[str, dict[str, Any]]:
        """The id `ref` names among this kernel's snapshots (refs.py), as the helper
        would resolve it, and the listing it was resolved in."""
        listing = self.call("list", now=True)
        snaps = [_Named(str(s["id"]), str(s.get("label") or "")) for s in listing["snapshots"]]
        earlier = [
            _Named(str(s["id"]), str(s.get("label") or ""))
            for s in listing.get("earlier", [])
            if s.get("restorable")
        ]
        try:
            if not snaps:
                raise UnknownSnapshot("this kernel has no snapshots", "Take one with %checkpoint")
            return refs.resolve(snaps, ref, where="this kernel", listing="%snapshots").id, listing
        except UnknownSnapshot:
            if not earlier:
                raise
        # an earlier process's (before a restart or a crash): moved into this one
        where = "this kernel or its earlier processes"
        return refs.resolve(earlier, ref, where=where, listing="%snapshots").id, listing

    def _keep_state_left(
        self, requester: Requester, listing: dict[str, Any]
    ) -> tuple[str | None, bool]:
        """(the id of a snapshot holding the state now, resumed): the live one if
        nothing ran since it (and it still exists), else a new "before-restore"
        snapshot; resumed is True when that snapshot was restored and we are it."""
        ids = {s["id"] for s in listing.get("snapshots", [])}
        live = listing.get("kernel", {}).get("live")
        if not self._dirty and self.live is not None and self.live == live and live in ids:
            return self.live, False
        snap_id = secrets.token_hex(4)
        want = PendingCheckpoint(snap_id, auto=True)
        tags = {**self._tags(want, mid_cell=requester.msg_type == "execute_request")}
        tags["kind"] = "before-restore"
        self._quiesce()
        try:
            with self._cancel_on_interrupt() as waiting:
                # no retention here: it could delete the very snapshot being restored
                # (the next automatic snapshot's retention counts this one)
                result = self.call(
                    "checkpoint",
                    timeout=None,
                    waiting=waiting,
                    snap_id=snap_id,
                    label="",
                    tags=tags,
                    keep=None,
                    max_bytes=None,
                )
        except HelperStopped as e:
            word = _rescue_word()
            if word.get("state") == "restored" and "restored" in word:
                self._resume(word["restored"], requester)
                return None, True
            raise ChkptError(
                f"could not keep the state this restore leaves: {e.message}; nothing was restored",
                e.remedy,
            ) from e
        except Cancelled:
            raise
        except ChkptError as e:
            raise type(e)(
                f"could not keep the state this restore leaves (so that the restore can be "
                f"undone): {e.message}; nothing was restored",
                f"{e.remedy}. To restore without keeping it: %restore --discard ID "
                "(REST: keep_left false)",
            ) from e
        if "restored" in result:
            self._resume(result["restored"], requester)
            return None, True
        self.live = str(result["snapshot"]["id"])
        self._dirty = False  # the state now is that snapshot
        self._changed("taken", self.live)
        if waiting.asked.is_set():  # Interrupt while it was taken: no restore
            raise Cancelled(
                f"interrupted: nothing was restored (the state is kept as snapshot {self.live})",
                "Run the restore again to restore",
            )
        return self.live, False

    def _resume(self, restored: dict[str, Any], requester: Requester) -> None:
        """We are the state a restore left, brought back by a later restore: answer
        that one (its reply and idle), then give the old request we were serving back
        its own parent: it finishes quietly (its frontend was answered long ago, by
        the process it restored; its late execute_reply is dropped)."""
        self._held, self._held_results, self.pending = None, [], None
        parent = self._after_restore(restored, self._shell_stream())
        self._publish("status", {"execution_state": "idle"}, parent)
        if requester.msg_type != "comm":  # a shell handler goes on: as the old request
            idents = [base64.b64decode(i) for i in requester.idents]
            self.kernel.set_parent(idents, dict(requester.msg), channel="shell")
            self._resumed = str(requester.msg.get("msg_id") or "")

    def _shell_stream(self) -> Any:
        k = self.kernel
        if getattr(k, "_supports_kernel_subshells", False):
            return k.shell_channel_thread.manager.get_subshell_to_shell_channel_socket(None)
        return k.shell_stream

    def undo(self, requester: Requester) -> None:
        """Back to the state before the last cell: the live snapshot's parent (with
        automatic snapshots the live one holds the state after the last cell)."""
        if not self.settings.auto:
            raise NothingToUndo(
                "undo needs automatic snapshots, which are off",
                "Turn them on (%chkpt auto on, or Settings > Kernel snapshots); from then "
                "on every cell can be undone. %restore returns to any snapshot meanwhile",
            )
        snaps = {s["id"]: s for s in self.call("list", now=True)["snapshots"]}
        # the last cell has no snapshot after it (dirty): back to the last snapshot
        live = snaps.get(self.live or "") or {}
        target = self.live if self._dirty else live.get("parent")
        if not target or target not in snaps:
            raise NothingToUndo(
                "there is no snapshot from before the last cell",
                "Undo goes back one cell at a time, as far as automatic snapshots go back "
                "(older ones are pruned: %chkpt auto on --keep N keeps more)",
            )
        self.restore(target, requester, mode="undo")

    def redo(self, requester: Requester) -> None:
        """Forward again to the state the last undo left."""
        if not self._redo:
            raise NothingToUndo(
                "there is nothing to redo",
                "Redo goes forward after %chkpt undo, until a cell runs",
            )
        self.restore(self._redo[-1], requester, mode="redo")

    @contextlib.contextmanager
    def _cancel_on_interrupt(self) -> Iterator[_Waiting]:
        """Interrupt (SIGINT) while the helper works for us asks it to cancel: a
        snapshot or restore not frozen yet is called off, a snapshot being stored
        goes on in the background. We go on waiting for the request's own answer,
        which says what happened (no KeyboardInterrupt: that would leave the answer
        unread while the helper may still be working on this process). While we are
        frozen we cannot run; a signal sent then is taken once we run again."""
        waiting = _Waiting(self)
        asked = waiting.asked

        def on_sigint(signum: int, frame: Any) -> None:
            asked.set()

        if threading.current_thread() is not threading.main_thread():
            yield waiting
            return
        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield waiting
        finally:
            signal.signal(signal.SIGINT, old)

    def _cancel(self) -> None:
        client = self._client
        request = client.in_flight if client is not None else None
        if request is None:
            return
        log.info("interrupted: cancelling helper request %s", request)
        try:
            # from another connection: this one is busy with the request
            with HelperClient(start=False) as other:
                other.call("cancel", timeout=CANCEL_TIMEOUT_S, request=request)
        except HelperTimeout:
            # stuck: stop waiting for it (the request's connection is dropped; the
            # helper checks for that before it freezes us)
            raise HelperTimeout(
                f"the helper did not take the interrupt within {CANCEL_TIMEOUT_S:g} s; "
                "the kernel stopped waiting for it and runs on",
                "A snapshot the helper had already taken may still be stored: %snapshots "
                f"lists what was. The helper's log says what it is doing: {helper_log()}",
            ) from None
        except ChkptError as e:  # gone: the request's answer will say so
            log.warning("could not cancel request %s: %s", request, e)

    def restore_soon(self, ref: str) -> None:
        """Restore from a widget callback, which may run on a subshell thread:
        restores happen on the main thread, from its event loop."""
        requester = self.requester("comm")

        def run() -> None:
            try:
                self.restore(ref, requester)
            except ChkptError as e:
                self._stream(requester.msg, f"jupyter-chkpt: restore failed: {e}\n", "stderr")

        self.kernel.io_loop.add_callback(run)

    def _feed(self, msg: list[Any]) -> None:
        """Handle `msg` as if it had just arrived for the main thread (in order)."""
        task = asyncio.ensure_future(self._on_main_recv(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pending_messages(self, early: list[list[Any]]) -> list[list[Any]]:
        return [*self._received.values(), *early]

    def _drain_main_socket(self) -> list[list[Any]]:
        """Messages the shell channel already passed to the main thread but it
        has not read yet: a restore would lose them."""
        k = self.kernel
        if not getattr(k, "shell_channel_thread", None):
            return []
        import zmq

        sock = k.shell_channel_thread.manager._shell_channel_to_main.to_socket
        out = []
        while True:
            try:
                out.append(sock.recv_multipart(zmq.NOBLOCK, copy=False))
            except zmq.Again:
                return out

    # --- the safe point ------------------------------------------------------------

    def _publish_status_and_flush(
        self, status: str, channel: str, stream: Any, parent: Any = None
    ) -> None:
        if (
            status == "idle"
            and channel == "shell"
            and threading.current_thread() is threading.main_thread()
        ):
            if self._resumed:
                # the old request a resumed "state left" was in has finished: no
                # snapshot, no bookkeeping for it
                self._resumed = ""
            else:
                # an undo/redo cell that failed changed nothing: not a step of its own
                executed = self._was_execute() and not self._history_cell
                if executed:
                    self._dirty = True  # until a snapshot of this state is stored
                    self._redo = []
                self._history_cell = False
                if self.pending is None and self.settings.auto and executed:
                    self.pending = PendingCheckpoint(secrets.token_hex(4), auto=True)
                if self.pending is not None:
                    parent = self._safe_point(stream) or parent
        self._orig_publish(status, channel, stream, parent)

    def _was_execute(self) -> bool:
        """A user's cell: not a silent execution a frontend makes for itself."""
        parent = self.kernel.get_parent("shell") or {}
        content = parent.get("content") or {}
        return (
            parent.get("header", {}).get("msg_type") == "execute_request"
            and not content.get("silent", False)
            and content.get("store_history", True)
        )

    def _safe_point(self, stream: Any) -> dict[str, Any] | None:
        """Take the wanted snapshot; returns a parent for `idle` if we were restored."""
        want, self.pending = self.pending, None
        assert want is not None
        parent = self.kernel.get_parent("shell")
        if want.reply_to and want.reply_to["msg"]["header"]["msg_id"] in self._cancelled:
            self._reply(stream, want.reply_to, _cancelled_reply())
            return None
        self._quiesce()
        try:
            with self._cancel_on_interrupt() as waiting:
                result = self.call(
                    "checkpoint",
                    timeout=None,
                    waiting=waiting,
                    snap_id=want.snap_id,
                    label=want.label,
                    tags=self._tags(want),
                    keep=self.settings.keep if want.auto else None,
                    max_bytes=self.settings.max_bytes if want.auto else None,
                )
        except HelperStopped as e:
            word = _rescue_word()
            if word.get("state") == "restored" and "restored" in word:
                # We are a restored process after all: the helper died past the point
                # of no return of a restore, and the rescue finished it.
                self._held, self._held_results = None, []  # the process that took it sent them
                return self._after_restore(word["restored"], stream)
            stored = self._stored_after_all(want.snap_id)
            if stored is not None:  # it died after storing it, before it answered
                result = {"snapshot": stored, "stored": True, "helper_stopped": True}
            else:
                stopped = HelperStopped(
                    f"{e.message}; nothing was saved and the kernel runs on as it was{_what(word)}",
                    e.remedy,
                )
                if self._held is not None or self._held_results:  # %checkpoint: the cell fails
                    self._send_held(stopped)
                else:
                    self._stream(parent, f"jupyter-chkpt: snapshot failed: {stopped}\n", "stderr")
                if want.reply_to:
                    self._reply(
                        stream,
                        want.reply_to,
                        {"status": "error", "error": str(stopped), "ename": "HelperStopped"},
                    )
                return None
        except Exception as e:  # whatever it was, idle must still be published
            if not isinstance(e, ChkptError):
                log.exception("snapshot failed")
            err = as_chkpt_error(e, "the kernel's log")
            if self._held is not None or self._held_results:  # %checkpoint: the cell fails
                self._send_held(err)
            else:
                self._stream(parent, f"jupyter-chkpt: snapshot failed: {err}\n", "stderr")
            if want.reply_to:
                self._reply(
                    stream,
                    want.reply_to,
                    {"status": "error", "error": str(err), "ename": type(err).__name__},
                )
            return None
        if "restored" in result:
            self._held, self._held_results = None, []  # the process that took it sent them
            return self._after_restore(result["restored"], stream)
        info = result["snapshot"]
        self.live = info["id"]
        self._dirty = False
        self._changed("taken", info["id"])
        for gone in result.get("removed", []):
            self._changed("deleted", gone)
        self._release_results(True)
        if not want.auto:
            later = (
                ""
                if result.get("stored", True)
                else "; interrupted: it is being stored in the background"
            )
            if result.get("helper_stopped"):
                later = "; the helper stopped right after it stored it (a new one serves now)"
            self._stream(parent, f"snapshot {info['id']} taken: {_describe(info)}{later}\n")
        self._send_held(None)
        if want.reply_to:
            self._reply(stream, want.reply_to, {"status": "ok", "snapshot": info})
        return None

    def _stored_after_all(self, snap_id: str) -> dict[str, Any] | None:
        """After the helper stopped during a snapshot: the snapshot, if it had stored it
        (the store says: a new helper lists it); None if not, or if nobody can say."""
        try:
            listing = self.call("list", timeout=30)
        except ChkptError as e:
            log.warning("could not ask whether snapshot %s was stored: %s", snap_id, e)
            return None
        for info in listing.get("snapshots", []):
            if isinstance(info, dict) and info.get("id") == snap_id:
                return info
        return None

    def _tags(self, want: PendingCheckpoint, *, mid_cell: bool = False) -> dict[str, Any]:
        parent = self.kernel.get_parent("shell") or {}
        code = ""
        count = self._cell_count if mid_cell else self.kernel.execution_count - 1
        if parent.get("header", {}).get("msg_type") == "execute_request":
            code = str(parent.get("content", {}).get("code", ""))
        else:  # a frontend's request between cells: the state follows the last cell
            with contextlib.suppress(Exception):
                hist = self.shell.history_manager.input_hist_raw
                code = str(hist[count]) if 0 < count < len(hist) else ""
        first = next((line for line in code.splitlines() if line.strip()), "")
        try:
            ns = namespace.summarize(self.shell.user_ns, getattr(self.shell, "user_ns_hidden", {}))
        except Exception:  # a summary is a nicety: never the reason a snapshot fails
            log.exception("could not summarize the namespace")
            ns = {"vars": {}, "more": 0}
        return {
            # at the safe point IPython has already counted the cell: it ran as count - 1;
            # in the middle of a cell (a restore's "state left"), the cell's own count
            "execution_count": count,
            "cell": first[:200],
            "auto": want.auto,
            "kind": "auto" if want.auto else "manual",
            "notebook": os.environ.get("JPY_SESSION_NAME", "")[:4096] or None,
            "namespace": ns,
        }

    def _quiesce(self) -> None:
        """Before the process is frozen: history on disk, output sent."""
        hm = getattr(self.shell, "history_manager", None)
        if hm is not None:
            with contextlib.suppress(Exception):
                hm.writeout_cache()
        for f in (sys.stdout, sys.stderr):
            if f is not None:
                with contextlib.suppress(Exception):
                    f.flush()
        done = threading.Event()
        self.kernel.iopub_thread.schedule(done.set)
        done.wait(2.0)
        _wait_for_zmq_io(IOPUB_DRAIN_S)

    # --- after a restore -------------------------------------------------------------

    def _after_restore(self, restored: dict[str, Any], stream: Any) -> dict[str, Any]:
        self.restores += 1
        _rescue_word()  # the helper's word for the case it died before its reply: not needed
        snap, result, carry = restored["snapshot"], restored["result"], restored["carry"]
        self.live = snap["id"]
        self._dirty = False
        # the user's preferences now, not the snapshot's; the undo/redo history
        with contextlib.suppress(TypeError, ValueError):
            self.settings = Settings(**carry.get("settings") or asdict(self.settings))
        self._redo = [str(i) for i in carry.get("redo") or []]
        for msg_id in carry.get("cancelled") or []:
            self._cancelled.add(str(msg_id))
        self._history_cell = False
        result = {**result, "left": carry.get("left")}
        req = Requester(**carry["requester"])
        import zmq

        pending = [[zmq.Frame(base64.b64decode(f)) for f in m] for m in carry.get("pending", [])]

        # Stale requests: whatever comes back from the image that the pre-restore
        # process had already handled, or hands over to us now.
        self._seen_since_restore = _BoundedSet(2 * HANDLED_MEMORY, carry.get("handled", []))
        self._seen_since_restore.add(req.msg["header"]["msg_id"])
        for frames in pending:
            msg_id = self._msg_id(frames)
            if msg_id:
                self._seen_since_restore.add(msg_id)
        self._new_history_session()
        moved = snap.get("pid") not in (None, os.getpid())
        if moved:
            _moved_in(int(snap["pid"]))
            # The helper saw this process's connection close with the fd table it had;
            # register again now, so that listings (REST, the panel) know it at once.
            self._drop_client()
            with contextlib.suppress(ChkptError):
                _ = self.client
        _threads_renumbered(result.get("threads_recreated", []))
        _children_gone(result.get("children_gone", []))
        # a move leaves no connection of the snapshot's: every frontend reconnects
        if moved or result.get("files", {}).get("closed"):
            self._wait_for_frontends(carry.get("peers", {}), float(carry.get("asked", 0.0)), moved)

        parent = {**req.msg, "content": {}}
        idents = [base64.b64decode(i) for i in req.idents]
        self.kernel.set_parent(idents, parent, channel="shell")
        count = self.kernel.execution_count - 1  # the last cell the restored state ran
        lines = [
            f"restored snapshot {snap['id']} ({_describe(snap)}): the kernel is back after "
            f"cell [{count}]; the next cell runs as [{count + 1}]"
        ]
        if snap.get("pid") not in (None, os.getpid()):
            came = snap.get("tags", {}).get("notebook") or "this kernel"
            lines.append(
                f"  it was taken in an earlier process of {came} (PID {snap['pid']}), whose "
                f"state now runs in this one (PID {os.getpid()})"
            )
        if carry.get("left"):
            lines.append(
                f"  the state it left is kept as snapshot {carry['left']}: "
                f"%restore {carry['left']} goes back to it"
            )
        recreated = result.get("threads_recreated", [])
        if recreated and not moved:
            lines.append(f"  {len(recreated)} thread(s) that had ended since were started again")
        elif recreated:
            lines.append(f"  its {len(recreated) + 1} threads run in this process")
        lines += [f"  note: {n}" for n in result.get("notes", [])]
        self._stream(parent, "\n".join(lines) + "\n")
        self._publish(
            "chkpt_restored",
            {
                "snapshot": snap,
                "execution_count": count,
                "notes": result.get("notes", []),
                "left": carry.get("left"),
            },
            parent,
        )
        self._changed("restored", snap["id"], parent)
        if req.msg_type == "comm":
            pass  # a widget asked: there is no request to answer
        elif req.msg_type == "execute_request":
            content = {
                "status": "ok",
                "execution_count": req.execution_count,
                "user_expressions": {},
                "payload": [],
            }
            self.kernel.session.send(stream, "execute_reply", content, parent, ident=idents)
        else:
            self.kernel.session.send(
                stream,
                "chkpt_reply",
                {"status": "ok", "operation": "restore", "snapshot": snap, "result": result},
                parent,
                ident=idents,
            )
        if carry.get("running"):
            self._undone(stream, carry["running"], snap["id"])
        for frames in pending:
            self._replays.add(id(frames))
            self._feed(frames)
        return parent

    def _undone(self, stream: Any, running: dict[str, Any], snap_id: str) -> None:
        """Answer the cell that was awaiting when the restore ran: it failed."""
        import zmq

        frames = [zmq.Frame(base64.b64decode(f)) for f in running["frames"]]
        try:
            idents, raw = self.kernel.session.feed_identities(frames, copy=False)
            msg = self.kernel.session.deserialize(raw, content=False, copy=False)
        except Exception:
            log.exception("could not answer the cell the restore interrupted")
            return
        if msg["header"]["msg_type"] != "execute_request":
            return
        error = {
            "ename": "Restored",
            "evalue": f"the kernel was restored to snapshot {snap_id} while this cell ran: "
            "what it did is gone with the rest of the state after the snapshot",
            "traceback": [],
        }
        count = int(running.get("execution_count") or 0)
        self._publish("error", error, msg)
        content = {"status": "error", "execution_count": count, **error}
        self.kernel.session.send(stream, "execute_reply", content, msg, ident=idents)
        self._publish("status", {"execution_state": "idle"}, msg)

    def _new_history_session(self) -> None:
        """The history database was not rolled back: continue in a new session, so
        that line numbers the restored counter repeats do not collide."""
        hm = getattr(self.shell, "history_manager", None)
        if hm is None or not getattr(hm, "enabled", True):
            return
        try:
            hm.writeout_cache()
            hm.new_session()
        except Exception as e:
            log.warning("jupyter-chkpt: could not start a new history session: %s", e)

    def _wait_for_frontends(self, peers: dict[str, int], asked: float, moved: bool) -> None:
        """Connections made since the snapshot were closed (all of them, after a
        move): frontends reconnect by themselves (zmq), but a reply routed or output
        published before they are back would be lost (XPUB drops what no subscriber
        takes). Wait until shell and IOPub have as many connections as before the
        restore, then, if IOPub's were reset, for subscriptions made since the restore
        was asked (`asked`, CLOCK_MONOTONIC: the same clock in every process): after a
        move one per IOPub connection there was (two browser tabs, jupyter_server's
        activity watcher), else one."""
        ports = self._ports()

        def missing(names: tuple[str, ...] = ("shell", "iopub")) -> bool:
            return any(
                _established(ports[name]) < int(peers[name])
                for name in names
                if name in ports and name in peers
            )

        resubscribes = moved or missing(("iopub",))  # the snapshot's subscribers are gone
        deadline = time.monotonic() + RECONNECT_WAIT_S
        waited = False
        while time.monotonic() < deadline and missing():
            waited = True
            time.sleep(0.02)
        if waited:
            # TCP is up before zmq's handshake tells the ROUTER the peer's identity;
            # a reply routed before that is dropped (seen as a storm client that got
            # no reply). The handshake is a few round trips on the loopback.
            time.sleep(ZMTP_SETTLE_S)
        if resubscribes:
            # A SUB sends its subscription once its own thread has taken the new
            # connection in: a frontend busy waiting on shell may take a moment.
            want = max(1, int(peers.get("iopub", 1))) if moved else 1
            deadline = time.monotonic() + SUBSCRIBE_WAIT_S
            while (
                sum(t >= asked for t in list(self._subscriptions)) < want
                and time.monotonic() < deadline
            ):
                self._subscribed.wait(0.02)
                self._subscribed.clear()

    def _ports(self) -> dict[str, int]:
        with contextlib.suppress(Exception):
            from ipykernel.kernelapp import IPKernelApp

            app = IPKernelApp.instance()
            return {"shell": int(app.shell_port), "iopub": int(app.iopub_port)}
        return {}

    # --- shell message bookkeeping ---------------------------------------------------

    def _msg_id(self, frames: list[Any]) -> str | None:
        try:
            _, msg = self.kernel.session.feed_identities(frames, copy=False)
            header = self.kernel.session.unpack(
                msg[1].bytes if hasattr(msg[1], "bytes") else msg[1]
            )
            return str(header["msg_id"])
        except Exception:
            return None

    async def _dispatch_shell(self, msg: Any, /, subshell_id: str | None = None, **kw: Any) -> Any:
        if subshell_id is None and threading.current_thread() is threading.main_thread():
            self._received.pop(id(msg), None)  # no longer pending: being handled
            replay = id(msg) in self._replays
            self._replays.discard(id(msg))
            msg_id = self._msg_id(msg)
            if msg_id is not None:
                if not replay and msg_id in self._seen_since_restore:
                    log.info(
                        "jupyter-chkpt: dropped stale request %s from before the restore", msg_id
                    )
                    return None
                if self.restores:
                    self._seen_since_restore.add(msg_id)
                self._handled.append(msg_id)
            self._running = msg
            try:
                return await self._orig_dispatch(msg, subshell_id=subshell_id, **kw)
            finally:
                if self._running is msg:
                    self._running = None
        return await self._orig_dispatch(msg, subshell_id=subshell_id, **kw)

    # --- the chkpt_request shell message ---------------------------------------------

    def _chkpt_control(self, stream: Any, ident: list[bytes], parent: dict[str, Any]) -> None:
        """On the control channel (its own thread, so it runs while a cell does):
        {"operation": "cancel", "requests": [msg_id, ...]} cancels chkpt_requests
        that wait for the running cell, or whose helper request is not frozen yet."""
        content = parent.get("content", {})
        requests = content.get("requests")
        if content.get("operation") != "cancel" or not (
            isinstance(requests, list) and all(isinstance(r, str) for r in requests)
        ):
            reply: dict[str, Any] = {
                "status": "error",
                "ename": "BadRequest",
                "error": 'the control channel takes {"operation": "cancel", "requests": '
                "[msg_id, ...]} only",
            }
        else:
            for r in requests[:1000]:
                self._cancelled.add(r)
            # not dispatched yet: certain to answer Cancelled (the asker may stop waiting)
            try:  # (the main thread appends to _handled meanwhile: then say nothing)
                queued = [r for r in requests if r != self._serving and r not in self._handled]
            except RuntimeError:
                queued = []
            reply = {
                "status": "ok",
                "operation": "cancel",
                "cancelled": len(requests),
                "queued": queued,
            }
        self.kernel.session.send(stream, "chkpt_reply", reply, parent, ident=ident)

    def _chkpt_request(self, stream: Any, ident: list[bytes], parent: dict[str, Any]) -> None:
        msg_id = parent.get("header", {}).get("msg_id")
        if msg_id in self._cancelled:
            self._reply(stream, {"msg": parent, "idents": ident}, _cancelled_reply())
            return
        self._serving = msg_id
        try:
            self._serve(stream, ident, parent)
        finally:
            self._serving = None

    def _serve(self, stream: Any, ident: list[bytes], parent: dict[str, Any]) -> None:
        content = parent.get("content", {})
        op = content.get("operation")
        to = {"msg": parent, "idents": ident}
        try:
            if op == "checkpoint":
                # answered at the safe point, once the snapshot exists
                self.request_checkpoint(
                    refs.check_label(content.get("label", "")),
                    reply_to={"msg": parent, "idents": ident},
                )
                return
            if op == "restore":
                ref = refs.check_ref(content.get("snapshot", ""))
                keep_left = content.get("keep_left", True)
                if not isinstance(keep_left, bool):
                    raise BadRequest("restore: keep_left must be true or false")
                self.restore(ref, self.requester("chkpt_request"), keep_left=keep_left)
            elif op in ("undo", "redo"):
                self._history_cell = True
                (self.undo if op == "undo" else self.redo)(self.requester("chkpt_request"))
            elif op == "diff":
                result = self.call(
                    "diff",
                    a=refs.check_ref(content.get("a", "")),
                    b=refs.check_ref(content.get("b", "")),
                )
                self._reply(stream, to, {"status": "ok", **result})
            elif op == "list":
                result = self.call("list")
                self._reply(stream, {"msg": parent, "idents": ident}, {"status": "ok", **result})
            elif op == "delete":
                gone = self.call("delete", snapshot=refs.check_ref(content.get("snapshot", "")))
                self._changed("deleted", str(gone.get("deleted")))
                self._reply(stream, {"msg": parent, "idents": ident}, {"status": "ok"})
            elif op == "label":
                result = self.call(
                    "label",
                    snapshot=refs.check_ref(content.get("snapshot", "")),
                    label=refs.check_label(content.get("label", "")),
                )
                self._changed("labelled", str(result["snapshot"]["id"]))
                self._reply(stream, {"msg": parent, "idents": ident}, {"status": "ok", **result})
            elif op == "settings":
                auto = content.get("auto", self.settings.auto)
                keep = content.get("keep", self.settings.keep)
                max_mib = content.get("max_mib", self.settings.max_mib)
                if not isinstance(auto, bool):
                    raise BadRequest("settings: auto must be true or false")
                if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
                    raise BadRequest("settings: keep must be a whole number of at least 1")
                if not isinstance(max_mib, int) or isinstance(max_mib, bool) or max_mib < 0:
                    raise BadRequest("settings: max_mib must be a whole number (0: no limit)")
                self.settings = Settings(auto, keep, max_mib)
                self._reply(stream, to, {"status": "ok", **asdict(self.settings)})
            else:
                raise BadRequest(
                    f"unknown chkpt_request operation {op!r}",
                    "Use checkpoint, restore, undo, redo, diff, list, delete, label or settings",
                )
        except Exception as e:  # a frontend waits for an answer, whatever went wrong
            if not isinstance(e, ChkptError):
                log.exception("chkpt_request %s failed", op)
            err = as_chkpt_error(e, "the kernel's log")
            self._reply(
                stream,
                {"msg": parent, "idents": ident},
                {"status": "error", "error": str(err), "ename": type(err).__name__},
            )

    def requester(self, msg_type: str) -> Requester:
        k = self.kernel
        parent = k.get_parent("shell")
        idents = k._get_shell_context_var(k._shell_parent_ident)
        if isinstance(idents, bytes):
            idents = [idents]
        msg = {key: parent.get(key) for key in ("header", "parent_header", "metadata")}
        msg["msg_id"] = parent["header"]["msg_id"]
        msg["msg_type"] = parent["header"]["msg_type"]
        return Requester(
            msg_type=msg_type,
            msg=_jsonable(msg),
            idents=[_b64(bytes(i)) for i in idents or []],
            execution_count=self._cell_count,
        )

    # --- publishing --------------------------------------------------------------------

    def _reply(self, stream: Any, to: dict[str, Any], content: dict[str, Any]) -> None:
        content = {"operation": to["msg"].get("content", {}).get("operation"), **content}
        self.kernel.session.send(stream, "chkpt_reply", content, to["msg"], ident=to["idents"])

    def _changed(self, event: str, snap_id: str, parent: Any = None) -> None:
        """Tell frontends (the panel) that this kernel's snapshots changed."""
        with contextlib.suppress(Exception):
            self._publish(
                "chkpt_changed",
                {"event": event, "snapshot": snap_id},
                parent or self.kernel.get_parent("shell"),
            )

    def _stream(self, parent: Any, text: str, name: str = "stdout") -> None:
        self._publish("stream", {"name": name, "text": text}, parent)

    def _publish(self, msg_type: str, content: dict[str, Any], parent: Any) -> None:
        k = self.kernel
        k.session.send(k.iopub_socket, msg_type, content, parent=parent, ident=k._topic(msg_type))


class _Waiting:
    """Called while a helper request waits: asks the helper to cancel it once the
    user interrupted (`asked`) or a frontend cancelled the request being served."""

    def __init__(self, ctl: Checkpointer) -> None:
        self.ctl = ctl
        self.asked = threading.Event()
        self.sent = False

    def __call__(self) -> None:
        ctl = self.ctl
        if ctl._serving is not None and ctl._serving in ctl._cancelled:
            self.asked.set()
        if self.asked.is_set() and not self.sent:
            self.sent = True
            ctl._cancel()


@dataclass(frozen=True)
class _Named:
    id: str
    label: str


def _cancelled_reply() -> dict[str, Any]:
    return {
        "status": "error",
        "ename": "Cancelled",
        "error": "the request was cancelled before it ran; nothing was done",
    }


def _rescue_word() -> dict[str, Any]:
    """What a rescue left for this process when its helper died mid-request
    (engine/rescue.py); {} if none. Read once."""
    import json

    path = handoff_path(os.getpid())
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_uid != os.getuid():
                return {}
            word: dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        return {}
    with contextlib.suppress(OSError):
        os.unlink(path)
    with open("/proc/self/stat") as f:
        start_time = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22
    return word if word.get("start_time") == start_time else {}  # another process's


def _what(word: dict[str, Any]) -> str:
    return f" (rescue: {word['what']})" if word.get("what") else ""


def _jsonable(value: Any) -> Any:
    import json

    from jupyter_client.jsonutil import json_default

    return json.loads(json.dumps(value, default=json_default))


def _describe(info: dict[str, Any]) -> str:
    mib = info.get("mem_bytes", 0) / (1 << 20)
    pause = info.get("stats", {}).get("pause_s", 0.0)
    return f"{mib:.1f} MiB, paused {pause:.2f} s"


def _established(port: int) -> int:
    """Established TCP connections to our local `port` that this process holds
    (accepted by zmq). Others with that port are not ours to count: those in the
    listener's backlog, and those a restore's helper still holds duplicates of,
    whose frontends have not been told to reconnect yet."""
    if not port:
        return 0
    ours = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/self/fd/{fd}")
                if link.startswith("socket:["):
                    ours.add(link[8:-1])
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if (
                    int(fields[1].rsplit(":", 1)[1], 16) == port
                    and fields[3] == "01"
                    and fields[9] in ours
                ):
                    n += 1
    return n


def _moved_in(old_pid: int) -> None:
    """A snapshot of an earlier process now runs in this one (engine/transplant.py):
    what cached that process's pid believes in this one's. Without it the Sessions
    refuse to send ("attempted to send message from fork"), output goes to a pipe
    meant for subprocesses, and pyzmq's Context.instance() makes a new context."""
    import gc

    from ipykernel.iostream import IOPubThread, OutStream
    from jupyter_client.session import Session

    pid = os.getpid()
    for obj in gc.get_objects():
        if isinstance(obj, Session) and getattr(obj, "pid", None) == old_pid:
            obj.pid = pid
        elif isinstance(obj, IOPubThread | OutStream) and obj._master_pid == old_pid:
            obj._master_pid = pid
    with contextlib.suppress(ImportError, AttributeError):
        import zmq

        if zmq.Context._instance_pid == old_pid:
            zmq.Context._instance_pid = pid
    main = threading.main_thread()
    if getattr(main, "_native_id", None) == old_pid:
        main._native_id = pid  # type: ignore[attr-defined]


def _threads_renumbered(pairs: list[list[int]]) -> None:
    """Threads recreated under a new tid: `Thread.native_id` cached the old one."""
    renumbered = {old: new for old, new in pairs if old != new}
    for t in threading.enumerate():
        new = renumbered.get(getattr(t, "_native_id", None) or 0)
        if new is not None:
            t._native_id = new  # type: ignore[attr-defined]


def _children_gone(children: list[dict[str, Any]]) -> None:
    """multiprocessing believes in processes that ended after the snapshot.

    A Pool whose workers all died may also have died holding its queue locks (POSIX
    semaphores in shared memory, which a snapshot does not roll back): free those,
    then give the processes an exit code, so that the Pool replaces them and works
    on, and `join()` returns, instead of waiting forever.
    """
    gone = {int(c["pid"]) for c in children}
    if not gone or "multiprocessing.process" not in sys.modules:
        return
    from multiprocessing import process, util

    pools = []
    for finalizer in list(getattr(util, "_finalizer_registry", {}).values()):
        args = getattr(finalizer, "_args", None)
        if getattr(getattr(finalizer, "_callback", None), "__name__", "") != "_terminate_pool":
            continue
        with contextlib.suppress(Exception):
            inqueue, outqueue, workers = args[1], args[2], args[3]  # type: ignore[index]
            if workers and all(w.pid in gone for w in workers):
                for lock in (getattr(inqueue, "_rlock", None), getattr(outqueue, "_wlock", None)):
                    if lock is not None and not lock.acquire(False):
                        log.info("jupyter-chkpt: freed a pool queue lock its dead workers held")
                    if lock is not None:
                        lock.release()
                pools.append((workers, len(workers)))
    for proc in list(getattr(process, "_children", ())):
        popen = getattr(proc, "_popen", None)
        if popen is not None and popen.pid in gone and popen.returncode is None:
            popen.returncode = -signal.SIGKILL  # the exit status is lost; it is gone
    # The pool's own thread replaces them within 0.1 s; until then its worker list is
    # short or empty (Pool.map would divide by its length), so the next cell waits.
    deadline = time.monotonic() + POOL_REFILL_S
    while pools and time.monotonic() < deadline:
        if all(
            len(workers) >= n and all(w.exitcode is None for w in workers) for workers, n in pools
        ):
            break
        time.sleep(0.01)


def _wait_for_zmq_io(timeout: float) -> None:
    """Until zmq's IO threads have taken what was handed to them: each back in
    epoll_wait at two looks a millisecond apart (a message still in a zmq pipe at
    the snapshot would be sent again after a restore to it). Usually 1-2 ms."""
    deadline = time.monotonic() + timeout
    idle_before = False
    while time.monotonic() < deadline:
        idle = _zmq_io_idle()
        if idle and idle_before:
            return
        idle_before = idle
        time.sleep(0.001)


def _zmq_io_idle() -> bool:
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            base = f"/proc/self/task/{tid}"
            with open(f"{base}/comm") as f:
                if not f.read().startswith("ZMQbg/IO"):
                    continue
            with open(f"{base}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"{base}/wchan") as f:
                where = f.read()
            # asleep in epoll_wait (wchan reads "0" where the kernel hides it)
            if state != "S" or (where not in ("0", "") and "epoll" not in where):
                return False
    return True


def _allow_ptrace_by(pid: int) -> None:
    """Hosts with Yama ptrace_scope 1 let only a declared tracer attach."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PTRACER, ctypes.c_ulong(pid), 0, 0, 0)


def _on_main_thread(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise ChkptError(
            f"{what} ran on a subshell thread; snapshots and restores happen on the main shell",
            "Run it in the notebook's main shell, not in a subshell",
        )


class _BoundedSet:
    """A set that forgets its oldest members beyond `limit`."""

    def __init__(self, limit: int, items: Iterable[str] = ()) -> None:
        self.limit = limit
        self._items: collections.OrderedDict[str, None] = collections.OrderedDict()
        for item in items:
            self.add(item)

    def add(self, item: str) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))
