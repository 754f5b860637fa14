"""The dicomtrolley command, against the real Orthanc."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicomtrolley.cli import main
from tests.support.command_line import one_line_usage_error, usage_error
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.integration


def test_search_prints_one_row_per_matching_study(orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", orthanc.dicomweb_url, "--PatientID", "PAT002"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = {s.uid for s in orthanc.sample.studies if s.patient_id == "PAT002"}
    assert lines[0].startswith("StudyInstanceUID")
    assert {line.split()[0] for line in lines[1:]} == expected


def test_search_json_lists_the_studies_with_their_attributes(
    orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["search", orthanc.dicomweb_url, "--PatientID", "PAT003", "--json"]) == 0
    studies = json.loads(capsys.readouterr().out)
    assert [s["uid"] for s in studies] == [s.uid for s in orthanc.sample.studies if s.patient_id == "PAT003"]
    assert studies[0]["data"]["00100020"]["Value"] == ["PAT003"]


@pytest.mark.parametrize(("low", "high"), [("20200101", "20211231"), ("2020-01-01", "2021-12-31")])
def test_search_dates_are_read_in_dicom_or_iso_form(
    orthanc: OrthancServer, capsys: pytest.CaptureFixture[str], low: str, high: str
) -> None:
    assert main(["search", orthanc.dicomweb_url, "--from", low, "--to", high, "--json"]) == 0
    found = {s["uid"] for s in json.loads(capsys.readouterr().out)}
    assert found == {s.uid for s in orthanc.sample.studies if "20200101" <= s.study_date <= "20211231"}


def test_search_level_is_read_in_any_case(orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", orthanc.dicomweb_url, "--PatientID", "PAT003", "--level", "SERIES", "--json"]) == 0
    assert all(study.get("children") for study in json.loads(capsys.readouterr().out))


def test_download_writes_the_study_and_exits_zero(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = next(s for s in orthanc.sample.small_studies if s.patient_id == "PAT001")
    status = main(["download", orthanc.dicomweb_url, study.uid, "-o", str(tmp_path), "--no-progress",
                   "--template", "{SOPInstanceUID}.dcm"])
    assert status == 0
    assert {p.name for p in tmp_path.iterdir()} == {f"{i.uid}.dcm" for i in study.instances}


def test_download_over_wado_uri(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = next(s for s in orthanc.sample.small_studies if s.patient_id == "PAT002")
    status = main(["download", orthanc.dicomweb_url, study.uid, "-o", str(tmp_path), "--no-progress",
                   "--downloader", "wado-uri", "--workers", "3"])
    assert status == 0
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == len(study.instances)


def test_download_exits_non_zero_and_names_what_failed(
    orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = orthanc.sample.small_studies[0]
    status = main(["download", orthanc.dicomweb_url, "1.2.3.999", study.uid, "-o", str(tmp_path), "--no-progress"])
    assert status == 1
    err = capsys.readouterr().err
    assert "failed: StudyReference(study_uid='1.2.3.999')" in err
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == len(study.instances)


def test_unreachable_server_exits_three_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "http://127.0.0.1:9/dicom-web"]) == 3
    assert "127.0.0.1:9" in capsys.readouterr().err


def test_password_comes_from_the_environment_not_the_command_line(
    orthanc_factory: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert callable(orthanc_factory)
    server = orthanc_factory(AuthenticationEnabled=True, RegisteredUsers={"alice": "s3cret"})
    monkeypatch.setenv("DICOMTROLLEY_PASSWORD", "s3cret")
    assert main(["search", server.dicomweb_url, "--user", "alice"]) == 0
    assert "StudyInstanceUID" in capsys.readouterr().out
    monkeypatch.setenv("DICOMTROLLEY_PASSWORD", "wrong")
    assert main(["search", server.dicomweb_url, "--user", "alice"]) == 3
    assert "401" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "option"),
    [
        pytest.param(["download", "http://127.0.0.1:9/dicom-web", "1.2", "-o", "x", "--template", "{PatientID"],
                     "--template", id="unbalanced-template"),
        pytest.param(["download", "http://127.0.0.1:9/dicom-web", "1.2", "-o", "x", "--workers", "-1"],
                     "--workers", id="negative-workers"),
        pytest.param(["download", "http://127.0.0.1:9/dicom-web", "1.2", "-o", "x", "--workers", "0"],
                     "--workers", id="zero-workers"),
        pytest.param(["search", "http://127.0.0.1:9/dicom-web", "--limit", "0"], "--limit", id="zero-limit"),
        pytest.param(["search", "http://127.0.0.1:9/dicom-web", "--from", "20200231"], "--from", id="no-such-day"),
        pytest.param(["search", "http://127.0.0.1:9/dicom-web", "--from", "2024-02-02", "--to", "2024-01-01"],
                     "--from", id="from-after-to"),
        pytest.param(["search", "http://127.0.0.1:9/dicom-web", "--no-verify", "--ca-file", "ca.pem"],
                     "--ca-file", id="no-verify-and-ca-file"),
        pytest.param(["search", "http://127.0.0.1:9/dicom-web", "--login-url", "http://127.0.0.1:9/login"],
                     "--login-url", id="login-url-without-user"),
        pytest.param(["search", "http://127.0.0.1:9/dicom-web", "--server", "pacs"], "--server",
                     id="url-and-server"),
        pytest.param(["search", "htp://127.0.0.1:9/dicom-web"], "htp://", id="url-scheme-typo"),
        pytest.param(["download", "http:///dicom-web", "1.2", "-o", "x"], "http:///", id="url-without-host"),
        pytest.param(["probe", "htps://127.0.0.1:9/dicom-web"], "htps://", id="probe-url-scheme-typo"),
        pytest.param(["upload", "ftp://127.0.0.1:9/dicom-web", "."], "ftp://", id="upload-url-not-http"),
        pytest.param(["export", "http://127.0.0.1:9/dicom-web", "w.csv", "--to", "htp://127.0.0.1:9/dicom-web",
                      "--state-dir", "s"], "--to", id="destination-url-scheme-typo"),
        pytest.param(["search", "http://127.0.0.1:9/dicom-web", "--user", "u", "--login-url", "login"],
                     "--login-url", id="login-url-not-a-url"),
    ],
)
def test_a_command_line_mistake_is_one_line_naming_the_option_and_exits_two(
    arguments: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert option in one_line_usage_error(arguments, capsys)


def test_download_from_an_unreachable_server_exits_three_as_documented(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["download", "http://127.0.0.1:9/dicom-web", "1.2.3", "-o", str(tmp_path), "--no-progress"]) == 3
    assert "127.0.0.1:9" in capsys.readouterr().err


def test_series_level_search_prints_one_row_per_series_with_its_instance_count(
    orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["search", orthanc.dicomweb_url, "--PatientID", "PAT002", "--level", "series"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:2] == ["StudyInstanceUID", "SeriesInstanceUID"]
    expected = {
        (study.uid, series.uid): len(series.instances)
        for study in orthanc.sample.studies if study.patient_id == "PAT002" for series in study.series
    }
    assert {(line.split()[0], line.split()[1]): int(line.split()[-1]) for line in lines} == expected


def test_instance_level_search_prints_one_row_per_instance(
    orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["search", orthanc.dicomweb_url, "--PatientID", "PAT003", "--level", "instance"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
    expected = {i.uid for s in orthanc.sample.studies if s.patient_id == "PAT003" for i in s.instances}
    assert sorted(line.split()[2] for line in lines) == sorted(expected)


def servers_file(tmp_path: Path, orthanc: OrthancServer) -> Path:
    """A servers file naming the test Orthanc ``local``, downloading over WADO-URI."""
    config = tmp_path / "servers.toml"
    config.write_text(f'[servers.local]\nurl = "{orthanc.dicomweb_url}"\ndownloader = "wado-uri"\n')
    return config


def test_search_takes_a_named_server_from_the_servers_file(
    orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = servers_file(tmp_path, orthanc)
    assert main(["search", "--server", "local", "--config", str(config), "--PatientID", "PAT002"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = {s.uid for s in orthanc.sample.studies if s.patient_id == "PAT002"}
    assert {line.split()[0] for line in lines[1:]} == expected


def test_download_takes_a_named_server_and_every_positional_is_a_study(
    orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = servers_file(tmp_path, orthanc)
    studies = orthanc.sample.small_studies[:2]
    status = main(["download", "--server", "local", "--config", str(config), *[s.uid for s in studies],
                   "-o", str(tmp_path / "out"), "--no-progress", "--template", "{SOPInstanceUID}.dcm"])
    assert status == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} == {f"{i.uid}.dcm" for s in studies for i in s.instances}


def test_a_command_without_url_or_server_exits_two_naming_both(capsys: pytest.CaptureFixture[str]) -> None:
    assert "(URL | --server NAME)" in usage_error(["search", "--PatientID", "PAT002"], capsys)
