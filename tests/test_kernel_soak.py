"""Soak: 1000 cycles of a new client, a snapshot and a restore.

What a long session does to a kernel and its helper: every cycle a new
frontend connects, takes a snapshot, restores it, deletes the snapshot before
(as retention does with automatic snapshots), and goes. The kernel's and
the helper's fds, threads and resident memory are recorded; after a warm-up
they must stay within fixed bounds (the figures are printed for the notes).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from test_kernel_storm import frontend

CYCLES = int(os.environ.get("JUPYTER_CHKPT_SOAK_CYCLES", "1000"))
WARM_UP = max(1, CYCLES // 10)
# growth allowed between the warm-up and the end, whatever the number of cycles
FD_SLACK = 4
THREAD_SLACK = 2
RSS_SLACK_KIB = 48 * 1024
STORE_SLACK_KIB = 64 * 1024


def usage(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f)
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(status["Threads"]),
        "rss_kib": int(status["VmRSS"].split()[0]),
    }


def request(kc: Any, content: dict[str, Any]) -> dict[str, Any]:
    msg = kc.session.msg("chkpt_request", content)
    kc.shell_channel.send(msg)
    while True:
        reply = kc.get_shell_msg(timeout=120)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            assert reply["content"]["status"] == "ok", reply["content"]
            return dict(reply["content"])


def du_kib(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) // 1024


@pytest.mark.timeout(3600)
def test_soak(kernel, helper_dirs) -> None:
    from jupyter_chkpt.helper.client import HelperClient

    kernel.ok("import collections; log = collections.deque(maxlen=10); big = bytearray(32 << 20)")
    samples: dict[int, dict[str, dict[str, int]]] = {}
    previous = None
    started = time.monotonic()
    for cycle in range(1, CYCLES + 1):
        kc = frontend(kernel)
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            snap = request(kc, {"operation": "checkpoint", "label": ""})["snapshot"]["id"]
            request(kc, {"operation": "restore", "snapshot": snap})
            if previous is not None:
                request(kc, {"operation": "delete", "snapshot": previous})
            previous = snap
        finally:
            kc.stop_channels()
        # The test's own client sees every cycle's IOPub traffic: read it, or zmq drops
        # what comes past its queue's limit (1000 messages), the final check's among it.
        while kernel.kc.iopub_channel.msg_ready():
            kernel.kc.get_iopub_msg(timeout=1)
        if cycle in (WARM_UP, CYCLES):
            with HelperClient(start=False) as c:
                helper = c.helper_pid
            samples[cycle] = {
                "kernel": usage(kernel.pid),
                "helper": usage(helper),
                "store": {"kib": du_kib(helper_dirs[1])},
            }
    took = time.monotonic() - started
    assert kernel.value("sum(range(10))") == "45"
    first, last = samples[WARM_UP], samples[CYCLES]
    print(f"\nsoak: {CYCLES} cycles in {took:.0f} s ({1000 * took / CYCLES:.0f} ms per cycle)")
    for who in ("kernel", "helper"):
        grow = {k: last[who][k] - first[who][k] for k in last[who]}
        per_cycle = grow["rss_kib"] / max(1, CYCLES - WARM_UP)
        print(
            f"  {who}: at {WARM_UP} {first[who]}, at {CYCLES} {last[who]}, RSS {per_cycle:+.1f} KiB/cycle"
        )
    print(
        f"  store: {first['store']['kib']} KiB at {WARM_UP}, {last['store']['kib']} KiB at {CYCLES}"
    )
    # deleted snapshots' pages go with the helper's automatic gc
    assert last["store"]["kib"] - first["store"]["kib"] <= STORE_SLACK_KIB, (first, last)
    for who in ("kernel", "helper"):
        assert last[who]["fds"] - first[who]["fds"] <= FD_SLACK, (who, first, last)
        assert last[who]["threads"] - first[who]["threads"] <= THREAD_SLACK, (who, first, last)
        assert last[who]["rss_kib"] - first[who]["rss_kib"] <= RSS_SLACK_KIB, (who, first, last)
