"""The research notebook runs from top to bottom against the real Orthanc, and its committed copy shows outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.support.orthanc import OrthancServer

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "notebooks" / "research-pull.ipynb"


def output_types(notebook: nbformat.NotebookNode) -> set[str]:
    return {
        kind
        for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        for kind in output.get("data", {"text/plain": None})
    }


@pytest.mark.integration
def test_the_research_notebook_runs_without_error(
    orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DICOMTROLLEY_URL", orthanc.base_url)
    monkeypatch.setenv("DICOMTROLLEY_OUTPUT", str(tmp_path / "pull"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(tmp_path)}}
    client = NotebookClient(notebook, timeout=180, kernel_name="python3", resources=resources)
    client.execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    assert {"text/html", "image/png"} <= output_types(notebook)
    assert any(p.is_file() for p in (tmp_path / "pull").rglob("*"))


def test_the_committed_notebook_shows_its_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code), "commit the notebook executed"
    assert {"text/html", "image/png"} <= output_types(notebook)
