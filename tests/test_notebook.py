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


def run_notebook(orthanc: OrthancServer, folder: Path, **environment: str) -> nbformat.NotebookNode:
    """The notebook executed against ``orthanc`` with these environment variables; fails on any error."""
    executed = folder / "executed.ipynb"
    env = {**os.environ, "DICOMTROLLEY_URL": orthanc.base_url, "DICOMTROLLEY_OUTPUT": str(folder / "pull"),
           **environment}
    run = subprocess.run(
        [sys.executable, "-c", EXECUTE, str(NOTEBOOK), str(executed), str(folder)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    notebook = nbformat.read(executed, as_version=4)
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    return notebook


def printed(notebook: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))


@pytest.mark.integration
def test_the_research_notebook_runs_without_error(orthanc: OrthancServer, tmp_path: Path) -> None:
    notebook = run_notebook(orthanc, tmp_path)

    assert {"text/html", "image/png"} <= output_types(notebook)
    assert any(p.is_file() for p in (tmp_path / "pull").rglob("*"))


@pytest.mark.integration
def test_the_research_notebook_shows_the_largest_series_of_the_patient_it_is_given(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    patient = "PAT002"
    largest = max(
        (s for st in orthanc.sample.studies if st.patient_id == patient for s in st.series),
        key=lambda s: len(s.instances),
    )

    notebook = run_notebook(orthanc, tmp_path, DICOMTROLLEY_PATIENT=patient)

    written = [p for p in (tmp_path / "pull").rglob("*") if p.is_file()]
    assert len(written) == len(largest.instances)
    assert f"in {largest.description}" in printed(notebook)


@pytest.mark.integration
def test_the_research_notebook_runs_for_a_patient_without_studies(orthanc: OrthancServer, tmp_path: Path) -> None:
    notebook = run_notebook(orthanc, tmp_path, DICOMTROLLEY_PATIENT="NOBODY")

    assert "No series found for PatientID 'NOBODY'" in printed(notebook)
    assert not any(p.is_file() for p in (tmp_path / "pull").rglob("*"))


def test_the_committed_notebook_shows_its_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code), "commit the notebook executed"
    assert {"text/html", "image/png"} <= output_types(notebook)
