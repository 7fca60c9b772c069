"""The %snapshots browser (an ipywidget) in JupyterLab, in a real browser (issue 12):
after a reload it comes back from the live kernel; where the kernel has no model for it
any more (restored to before it, restarted), its output shows the tree as text and how
to get a live browser again, never ipywidgets' bare "model not found"."""

from __future__ import annotations

from typing import Any

import pytest
import test_browser
from test_browser import ARTIFACTS, _command, _notebook, _open, _run

# test_browser's fixtures (a real `jupyter lab`, a chromium page) and its skip without chromium
lab, page, pytestmark = test_browser.lab, test_browser.page, test_browser.pytestmark

HINT = "run %snapshots again"
MISSING = "model not found"


def _out(page: Any, i: int) -> Any:
    return page.locator(".jp-Notebook .jp-Cell").nth(i).locator(".jp-OutputArea")


def _save_and_reload(page: Any, lab: dict[str, Any], name: str) -> None:
    _command(page, "docmanager:save")
    page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-dirty')")
    page.reload()
    _open(page, lab, name)


def _assert_live(page: Any, i: int) -> None:
    """A working browser in cell i's output: the list, the buttons; no fallback."""
    out = _out(page, i)
    out.locator(".widget-select select").wait_for()
    out.get_by_role("button", name="Restore").wait_for()
    text = out.inner_text()  # what is rendered: hidden elements are left out
    assert HINT not in text and MISSING not in text, text
    # the fallback's output takes no room (no empty row above the browser)
    for child in out.locator(".jp-OutputArea-child").all():
        if child.locator(".jp-chkpt-fallback").count():
            assert child.is_hidden()


@pytest.mark.timeout(600)
def test_snapshots_widget_after_reload(lab, page) -> None:
    name = "widget.ipynb"
    _notebook(lab, name, "x = 1\n%checkpoint -m one", "%snapshots", "%restore one")
    _open(page, lab, name)
    _run(page, 0, 1)
    _run(page, 1, 2)
    _assert_live(page, 1)
    snap = _out(page, 1).locator(".widget-select option").first.inner_text().split()[1]

    # a reload with the browser still in the kernel: its models come back from it
    _save_and_reload(page, lab, name)
    _assert_live(page, 1)

    # restored to before the browser existed: after a reload the kernel has no model for it
    _run(page, 2, 3)
    page.locator(".jp-Notebook .jp-Cell").nth(2).get_by_text("restored snapshot").wait_for()
    _save_and_reload(page, lab, name)
    out = _out(page, 1)
    # ipywidgets has given up on the model (its error is in the page, hidden) ...
    page.wait_for_function(
        "m => document.querySelectorAll('.jp-Notebook .jp-Cell')[1]"
        ".querySelector('.jp-OutputArea').textContent.includes(m)",
        arg=MISSING,
    )
    page.screenshot(path=str(ARTIFACTS / "widget-model-gone.png"))
    text = out.inner_text()
    # ... and the output shows the tree as text with the hint instead
    assert MISSING not in text, text
    assert HINT in text and snap in text and "'one'" in text, text
    assert out.locator(".widget-select").count() == 0

    # running it again gives a live browser, and no fallback
    _run(page, 1, 2)  # the restored kernel counts from after cell [1] again
    _assert_live(page, 1)
