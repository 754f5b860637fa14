"""``dicomtrolley search`` for scripts and for people who mistype: formats, hints, option typos.

Against the real Orthanc, whose QIDO-RS matches nothing for a percent-encoded
space or non-ASCII letter: that is the case the wildcard hint exists for.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from dicomtrolley.cli import main
from tests.support.command_line import one_line_usage_error
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.integration

STUDY_COLUMNS = [
    "StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "AccessionNumber", "ModalitiesInStudy",
    "StudyDescription", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
]


def search(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[str, str]:
    assert main(["search", *arguments]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_csv_has_keyword_columns_and_one_row_per_study(
    orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = search(capsys, orthanc.dicomweb_url, "--PatientID", "PAT001", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    expected = {s.uid: s for s in orthanc.sample.studies if s.patient_id == "PAT001"}
    assert list(rows[0]) == STUDY_COLUMNS
    assert {row["StudyInstanceUID"]: int(row["NumberOfStudyRelatedInstances"]) for row in rows} == {
        uid: len(study.instances) for uid, study in expected.items()
    }


def test_tsv_at_series_level_has_one_row_per_series(orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = search(capsys, orthanc.dicomweb_url, "--PatientID", "PAT002", "--level", "series", "--format", "tsv")
    rows = list(csv.DictReader(io.StringIO(out), delimiter="\t"))
    expected = {se.uid: se for st in orthanc.sample.studies if st.patient_id == "PAT002" for se in st.series}
    assert {row["SeriesInstanceUID"]: row["Modality"] for row in rows} == {u: s.modality for u, s in expected.items()}
    assert {int(row["NumberOfSeriesRelatedInstances"]) for row in rows} == {len(s.instances) for s in expected.values()}


def test_jsonl_at_instance_level_has_one_object_per_instance(
    orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = search(capsys, orthanc.dicomweb_url, "--PatientID", "PAT003", "--level", "instance", "--format", "jsonl")
    rows = [json.loads(line) for line in out.splitlines()]
    study = next(s for s in orthanc.sample.studies if s.patient_id == "PAT003")
    numbers = {i.uid: i.number for i in study.instances}
    assert {row["SOPInstanceUID"]: row["InstanceNumber"] for row in rows} == numbers
    assert {row["StudyInstanceUID"] for row in rows} == {study.uid}


def test_json_is_a_list_of_the_same_rows(orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = search(capsys, orthanc.dicomweb_url, "--PatientID", "PAT003", "--format", "json")
    rows = json.loads(out)
    assert [list(row) for row in rows] == [STUDY_COLUMNS]
    assert rows[0]["PatientName"] == "Müller^Jürgen"


def test_csv_of_an_empty_answer_is_its_header(orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = search(capsys, orthanc.dicomweb_url, "--PatientID", "NOBODY", "--format", "csv")
    assert out.splitlines() == [",".join(STUDY_COLUMNS)]


def test_a_non_ascii_value_that_matches_nothing_gets_a_wildcard_that_does(
    orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]
) -> None:
    out, err = search(capsys, orthanc.dicomweb_url, "--PatientName", "Müller^J*")
    assert out.strip() == "(no studies)"
    suggestion = err.split("try ")[1].split(" (")[0]
    assert suggestion == "--PatientName 'M*ller?J*'"
    out, err = search(capsys, orthanc.dicomweb_url, "--PatientName", "M*ller?J*")
    assert "Müller^Jürgen" in out
    assert err == ""


def test_an_ascii_value_that_matches_nothing_gets_no_hint(
    orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]
) -> None:
    _, err = search(capsys, orthanc.dicomweb_url, "--PatientID", "NOBODY")
    assert err == ""


def test_a_keyword_option_is_taken_in_any_case(orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = search(capsys, orthanc.dicomweb_url, "--patientid", "PAT003", "--format", "csv")
    assert [row["PatientID"] for row in csv.DictReader(io.StringIO(out))] == ["PAT003"]


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("--PatientIdd", "--PatientID"), ("--PatientNmae", "--PatientName"), ("--limt", "--limit"),
     ("--formt", "--format")],
)
def test_a_mistyped_option_is_refused_naming_the_closest_one(
    typo: str, meant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert one_line_usage_error(["search", "http://127.0.0.1:9/dicom-web", typo, "1"], capsys) == (
        f"dicomtrolley search: error: unrecognized option {typo}; did you mean {meant}?"
    )


def test_an_abbreviated_option_is_still_argparses(orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = search(capsys, orthanc.dicomweb_url, "--PatientI", "PAT003", "--form", "csv")
    assert [row["PatientID"] for row in csv.DictReader(io.StringIO(out))] == ["PAT003"]


def test_the_level_is_taken_in_any_case(orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = search(capsys, orthanc.dicomweb_url, "--PatientID", "PAT003", "--level", "SERIES", "--format", "csv")
    assert {row["PatientID"] for row in csv.DictReader(io.StringIO(out))} == {"PAT003"}
    assert "SeriesInstanceUID" in out.splitlines()[0]
