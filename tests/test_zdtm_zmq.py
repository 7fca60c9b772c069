"""pyzmq over tcp and inproc: the kernel-like case that crashed restored processes.

tests/targets/py_zmq.py serves REP on tcp, talks to itself over two REQ
clients and an inproc PAIR. Around a restore, clients outside it (here, in the
test) connect and disconnect the way Jupyter frontends do.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
import zdtm
import zmq

from jupyter_chkpt.engine import checkpoint, restore

_ids = itertools.count()


class Client:
    """A frontend-like client: DEALER to the target's REP, retrying until answered.

    A connection the restore closed is re-made by zmq on its own; a request sent
    into the dying connection is lost, so an unanswered one is sent again.
    """

    def __init__(self, ctx: zmq.Context, port: int) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def ask(self, timeout: float = 30.0) -> None:
        text = f"q{next(_ids)}".encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.send_multipart([b"", text])
            if self.sock.poll(1000):
                while self.sock.poll(0):
                    if self.sock.recv_multipart()[-1] == b"re:" + text:
                        return
        raise AssertionError(f"no reply to {text!r} within {timeout} s")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def _start(spawn) -> tuple[zdtm.Target, int]:
    target = spawn("py_zmq.py")
    return target, int(target.ok("port"))


def _after_restore(target: zdtm.Target, *clients: Client) -> None:
    zdtm.assert_released(target.pid)
    target.ok("verify")
    target.ok("work")
    for c in clients:
        c.ask()


@pytest.mark.timeout(120)
def test_connection_made_after_the_snapshot(spawn, store, keeper, ctx) -> None:
    target, port = _start(spawn)
    old = Client(ctx, port)
    old.ask()
    snap = checkpoint(target.pid, store, keeper=keeper)
    new = Client(ctx, port)
    new.ask()
    target.ok("mutate")
    result = restore(target.pid, store, snap.id, keeper=keeper)
    assert result.files.closed, result.files  # the new connections
    _after_restore(target, old, new)
    Client(ctx, port).ask()
    target.quit()


@pytest.mark.timeout(120)
def test_connection_closed_after_the_snapshot(spawn, store, keeper, ctx) -> None:
    target, port = _start(spawn)
    gone = Client(ctx, port)
    gone.ask()
    snap = checkpoint(target.pid, store, keeper=keeper)
    gone.close()
    time.sleep(0.2)  # the target's IO thread sees the close and drops the connection
    result = restore(target.pid, store, snap.id, keeper=keeper)
    assert any("other end was closed" in n for n in result.notes), result.notes
    _after_restore(target)
    Client(ctx, port).ask()
    target.quit()


@pytest.mark.timeout(120)
def test_socket_closed_after_the_snapshot(spawn, store, keeper, ctx) -> None:
    """The target closes a REQ socket and an inproc PAIR end (its mailbox
    eventfds go, and the zmq sockets' epoll registrations), then uses them
    again after the restore."""
    target, port = _start(spawn)
    snap = checkpoint(target.pid, store, keeper=keeper)
    target.ok("mutate")
    result = restore(target.pid, store, snap.id, keeper=keeper)
    assert result.files.put_back, result.files
    _after_restore(target, Client(ctx, port))
    target.quit()


def _usage(pid: int, keeper) -> dict[str, int]:
    return {
        "target_fds": zdtm.fd_count(pid),
        "helper_fds": zdtm.fd_count("self"),
        "held": keeper.held_count(),
    }


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_hundred_cycles_with_connection_churn(spawn, store, keeper, ctx) -> None:
    """restore, 100 times, with clients coming and going and sockets opened and
    closed in between: nothing accumulates in the target or the helper."""
    target, port = _start(spawn)
    steady = Client(ctx, port)
    steady.ask()
    snap = checkpoint(target.pid, store, keeper=keeper)
    start = _usage(target.pid, keeper)
    for i in range(100):
        churn = [Client(ctx, port) for _ in range(2)]
        for c in churn:
            c.ask()
        if i % 2:
            churn.pop().close()
        target.ok("mutate")
        restore(target.pid, store, snap.id, keeper=keeper)
        target.ok("verify")
        steady.ask()
        for c in churn:
            c.close()
    target.ok("work")
    end = _usage(target.pid, keeper)
    assert end == start, f"after 100 cycles: {end}, at the start: {start}"
    target.quit()
