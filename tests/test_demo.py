"""``python -m dicomtrolley.demo``: the sample server a user starts without the tests, and its one-line refusals."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomtrolley.demo import __main__ as demo_main
from dicomtrolley.demo import orthanc as demo_orthanc

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicomtrolley.demo", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_importing_the_demo_package_loads_neither_the_server_nor_the_generator() -> None:
    probe = "import sys, dicomtrolley.demo; print(sorted(m for m in sys.modules if m.startswith('dicomtrolley.demo.')))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


@pytest.mark.parametrize("option", ["--port", "--dicom-port"])
def test_a_taken_port_is_refused_in_one_line_with_exit_status_3(
    option: str, taken_port: int, tmp_path: Path
) -> None:
    other = ["--dicom-port", "0"] if option == "--port" else ["--port", "0"]
    result = run_demo("serve", option, str(taken_port), *other, "--data", str(tmp_path / "data"))
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        f"python -m dicomtrolley.demo: Port {taken_port} is in use by another program (Address already in use); "
        "choose another with --port / --dicom-port (0: a free one)"
    ]
    assert not (tmp_path / "data").exists()  # refused before generating anything


def test_without_orthanc_one_line_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo_orthanc, "ORTHANC_BINARY", tmp_path / "no-Orthanc")
    assert demo_main.main(["serve", "--port", "0", "--dicom-port", "0", "--data", str(tmp_path)]) == 3
    assert capsys.readouterr().err.splitlines() == [
        "python -m dicomtrolley.demo: Orthanc and its DICOMweb plugin are not installed: "
        "apt-get install orthanc orthanc-dicomweb"
    ]


def test_a_port_out_of_range_is_a_command_line_mistake() -> None:
    result = run_demo("serve", "--port", "70000")
    assert result.returncode == 2
    assert "70000 is not a port number" in result.stderr


def test_the_sample_data_goes_to_the_users_cache_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert demo_main.default_data_dir() == tmp_path / "dicomtrolley" / "sample"
