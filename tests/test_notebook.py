"""The research notebook runs from top to bottom against the real Orthanc, and its committed copy shows outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.support.orthanc import OrthancServer

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "notebooks" / "research-pull.ipynb"


def output_types(notebook: nbformat.NotebookNode) -> set[str]:
    return {
        kind
        for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        for kind in output.get("data", {"text/plain": None})
    }


# In a process of its own: finding the kernel imports ipykernel, which would
# make every later test of this process look like it runs in a notebook.
EXECUTE = """
import sys
import nbformat
from nbclient import NotebookClient

notebook = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": sys.argv[3]}}).execute()
nbformat.write(notebook, sys.argv[2])
"""


@pytest.mark.integration
def test_the_research_notebook_runs_without_error(orthanc: OrthancServer, tmp_path: Path) -> None:
    executed = tmp_path / "executed.ipynb"
    env = {**os.environ, "DICOMTROLLEY_URL": orthanc.base_url, "DICOMTROLLEY_OUTPUT": str(tmp_path / "pull")}
    run = subprocess.run(
        [sys.executable, "-c", EXECUTE, str(NOTEBOOK), str(executed), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    notebook = nbformat.read(executed, as_version=4)
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    assert {"text/html", "image/png"} <= output_types(notebook)
    assert any(p.is_file() for p in (tmp_path / "pull").rglob("*"))


def test_the_committed_notebook_shows_its_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code), "commit the notebook executed"
    assert {"text/html", "image/png"} <= output_types(notebook)
