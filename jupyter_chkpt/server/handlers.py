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

from .. import __version__, refs
from ..errors import (
    AmbiguousSnapshot,
    BadRequest,
    Cancelled,
    ChkptError,
    EngineError,
    HelperError,
    HelperUnavailable,
    InternalError,
    KernelBusy,
    KernelGone,
    KernelTimeout,
    NothingToUndo,
    NotRegistered,
    NotSnapshotsKernel,
    ProcessError,
    RequestRefused,
    RequestTooLarge,
    StoreError,
    StoreFull,
    UnknownSnapshot,
    UnsupportedPlatform,
)
from . import EVENTS_ID, service

MAX_BODY = 64 << 10  # bytes; the bodies hold a label and a few flags

# First match wins. Refusals (the state or the request does not allow it; the
# message says what to do) are 4xx; 5xx only where the service itself failed.
_STATUS = [
    (UnknownSnapshot, 404),
    (AmbiguousSnapshot, 400),
    (RequestTooLarge, 413),
    (BadRequest, 400),
    (NotSnapshotsKernel, 409),
    (NotRegistered, 409),
    (KernelBusy, 409),
    (NothingToUndo, 409),
    (Cancelled, 409),
    (RequestRefused, 403),
    (HelperUnavailable, 503),
    (KernelGone, 410),
    (KernelTimeout, 504),
    (StoreFull, 507),
    (UnsupportedPlatform, 501),
    (ProcessError, 409),  # the kernel's state cannot be snapshotted or restored as it is
    (StoreError, 409),  # a damaged or unreadable snapshot
    (HelperError, 502),
    (InternalError, 500),
    (EngineError, 500),
]
# Expected answers, not problems of the server: its log keeps quiet about them.
_QUIET = (NotSnapshotsKernel, Cancelled, NothingToUndo)


class ChkptHandler(APIHandler):
    auth_resource = "kernels"

    def fail(self, error: ChkptError) -> NoReturn:
        """Answer with the error as JSON: what happened and what to do."""
        status = next((code for cls, code in _STATUS if isinstance(error, cls)), 500)
        if isinstance(error, _QUIET):
            self.log.debug("chkpt: %d %s", status, error)
        elif status < 500:
            self.log.info("chkpt: %d %s", status, error)
        else:
            self.log.warning("chkpt: %d %s", status, error)
        self.set_status(status)
        self.finish({"message": str(error), "reason": type(error).__name__})
        raise web.Finish()

    def changed(self, kernel_id: str, event: str, snapshot: str) -> None:
        """Tell subscribed frontends (jupyter_server's event bus) that a kernel's
        snapshots changed: a panel in another tab refreshes."""
        logger = getattr(self, "event_logger", None)
        if logger is None:
            return
        try:
            logger.emit(
                schema_id=EVENTS_ID,
                data={"kernel_id": kernel_id, "event": event, "snapshot": snapshot},
            )
        except Exception as e:  # an event is a courtesy: the request succeeded
            self.log.debug("chkpt: event not emitted: %s", e)

    def body(self, *fields: str) -> dict[str, Any]:
        """The JSON object sent, holding only `fields`; 4xx for anything else."""
        takes = f"This route takes a JSON object with {', '.join(fields) or 'no fields'}"
        raw = self.request.body
        if not raw:
            return {}
        if len(raw) > MAX_BODY:
            self.fail(
                RequestTooLarge(
                    f"a request body of {len(raw)} bytes is over this API's limit of "
                    f"{MAX_BODY} bytes",
                    f"Nothing was done. {takes}; a label is at most {refs.MAX_LABEL} characters",
                )
            )
        try:
            data = json.loads(raw)
        except ValueError:
            self.fail(BadRequest("the request body is not JSON", takes))
        except RecursionError:
            self.fail(BadRequest("the request body is nested too deeply", takes))
        if not isinstance(data, dict):
            self.fail(BadRequest("the request body must be a JSON object", takes))
        unknown = sorted(set(data) - set(fields))
        if unknown:
            self.fail(BadRequest(f"unknown field {unknown[0]!r}", takes))
        if not isinstance(data.get("wait", True), bool):
            self.fail(BadRequest("wait must be true or false", takes))
        return data

    def checked(self, check: Any, value: Any) -> Any:
        """`check(value)` (refs.check_label, refs.check_ref), a BadRequest answered as 400."""
        try:
            return check(value)
        except BadRequest as e:
            self.fail(e)

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
        now = self.get_query_argument("now", "") in ("1", "true")
        try:
            self.finish(await service.snapshots(kernel_id, now=now))
        except ChkptError as e:
            self.fail(e)

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        body = self.body("label", "wait")
        label = self.checked(refs.check_label, body.get("label", ""))
        reply = await self.ask_kernel(
            kernel_id, {"operation": "checkpoint", "label": label}, body.get("wait")
        )
        self.changed(kernel_id, "taken", reply["snapshot"]["id"])
        self.set_status(201)
        self.finish({"snapshot": reply["snapshot"]})


class SnapshotHandler(ChkptHandler):
    @web.authenticated
    @authorized
    async def patch(self, kernel_id: str, snapshot: str) -> None:
        snapshot = self.checked(refs.check_ref, snapshot)
        body = self.body("label")
        if "label" not in body:
            self.fail(BadRequest("no label given", 'Send {"label": "..."}; "" removes the label'))
        label = self.checked(refs.check_label, body["label"])
        self.kernel(kernel_id)
        try:
            await service.snapshots(kernel_id)
            # resolved among this kernel's snapshots only: never another kernel's
            result = await service.helper_call(
                "label", snapshot=snapshot, label=label, kernel_id=kernel_id
            )
        except ChkptError as e:
            self.fail(e)
        self.changed(kernel_id, "labelled", result["snapshot"]["id"])
        self.finish(result)

    @web.authenticated
    @authorized
    async def delete(self, kernel_id: str, snapshot: str) -> None:
        snapshot = self.checked(refs.check_ref, snapshot)
        self.kernel(kernel_id)
        try:
            await service.snapshots(kernel_id)
            gone = await service.helper_call("delete", snapshot=snapshot, kernel_id=kernel_id)
        except ChkptError as e:
            self.fail(e)
        self.changed(kernel_id, "deleted", str(gone.get("deleted", snapshot)))
        self.set_status(204)
        self.finish()


class RestoreHandler(ChkptHandler):
    @web.authenticated
    @authorized
    async def post(self, kernel_id: str, snapshot: str) -> None:
        snapshot = self.checked(refs.check_ref, snapshot)
        body = self.body("wait", "keep_left")
        keep_left = body.get("keep_left", True)
        if not isinstance(keep_left, bool):
            self.fail(BadRequest("keep_left must be true or false", "Send true or false"))
        content = {"operation": "restore", "snapshot": snapshot, "keep_left": keep_left}
        reply = await self.ask_kernel(kernel_id, content, body.get("wait"))
        self.changed(kernel_id, "restored", reply["snapshot"]["id"])
        self.finish({"snapshot": reply["snapshot"], "result": reply["result"]})


class UndoHandler(ChkptHandler):
    """POST .../undo and .../redo: the state before the last cell, and back."""

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str, op: str) -> None:
        body = self.body("wait")
        reply = await self.ask_kernel(kernel_id, {"operation": op}, body.get("wait"))
        self.changed(kernel_id, "restored", reply["snapshot"]["id"])
        self.finish({"snapshot": reply["snapshot"], "result": reply["result"]})


class DiffHandler(ChkptHandler):
    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        a = self.checked(refs.check_ref, self.get_query_argument("from", ""))
        b = self.checked(refs.check_ref, self.get_query_argument("to", ""))
        self.kernel(kernel_id)
        try:
            await service.snapshots(kernel_id)
            result = await service.helper_call("diff", a=a, b=b, kernel_id=kernel_id)
        except ChkptError as e:
            self.fail(e)
        result["from"], result["to"] = result.pop("a"), result.pop("b")
        self.finish(result)


class CancelHandler(ChkptHandler):
    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        self.body()
        km = self.kernel(kernel_id)
        self.finish({"cancelled": await service.cancel(km)})


class SettingsHandler(ChkptHandler):
    @web.authenticated
    @authorized
    async def put(self, kernel_id: str) -> None:
        body = self.body("auto", "keep", "max_mib", "wait")
        takes = (
            "auto is true or false, keep a whole number of at least 1, max_mib a whole "
            "number (0: no limit)"
        )
        content: dict[str, Any] = {"operation": "settings"}
        if "auto" in body:
            if not isinstance(body["auto"], bool):
                self.fail(BadRequest("auto must be true or false", takes))
            content["auto"] = body["auto"]
        for name, least in (("keep", 1), ("max_mib", 0)):
            if name in body:
                value = body[name]  # a JSON true is no number, whatever Python thinks
                if not isinstance(value, int) or isinstance(value, bool) or value < least:
                    self.fail(
                        BadRequest(f"{name} must be a whole number of at least {least}", takes)
                    )
                content[name] = value
        reply = await self.ask_kernel(kernel_id, content, body.get("wait"))
        self.finish({"auto": reply["auto"], "keep": reply["keep"], "max_mib": reply["max_mib"]})


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
            (base + kernel + r"/(?P<op>undo|redo)", UndoHandler),
            (base + kernel + "/diff", DiffHandler),
            (base + kernel + "/cancel", CancelHandler),
        ],
    )
