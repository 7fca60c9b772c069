"""What the REST handlers do, kept out of them: ask a kernel (chkpt_request over
its shell channel) or the helper (list, delete, label, status)."""

from __future__ import annotations

import asyncio
import queue
import time
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient

from ..errors import (
    Cancelled,
    KernelBusy,
    KernelGone,
    KernelTimeout,
    NotRegistered,
    NotSnapshotsKernel,
    error_by_name,
)
from ..helper.client import HelperClient
from ..kernel import tree

KERNEL_REPLY_TIMEOUT = 3600.0  # a request queued behind a long cell waits for it


async def helper_call(op: str, **args: Any) -> dict[str, Any]:
    def call() -> dict[str, Any]:
        with HelperClient() as c:
            return c.call(op, timeout=60, **args)

    return await asyncio.to_thread(call)


def is_snapshots_kernelspec(km: Any) -> bool:
    try:
        return bool(km.kernel_spec.metadata.get("jupyter_chkpt"))
    except Exception:
        return False


async def snapshots(kernel_id: str, *, now: bool = False) -> dict[str, Any]:
    """The kernel's snapshots with the tree order and the live one; `now`: at once,
    with snapshots still being stored (progress displays), else once they are stored."""
    try:
        listing = await helper_call("list", kernel_id=kernel_id, now=now)
    except NotRegistered:
        raise NotSnapshotsKernel("this kernel does not take snapshots") from None
    snaps = listing["snapshots"]
    listing["tree"] = [
        {"id": s["id"], "depth": depth, "last": last} for depth, last, s in tree.ordered(snaps)
    ]
    listing["text"] = tree.render(snaps, listing["kernel"]["live"])
    return listing


# One long-lived shell connection per kernel: a connection made for each request
# would be open in one snapshot and gone at the restore (a note about a closed peer),
# and a reply routed to a connection the restore has just reset could be lost.
_clients: dict[int, tuple[AsyncKernelClient, asyncio.Lock, Any]] = {}
# requests of each kernel not answered yet: msg_id (None before it is sent), cancel asked,
# and certainly cancelled (the kernel had not started it: no need to wait for its answer)
_waiting: dict[int, dict[int, tuple[str | None, asyncio.Event, asyncio.Event]]] = {}


def _client(km: Any) -> tuple[AsyncKernelClient, asyncio.Lock]:
    for key, (kc, _, owner) in list(_clients.items()):
        if getattr(owner, "has_kernel", True) is False:  # its kernel is gone
            kc.stop_channels()
            del _clients[key]
    if id(km) not in _clients:
        kc = AsyncKernelClient()  # a session of its own: never mistaken for a frontend's
        kc.load_connection_info(km.get_connection_info())
        kc.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=True)
        _clients[id(km)] = (kc, asyncio.Lock(), km)
    kc, lock, _ = _clients[id(km)]
    return kc, lock


async def kernel_request(km: Any, content: dict[str, Any], *, wait: bool) -> dict[str, Any]:
    """Send a chkpt_request to the kernel and return its chkpt_reply content.

    The request is queued behind whatever the kernel is running, as cells are; with
    wait=False a busy kernel is refused before anything is sent (never half-applied).
    """
    if not wait and getattr(km, "execution_state", "idle") == "busy":
        raise KernelBusy("the kernel is busy running a cell")
    kc, lock = _client(km)
    waiting = _waiting.setdefault(id(km), {})
    cancelled, certain = asyncio.Event(), asyncio.Event()
    key = id(cancelled)
    waiting[key] = (None, cancelled, certain)
    try:
        async with lock:  # one request at a time per kernel connection
            if cancelled.is_set():
                raise Cancelled("the request was cancelled before it ran; nothing was done")
            msg = kc.session.msg("chkpt_request", content)
            msg_id = msg["header"]["msg_id"]
            waiting[key] = (msg_id, cancelled, certain)
            kc.shell_channel.send(msg)
            deadline = time.monotonic() + KERNEL_REPLY_TIMEOUT
            while True:
                if certain.is_set():  # its late answer is skipped by the next request
                    raise Cancelled("the request was cancelled before it ran; nothing was done")
                try:
                    reply = await kc.get_shell_msg(timeout=0.2)
                except queue.Empty:
                    if not await km.is_alive():
                        raise KernelGone("the kernel died before it answered") from None
                    if time.monotonic() > deadline:
                        raise KernelTimeout("the kernel did not answer within an hour") from None
                    continue
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
    finally:
        waiting.pop(key, None)
    result: dict[str, Any] = reply["content"]
    if result.get("status") != "ok":
        cls = error_by_name(str(result.get("ename", "")))
        raise cls(str(result.get("error", "the kernel refused")), "")  # remedy is in the text
    return result


async def cancel(km: Any) -> int:
    """Cancel this kernel's requests that wait: those queued here, and those sent
    that still wait for a running cell or have not frozen the kernel yet (over the
    control channel, which the kernel serves while a cell runs). Each answers
    Cancelled; one already past its freeze goes on."""
    waiting = list(_waiting.get(id(km), {}).values())
    for _, event, _ in waiting:
        event.set()
    sent = [msg_id for msg_id, _, _ in waiting if msg_id is not None]
    if sent:
        kc, _ = _client(km)
        msg = kc.session.msg("chkpt_request", {"operation": "cancel", "requests": sent})
        kc.control_channel.send(msg)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                reply = await kc.get_control_msg(timeout=1)
            except queue.Empty:
                continue
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                queued = set(reply["content"].get("queued") or [])
                for msg_id, _, certain in waiting:
                    if msg_id in queued:
                        certain.set()
                break
    return len(waiting)
