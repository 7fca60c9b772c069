"""JupyterLab in a real browser (Debian's chromium, driven by Playwright): the toolbar
buttons and the snapshot panel against a real `jupyter lab`, kernel and helper.

Screenshots of the toolbar and the panel go to $CHKPT_ARTIFACTS (default
tests/artifacts/).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
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
        yield {"url": url, "token": token, "log": log_path, "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def page(lab) -> Iterator[Any]:
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
            pg.screenshot(path=str(ARTIFACTS / "last-page.png"))
            browser.close()


def _run_cell(page: Any, i: int) -> None:
    cell = page.locator(".jp-Notebook .jp-Cell").nth(i)
    cell.locator(".jp-InputPrompt").click()
    page.keyboard.press("Shift+Enter")


def _wait_idle(page: Any) -> None:
    page.wait_for_function(
        "() => document.querySelector('.jp-Notebook .jp-Cell .jp-InputPrompt') &&"
        " [...document.querySelectorAll('.jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator')]"
        ".every(e => e.getAttribute('data-status') !== 'busy')"
    )


def _output(page: Any, i: int) -> str:
    return str(page.locator(".jp-Notebook .jp-Cell").nth(i).locator(".jp-OutputArea").inner_text())


def _notification(page: Any, pattern: str) -> str:
    toast = page.locator(".Toastify__toast", has_text=re.compile(pattern)).last
    toast.wait_for()
    return str(toast.inner_text())


@pytest.mark.timeout(600)
def test_checkpoint_restore_from_toolbar_and_panel(lab, page) -> None:
    page.goto(f"{lab['url']}/lab/tree/snapshots.ipynb?token={lab['token']}")
    page.locator(".jp-NotebookPanel-toolbar").wait_for()
    page.get_by_text("Python 3 (snapshots)").first.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
        ".some(e => /Idle/.test(e.textContent))"
    )
    _run_cell(page, 0)  # x = 1
    page.wait_for_function(
        "() => /\\[1\\]/.test(document.querySelectorAll('.jp-Notebook .jp-Cell .jp-InputPrompt')[0].textContent)"
    )

    toolbar = page.locator(".jp-NotebookPanel-toolbar")
    toolbar.get_by_text("Checkpoint").click()
    first = _notification(page, "Snapshot [0-9a-f]{8} taken")
    snap = re.search(r"Snapshot ([0-9a-f]{8})", first).group(1)  # type: ignore[union-attr]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    toolbar.screenshot(path=str(ARTIFACTS / "toolbar.png"))

    _run_cell(page, 1)  # x = 2
    _run_cell(page, 2)
    page.wait_for_function(
        "() => /x is 2/.test(document.querySelectorAll('.jp-Notebook .jp-Cell')[2].textContent)"
    )

    # the panel, opened from the command palette's command
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input, .jp-CommandPalette input").first.fill(
        "Show Kernel Snapshots"
    )
    page.keyboard.press("Enter")
    panel = page.locator("#jp-chkpt-panel")
    row = panel.locator(f".jp-chkpt-row[data-snapshot='{snap}']")
    row.wait_for()
    assert "jp-chkpt-live" in (row.get_attribute("class") or "")
    row.locator("button.jp-chkpt-restore").click()
    _notification(page, f"Kernel restored to {snap}")

    _run_cell(page, 2)
    page.wait_for_function(
        "() => /x is 1/.test(document.querySelectorAll('.jp-Notebook .jp-Cell')[2].textContent)"
    )
    assert "x is 1" in _output(page, 2)

    # a new checkpoint after the restore: the tree shows it as a child of the restored one
    toolbar.get_by_text("Checkpoint").click()
    rows = panel.locator(".jp-chkpt-row")
    page.wait_for_function(
        "() => document.querySelectorAll('#jp-chkpt-panel .jp-chkpt-row').length === 2"
    )
    ids = [rows.nth(k).get_attribute("data-snapshot") for k in range(2)]
    assert ids[0] == snap, ids  # tree order: the parent first
    child = rows.nth(1)
    assert "jp-chkpt-live" in (child.get_attribute("class") or "")
    assert "jp-chkpt-live" not in (rows.nth(0).get_attribute("class") or "")
    assert "└" in child.inner_text()
    news = page.locator(".Toastify__toast", has_text="Jupyter news")  # JupyterLab asks once
    if news.count():
        news.get_by_text("No", exact=True).click()
    panel.screenshot(path=str(ARTIFACTS / "panel.png"))
    page.screenshot(path=str(ARTIFACTS / "lab.png"))


@pytest.mark.timeout(300)
def test_buttons_explain_how_to_enable_on_another_kernel(lab, page, tmp_path: Path) -> None:
    root = Path(lab["root"])
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell("y = 1")]
    nbformat.write(nb, root / "plain.ipynb")
    page.goto(f"{lab['url']}/lab/tree/plain.ipynb?token={lab['token']}")
    page.wait_for_function(  # the kernel must exist before the button can ask about it
        "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
        ".some(e => /ipykernel\\) \\| Idle/.test(e.textContent))"
    )
    page.locator(".jp-NotebookPanel-toolbar").get_by_text("Checkpoint").click()
    text = _notification(page, "Checkpoint failed")
    assert "Python 3 (snapshots)" in text and "%load_ext jupyter_chkpt" in text, text


@pytest.mark.timeout(600)
def test_panel_label_delete_and_restore_picker(lab, page) -> None:
    page.goto(f"{lab['url']}/lab/tree/snapshots.ipynb?token={lab['token']}")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
        ".some(e => /Idle/.test(e.textContent))"
    )
    toolbar = page.locator(".jp-NotebookPanel-toolbar")
    _run_cell(page, 0)  # x = 1
    page.wait_for_function(
        "() => /\\[1\\]/.test(document.querySelectorAll('.jp-Notebook .jp-Cell .jp-InputPrompt')[0].textContent)"
    )
    page.keyboard.press("Alt+Shift+C")  # the shortcut
    _notification(page, "Snapshot [0-9a-f]{8} taken")
    _run_cell(page, 1)  # x = 2
    toolbar.get_by_text("Checkpoint").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.Toastify__toast')]"
        ".filter(t => /Snapshot [0-9a-f]{8} taken/.test(t.textContent)).length >= 2"
    )
    page.locator(".lm-TabBar-tab[data-id='jp-chkpt-panel']").click()
    panel = page.locator("#jp-chkpt-panel")
    rows = panel.locator(".jp-chkpt-row")
    page.wait_for_function(
        "() => document.querySelectorAll('#jp-chkpt-panel .jp-chkpt-row').length === 2"
    )
    first = rows.nth(0).get_attribute("data-snapshot")

    rows.nth(0).locator("button.jp-chkpt-label").click()  # Label: a dialog asks for it
    dialog = page.locator(".jp-Dialog")
    dialog.locator("input").fill("clean")
    dialog.get_by_role("button", name="Ok").click()
    page.wait_for_function(
        "() => /'clean'/.test(document.querySelector('#jp-chkpt-panel').textContent)"
    )

    toolbar.get_by_text("Restore").click()  # the picker: newest first
    dialog = page.locator(".jp-Dialog")
    dialog.locator("select").select_option(index=1)  # the older one, labelled 'clean'
    dialog.get_by_role("button", name="Ok").click()
    _notification(page, f"Kernel restored to {first}")
    _run_cell(page, 2)
    page.wait_for_function(
        "() => /x is 1/.test(document.querySelectorAll('.jp-Notebook .jp-Cell')[2].textContent)"
    )

    second = rows.nth(1).get_attribute("data-snapshot")
    rows.nth(1).locator("button.jp-chkpt-delete").click()
    _notification(page, f"Snapshot {second} deleted")
    page.wait_for_function(
        "() => document.querySelectorAll('#jp-chkpt-panel .jp-chkpt-row').length === 1"
    )
