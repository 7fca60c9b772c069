"""Many clients ask for restores and snapshots at once.

Clients connected before and after the snapshot send `chkpt_request`s
together; each must get exactly one reply, the kernel must stay alive, end in
a whole state (the one it had, or a snapshot's) and keep working. Requests
are carried out one after another, in the order the kernel receives them
(docs/ARCHITECTURE.md, "Concurrent requests").
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest

CLIENTS = 4
ROUNDS = 3


def frontend(kernel: Any) -> Any:
    """A client with a session of its own, as every real frontend has (km.client()
    shares the manager's: its sockets would all carry one zmq identity)."""
    from jupyter_client.blocking import BlockingKernelClient

    kc = BlockingKernelClient(connection_file=kernel.km.connection_file)
    kc.load_connection_file()
    return kc


def request(mix: str, i: int, snap: str, round_: int) -> dict[str, Any]:
    if mix == "restores" or i % 2 == 0:
        return {"operation": "restore", "snapshot": snap}
    return {"operation": "checkpoint", "label": f"r{round_}c{i}"}


def fire(
    barrier: threading.Barrier,
    kc: Any,
    content: dict[str, Any],
    sent: list[tuple[Any, str, dict[str, Any]]],
) -> None:
    """Send one request as soon as every client is ready to."""
    msg = kc.session.msg("chkpt_request", content)
    barrier.wait()
    kc.shell_channel.send(msg)
    sent.append((kc, str(msg["header"]["msg_id"]), content))


def collect(kc: Any, ids: set[str], timeout: float) -> dict[str, list[dict[str, Any]]]:
    """Every shell reply to `ids` within `timeout` (duplicates counted)."""
    got: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(got[i] for i in ids):
            # a moment more, to catch a duplicate
            deadline = min(deadline, time.monotonic() + 1.0)
        try:
            m = kc.get_shell_msg(timeout=0.2)
        except queue.Empty:
            continue
        pid = m["parent_header"].get("msg_id")
        if pid in got:
            got[pid].append(m)
    return got


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mix", ["restores", "restores-and-snapshots"])
def test_storm_of_requests(mix: str, kernel) -> None:
    kernel.ok("import hashlib; big = bytearray(b'E' * (64 << 20)); x = 'E'")
    snap = kernel.chkpt("checkpoint", label="E").content["snapshot"]["id"]
    kernel.ok("big[:] = b'F' * len(big); x = 'F'")
    for round_ in range(ROUNDS):
        clients = []
        for _ in range(CLIENTS):
            kc = frontend(kernel)
            kc.start_channels()
            kc.wait_for_ready(timeout=60)
            clients.append(kc)
        try:
            sent: list[tuple[Any, str, dict[str, Any]]] = []
            barrier = threading.Barrier(CLIENTS)
            threads = [
                threading.Thread(
                    target=fire, args=(barrier, kc, request(mix, i, snap, round_), sent)
                )
                for i, kc in enumerate(clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for kc, msg_id, content in sent:
                replies = collect(kc, {msg_id}, timeout=180)[msg_id]
                assert len(replies) == 1, f"round {round_}: {len(replies)} replies to {content}"
                assert replies[0]["content"]["status"] in ("ok", "error"), replies[0]["content"]
        finally:
            for kc in clients:
                kc.stop_channels()
        assert kernel.km.is_alive()
        state = kernel.value("(x, big.count(x.encode()) == len(big))")
        assert state in ("('E', True)", "('F', True)"), state
        kernel.ok("big[:] = b'F' * len(big); x = 'F'")
    assert kernel.value("sum(range(10))") == "45"
