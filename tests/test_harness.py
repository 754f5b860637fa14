"""The test harness itself: sample data is deterministic and cached, Orthanc serves it as uploaded."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from dicomtrolley.http import encode_query
from tests.conftest import OrthancFactory
from tests.support.orthanc import OrthancServer
from tests.support.sample_data import SampleData, generate_sample_data

DICOM_JSON = {"Accept": "application/dicom+json"}


def _qido_studies(server: OrthancServer, **params: str) -> list[dict[str, object]]:
    response = requests.get(f"{server.dicomweb_url}/studies", params=params, headers=DICOM_JSON, timeout=30)
    response.raise_for_status()
    studies: list[dict[str, object]] = response.json()
    return studies


# --- sample data (no server) -------------------------------------------------------------


def test_sample_data_is_identical_when_generated_in_another_directory(
    sample_data: SampleData, tmp_path: Path
) -> None:
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


# --- the running server --------------------------------------------------------------------


@pytest.mark.integration
def test_orthanc_answers_system_with_its_aet(orthanc: OrthancServer) -> None:
    response = requests.get(f"{orthanc.base_url}/system", timeout=10)

    assert response.status_code == 200
    assert response.json()["DicomAet"] == orthanc.aet == "ORTHANC"
    assert response.json()["DicomPort"] == orthanc.dicom_port


@pytest.mark.integration
def test_qido_lists_every_sample_study(orthanc: OrthancServer) -> None:
    assert orthanc.sample is not None

    found = {str(s["0020000D"]["Value"][0]) for s in _qido_studies(orthanc)}  # type: ignore[index]

    assert found == {s.uid for s in orthanc.sample.studies}


@pytest.mark.integration
def test_qido_reports_the_instance_count_of_the_large_study(orthanc: OrthancServer) -> None:
    assert orthanc.sample is not None
    large = orthanc.sample.large_study

    (study,) = _qido_studies(orthanc, StudyInstanceUID=large.uid)

    assert study["00201208"] == {"vr": "IS", "Value": [300]}


@pytest.mark.integration
def test_qido_returns_the_non_ascii_patient_name(orthanc: OrthancServer) -> None:
    assert orthanc.sample is not None
    muller = next(s for s in orthanc.sample.studies if not s.patient_name.isascii())

    (study,) = _qido_studies(orthanc, PatientID=muller.patient_id)

    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": muller.patient_name}]}


@pytest.mark.integration
def test_wado_uri_returns_the_uploaded_file_byte_for_byte(orthanc: OrthancServer) -> None:
    assert orthanc.sample is not None
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
    assert extra.sample is not None
    response = requests.get(
        f"{extra.dicomweb_url}/studies", headers={**DICOM_JSON, "Accept-Encoding": "gzip"}, timeout=30
    )
    assert "Content-Encoding" not in response.headers
    assert len(response.json()) == len(extra.sample.studies) == len(orthanc.sample.small_studies)  # type: ignore[union-attr]


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
