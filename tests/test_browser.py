"""JupyterLab in a real browser (Debian's chromium, driven by Playwright): the toolbar
buttons, the snapshot history panel, the status bar item and the cell markers against
a real `jupyter lab`, kernel and helper.

Screenshots go to $CHKPT_ARTIFACTS (default tests/artifacts/); the README's
(docs/screenshot*.png) are taken by test_readme_screenshots, written to docs/ with
CHKPT_README_SCREENSHOTS=1.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("CHKPT_ARTIFACTS", Path(__file__).parent / "artifacts"))
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def lab(helper_dirs, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real `jupyter lab` serving a notebook on the snapshots kernel."""
    root = tmp_path / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3-chkpt",
        "display_name": "Python 3 (snapshots)",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("x = 2"),
        nbformat.v4.new_code_cell("print('x is', x)"),
    ]
    nbformat.write(nb, root / "snapshots.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    # JupyterLab asks once whether to fetch its news (a toast over the screenshots): no
    news = tmp_path / "config/lab/user-settings/@jupyterlab/apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    with open(tmp_path / "lab.log", "wb") as log:
        yield from _serve(root, port, token, env, log, tmp_path / "lab.log")


def _serve(
    root: Path, port: int, token: str, env: dict[str, str], log: Any, log_path: Path
) -> Iterator[dict[str, Any]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            f"--port={port}",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: commands, themes
            "--ServerApp.port_retries=0",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(log_path.read_text()[-3000:]) from None
            time.sleep(0.3)
    try:
        yield {
            "url": url,
            "token": token,
            "log": log_path,
            "root": root,
            "config": env["JUPYTER_CONFIG_DIR"],
        }
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def page(lab, request) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        try:
            yield pg
        finally:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            pg.screenshot(path=str(ARTIFACTS / f"last-{request.node.name}.png"))
            browser.close()


# ---- helpers ----------------------------------------------------------------------

PANEL = "#jp-chkpt-panel"
TOOLBAR = ".jp-NotebookPanel-toolbar"


def _open(page: Any, lab: dict[str, Any], name: str = "snapshots.ipynb") -> None:
    """Open the notebook and wait until its kernel is idle."""
    page.goto(f"{lab['url']}/lab/tree/{name}?token={lab['token']}")
    page.locator(TOOLBAR).wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
        ".some(e => /\\| Idle/.test(e.textContent))"
    )


def _run_cell(page: Any, i: int) -> None:
    cell = page.locator(".jp-Notebook .jp-Cell").nth(i)
    cell.locator(".jp-InputPrompt").click()
    page.keyboard.press("Shift+Enter")


def _run(page: Any, i: int, count: int) -> None:
    """Run cell i and wait until it shows execution count `count`."""
    _run_cell(page, i)
    page.wait_for_function(
        "([i, n]) => document.querySelectorAll('.jp-Notebook .jp-Cell .jp-InputPrompt')[i]"
        ".textContent.includes(`[${n}]`)",
        arg=[i, count],
    )
    _wait_idle(page)


def _wait_idle(page: Any) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
        ".some(e => /\\| Idle/.test(e.textContent))"
    )


def _output(page: Any, i: int) -> str:
    return str(page.locator(".jp-Notebook .jp-Cell").nth(i).locator(".jp-OutputArea").inner_text())


def _wait_output(page: Any, i: int, text: str) -> None:
    page.wait_for_function(
        "([i, t]) => (document.querySelectorAll('.jp-Notebook .jp-Cell')[i] || {}).textContent"
        "?.includes(t)",
        arg=[i, text],
    )


def _toasts(page: Any) -> list[str]:
    return list(page.eval_on_selector_all(".Toastify__toast", "ts => ts.map(t => t.textContent)"))


def _notification(page: Any, pattern: str) -> str:
    toast = page.locator(".Toastify__toast", has_text=re.compile(pattern)).last
    toast.wait_for()
    return str(toast.inner_text())


def _new_match(page: Any, pattern: str, seen: set[str], timeout: float = 60) -> re.Match[str]:
    """The first toast matching `pattern` whose group(1) is not in `seen` (which it joins)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for text in _toasts(page):
            m = re.search(pattern, text)
            if m and m.group(1) not in seen:
                seen.add(m.group(1))
                return m
        page.wait_for_timeout(100)
    raise AssertionError(f"no new notification {pattern!r}: {_toasts(page)}")


def _dismiss_toasts(page: Any) -> None:
    _command(page, "apputils:dismiss-notification")  # no id: all of them
    page.wait_for_function("() => !document.querySelector('.Toastify__toast')")


def _command(page: Any, command: str, args: dict[str, Any] | None = None) -> None:
    page.evaluate(
        "([c, a]) => { window.jupyterapp.commands.execute(c, a); }", [command, args or {}]
    )


def _palette(page: Any, text: str) -> None:
    page.keyboard.press("Control+Shift+C")
    box = page.locator(".lm-CommandPalette-input").first
    box.fill(text)
    page.locator(".lm-CommandPalette-item.lm-mod-active", has_text=text).wait_for()
    page.keyboard.press("Enter")


_TAKEN = r"Kernel snapshot ([0-9a-f]{8}) taken"


def _take(page: Any, seen: set[str], how: str = "toolbar") -> str:
    """Take a snapshot (toolbar button, shortcut or palette); its id."""
    if how == "toolbar":
        page.locator(f"{TOOLBAR} .jp-chkpt-button-take button").click()
    elif how == "shortcut":
        page.locator(".jp-Notebook").click(position={"x": 5, "y": 5})  # command mode
        page.keyboard.press("Escape")
        page.keyboard.press("Alt+Shift+C")
    else:
        _palette(page, "Take Kernel Snapshot")
    return _new_match(page, _TAKEN, seen).group(1)


def _show_panel(page: Any) -> Any:
    panel = page.locator(PANEL)
    if not panel.is_visible():
        page.locator(".lm-TabBar-tab[data-id='jp-chkpt-panel']").click()
    panel.wait_for()
    return panel


def _row(page: Any, sid: str) -> Any:
    return page.locator(f"{PANEL} .jp-chkpt-tree .jp-chkpt-row[data-snapshot='{sid}']")


def _row_button(page: Any, sid: str, name: str) -> Any:
    """A row's Restore, Label or Delete button: shown while the row is hovered."""
    row = _row(page, sid)
    row.hover()
    return row.locator(f"button.jp-chkpt-{name}")


def _row_ids(page: Any) -> list[str]:
    return list(
        page.eval_on_selector_all(
            f"{PANEL} .jp-chkpt-tree .jp-chkpt-row", "rs => rs.map(r => r.dataset.snapshot)"
        )
    )


def _wait_rows(page: Any, predicate: str) -> None:
    """Wait until `predicate` holds of the panel's row ids (JS, `ids`)."""
    page.wait_for_function(
        "p => { const ids = [...document.querySelectorAll("
        "'#jp-chkpt-panel .jp-chkpt-tree .jp-chkpt-row')].map(r => r.dataset.snapshot);"
        " return new Function('ids', 'return ' + p)(ids); }",
        arg=predicate,
    )


def _rest(lab: dict[str, Any], method: str, path: str, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{lab['url']}/api/{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {lab['token']}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text.decode(errors="replace")


def _kernel_id(lab: dict[str, Any], name: str) -> str:
    _, sessions = _rest(lab, "GET", "sessions")
    return str(next(s["kernel"]["id"] for s in sessions if s["path"].endswith(name)))


def _route_exists(lab: dict[str, Any], kid: str, route: str) -> bool:
    """Whether this server has the route yet: a GET (which changes nothing) of an unknown
    route is answered with Jupyter Server's HTML 404 page, of a POST-only one with 405."""
    status, body = _rest(lab, "GET", f"chkpt/kernels/{kid}/{route}")
    return not (status == 404 and not isinstance(body, dict))


def _rgba(color: str) -> list[float]:
    values = [float(v) for v in re.findall(r"[\d.]+", color)]
    return [*values[:3], values[3] if len(values) > 3 else 1.0]


def _luminance(rgb: list[float]) -> float:
    lin = [
        v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in (c / 255 for c in rgb)
    ]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(fg: str, bg: str) -> float:
    """WCAG contrast of CSS colors, a translucent foreground blended over the background."""
    f, b = _rgba(fg), _rgba(bg)
    blended = [f[3] * f[k] + (1 - f[3]) * b[k] for k in range(3)]
    hi, lo = sorted([_luminance(blended), _luminance(b[:3])], reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _set_theme(page: Any, theme: str) -> None:
    _command(page, "apputils:change-theme", {"theme": theme})
    light = "true" if theme == "JupyterLab Light" else "false"
    page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{light}'")
    page.wait_for_timeout(500)


# ---- 1 + 2: wording, the history panel ---------------------------------------------


@pytest.mark.timeout(600)
def test_history_panel(lab, page) -> None:
    """Snapshot wording (never "Checkpoint"), the graph with a branch, two-line rows that
    fit the sidebar, the header, the live row readable in both themes, the Label dialog,
    and the panel open again after a reload."""
    _open(page, lab)
    toolbar = page.locator(TOOLBAR)
    take = toolbar.locator(".jp-chkpt-button-take button")
    assert take.inner_text().strip() == "Snapshot"
    assert take.get_attribute("title") == "Take a kernel snapshot (Alt+Shift+C)"
    assert toolbar.locator(".jp-chkpt-button-restore button").inner_text().strip() == (
        "Restore Snapshot…"
    )
    seen: set[str] = set()
    _run(page, 0, 1)  # x = 1
    a = _take(page, seen)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    toolbar.screenshot(path=str(ARTIFACTS / "toolbar.png"))
    _run(page, 1, 2)  # x = 2
    b = _take(page, seen, how="palette")

    _palette(page, "Show Kernel Snapshot History")
    panel = page.locator(PANEL)
    _row(page, b).wait_for()
    assert "jp-chkpt-live" in (_row(page, b).get_attribute("class") or "")
    header = panel.locator(".jp-chkpt-header").inner_text()
    kid = _kernel_id(lab, "snapshots.ipynb")
    pid = _rest(lab, "GET", f"chkpt/kernels/{kid}/snapshots")[1]["kernel"]["pid"]
    assert "snapshots.ipynb" in header and "Python 3 (snapshots)" in header, header
    assert f"pid {pid}" in header, header

    _row_button(page, a, "restore").click()
    _notification(page, f"Kernel restored to {a}")
    _run(page, 2, 2)
    _wait_output(page, 2, "x is 1")
    c = _take(page, seen, how="shortcut")  # a branch: A's second child
    _wait_rows(page, f"ids.includes('{c}')")
    ids = _row_ids(page)
    assert ids.index(a) < ids.index(b) < ids.index(c), ids  # tree order, parent first
    assert "jp-chkpt-live" in (_row(page, c).get_attribute("class") or "")
    assert "jp-chkpt-live" not in (_row(page, b).get_attribute("class") or "")

    # the graph: one dot per row, C on a lane of its own beside B's, lines to parents
    dots = page.eval_on_selector_all(
        f"{PANEL} .jp-chkpt-graph circle",
        "cs => cs.map(c => [+c.getAttribute('cx'), +c.getAttribute('cy')])",
    )
    assert len(dots) == len(ids)
    x = {sid: dots[k][0] for k, sid in enumerate(ids)}
    assert x[b] == x[a] and x[c] > x[a], (x, ids)
    edges = panel.locator(".jp-chkpt-graph path.jp-chkpt-edge").count()
    snaps = _rest(lab, "GET", f"chkpt/kernels/{kid}/snapshots")[1]["snapshots"]
    parents = {s["id"]: s["parent"] for s in snaps}
    assert edges == sum(1 for sid in ids if parents.get(sid) in ids), (edges, parents)
    assert panel.locator(".jp-chkpt-graph circle.jp-chkpt-dot-live").count() == 1

    # two-line rows: time [n] label / cell, size, badge; full details in the title
    row = _row(page, a)
    line1 = row.locator(".jp-chkpt-line1").inner_text()
    line2 = row.locator(".jp-chkpt-line2").inner_text()
    assert "[1]" in line1 and a in line1, line1
    assert (
        "x = 1" in line2 and "manual" in line2 and re.search(r"\d(\.\d)? (B|KiB|MiB|GiB)", line2)
    ), line2
    title = row.get_attribute("title") or ""
    assert a in title and "x = 1" in title and str(pid) in title and "Memory" in title, title

    # nothing is cut at the default sidebar width: line 1 shows the time, [n] and the whole
    # id; the buttons, shown on hover, are inside the panel
    box = panel.bounding_box()
    for sid in ids:
        for name in ("restore", "label", "delete"):
            b_box = _row_button(page, sid, name).bounding_box()
            assert b_box["x"] + b_box["width"] <= box["x"] + box["width"] + 0.5, (sid, name)
        assert page.evaluate(
            "sid => { const r = document.querySelector(`#jp-chkpt-panel .jp-chkpt-row[data-snapshot='${sid}']`);"
            " const n = r.querySelector('.jp-chkpt-name');"
            " return r.scrollWidth <= r.clientWidth + 1 && n.scrollWidth <= n.clientWidth; }",
            sid,
        ), sid
    page.mouse.move(10, 10)
    assert not _row(page, a).locator("button.jp-chkpt-restore").is_visible()  # not hovered

    # the Label dialog starts from the current label
    _row_button(page, a, "label").click()
    dialog = page.locator(".jp-Dialog")
    assert dialog.locator("input").input_value() == ""
    dialog.locator("input").fill("clean")
    dialog.get_by_role("button", name="Save").click()
    page.wait_for_function(
        f"() => /clean/.test(document.querySelector(\"{PANEL} .jp-chkpt-row[data-snapshot='{a}'] .jp-chkpt-name\").textContent)"
    )
    _row_button(page, a, "label").click()
    dialog = page.locator(".jp-Dialog")
    assert dialog.locator("input").input_value() == "clean"
    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="detached")

    # no "Checkpoint" anywhere visible: toolbar, panel, notifications, palette
    _notification(page, f"Snapshot {a} labelled")
    assert "heckpoint" not in page.locator("body").inner_text()
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").first.fill("kernel snapshot")
    items = page.locator(".lm-CommandPalette-item").all_inner_texts()
    assert any("Take Kernel Snapshot" in t for t in items), items
    assert any("Restore Kernel Snapshot…" in t for t in items), items
    assert any("Show Kernel Snapshot History" in t for t in items), items
    page.locator(".lm-CommandPalette-input").first.fill("checkpoint")
    items = page.locator(".lm-CommandPalette-item").all_inner_texts()
    assert not any("Kernel" in t for t in items), items
    page.keyboard.press("Escape")

    # the live row reads well in both themes: text on its background, the accent bar
    _dismiss_toasts(page)
    for theme in ("JupyterLab Light", "JupyterLab Dark"):
        _set_theme(page, theme)
        colors = page.evaluate(
            "sid => { const r = document.querySelector(`#jp-chkpt-panel .jp-chkpt-row[data-snapshot='${sid}']`);"
            " const s = getComputedStyle(r);"
            " const fg = ['.jp-chkpt-name', '.jp-chkpt-time', '.jp-chkpt-cell', '.jp-chkpt-size']"
            ".map(q => getComputedStyle(r.querySelector(q)).color);"
            " const brand = getComputedStyle(document.body).getPropertyValue('--jp-brand-color1').trim();"
            " const probe = document.createElement('div'); probe.style.color = brand; document.body.appendChild(probe);"
            " const brandRgb = getComputedStyle(probe).color; probe.remove();"
            " return {bg: s.backgroundColor, bar: s.borderLeftColor, barWidth: s.borderLeftWidth, fg, brand: brandRgb}; }",
            c,
        )
        assert colors["bar"] == colors["brand"] and colors["barWidth"] == "3px", colors
        assert all(_contrast(fg, colors["bg"]) >= 4.5 for fg in colors["fg"]), (theme, colors)
        slug = "light" if "Light" in theme else "dark"
        panel.screenshot(path=str(ARTIFACTS / f"panel-{slug}.png"))
    _set_theme(page, "JupyterLab Light")

    # reloaded, the panel is open again (ILayoutRestorer)
    page.wait_for_timeout(1500)  # the workspace is saved shortly after a change
    page.reload()
    page.locator(TOOLBAR).wait_for()
    _row(page, c).wait_for()
    assert page.locator(PANEL).is_visible()
    _row(page, a).wait_for()
    assert "clean" in _row(page, a).inner_text()


# ---- 8: a kernel without snapshots --------------------------------------------------


def _plain_notebook(lab: dict[str, Any], name: str = "plain.ipynb") -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell("y = 1")]
    nbformat.write(nb, Path(lab["root"]) / name)


@pytest.mark.timeout(300)
def test_plain_kernel_asks_nothing_and_offers_to_change_kernel(lab, page) -> None:
    _plain_notebook(lab)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    _open(page, lab, "plain.ipynb")
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for()
    take = page.locator(f"{TOOLBAR} .jp-chkpt-button-take")
    page.wait_for_function(
        "() => document.querySelector('.jp-chkpt-button-take')?.classList.contains('jp-chkpt-unavailable')"
    )
    need = "Kernel snapshots need the Python 3 (snapshots) kernel"
    assert take.locator("button").get_attribute("title") == need
    assert take.locator("button").get_attribute("aria-disabled") == "true"
    restore = page.locator(f"{TOOLBAR} .jp-chkpt-button-restore")
    assert "jp-chkpt-unavailable" in (restore.get_attribute("class") or "")
    assert restore.locator("button").get_attribute("title") == need
    assert float(take.evaluate("e => getComputedStyle(e).opacity")) < 0.7  # dimmed
    assert not page.locator(".jp-chkpt-status").is_visible()  # no status bar item

    panel = _show_panel(page)
    message = panel.locator(".jp-chkpt-message").first
    message.wait_for()
    assert need in message.inner_text() and "Python 3 (ipykernel)" in message.inner_text()
    assert panel.locator("button.jp-chkpt-take").is_disabled()
    page.wait_for_timeout(1000)
    kid = _kernel_id(lab, "plain.ipynb")
    asked = [u for u in requests if "/api/chkpt" in u]
    assert not asked, asked
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "plain-kernel.png"))

    # a click says why and offers the kernel picker (aria-disabled: Playwright needs force)
    take.locator("button").click(force=True)
    toast = page.locator(".Toastify__toast", has_text=need)
    toast.wait_for()
    toast.get_by_role("button", name="Change kernel").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for()
    assert "kernel" in dialog.inner_text().lower()
    dialog.get_by_role("button", name=re.compile("Cancel")).click()
    dialog.wait_for(state="detached")

    # the panel's button too; picking the snapshots kernel makes everything available
    panel.locator("button.jp-chkpt-change-kernel").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for()
    dialog.locator("select").select_option(label="Python 3 (snapshots)")
    dialog.get_by_role("button", name="Select").click()
    page.get_by_text("Python 3 (snapshots) | Idle").wait_for()
    page.wait_for_function(
        "() => !document.querySelector('.jp-chkpt-button-take').classList.contains('jp-chkpt-unavailable')"
    )
    panel.get_by_text("No snapshots yet").wait_for()
    assert not [u for u in requests if f"/api/chkpt/kernels/{kid}" in u]
    page.locator(".jp-chkpt-status").get_by_text("Snapshots: 0").wait_for()


# ---- 3: confirm and undo --------------------------------------------------------------


@pytest.mark.timeout(600)
def test_delete_asks_first_and_a_restore_can_be_undone(lab, page) -> None:
    _open(page, lab)
    seen: set[str] = set()
    _run(page, 0, 1)  # x = 1
    a = _take(page, seen)
    _run(page, 1, 2)  # x = 2
    b = _take(page, seen)
    _run(page, 2, 3)
    c = _take(page, seen)
    _show_panel(page)
    _row(page, c).wait_for()

    # Delete asks, describing the snapshot; Cancel keeps it
    _row_button(page, b, "delete").click()
    dialog = page.locator(".jp-Dialog")
    assert b in dialog.inner_text() and "[2]" in dialog.inner_text()
    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="detached")
    assert b in _row_ids(page)
    _row_button(page, b, "delete").click()
    delete = page.locator(".jp-Dialog").get_by_role("button", name="Delete")
    assert "jp-mod-warn" in (delete.get_attribute("class") or "")
    delete.click()
    _notification(page, f"Snapshot {b} deleted")
    _wait_rows(page, f"!ids.includes('{b}')")

    # a restore from the panel offers Undo: back to the state it left (x = 2 after [3])
    _dismiss_toasts(page)
    _row_button(page, a, "restore").click()
    toast = page.locator(".Toastify__toast", has_text=f"Kernel restored to {a}")
    toast.wait_for()
    assert "after cell [1]" in toast.inner_text()
    _run(page, 2, 2)
    _wait_output(page, 2, "x is 1")
    toast.get_by_role("button", name="Undo").click()
    _new_match(page, r"Kernel restored to ([0-9a-f]{8})", {a})
    _run(page, 2, 4)
    _wait_output(page, 2, "x is 2")
    page.screenshot(path=str(ARTIFACTS / "restore-undone.png"))


@pytest.mark.timeout(600)
def test_undo_and_redo_cell(lab, page) -> None:
    """Undo Last Cell / Redo Cell (palette and panel header) with automatic snapshots on
    (the extension's setting); nothing left to redo is said as info."""
    settings = Path(lab["config"]) / "lab/user-settings/jupyter-chkpt/plugin.jupyterlab-settings"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"autoSnapshots": true}')
    _open(page, lab)
    kid = _kernel_id(lab, "snapshots.ipynb")
    if not _route_exists(lab, kid, "redo"):
        pytest.skip("this server has no undo/redo routes yet")
    panel = _show_panel(page)
    _run(page, 0, 1)  # x = 1
    _run(page, 1, 2)  # x = 2
    _run(page, 2, 3)
    _wait_output(page, 2, "x is 2")
    live = f"{PANEL} .jp-chkpt-row.jp-chkpt-live .jp-chkpt-count"
    page.wait_for_function(f"() => document.querySelector('{live}')?.textContent === '[3]'")
    assert "auto" in panel.locator(".jp-chkpt-row.jp-chkpt-live .jp-chkpt-badge").inner_text()

    _palette(page, "Undo Last Cell")
    _notification(page, r"Undone: kernel back to [0-9a-f]{8}: back after cell \[2\]")
    page.wait_for_function(f"() => document.querySelector('{live}')?.textContent === '[2]'")
    panel.locator(".jp-chkpt-header button.jp-chkpt-undo").click()
    _notification(page, r"back after cell \[1\]")
    page.wait_for_function(f"() => document.querySelector('{live}')?.textContent === '[1]'")
    _palette(page, "Redo Cell")
    _notification(page, r"Redone: kernel at [0-9a-f]{8}: back after cell \[2\]")
    page.wait_for_function(f"() => document.querySelector('{live}')?.textContent === '[2]'")
    panel.locator(".jp-chkpt-header button.jp-chkpt-redo").click()
    page.wait_for_function(f"() => document.querySelector('{live}')?.textContent === '[3]'")
    _dismiss_toasts(page)
    panel.locator(".jp-chkpt-header button.jp-chkpt-redo").click()  # nothing more to redo
    toast = page.locator(".Toastify__toast", has_text="nothing to redo")
    toast.wait_for()
    assert "failed" not in toast.inner_text()
    assert "Toastify__toast--info" in (toast.get_attribute("class") or ""), toast.get_attribute(
        "class"
    )
    _run(page, 2, 4)
    _wait_output(page, 2, "x is 2")


# ---- 4 + 7: live refresh, kernel restarts, earlier kernels --------------------------


def _notebook(lab: dict[str, Any], name: str, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3-chkpt",
        "display_name": "Python 3 (snapshots)",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, Path(lab["root"]) / name)


@pytest.mark.timeout(600)
def test_panel_follows_the_kernel_live(lab, page) -> None:
    """The panel refreshes by itself: on the kernel's IOPub news (a %checkpoint in a cell,
    another client's snapshot) and on the server's events (another client's label and
    delete over REST, which never pass the kernel)."""
    _notebook(lab, "live.ipynb", "x = 1", "%checkpoint -m from-cell")
    _open(page, lab, "live.ipynb")
    kid = _kernel_id(lab, "live.ipynb")
    _show_panel(page).get_by_text("No snapshots yet").wait_for()
    _run(page, 0, 1)
    _run(page, 1, 2)
    page.locator(f"{PANEL} .jp-chkpt-row .jp-chkpt-name", has_text="from-cell").wait_for()

    status, body = _rest(lab, "POST", f"chkpt/kernels/{kid}/snapshots", {"label": "rest"})
    assert status == 201, body
    other = body["snapshot"]["id"]
    _row(page, other).wait_for()
    assert "rest" in _row(page, other).inner_text()
    page.locator(".jp-chkpt-status", has_text="Snapshots: 2").wait_for()

    status, body = _rest(
        lab, "PATCH", f"chkpt/kernels/{kid}/snapshots/{other}", {"label": "renamed"}
    )
    assert status == 200, body
    page.locator(
        f"{PANEL} .jp-chkpt-row[data-snapshot='{other}'] .jp-chkpt-name", has_text="renamed"
    ).wait_for()
    status, body = _rest(lab, "DELETE", f"chkpt/kernels/{kid}/snapshots/{other}")
    assert status == 204, body
    _wait_rows(page, f"!ids.includes('{other}') && ids.length === 1")
    page.locator(".jp-chkpt-status", has_text="Snapshots: 1").wait_for()


@pytest.mark.timeout(600)
def test_kernel_restart_shows_the_new_kernel_and_earlier_ones(lab, page) -> None:
    _open(page, lab)
    seen: set[str] = set()
    _run(page, 0, 1)
    a = _take(page, seen)
    _run(page, 1, 2)
    b = _take(page, seen)
    panel = _show_panel(page)
    _row(page, b).wait_for()
    old_pid = re.search(r"pid (\d+)", panel.locator(".jp-chkpt-kernel").inner_text()).group(1)  # type: ignore[union-attr]

    _command(page, "kernelmenu:restart")
    page.locator(".jp-Dialog .jp-mod-accept").click()
    page.wait_for_function(
        "old => { const m = /pid (\\d+)/.exec(document.querySelector('#jp-chkpt-panel .jp-chkpt-kernel')?.textContent || '');"
        " return m && m[1] !== old; }",
        arg=old_pid,
    )
    _wait_idle(page)
    # the restart dialog said "all variables will be lost": a notification says where
    # the snapshots are
    _notification(page, re.escape("The kernel restarted. Its 2 snapshot(s)"))
    panel.get_by_text("No snapshots yet").wait_for()
    assert not _row_ids(page)

    # the old process's snapshots: collapsed under "Earlier kernels", deletable, restorable
    # into the new process
    earlier = panel.locator("details.jp-chkpt-earlier")
    earlier.wait_for()
    summary = earlier.locator("summary").inner_text()
    assert re.fullmatch(r"Earlier kernels \(2, [\d.]+ (B|KiB|MiB|GiB)\)", summary), summary
    assert not earlier.evaluate("e => e.open")
    earlier.locator("summary").click()
    old_a = earlier.locator(f".jp-chkpt-row[data-snapshot='{a}']")
    assert old_a.is_visible()
    assert re.search(r"ago", old_a.inner_text()), old_a.inner_text()
    old_a.hover()
    restore = old_a.locator("button.jp-chkpt-restore")
    assert restore.is_enabled()
    title = restore.get_attribute("title") or ""
    assert f"Restore {a} into the running kernel (from its process {old_pid})" == title, title
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    panel.screenshot(path=str(ARTIFACTS / "panel-earlier.png"))
    old_a.hover()
    old_a.locator("button.jp-chkpt-delete").click()
    page.locator(".jp-Dialog").get_by_role("button", name="Delete").click()
    _notification(page, f"Snapshot {a} deleted")
    page.wait_for_function(
        "() => /Earlier kernels \\(1,/.test(document.querySelector('#jp-chkpt-panel details.jp-chkpt-earlier summary')?.textContent)"
    )
    assert earlier.evaluate("e => e.open")  # stays open across refreshes

    # Restore on an earlier process's snapshot moves its state into the new kernel
    assert "NameError" in _run_and_read(page, 2, 1)
    old_b = earlier.locator(f".jp-chkpt-row[data-snapshot='{b}']")
    old_b.hover()
    old_b.locator("button.jp-chkpt-restore").click()
    _notification(page, f"Kernel restored to {b}")
    _wait_idle(page)
    _run(page, 2, 3)  # the restored state had run two cells
    _wait_output(page, 2, "x is 2")

    # the kernel's own snapshots show as usual
    _run(page, 0, 4)
    c = _take(page, seen)
    _row(page, c).wait_for()
    assert c in _row_ids(page)


def _run_and_read(page: Any, i: int, count: int) -> str:
    _run(page, i, count)
    return _output(page, i)


@pytest.mark.timeout(600)
def test_a_kernel_that_died_offers_its_last_snapshot(lab, page) -> None:
    """The kernel is SIGKILLed (as the OOM killer would): the server starts it again, and
    the notification's "Restore the last snapshot" brings the state back into it: a
    generator goes on where it was, and the notebook stays connected throughout."""
    _notebook(
        lab,
        "crash.ipynb",
        "import itertools\ngen = itertools.count(10)\nfirst = next(gen)",
        "print('next is', next(gen))",
    )
    _open(page, lab, "crash.ipynb")
    seen: set[str] = set()
    _run(page, 0, 1)
    snap = _take(page, seen)
    kid = _kernel_id(lab, "crash.ipynb")
    pid = _rest(lab, "GET", f"chkpt/kernels/{kid}/snapshots")[1]["kernel"]["pid"]
    os.kill(pid, signal.SIGKILL)
    toast = page.locator(".Toastify__toast", has_text="The kernel died and was started again")
    toast.wait_for(timeout=60_000)
    assert "1 snapshot(s)" in toast.inner_text(), toast.inner_text()
    # JupyterLab's own modal ("appears to have died. It will restart automatically")
    page.locator(".jp-Dialog .jp-mod-accept").click()
    _wait_idle(page)
    toast.get_by_role("button", name="Restore the last snapshot").click()
    _notification(page, f"Kernel restored to {snap}")
    _wait_idle(page)
    _run(page, 1, 2)
    _wait_output(page, 1, "next is 11")  # the generator goes on, in the new process
    new = _rest(lab, "GET", f"chkpt/kernels/{kid}/snapshots")[1]["kernel"]["pid"]
    assert new != pid


# ---- 5: progress, cancel, the status bar ----------------------------------------------

_WATCH_TOASTS = """() => {
  window.__toasts = [];
  new MutationObserver(() => {
    for (const t of document.querySelectorAll('.Toastify__toast')) {
      const text = t.textContent;
      if (window.__toasts[window.__toasts.length - 1] !== text) window.__toasts.push(text);
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
  window.__status = [];
  new MutationObserver(() => {
    const s = document.querySelector('.jp-chkpt-status')?.textContent;
    if (s && window.__status[window.__status.length - 1] !== s) window.__status.push(s);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


@pytest.mark.timeout(600)
def test_progress_cancel_and_status_bar(lab, page) -> None:
    _notebook(
        lab,
        "slow.ipynb",
        "import time",
        "time.sleep(8)",
        "import os; big = os.urandom(384 << 20)",
    )
    _open(page, lab, "slow.ipynb")
    kid = _kernel_id(lab, "slow.ipynb")
    page.evaluate(_WATCH_TOASTS)
    _run(page, 0, 1)
    status = page.locator(".jp-chkpt-status")
    status.get_by_text("Snapshots: 0 · 0 B").wait_for()

    # a snapshot asked for while a cell runs waits for it, and can be called off
    _run_cell(page, 1)  # time.sleep(8)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => /\\| Busy/.test(e.textContent))"
    )
    page.locator(f"{TOOLBAR} .jp-chkpt-button-take button").click()
    toast = page.locator(".Toastify__toast", has_text="waiting for the running cell to finish")
    toast.wait_for(timeout=10_000)
    status.get_by_text("Snapshots: taking…").wait_for()
    assert "Taking a kernel snapshot" in toast.inner_text()
    if not _route_exists(lab, kid, "cancel"):
        pytest.skip("this server has no cancel route yet")
    toast.get_by_role("button", name="Cancel").click()
    page.locator(".Toastify__toast", has_text="cancelling").wait_for(timeout=5_000)
    done = page.locator(".Toastify__toast", has_text="Taking a kernel snapshot: cancelled")
    done.wait_for(timeout=30_000)  # the kernel answers once the cell is done
    assert "Toastify__toast--info" in (done.get_attribute("class") or "")
    assert not page.locator(".Toastify__toast--error").count()
    status.get_by_text("Snapshots: 0 · 0 B").wait_for()
    _wait_idle(page)  # the cell ran on

    # a big kernel: the notification says what the helper is doing (the listing's
    # `activity`; where this server reports none during the request, the test adds one)
    _run(page, 2, 3)
    _dismiss_toasts(page)
    page.evaluate("() => { window.__toasts = []; window.__status = []; }")
    pending = {"on": False}
    real: list[Any] = []  # the server's own activity while polled during the request

    last: dict[str, Any] = {}

    def listing(route: Any) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        try:  # a listing that waits for the helper's work is answered from the last one
            body = route.fetch(timeout=400 if pending["on"] else 30_000).json()
            last.update(body)
        except Exception:
            body = dict(last, activity=None)
        activity = body.get("activity") or body.get("kernel", {}).get("activity")
        real.append(activity)
        if pending["on"] and not any(real):  # this server has not said what it does (yet)
            body["activity"] = {"op": "checkpoint", "phase": "writing memory (test)"}
        route.fulfill(json=body)

    route = re.compile(rf"/api/chkpt/kernels/{kid}/snapshots(\?.*)?$")
    page.route(route, listing)
    _show_panel(page).locator(".jp-chkpt-header").wait_for()  # a first listing, through the route
    page.wait_for_function("() => !!document.querySelector('#jp-chkpt-panel .jp-chkpt-kernel')")
    page.wait_for_timeout(500)
    pending["on"] = True
    sid = _take(page, set())
    pending["on"] = False
    toasts = page.evaluate("() => window.__toasts")
    phases = [t for t in toasts if t.startswith("Taking a kernel snapshot:")]
    assert phases, toasts
    assert not any("waiting for the running cell" in t for t in phases), phases  # none ran
    assert any(s == "Snapshots: taking…" for s in page.evaluate("() => window.__status"))
    status.get_by_text(re.compile(r"Snapshots: 1 · [\d.]+ MiB")).wait_for()
    status.click()  # opens the history
    _row(page, sid).wait_for()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "progress-phases.txt").write_text(
        "\n".join(toasts) + f"\nthe server's own activity while polled: {real}\n"
    )


# ---- 6: comparing two snapshots ------------------------------------------------------


@pytest.mark.timeout(600)
def test_compare_two_snapshots(lab, page) -> None:
    _notebook(
        lab,
        "diff.ipynb",
        "import numpy as np\nrate = 0.1\nlabel = 'first run'\nweights = np.zeros(1000)\nsteps = list(range(50))",
        "rate = 0.05\ndel label\nweights = weights + 1\nhistory = {'loss': [0.9, 0.5, 0.3]}",
    )
    _open(page, lab, "diff.ipynb")
    kid = _kernel_id(lab, "diff.ipynb")
    if not _route_exists(lab, kid, "diff"):
        pytest.skip("this server has no diff route yet")
    seen: set[str] = set()
    _run(page, 0, 1)
    a = _take(page, seen)
    _run(page, 1, 2)
    b = _take(page, seen)
    panel = _show_panel(page)
    compare = panel.locator(".jp-chkpt-header button.jp-chkpt-compare")
    _row(page, b).wait_for()
    assert compare.is_disabled()
    _row(page, b).locator("input.jp-chkpt-select").check()
    assert compare.is_disabled() and "1/2" in compare.inner_text()
    _row(page, a).locator("input.jp-chkpt-select").check()
    assert compare.is_enabled() and "2/2" in compare.inner_text()
    compare.click()

    view = page.locator(".jp-chkpt-diff")
    view.wait_for()
    tab = page.locator(".lm-TabBar-tab", has_text=f"Snapshot diff {a} → {b}")
    assert tab.count() == 1
    rows = {
        r.get_attribute("data-name"): (r.get_attribute("class"), r.inner_text())
        for r in view.locator("tbody tr").all()
    }
    assert "added" in rows["history"][0], rows
    assert "removed" in rows["label"][0] and "first run" in rows["label"][1], rows
    assert "changed" in rows["rate"][0] and "0.1 → 0.05" in rows["rate"][1], rows
    assert "changed" in rows["weights"][0] and "ndarray" in rows["weights"][1], rows
    assert "steps" not in rows  # unchanged
    summary = view.locator(".jp-chkpt-diff-summary").inner_text()
    assert re.match(r"1 added, 1 removed, 2 changed, \d+ unchanged", summary), summary
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _dismiss_toasts(page)
    page.screenshot(path=str(ARTIFACTS / "diff.png"))


# ---- 9: notebook cell markers ---------------------------------------------------------


def _cell_state(page: Any) -> list[dict[str, Any]]:
    return list(
        page.eval_on_selector_all(
            ".jp-Notebook .jp-CodeCell",
            "cs => cs.map(c => ({undone: c.classList.contains('jp-chkpt-undone'),"
            " snapped: c.classList.contains('jp-chkpt-snapped'),"
            " title: c.querySelector('.jp-InputPrompt').getAttribute('title') || '',"
            " prompt: c.querySelector('.jp-InputPrompt').textContent}))",
        )
    )


@pytest.mark.timeout(600)
def test_cell_markers_after_restore_and_snapshots(lab, page) -> None:
    _open(page, lab)
    seen: set[str] = set()
    _run(page, 0, 1)  # x = 1
    a = _take(page, seen)
    _run(page, 1, 2)  # x = 2
    _run(page, 2, 3)
    _show_panel(page)
    _row(page, a).wait_for()
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-CodeCell.jp-chkpt-snapped').length === 1"
    )
    cells = _cell_state(page)
    assert cells[0]["snapped"] and a in cells[0]["title"], cells
    assert not any(c["undone"] for c in cells), cells

    # a restore to after [1]: the runs of [2] and [3] are undone
    _row_button(page, a, "restore").click()
    _notification(page, f"Kernel restored to {a}")
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-CodeCell.jp-chkpt-undone').length === 2"
    )
    cells = _cell_state(page)
    assert [c["undone"] for c in cells[:3]] == [False, True, True], cells
    assert "Undone by restore" in cells[1]["title"] and "Undone by restore" in cells[2]["title"]
    assert cells[0]["snapped"] and not cells[1]["snapped"], cells
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator(".jp-Notebook").screenshot(path=str(ARTIFACTS / "markers.png"))

    # run again, a cell is no longer undone; a snapshot after it marks it
    _run(page, 2, 2)
    _wait_output(page, 2, "x is 1")
    cells = _cell_state(page)
    assert [c["undone"] for c in cells[:3]] == [False, True, False], cells
    assert "Undone" not in cells[2]["title"]
    b = _take(page, seen)
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-Notebook .jp-CodeCell')[2].classList.contains('jp-chkpt-snapped')"
    )
    cells = _cell_state(page)
    assert b in cells[2]["title"], cells
    assert not cells[1]["snapped"], cells  # [2] too, but undone: not the run B follows


# ---- the README's screenshots ----------------------------------------------------------

# the README's screenshots are written to docs/ only when asked for: other runs keep them in
# the artifacts, so that running the tests leaves the working tree as it was
DOCS = (
    Path(__file__).parent.parent / "docs"
    if os.environ.get("CHKPT_README_SCREENSHOTS") == "1"
    else ARTIFACTS
)


@pytest.mark.timeout(900)
def test_readme_screenshots(lab, page) -> None:
    """docs/screenshot.png (the history with a branch, light theme) and
    docs/screenshot-diff.png (two snapshots compared); with CHKPT_README_SCREENSHOTS=1 they
    replace the README's, else they go to the artifacts."""
    settings = Path(lab["config"]) / "lab/user-settings/jupyter-chkpt/plugin.jupyterlab-settings"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"autoSnapshots": true}')
    _notebook(
        lab,
        "analysis.ipynb",
        "import numpy as np\nrng = np.random.default_rng(0)",
        "data = rng.normal(size=(200_000, 20))",
        "limit = 3\ndata = data[np.abs(data).max(axis=1) < limit]  # drop outliers",
        "scale = data.std(axis=0)\ndata = data / scale",
        "model = np.linalg.lstsq(data[:, 1:], data[:, 0], rcond=None)[0]\n"
        "r2 = 1 - ((data[:, 1:] @ model - data[:, 0]) ** 2).mean() / data[:, 0].var()",
        'print(f"{len(data)} rows, R² = {r2:.4f}")',
    )
    _open(page, lab, "analysis.ipynb")
    kid = _kernel_id(lab, "analysis.ipynb")
    _command(page, "application:toggle-left-area")
    panel = _show_panel(page)
    for i in range(6):
        _run(page, i, i + 1)
    page.wait_for_function(
        "() => document.querySelectorAll('#jp-chkpt-panel .jp-chkpt-tree .jp-chkpt-row').length === 6"
    )

    snaps = _rest(lab, "GET", f"chkpt/kernels/{kid}/snapshots")[1]["snapshots"]
    clean = next(s["id"] for s in snaps if s["tags"].get("execution_count") == 3)
    _row_button(page, clean, "label").click()
    page.locator(".jp-Dialog input").fill("clean data")
    page.locator(".jp-Dialog").get_by_role("button", name="Save").click()
    _row(page, clean).locator(".jp-chkpt-name", has_text="clean data").wait_for()

    # back to the clean data, then on another way: centred too (a branch); the runs of
    # the cells after it are marked undone
    _row_button(page, clean, "restore").click()
    _notification(page, f"Kernel restored to {clean}")
    page.evaluate(
        "src => window.jupyterapp.shell.currentWidget.content.widgets[3].model.sharedModel.setSource(src)",
        "scale = data.std(axis=0)\ndata = (data - data.mean(axis=0)) / scale  # centred too",
    )
    _run(page, 3, 4)
    page.wait_for_function(
        "() => document.querySelectorAll('#jp-chkpt-panel .jp-chkpt-tree .jp-chkpt-row').length === 7"
    )
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-CodeCell.jp-chkpt-undone').length === 2"
    )
    page.keyboard.press("Escape")
    _dismiss_toasts(page)
    live = page.locator(f"{PANEL} .jp-chkpt-row.jp-chkpt-live").get_attribute("data-snapshot")
    _row(page, live).hover()  # its buttons show
    page.wait_for_timeout(500)
    assert not page.locator(".Toastify__toast").count()
    assert page.evaluate("() => document.body.dataset.jpThemeLight") == "true"
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS / "screenshot.png"))

    # what the cells after the clean data did, the first time
    first_end = next(s["id"] for s in snaps if s["tags"].get("execution_count") == 6)
    _row(page, clean).locator("input.jp-chkpt-select").check()
    _row(page, first_end).locator("input.jp-chkpt-select").check()
    panel.locator(".jp-chkpt-header button.jp-chkpt-compare").click()
    page.locator(".jp-chkpt-diff tbody tr").first.wait_for()
    _dismiss_toasts(page)
    page.mouse.move(700, 700)
    page.wait_for_timeout(500)
    page.screenshot(path=str(DOCS / "screenshot-diff.png"))
