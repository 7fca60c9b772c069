"""The demo notebook runs headless on the snapshots kernel and shows its state coming back."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

DEMO = Path(__file__).resolve().parent.parent / "binder" / "demo.ipynb"


@pytest.mark.timeout(300)
def test_demo_notebook_executes_and_restores(helper_dirs, tmp_path: Path) -> None:
    nb = nbformat.read(DEMO, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3-chkpt"
    NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    texts = "".join(o.get("text", "") for o in outputs)
    assert (
        "restored snapshot" in texts
        and "the generator continues where the snapshot left it: True" in texts
    )
    results = [o["data"]["text/plain"] for o in outputs if o.get("output_type") == "execute_result"]
    assert "True" in results, results


def test_demo_notebook_is_valid_and_names_its_language() -> None:
    """JupyterLab marks a notebook modified when the kernel's language_info differs from the
    file's: the demo carries what the snapshots kernel (an IPythonKernel) reports, all but its
    exact Python version, which no file can know."""
    from ipykernel.ipkernel import IPythonKernel

    nb = nbformat.read(DEMO, as_version=4)
    nbformat.validate(nb)
    info = dict(nb.metadata["language_info"])
    assert info.pop("version") == "3"
    reported = dict(IPythonKernel.language_info)
    assert reported.pop("version").startswith("3.")
    assert info == reported
