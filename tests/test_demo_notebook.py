"""The demo notebook runs headless and shows the restored generator replaying its numbers."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

DEMO = Path(__file__).resolve().parent.parent / "binder" / "demo.ipynb"


def test_demo_notebook_executes_and_restores(tmp_path: Path) -> None:
    nb = nbformat.read(DEMO, as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    results = [o["data"]["text/plain"] for o in outputs if o.get("output_type") == "execute_result"]
    assert results[-1] == "True", results
    assert any("snapshot" in o.get("text", "") for o in outputs)
