"""Every Python example in the README and the docs runs, against the test suite's Orthanc.

The examples address Orthanc as ``http://localhost:8042`` (HTTP) and
``"localhost", 4242`` (DICOM), its default ports; here those are swapped for
the test server's. The Vitrea examples address ``https://vitrea.example`` and
read the password from ``$VITREA_PASSWORD``: here the suite's Vitrea-like
server over that Orthanc. The blocks
of one page run in order in one namespace, as a reader would run them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.orthanc import OrthancServer
from tests.support.vitrea_server import VitreaServer

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
VITREA = "https://vitrea.example"
"""Where the Vitrea examples address Vitrea Connection: swapped for a Vitrea-like server over the Orthanc."""
VITREA_PASSWORD = "VITREA_PASSWORD"


def python_blocks(page: Path) -> list[str]:
    return _BLOCK.findall(page.read_text(encoding="utf-8"))


def test_the_docs_have_examples() -> None:
    assert sum(len(python_blocks(page)) for page in PAGES) >= 8


@pytest.mark.integration
@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_examples_on_page_run(
    page: Path, orthanc: OrthancServer, vitrea: VitreaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(VITREA_PASSWORD, vitrea.password)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for number, block in enumerate(python_blocks(page), start=1):
        code = block.replace("http://localhost:8042", orthanc.base_url).replace(VITREA, vitrea.url)
        code = code.replace('"localhost", 4242', f'"127.0.0.1", {orthanc.dicom_port}')
        exec(compile(code, f"{page.name} example {number}", "exec"), namespace)  # noqa: S102 - our own docs


def test_the_api_reference_covers_every_public_module() -> None:
    package = REPO / "dicomtrolley"
    modules = {p.stem for p in package.glob("*.py") if not p.stem.startswith("_")}
    modules |= {p.parent.name for p in package.glob("*/__init__.py") if not p.parent.name.startswith("_")}
    documented = set(re.findall(r"^::: dicomtrolley\.(\w+)$", (REPO / "docs" / "api.md").read_text(), re.M))
    assert documented == modules
