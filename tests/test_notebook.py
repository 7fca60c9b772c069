"""A notebook with %checkpoint / %restore cells, executed headless with nbclient."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent / "notebooks" / "checkpoint_restore.ipynb"


def _text(cell: dict) -> str:
    out = []
    for o in cell["outputs"]:
        if o["output_type"] == "stream":
            out.append(o["text"])
        elif o["output_type"] == "execute_result":
            out.append(o["data"]["text/plain"])
    return "".join(out)


@pytest.mark.timeout(300)
def test_notebook_checkpoint_restore_cells(helper_dirs) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3-chkpt").execute()
    cells = nb.cells
    assert all(o["output_type"] != "error" for c in cells for o in c["outputs"])
    result = next(o for o in cells[1]["outputs"] if o["output_type"] == "execute_result")
    snap = result["data"]["text/plain"].strip("'")  # %checkpoint returns the id...
    assert f"snapshot {snap} taken" in _text(cells[1])  # ...and says when it is taken
    assert _text(cells[2]) == "(10, 20)"
    assert f"restored snapshot {snap}" in _text(cells[3])
    assert _text(cells[4]) == "1 10\n"  # (nbclient numbers cells itself: counts are checked
    # through jupyter_client in test_kernel_restore.py)
    assert f"* {snap}" in _text(cells[5]) and "'notebook-start'" in _text(cells[5])
