"""The command line over DIMSE: C-FIND, C-GET and C-MOVE against the real Orthanc's DICOM port.

No DICOMweb URL is given: ``--host``, ``--port`` and the AE titles say where
the server is. What a protocol lacks is refused while parsing, in one line
naming the options to add.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from dicomtrolley.cli import main
from tests.support.command_line import one_line_usage_error
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.integration


def dimse(orthanc: OrthancServer) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(orthanc.dicom_port), "--called-aet", orthanc.aet]


def test_search_with_c_find_prints_the_series_level(orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--searcher", "c-find", *dimse(orthanc), "--PatientID", "PAT002", "--level", "series",
                 "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    expected = {se.uid for st in orthanc.sample.studies if st.patient_id == "PAT002" for se in st.series}
    assert {row["SeriesInstanceUID"] for row in rows} == expected


@pytest.mark.parametrize("downloader", ["c-get", "c-move"])
def test_download_with_c_find_and_a_dimse_retrieve(
    downloader: str, orthanc: OrthancServer, tmp_path: Path
) -> None:
    study = orthanc.sample.small_studies[0]
    destination_aet, destination_port = orthanc.move_destination
    move = ["--aet", destination_aet, "--move-port", str(destination_port)] if downloader == "c-move" else []
    status = main(["download", study.uid, "--searcher", "c-find", "--downloader", downloader, *dimse(orthanc), *move,
                   "-o", str(tmp_path), "--no-progress", "--template", "{SOPInstanceUID}.dcm"])
    assert status == 0
    assert {p.name for p in tmp_path.iterdir()} == {f"{i.uid}.dcm" for i in study.instances}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(["search", "--searcher", "c-find", "--port", "104"], "--searcher c-find needs --host",
                     id="c-find-without-host"),
        pytest.param(["download", "1.2.3", "-o", "out", "--searcher", "c-find", "--downloader", "c-move",
                      "--host", "pacs", "--port", "104"], "--downloader c-move needs --move-port",
                     id="c-move-without-port"),
        pytest.param(["download", "1.2.3", "-o", "out", "--searcher", "c-find", "--host", "pacs", "--port", "104"],
                     "--downloader wado-rs needs a URL", id="wado-rs-without-url"),
        pytest.param(["search", "--searcher", "c-find", "--host", "pacs", "--port", "70000"], "--port",
                     id="port-out-of-range"),
    ],
)
def test_a_dimse_command_missing_a_setting_is_refused_naming_the_option(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in one_line_usage_error(arguments, capsys)


def test_a_c_get_into_a_folder_that_cannot_be_written_stops_at_the_first_instance(
    orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = max(orthanc.sample.small_studies, key=lambda s: len(s.instances))
    (tmp_path / "blocked").write_bytes(b"")  # where every instance's folder goes
    status = main(["download", study.uid, "--searcher", "c-find", "--downloader", "c-get", *dimse(orthanc),
                   "-o", str(tmp_path), "--no-progress", "--template", "blocked/{SOPInstanceUID}.dcm"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("dicomtrolley: Download stopped: Could not write")
    assert err.count("a file stands where its folder should be") == 1, err
