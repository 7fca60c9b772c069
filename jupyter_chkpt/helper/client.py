"""Client of the helper daemon, for kernels, the server extension and the CLI.

Imports no engine code: a kernel never traces itself and stays light. The
first client that finds no helper starts one (`start_helper`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import (
    BadRequest,
    HelperStopped,
    HelperTimeout,
    HelperUnavailable,
    ProtocolError,
    RequestTooLarge,
)
from . import paths, protocol

START_TIMEOUT = 30.0
WAIT_SLICE_S = 0.2  # a call with `waiting` calls it this often while it waits


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def start_helper() -> None:
    """Start a helper daemon (or find that another client just did); returns when it listens."""
    log = paths.log_path()
    with open(log, "ab") as err:
        os.chmod(log, 0o600)
        proc = subprocess.run(
            [sys.executable, "-m", "jupyter_chkpt.helper", "start"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # never in the kernel's process group: interrupts go there
            close_fds=True,
            cwd="/",
            timeout=START_TIMEOUT,
            check=False,
        )
    if proc.returncode != 0:
        raise HelperUnavailable(f"the helper did not start (exit status {proc.returncode})")


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


class HelperClient:
    """One connection to the helper; calls are serialized on it."""

    def __init__(self, *, start: bool = True) -> None:
        path = str(paths.socket_path())
        try:
            self.sock = _connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            if not start:
                raise HelperUnavailable(f"no helper is running ({e.strerror})") from None
            start_helper()
            self.sock = self._wait_for(path)
        pid, uid, _ = peer_credentials(self.sock)
        if uid != os.getuid():
            self.sock.close()
            raise HelperUnavailable(f"the helper socket is served by uid {uid}, not by you")
        self.helper_pid = pid
        self._reader = protocol.LineReader(self.sock)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._broken = False
        self.in_flight: int | None = None  # id of the request awaiting its answer

    def _abandon(self) -> None:
        """Give the connection up mid-request. Shut down, not only closed: the helper
        holds a duplicate of our end (its fd keeper, for restores), so a close alone
        would leave the socket open and a late answer queued in it, to be read by a
        process restored to a moment it waited on this socket; shut down, that one
        reads end-of-file and takes the restore's word (engine/journal.py)."""
        self._broken = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.close()

    @staticmethod
    def _wait_for(path: str) -> socket.socket:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                return _connect(path)
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise HelperUnavailable("the helper started but does not listen") from None
                time.sleep(0.05)

    def call(
        self,
        op: str,
        timeout: float | None = None,
        waiting: Callable[[], None] | None = None,
        **args: Any,
    ) -> dict[str, Any]:
        """Send one request and return its result; errors come back raised.

        `waiting` is called every WAIT_SLICE_S while the answer has not come: a
        wait in a blocking receive would not see a signal another thread took (the
        main thread's Python handler runs only once the receive returns)."""
        with self._lock:
            if self._broken:
                raise HelperUnavailable("this connection to the helper was abandoned")
            req_id = next(self._ids)
            data = protocol.encode(protocol.request(req_id, op, **args))
            if len(data) - 1 > protocol.MAX_LINE:  # the helper would skip it
                raise RequestTooLarge(
                    f"a {op} request of {len(data) - 1} bytes is over the helper's limit of "
                    f"{protocol.MAX_LINE} bytes; it was not sent",
                    "Nothing was done. Labels and tags are small; a restore carries the shell "
                    "messages queued behind it: let those run first, then restore",
                )
            if self._peer_gone():
                self._abandon()  # between requests (a restarted helper): safe to repeat
                raise HelperUnavailable("the helper closed the connection (it may have exited)")
            self.sock.settimeout(timeout)
            self.in_flight = req_id
            try:
                self.sock.sendall(data)
                line = self._read(timeout, waiting)
            except TimeoutError:
                self._abandon()
                raise HelperTimeout(f"the helper did not answer {op} within {timeout} s") from None
            except OSError as e:
                self._abandon()
                raise HelperStopped(f"lost the connection to the helper during {op}: {e}") from None
            except RequestTooLarge as e:
                self._abandon()
                raise ProtocolError(f"the helper's reply: {e.message}") from None
            except BaseException:
                # interrupted while the helper works: its late reply must never be read
                # as the answer to another request
                self._abandon()
                raise
            finally:
                self.in_flight = None
            if line is None:
                self._abandon()
                raise HelperStopped(f"the helper stopped during {op}, before it answered")
            try:
                reply = protocol.decode(line)
            except BadRequest as e:
                self._abandon()
                raise ProtocolError(f"the helper's reply: {e.message}") from None
            if reply.get("id") != req_id:
                raise ProtocolError(f"reply to request {reply.get('id')}, expected {req_id}")
            return protocol.raise_for(reply)

    def _read(self, timeout: float | None, waiting: Callable[[], None] | None) -> bytes | None:
        if waiting is None:
            return self._reader.read()
        deadline = None if timeout is None else time.monotonic() + timeout
        self.sock.settimeout(WAIT_SLICE_S)
        while True:
            try:
                return self._reader.read()  # keeps what it read so far across timeouts
            except TimeoutError:
                if deadline is not None and time.monotonic() > deadline:
                    raise
                waiting()

    def _peer_gone(self) -> bool:
        """Whether the helper hung up while we were not asking it anything."""
        try:
            self.sock.settimeout(0.0)
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> HelperClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
