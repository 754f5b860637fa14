"""``dicomtrolley download`` and ``export`` before and after the first request: the output folder,
the template, one series, and each failure told once.

Mistakes that would waste a download are found first: the tests that expect a
refusal point at a URL where nothing listens (port 9), so a request made
despite the mistake would end with exit 3 and a connection error, not the
one-line exit 2 they assert. Tests run as root, for whom permission bits stop
no write: a folder that cannot be written in is simulated by a write that
fails with EACCES, the one thing the check sees of it.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from dicomtrolley import storage
from dicomtrolley._cli.download import problems
from dicomtrolley.cli import main
from dicomtrolley.core import FetchFailure, InstanceReference, StudyReference
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.export.state import LOCK_NAME
from dicomtrolley.results import DownloadSummary
from dicomtrolley.storage import safe_segment
from tests.support.command_line import usage_error
from tests.support.orthanc import OrthancServer

NOWHERE = "http://127.0.0.1:9/dicom-web"


def refused(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a refused command prints; it must exit 2 without a request."""
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err


def test_download_into_a_file_is_refused_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "study.dcm"
    target.write_bytes(b"")
    err = refused(["download", NOWHERE, "1.2.3", "-o", str(target), "--no-progress"], capsys)
    assert err == f"dicomtrolley download: error: {target} is a file, not a folder\n"


def test_download_into_a_folder_under_a_file_is_refused_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_bytes(b"")
    err = refused(["download", NOWHERE, "1.2.3", "-o", str(tmp_path / "file" / "out"), "--no-progress"], capsys)
    assert f"{tmp_path / 'file'} is a file, not a folder" in err


def test_download_into_a_folder_that_forbids_writing_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def forbidden(target: str) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied", target)

    monkeypatch.setattr(storage, "_create_temporary", forbidden)
    err = refused(["download", NOWHERE, "1.2.3", "-o", str(tmp_path), "--no-progress"], capsys)
    assert err == f"dicomtrolley download: error: cannot write in {tmp_path}: Permission denied\n"


def test_export_into_a_file_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    worklist = tmp_path / "worklist.csv"
    worklist.write_text("StudyInstanceUID\n1.2.3\n")
    target = tmp_path / "export"
    target.write_bytes(b"")
    err = refused(["export", NOWHERE, str(worklist), "-o", str(target), "--no-progress"], capsys)
    assert err == f"dicomtrolley export: error: {target} is a file, not a folder\n"


def test_export_whose_lock_file_cannot_be_opened_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    worklist = tmp_path / "worklist.csv"
    worklist.write_text("StudyInstanceUID\n1.2.3\n")
    lock = tmp_path / "export" / LOCK_NAME
    lock.mkdir(parents=True)  # a folder where the lock file goes
    err = refused(["export", NOWHERE, str(worklist), "-o", str(tmp_path / "export"), "--no-progress"], capsys)
    assert err == f"dicomtrolley export: error: cannot open the export's lock file {lock}: Is a directory\n"


def test_a_template_keyword_typo_is_refused_with_the_keyword_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["download", NOWHERE, "1.2.3"], ["export", NOWHERE, str(tmp_path / "w.csv")]):
        err = usage_error([*command, "-o", str(tmp_path / "out"), "--template", "{PatientId}/{SOPInstanceUID}.dcm"],
                          capsys)
        assert err.endswith("'PatientId' is not a DICOM keyword; did you mean PatientID?\n")


@pytest.mark.integration
def test_missing_parent_folders_are_made_as_mkdir_p_does(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = orthanc.sample.small_studies[0]
    output = tmp_path / "new" / "deeper" / "out"
    assert main(["download", orthanc.dicomweb_url, study.uid, "-o", str(output), "--no-progress",
                 "--template", "{SOPInstanceUID}.dcm"]) == 0
    assert {p.name for p in output.iterdir()} == {f"{i.uid}.dcm" for i in study.instances}


@pytest.mark.integration
def test_a_folder_that_cannot_be_written_mid_download_stops_it_at_the_first_write(
    orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = max(orthanc.sample.small_studies, key=lambda s: len(s.instances))
    (tmp_path / safe_segment(study.uid.replace(".", "_"))).write_bytes(b"")  # where the study's folder goes
    assert main(["download", orthanc.dicomweb_url, study.uid, "-o", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("a file stands where one of its folders should be") == 1, err
    assert err.startswith("dicomtrolley: Download stopped: Could not write")


@pytest.mark.integration
def test_download_series_fetches_only_that_series(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = next(s for s in orthanc.sample.small_studies if len(s.series) > 1)
    wanted = study.series[1]
    assert main(["download", orthanc.dicomweb_url, study.uid, "--series", wanted.uid, "-o", str(tmp_path),
                 "--no-progress", "--template", "{SeriesInstanceUID}/{SOPInstanceUID}.dcm"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == [wanted.uid]
    assert {p.name for p in (tmp_path / wanted.uid).iterdir()} == {f"{i.uid}.dcm" for i in wanted.instances}


def test_series_of_several_studies_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(["download", NOWHERE, "1.2.3", "1.2.4", "--series", "1.2.3.1", "-o", "out"], capsys)
    assert "argument --series: give the one study the series belong to, not 2" in err


def test_a_failure_is_one_line_and_the_instances_it_lost_are_not_listed_again() -> None:
    lost = [InstanceReference("1.2.3", "1.2.3.1", f"1.2.3.1.{n}") for n in range(3)]
    other = InstanceReference("1.2.4", "1.2.4.1", "1.2.4.1.1")
    failure = FetchFailure(StudyReference("1.2.3"), DICOMTrolleyError("504 Gateway Timeout"))
    summary = DownloadSummary(failures=[failure], missing=[*lost, other])
    assert problems(summary) == [
        f"failed: {failure}",
        f"missing: {other} (listed by the search, not sent by the server)",
    ]


@pytest.mark.integration
@pytest.mark.parametrize("broken", ["search", "download"])
def test_a_failure_is_not_also_logged_as_a_warning(
    broken: str, orthanc: OrthancServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    studies = orthanc.sample.small_studies[:2]
    uids = [s.uid for s in studies]
    if broken == "search":  # every study's search answers 404: one failure per study
        arguments, expected = [f"{orthanc.base_url}/no-dicom-web", *uids], len(studies)
    else:  # every instance's request answers 404: one failure per instance
        arguments = [orthanc.dicomweb_url, *uids, "--downloader", "wado-uri", "--wado-uri-url",
                     f"{orthanc.base_url}/no-wado"]
        expected = sum(len(s.instances) for s in studies)
    with caplog.at_level(logging.WARNING, logger="dicomtrolley"):
        assert main(["download", *arguments, "-o", str(tmp_path / "x"), "--no-progress", "--workers", "2"]) == 1
    assert [r.getMessage() for r in caplog.records] == []
    assert capsys.readouterr().err.count("failed: ") == expected


@pytest.mark.integration
def test_studies_may_follow_the_options(orthanc: OrthancServer, tmp_path: Path) -> None:
    studies = orthanc.sample.small_studies[:2]
    assert main(["download", orthanc.dicomweb_url, "-o", str(tmp_path), "--no-progress", studies[0].uid,
                 "--template", "{SOPInstanceUID}.dcm", studies[1].uid]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {f"{i.uid}.dcm" for s in studies for i in s.instances}
