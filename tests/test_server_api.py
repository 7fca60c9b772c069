"""The REST API (/api/chkpt/), through a real jupyter_server, real kernels and a real helper."""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking import BlockingKernelClient
from tornado.httpclient import HTTPClientError

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "share" / "jupyter" / "kernels" / "python3-chkpt"


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_chkpt": True}}}


@pytest.fixture
def api(jp_fetch, jp_serverapp, jp_data_dir, jp_asyncio_loop, tmp_path, monkeypatch):
    """jp_fetch under /api/chkpt, with the snapshots kernelspec and a helper of this test's.

    The tests are plain functions driving the server's own event loop (`go`)."""
    shutil.copytree(SPEC, jp_data_dir / "kernels" / "python3-chkpt")
    monkeypatch.setenv("JUPYTER_CHKPT_STORE", str(tmp_path / "store"))
    yield jp_fetch
    from jupyter_chkpt.errors import HelperUnavailable
    from jupyter_chkpt.helper.client import HelperClient

    for kid in list(jp_serverapp.kernel_manager.list_kernel_ids()):
        jp_asyncio_loop.run_until_complete(
            jp_serverapp.kernel_manager.shutdown_kernel(kid, now=True)
        )
    try:
        with HelperClient(start=False) as c:
            c.call("shutdown", timeout=10)
    except HelperUnavailable:
        pass


async def start_kernel(fetch: Any, name: str = "python3-chkpt") -> str:
    r = await fetch("api", "kernels", method="POST", body=json.dumps({"name": name}))
    return str(json.loads(r.body)["id"])


def client(serverapp: Any, kid: str) -> BlockingKernelClient:
    kc = BlockingKernelClient()
    kc.load_connection_info(serverapp.kernel_manager.get_kernel(kid).get_connection_info())
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return kc


def run(kc: BlockingKernelClient, code: str) -> str:
    """Run a cell; its execute_result or stdout."""
    out: list[str] = []
    reply = kc.execute_interactive(code, timeout=120, output_hook=lambda m: _collect(m, out))
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(out)


def _collect(m: dict[str, Any], out: list[str]) -> None:
    if m["msg_type"] == "execute_result":
        out.append(m["content"]["data"]["text/plain"])
    elif m["msg_type"] == "stream":
        out.append(m["content"]["text"])


async def call(
    fetch: Any, method: str, *path: str, body: Any = None, params: Any = None
) -> tuple[int, Any]:
    try:
        r = await fetch(
            "api",
            "chkpt",
            *path,
            params=params,
            method=method,
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
        )
    except HTTPClientError as e:
        assert e.response is not None
        return e.code, json.loads(e.response.body)
    return r.code, json.loads(r.body) if r.body else None


@pytest.mark.timeout(300)
def test_snapshot_lifecycle_over_rest(api, jp_serverapp, jp_asyncio_loop) -> None:
    go = jp_asyncio_loop.run_until_complete
    kid = go(start_kernel(api))
    kc = client(jp_serverapp, kid)
    run(kc, "x = 1")
    code, created = go(call(api, "POST", "kernels", kid, "snapshots", body={"label": "one"}))
    assert code == 201, created
    snap = created["snapshot"]
    assert snap["label"] == "one" and snap["tags"]["execution_count"] >= 1
    run(kc, "x = 2")
    code, listing = go(call(api, "GET", "kernels", kid, "snapshots"))
    assert code == 200
    assert [s["id"] for s in listing["snapshots"]] == [snap["id"]]
    assert listing["kernel"]["live"] == snap["id"]
    assert listing["tree"] == [{"id": snap["id"], "depth": 0, "last": True}]

    code, restored = go(
        call(api, "POST", "kernels", kid, "snapshots", snap["id"], "restore", body={})
    )
    assert code == 200, restored
    assert restored["snapshot"]["id"] == snap["id"]
    left = restored["result"]["left"]  # the state the restore left (x = 2), kept
    assert left and left != snap["id"]
    assert run(kc, "x") == "1"

    code, second = go(call(api, "POST", "kernels", kid, "snapshots", body={}))
    assert code == 201
    code, listing = go(call(api, "GET", "kernels", kid, "snapshots"))
    assert [(t["id"], t["depth"]) for t in listing["tree"]] == [
        (snap["id"], 0),
        (left, 1),
        (second["snapshot"]["id"], 1),
    ]
    kinds = {s["id"]: s["tags"]["kind"] for s in listing["snapshots"]}
    assert kinds == {
        snap["id"]: "manual",
        left: "before-restore",
        second["snapshot"]["id"]: "manual",
    }
    assert listing["usage"]["count"] == 3 and listing["earlier"] == []
    code, _ = go(call(api, "DELETE", "kernels", kid, "snapshots", left))
    assert code == 204
    code, labelled = go(
        call(api, "PATCH", "kernels", kid, "snapshots", snap["id"], body={"label": "renamed"})
    )
    assert code == 200 and labelled["snapshot"]["label"] == "renamed"
    code, _ = go(call(api, "DELETE", "kernels", kid, "snapshots", snap["id"]))
    assert code == 204
    code, listing = go(call(api, "GET", "kernels", kid, "snapshots"))
    assert [s["id"] for s in listing["snapshots"]] == [second["snapshot"]["id"]]
    code, settings = go(
        call(api, "PUT", "kernels", kid, "settings", body={"auto": True, "keep": 3})
    )
    assert code == 200 and settings == {"auto": True, "keep": 3, "max_mib": 0}
    code, status = go(call(api, "GET", "status"))
    assert code == 200 and status["helper"]["kernels"], status
    kc.stop_channels()


@pytest.mark.timeout(300)
def test_errors_say_what_to_do(api, jp_serverapp, jp_asyncio_loop) -> None:
    go = jp_asyncio_loop.run_until_complete
    code, err = go(call(api, "GET", "kernels", "no-such-kernel", "snapshots"))
    assert code == 404 and "no kernel" in err["message"]

    stock = go(start_kernel(api, "python3"))
    code, err = go(call(api, "POST", "kernels", stock, "snapshots", body={}))
    assert code == 409 and "Python 3 (snapshots)" in err["message"], err
    code, err = go(call(api, "GET", "kernels", stock, "snapshots"))
    assert code == 409

    kid = go(start_kernel(api))
    kc = client(jp_serverapp, kid)
    code, err = go(call(api, "POST", "kernels", kid, "snapshots", "deadbeef", "restore", body={}))
    assert code == 404 and "no snapshots" in err["message"] and "%checkpoint" in err["message"]
    assert go(call(api, "POST", "kernels", kid, "snapshots", body={}))[0] == 201
    code, err = go(call(api, "POST", "kernels", kid, "snapshots", "deadbeef", "restore", body={}))
    assert code == 404 and "deadbeef" in err["message"], err
    code, err = go(call(api, "PATCH", "kernels", kid, "snapshots", "deadbeef", body={}))
    assert code == 400 and "label" in err["message"]
    code, err = go(call(api, "DELETE", "kernels", kid, "snapshots", "deadbeef"))
    assert code == 404
    code, err = go(call(api, "PUT", "kernels", kid, "settings", body={"keep": 0}))
    assert code == 400
    r = go(
        api(
            "api",
            "chkpt",
            "kernels",
            kid,
            "snapshots",
            method="POST",
            body="not json",
            raise_error=False,
        )
    )
    assert r.code == 400

    # a busy kernel: refused without sending anything, or queued and answered when done
    kc.execute("import time; time.sleep(3)")
    go(asyncio.sleep(0.5))  # the server sees the kernel's busy status
    code, err = go(call(api, "POST", "kernels", kid, "snapshots", body={"wait": False}))
    assert code == 409 and "busy" in err["message"], err
    code, created = go(call(api, "POST", "kernels", kid, "snapshots", body={"label": "q"}))
    assert code == 201 and created["snapshot"]["label"] == "q"
    kc.get_shell_msg(timeout=30)
    code, listing = go(call(api, "GET", "kernels", kid, "snapshots"))
    assert [s["label"] for s in listing["snapshots"]] == ["", "q"], "the refused one was taken"
    kc.stop_channels()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "status"),
        ("GET", "kernels/k/snapshots"),
        ("POST", "kernels/k/snapshots"),
        ("PATCH", "kernels/k/snapshots/s"),
        ("DELETE", "kernels/k/snapshots/s"),
        ("POST", "kernels/k/snapshots/s/restore"),
        ("PUT", "kernels/k/settings"),
        ("POST", "kernels/k/undo"),
        ("POST", "kernels/k/redo"),
        ("GET", "kernels/k/diff"),
        ("POST", "kernels/k/cancel"),
    ],
)
def test_every_route_needs_authentication(api, jp_asyncio_loop, method: str, path: str) -> None:
    r = jp_asyncio_loop.run_until_complete(
        api(
            "api",
            "chkpt",
            *path.split("/"),
            method=method,
            body=None if method in ("GET", "DELETE") else "{}",
            headers={"Authorization": "token wrong"},
            raise_error=False,
            allow_nonstandard_methods=True,
        )
    )
    assert r.code == 403, (method, path, r.code)


@pytest.mark.timeout(300)
def test_another_kernels_snapshot_is_unknown_on_every_route(
    api, jp_serverapp, jp_asyncio_loop
) -> None:
    """A snapshot is reached only through the kernel it belongs to: PATCH (relabel),
    DELETE and restore of k2's snapshot under k1 are 404 and change nothing."""
    go = jp_asyncio_loop.run_until_complete
    k1, k2 = go(start_kernel(api)), go(start_kernel(api))
    code, s1 = go(call(api, "POST", "kernels", k1, "snapshots", body={"label": "mine"}))
    assert code == 201, s1
    code, s2 = go(call(api, "POST", "kernels", k2, "snapshots", body={"label": "theirs"}))
    assert code == 201, s2
    other = s2["snapshot"]["id"]
    for ref in (other, "theirs"):
        code, err = go(call(api, "PATCH", "kernels", k1, "snapshots", ref, body={"label": "x"}))
        assert code == 404 and ref in err["message"], (ref, code, err)
        code, err = go(call(api, "DELETE", "kernels", k1, "snapshots", ref))
        assert code == 404, (ref, code, err)
        code, err = go(call(api, "POST", "kernels", k1, "snapshots", ref, "restore", body={}))
        assert code == 404, (ref, code, err)
    code, listing = go(call(api, "GET", "kernels", k2, "snapshots"))
    assert [(s["id"], s["label"]) for s in listing["snapshots"]] == [(other, "theirs")]
    # through its own kernel it works
    code, labelled = go(
        call(api, "PATCH", "kernels", k2, "snapshots", other, body={"label": "renamed"})
    )
    assert code == 200 and labelled["snapshot"]["label"] == "renamed", labelled


@pytest.mark.timeout(300)
def test_bad_bodies_are_refused_before_anything_is_done(api, jp_serverapp, jp_asyncio_loop) -> None:
    go = jp_asyncio_loop.run_until_complete
    kid = go(start_kernel(api))
    code, settings = go(call(api, "PUT", "kernels", kid, "settings", body={}))
    assert code == 200, settings
    for body, says in [
        ({"keep": "x"}, "keep must be a whole number"),
        ({"keep": True}, "keep must be a whole number"),  # a JSON true is no number
        ({"keep": 2.5}, "keep must be a whole number"),
        ({"auto": "yes"}, "auto must be true or false"),
        ({"auto": True, "keep": "x"}, "keep must be a whole number"),  # nothing half-applied
        ({"wait": "no"}, "wait must be true or false"),
        ({"frobnicate": 1}, "unknown field 'frobnicate'"),
    ]:
        code, err = go(call(api, "PUT", "kernels", kid, "settings", body=body))
        assert code == 400 and says in err["message"], (body, code, err)
        assert err["reason"] == "BadRequest" and "restart the helper" not in err["message"]
    code, now = go(call(api, "PUT", "kernels", kid, "settings", body={}))
    assert now == settings, "a refused request changed the settings"

    for body, says in [
        ({"keep": "x"}, "unknown field 'keep'"),
        ({"label": 7}, "a label must be a string"),
        ({"label": "abcd1234"}, "looks like a snapshot id"),
        ({"label": "-2"}, "looks like -N"),
        ({"label": "x" * 201}, "too long"),
        ({"label": "a\nb"}, "control characters"),
    ]:
        code, err = go(call(api, "POST", "kernels", kid, "snapshots", body=body))
        assert code == 400 and says in err["message"], (body, code, err)
        assert "restart the helper" not in err["message"]

    def raw(method: str, body: bytes, *path: str) -> Any:
        return go(
            api(
                "api",
                "chkpt",
                "kernels",
                kid,
                *path,
                method=method,
                body=body,
                raise_error=False,
                allow_nonstandard_methods=True,
            )
        )

    deep = b"[" * 30_000 + b"]" * 30_000  # under the size limit
    for path in (("snapshots",), ("settings",)):
        r = raw("PUT" if path == ("settings",) else "POST", deep, *path)
        assert r.code == 400 and b"nested too deeply" in r.body, (path, r.code, r.body[:300])
    r = raw("POST", b"[" * 100_000 + b"]" * 100_000, "snapshots")  # over it
    assert r.code == 413, (r.code, r.body[:300])
    huge = json.dumps({"label": "x" * (90 << 20)}).encode()
    r = raw("POST", huge, "snapshots")
    err = json.loads(r.body)
    assert r.code == 413 and err["reason"] == "RequestTooLarge", (r.code, err)
    assert "limit of 65536 bytes" in err["message"], err
    assert "restart the helper" not in err["message"]
    r = raw("PATCH", huge, "snapshots", "deadbeef")
    assert r.code == 413, (r.code, r.body[:300])

    code, listing = go(call(api, "GET", "kernels", kid, "snapshots"))
    assert code == 200 and listing["snapshots"] == [], "a refused request took a snapshot"


@pytest.mark.timeout(300)
def test_history_routes_undo_redo_diff_cancel(api, jp_serverapp, jp_asyncio_loop) -> None:
    go = jp_asyncio_loop.run_until_complete
    kid = go(start_kernel(api))
    kc = client(jp_serverapp, kid)
    code, err = go(call(api, "POST", "kernels", kid, "undo", body={}))
    assert code == 409 and err["reason"] == "NothingToUndo", err
    assert "automatic snapshots" in err["message"]
    assert go(call(api, "PUT", "kernels", kid, "settings", body={"auto": True}))[0] == 200
    run(kc, "v = 'a'")
    run(kc, "v = 'b'")
    code, undone = go(call(api, "POST", "kernels", kid, "undo", body={}))
    assert code == 200, undone
    before = undone["snapshot"]["id"]
    code, redone = go(call(api, "POST", "kernels", kid, "redo", body={}))
    assert code == 200, redone
    after = redone["snapshot"]["id"]
    code, diff = go(call(api, "GET", "kernels", kid, "diff", params={"from": before, "to": after}))
    assert code == 200, diff
    assert diff["from"]["id"] == before and diff["to"]["id"] == after
    assert [c["name"] for c in diff["changed"]] == ["v"], diff
    assert diff["changed"][0]["to"]["repr"] == "'b'"
    code, err = go(
        call(api, "GET", "kernels", kid, "diff", params={"from": "deadbeef", "to": after})
    )
    assert code == 404, err
    code, err = go(call(api, "GET", "kernels", kid, "diff"))
    assert code == 400, err

    # a restore queued behind a running cell, cancelled: nothing is restored
    kc.execute("import time; time.sleep(8); v = 'slept'")
    go(asyncio.sleep(0.3))
    pending = asyncio.ensure_future(
        call(api, "POST", "kernels", kid, "snapshots", before, "restore", body={})
    )
    go(asyncio.sleep(0.5))
    code, cancelled = go(call(api, "POST", "kernels", kid, "cancel", body={}))
    assert code == 200 and cancelled["cancelled"] == 1, cancelled
    code, err = go(pending)  # at once: the kernel had not started it
    assert code == 409 and err["reason"] == "Cancelled", err
    with pytest.raises(queue.Empty):  # the cell still runs: the answer did not wait for it
        kc.get_shell_msg(timeout=0.1)
    code, listing = go(call(api, "GET", "kernels", kid, "snapshots", params={"now": "1"}))
    assert code == 200 and listing["kernel"]["activity"] is None, listing["kernel"]
    kc.get_shell_msg(timeout=30)
    assert run(kc, "v") == "'slept'"
    code, cancelled = go(call(api, "POST", "kernels", kid, "cancel", body={}))
    assert code == 200 and cancelled["cancelled"] == 0
    kc.stop_channels()


def test_refusals_are_4xx_and_plain_kernels_do_not_fill_the_log() -> None:
    """Pure: which status each error gets, and which are logged quietly."""
    from jupyter_chkpt import errors
    from jupyter_chkpt.server import handlers

    def status(e: errors.ChkptError) -> int:
        return next((c for cls, c in handlers._STATUS if isinstance(e, cls)), 500)

    assert status(errors.UnsupportedState("userfaultfd memory")) == 409
    assert status(errors.ThreadsGone("gone")) == 409
    assert status(errors.CorruptSnapshot("bad")) == 409
    assert status(errors.StoreFull("full")) == 507
    assert status(errors.NothingToUndo("no")) == 409
    assert status(errors.Cancelled("c")) == 409
    assert status(errors.HelperUnavailable("h")) == 503
    assert status(errors.InternalError("bug")) == 500
    assert isinstance(errors.NotSnapshotsKernel("x"), handlers._QUIET)


@pytest.mark.timeout(300)
def test_changes_over_rest_reach_the_event_bus(api, jp_serverapp, jp_asyncio_loop) -> None:
    """Label and delete go to the helper, not through the kernel (no IOPub message):
    jupyter_server's event bus tells other tabs."""
    from jupyter_chkpt.server import EVENTS_ID

    go = jp_asyncio_loop.run_until_complete
    seen: list[dict[str, Any]] = []

    async def listener(logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        seen.append(data)

    jp_serverapp.event_logger.add_listener(schema_id=EVENTS_ID, listener=listener)
    kid = go(start_kernel(api))
    code, created = go(call(api, "POST", "kernels", kid, "snapshots", body={}))
    assert code == 201
    snap = created["snapshot"]["id"]
    go(call(api, "PATCH", "kernels", kid, "snapshots", snap, body={"label": "x"}))
    go(call(api, "DELETE", "kernels", kid, "snapshots", snap))
    go(asyncio.sleep(0.2))  # listeners run as tasks
    assert [(e["event"], e["snapshot"]) for e in seen] == [
        ("taken", snap),
        ("labelled", snap),
        ("deleted", snap),
    ], seen
    assert all(e["kernel_id"] == kid for e in seen)


@pytest.mark.timeout(300)
def test_an_earlier_kernels_snapshot_is_restored_over_rest_after_a_restart(
    api, jp_serverapp, jp_asyncio_loop
) -> None:
    """Restart Kernel (a new process, the same kernel id and ports), then POST restore of
    the old process's snapshot: its state, a generator included, moves into the new one."""
    go = jp_asyncio_loop.run_until_complete
    kid = go(start_kernel(api))
    kc = client(jp_serverapp, kid)
    run(kc, "import itertools; gen = itertools.count(5); next(gen)")
    code, created = go(call(api, "POST", "kernels", kid, "snapshots", body={"label": "mine"}))
    assert code == 201, created
    snap = created["snapshot"]["id"]
    old = created["snapshot"]["pid"]
    r = go(api("api", "kernels", kid, "restart", method="POST", body="{}"))
    assert r.code == 200
    kc.wait_for_ready(timeout=60)
    assert "NameError" in str(kc.execute_interactive("gen", timeout=60)["content"])
    code, listing = go(call(api, "GET", "kernels", kid, "snapshots"))
    assert code == 200 and listing["kernel"]["pid"] != old and listing["snapshots"] == []
    (earlier,) = [s for s in listing["earlier"] if s["id"] == snap]
    assert earlier["restorable"] is True and earlier["pid"] == old, earlier

    code, restored = go(call(api, "POST", "kernels", kid, "snapshots", snap, "restore", body={}))
    assert code == 200, restored
    assert restored["snapshot"]["id"] == snap and restored["snapshot"]["pid"] == old
    kc.wait_for_ready(timeout=60)  # its connections were reset: as after any restart
    assert run(kc, "next(gen)") == "6"
    code, listing = go(call(api, "GET", "kernels", kid, "snapshots"))
    assert code == 200 and listing["kernel"]["live"] == snap, listing["kernel"]
    kc.stop_channels()
