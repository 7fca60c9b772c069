"""Thin REST handlers; the contract is docs/openapi.yaml.

Every handler is authenticated (@web.authenticated) and authorized on the
"kernels" resource through jupyter_server's authorizer (@authorized).
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from .. import __version__
from ..errors import (
    AmbiguousSnapshot,
    ChkptError,
    HelperUnavailable,
    KernelBusy,
    KernelGone,
    KernelTimeout,
    NotRegistered,
    NotSnapshotsKernel,
    RequestRefused,
    UnknownSnapshot,
)
from . import service

_STATUS = [
    (UnknownSnapshot, 404),
    (AmbiguousSnapshot, 400),
    (NotSnapshotsKernel, 409),
    (NotRegistered, 409),
    (KernelBusy, 409),
    (RequestRefused, 403),
    (HelperUnavailable, 503),
    (KernelGone, 410),
    (KernelTimeout, 504),
]


class ChkptHandler(APIHandler):
    auth_resource = "kernels"

    def fail(self, error: ChkptError) -> NoReturn:
        """Answer with the error as JSON: what happened and what to do."""
        status = next((code for cls, code in _STATUS if isinstance(error, cls)), 500)
        self.log.warning("chkpt: %d %s", status, error)
        self.set_status(status)
        self.finish({"message": str(error), "reason": type(error).__name__})
        raise web.Finish()

    def body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except ValueError:
            raise web.HTTPError(400, "the request body is not JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        return data

    def kernel(self, kernel_id: str) -> Any:
        km = self.kernel_manager
        if kernel_id not in km:
            raise web.HTTPError(404, f"no kernel {kernel_id}: it may have been shut down")
        return km.get_kernel(kernel_id)

    async def ask_kernel(
        self, kernel_id: str, content: dict[str, Any], wait: Any
    ) -> dict[str, Any]:
        km = self.kernel(kernel_id)
        try:
            try:  # refuse non-snapshot kernels before sending anything
                await service.snapshots(kernel_id)
            except NotSnapshotsKernel:
                # a snapshots kernel whose helper restarted registers again on its
                # next request: send it; any other kernel is refused
                if not service.is_snapshots_kernelspec(km):
                    raise
            return await service.kernel_request(km, content, wait=wait is not False)
        except ChkptError as e:
            self.fail(e)


class StatusHandler(ChkptHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        try:
            helper: dict[str, Any] | None = await service.helper_call("status")
            error = None
        except ChkptError as e:
            helper, error = None, str(e)
        self.finish({"version": __version__, "helper": helper, "error": error})


class SnapshotsHandler(ChkptHandler):
    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        self.kernel(kernel_id)
        try:
            self.finish(await service.snapshots(kernel_id))
        except ChkptError as e:
            self.fail(e)

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        body = self.body()
        label = body.get("label", "")
        if not isinstance(label, str):
            raise web.HTTPError(400, "label must be a string")
        reply = await self.ask_kernel(
            kernel_id, {"operation": "checkpoint", "label": label}, body.get("wait")
        )
        self.set_status(201)
        self.finish({"snapshot": reply["snapshot"]})


class SnapshotHandler(ChkptHandler):
    @web.authenticated
    @authorized
    async def patch(self, kernel_id: str, snapshot: str) -> None:
        label = self.body().get("label")
        if not isinstance(label, str):
            raise web.HTTPError(400, 'give the new label as {"label": "..."}')
        self.kernel(kernel_id)
        try:
            await service.snapshots(kernel_id)
            result = await service.helper_call("label", snapshot=snapshot, label=label)
        except ChkptError as e:
            self.fail(e)
        self.finish(result)

    @web.authenticated
    @authorized
    async def delete(self, kernel_id: str, snapshot: str) -> None:
        self.kernel(kernel_id)
        try:
            mine = await service.snapshots(kernel_id)
            if not any(s["id"].startswith(snapshot) for s in mine["snapshots"]):
                raise UnknownSnapshot(f"kernel {kernel_id} has no snapshot {snapshot}")
            await service.helper_call("delete", snapshot=snapshot)
        except ChkptError as e:
            self.fail(e)
        self.set_status(204)
        self.finish()


class RestoreHandler(ChkptHandler):
    @web.authenticated
    @authorized
    async def post(self, kernel_id: str, snapshot: str) -> None:
        body = self.body()
        reply = await self.ask_kernel(
            kernel_id, {"operation": "restore", "snapshot": snapshot}, body.get("wait")
        )
        self.finish({"snapshot": reply["snapshot"], "result": reply["result"]})


class SettingsHandler(ChkptHandler):
    @web.authenticated
    @authorized
    async def put(self, kernel_id: str) -> None:
        body = self.body()
        content: dict[str, Any] = {"operation": "settings"}
        if "auto" in body:
            if not isinstance(body["auto"], bool):
                raise web.HTTPError(400, "auto must be true or false")
            content["auto"] = body["auto"]
        if "keep" in body:
            if not isinstance(body["keep"], int) or body["keep"] < 1:
                raise web.HTTPError(400, "keep must be a whole number of at least 1")
            content["keep"] = body["keep"]
        reply = await self.ask_kernel(kernel_id, content, body.get("wait"))
        self.finish({"auto": reply["auto"], "keep": reply["keep"]})


def setup_handlers(web_app: Any) -> None:
    base = url_path_join(web_app.settings["base_url"], "api", "chkpt")
    kernel = r"/kernels/(?P<kernel_id>[\w-]+)"
    snap = r"/snapshots/(?P<snapshot>[^/]+)"
    web_app.add_handlers(
        ".*$",
        [
            (base + "/status", StatusHandler),
            (base + kernel + "/snapshots", SnapshotsHandler),
            (base + kernel + snap, SnapshotHandler),
            (base + kernel + snap + "/restore", RestoreHandler),
            (base + kernel + "/settings", SettingsHandler),
        ],
    )
