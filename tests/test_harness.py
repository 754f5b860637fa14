"""The test harness itself: sample data is deterministic and cached, Orthanc serves it as uploaded."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from dicomtrolley._http import encode_query
from dicomtrolley.demo import orthanc as demo_orthanc
from tests.support import orthanc as orthanc_module
from tests.support.orthanc import OrthancFactory, OrthancServer, running_orthanc
from tests.support.sample_data import SampleData, generate_sample_data

DICOM_JSON = {"Accept": "application/dicom+json"}
REPO_ROOT = Path(__file__).resolve().parent.parent


def _qido_studies(server: OrthancServer, **params: str) -> list[dict[str, Any]]:
    response = requests.get(f"{server.dicomweb_url}/studies", params=params, headers=DICOM_JSON, timeout=30)
    response.raise_for_status()
    studies: list[dict[str, Any]] = response.json()
    return studies


# --- sample data (no server) -------------------------------------------------------------


def test_sample_data_is_identical_when_generated_in_another_directory(sample_data: SampleData, tmp_path: Path) -> None:
    fresh = generate_sample_data(tmp_path, large=False)

    assert [s.uid for s in fresh.studies] == [s.uid for s in sample_data.small_studies]
    assert [i.uid for i in fresh.all_instances()] == [i.uid for i in sample_data.small_only().all_instances()]
    first_old, first_new = sample_data.small_studies[0].instances[0], fresh.studies[0].instances[0]
    assert first_new.path.read_bytes() == first_old.path.read_bytes()


def test_complete_sample_data_is_reused_without_rewriting(tmp_path: Path) -> None:
    first = generate_sample_data(tmp_path, large=False)
    mtimes = [i.path.stat().st_mtime_ns for i in first.all_instances()]

    second = generate_sample_data(tmp_path, large=False)

    assert second == first
    assert [i.path.stat().st_mtime_ns for i in second.all_instances()] == mtimes


def test_sample_data_with_a_missing_file_is_regenerated(tmp_path: Path) -> None:
    first = generate_sample_data(tmp_path, large=False)
    victim = first.all_instances()[5].path
    victim.unlink()

    second = generate_sample_data(tmp_path, large=False)

    assert second == first
    assert victim.is_file()


def test_sample_data_covers_what_searches_need(sample_data: SampleData) -> None:
    studies = sample_data.small_studies
    assert len({s.patient_id for s in studies}) >= 3
    assert {m for s in studies for m in s.modalities} >= {"CT", "MR"}
    assert len({s.study_date[:4] for s in studies}) >= 4
    assert any(not s.patient_name.isascii() for s in studies)
    assert all(2 <= len(s.series) <= 3 for s in studies)
    large = sample_data.large_study
    assert [len(series.instances) for series in large.series] == [300]


def test_ensure_installed_reports_apt_output_when_installation_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_apt = tmp_path / "apt-get"
    fake_apt.write_text("#!/bin/sh\necho 'E: Could not open lock file' >&2\nexit 100\n")
    fake_apt.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(orthanc_module, "ORTHANC_BINARY", tmp_path / "no-Orthanc")

    with pytest.raises(orthanc_module.OrthancHarnessError, match="apt-get update") as raised:
        orthanc_module.ensure_installed()

    assert "E: Could not open lock file" in str(raised.value)


# --- the running server --------------------------------------------------------------------


@pytest.mark.integration
def test_orthanc_answers_system_with_its_aet(orthanc: OrthancServer) -> None:
    response = requests.get(f"{orthanc.base_url}/system", timeout=10)

    assert response.status_code == 200
    assert response.json()["DicomAet"] == orthanc.aet == "ORTHANC"
    assert response.json()["DicomPort"] == orthanc.dicom_port


@pytest.mark.integration
def test_qido_lists_every_sample_study(orthanc: OrthancServer) -> None:

    found = {str(s["0020000D"]["Value"][0]) for s in _qido_studies(orthanc)}

    assert found == {s.uid for s in orthanc.sample.studies}


@pytest.mark.integration
def test_qido_reports_the_instance_count_of_the_large_study(orthanc: OrthancServer) -> None:
    large = orthanc.sample.large_study

    (study,) = _qido_studies(orthanc, StudyInstanceUID=large.uid)

    assert study["00201208"] == {"vr": "IS", "Value": [300]}


@pytest.mark.integration
def test_qido_returns_the_non_ascii_patient_name(orthanc: OrthancServer) -> None:
    muller = next(s for s in orthanc.sample.studies if not s.patient_name.isascii())

    (study,) = _qido_studies(orthanc, PatientID=muller.patient_id)

    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": muller.patient_name}]}


@pytest.mark.integration
def test_wado_uri_returns_the_uploaded_file_byte_for_byte(orthanc: OrthancServer) -> None:
    study = orthanc.sample.small_studies[0]
    series = study.series[1]
    instance = series.instances[0]

    query = encode_query(
        {
            "requestType": "WADO",
            "studyUID": study.uid,
            "seriesUID": series.uid,
            "objectUID": instance.uid,
            "contentType": "application/dicom",
        }
    )

    response = requests.get(f"{orthanc.wado_url}?{query}", timeout=30)

    assert response.status_code == 200
    assert response.content == instance.path.read_bytes()


@pytest.mark.integration
def test_echoscu_gets_an_answer_from_the_dicom_port(orthanc: OrthancServer) -> None:
    echoscu = shutil.which("echoscu")
    assert echoscu is not None

    result = subprocess.run(
        [echoscu, "-aet", "ECHOTEST", "-aec", orthanc.aet, "127.0.0.1", str(orthanc.dicom_port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_extra_orthanc_applies_overrides_and_holds_only_small_data(
    orthanc: OrthancServer, orthanc_factory: OrthancFactory
) -> None:
    extra = orthanc_factory(HttpCompressionEnabled=False)

    assert extra.base_url != orthanc.base_url
    response = requests.get(
        f"{extra.dicomweb_url}/studies", headers={**DICOM_JSON, "Accept-Encoding": "gzip"}, timeout=30
    )
    assert "Content-Encoding" not in response.headers
    assert len(response.json()) == len(extra.sample.studies) == len(orthanc.sample.small_studies)


@pytest.mark.integration
def test_extra_orthanc_with_authentication_rejects_anonymous_requests(
    orthanc_factory: OrthancFactory,
) -> None:
    extra = orthanc_factory(load=False, AuthenticationEnabled=True, RegisteredUsers={"alice": "s3cret"})

    anonymous = requests.get(f"{extra.base_url}/system", timeout=10)
    with extra.session() as session:
        authorised = session.get(f"{extra.base_url}/system", timeout=10)

    assert anonymous.status_code == 401
    assert authorised.status_code == 200
    assert extra.auth == ("alice", "s3cret")


@pytest.mark.integration
def test_extra_orthanc_clear_removes_every_study(orthanc_factory: OrthancFactory) -> None:
    extra = orthanc_factory()

    extra.clear()

    assert _qido_studies(extra) == []


@pytest.mark.integration
def test_start_retries_with_other_ports_when_the_http_or_dicom_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_free_ports = demo_orthanc.free_ports
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        http_taken, dicom_taken = real_free_ports(2)
        choices = iter([[busy, dicom_taken, 1], [http_taken, busy, 1]])
        monkeypatch.setattr(demo_orthanc, "free_ports", lambda count: next(choices, None) or real_free_ports(count))

        with running_orthanc(tmp_path, stop_timeout=0.3) as server:
            status = requests.get(f"{server.base_url}/system", timeout=10).status_code

    assert next(choices, None) is None
    assert busy not in (server.http_port, server.dicom_port)
    assert status == 200


@pytest.mark.integration
def test_orthanc_stops_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "orthanc.pid"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tests.support.orthanc import running_orthanc\n"
        "with running_orthanc(Path(sys.argv[1])) as server:\n"
        "    Path(sys.argv[2]).write_text(str(server.process.pid))\n"
        "    time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "work"), str(pid_file)], cwd=REPO_ROOT)
    orthanc_pid = int(_wait_for(pid_file).read_text())

    parent.kill()
    parent.wait(timeout=10)

    assert _wait_until_gone(orthanc_pid, timeout=15)


@pytest.mark.integration
def test_serve_command_writes_ready_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    command = [sys.executable, "-m", "dicomtrolley.demo", "serve", "--data", str(tmp_path / "data")]
    serve = subprocess.Popen(
        [*command, "--workdir", str(workdir), "--port", "0", "--dicom-port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ready = json.loads(_wait_for(workdir / "ready.json").read_text(encoding="utf-8"))
        studies = requests.get(f"{ready['dicomweb_url']}/studies", headers=DICOM_JSON, timeout=10).json()
    finally:
        serve.send_signal(signal.SIGTERM)
        output, _ = serve.communicate(timeout=30)

    assert len(studies) == len(ready["studies"]) == 6
    assert ready["dicomweb_url"] in output
    assert serve.returncode == 0, output
    assert not (workdir / "ready.json").exists()
    assert _wait_until_gone(ready["pid"], timeout=5)


def _wait_for(path: Path, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.05)
    return path


def _wait_until_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
