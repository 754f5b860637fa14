"""Search results as tables: text, HTML for notebooks, pandas."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from pydicom.dataset import Dataset

from dicomtrolley.core import Instance, Query, Series, Study
from dicomtrolley.exceptions import NonInstanceParameterError, NonSeriesParameterError
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.results import COLUMNS, UNKNOWN, InstanceList, SeriesList, StudyList
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from tests.support.orthanc import OrthancServer
from tests.support.sample_data import SampleData


def study(uid: str, patient: str, **extra: object) -> Study:
    ds = Dataset()
    ds.PatientID = patient
    ds.PatientName = "Müller^Jürgen"
    ds.StudyDate = "20230817"
    ds.ModalitiesInStudy = ["CT", "PT"]
    for key, value in extra.items():
        setattr(ds, key, value)
    return Study(uid, ds)


def test_text_table_has_a_header_and_a_row_per_study() -> None:
    lines = StudyList([study("1.1", "P1"), study("1.2", "P2")]).to_table().splitlines()
    assert lines[0].split() == [*COLUMNS, "series", "instances"]
    assert lines[1].split()[:2] == ["1.1", "P1"]
    assert "CT\\PT" in lines[1]


def test_counts_come_from_the_server_when_it_reports_them() -> None:
    rows = StudyList([study("1.1", "P1", NumberOfStudyRelatedSeries=3, NumberOfStudyRelatedInstances=40)]).rows()
    assert (rows[0]["series"], rows[0]["instances"]) == (3, 40)


def test_counts_fall_back_to_what_the_search_returned() -> None:
    found = study("1.1", "P1")
    found.add(Series("1.1.1"))
    assert StudyList([found]).rows()[0]["series"] == 1


def test_html_table_escapes_values_for_notebooks() -> None:
    html = StudyList([study("1.1", "<script>")])._repr_html_()
    assert html.startswith("<table>")
    assert "&lt;script&gt;" in html
    assert "<script>" not in html


def test_empty_result_says_so() -> None:
    assert StudyList().to_table() == "(no studies)"


def test_dataframe_has_a_row_per_study() -> None:
    frame = StudyList([study("1.1", "P1"), study("1.2", "P2")]).to_dataframe()
    assert list(frame["StudyInstanceUID"]) == ["1.1", "1.2"]
    assert list(frame["PatientName"]) == ["Müller^Jürgen"] * 2


def test_values_a_series_level_search_did_not_return_are_unknown_not_blank_or_zero() -> None:
    found = study("1.1", "P1")
    del found.data.ModalitiesInStudy
    found.add(Series("1.1.1"))
    found.add(Series("1.1.2"))
    row = StudyList([found]).rows()[0]
    assert (row["series"], row["instances"], row["ModalitiesInStudy"], row["StudyDescription"]) == (2, None, None, None)
    line = StudyList([found]).to_table().splitlines()[1].split()
    assert line[-2:] == ["2", UNKNOWN]


def test_instances_are_summed_from_series_counts() -> None:
    found = study("1.1", "P1")
    for uid, count in (("1.1.1", 3), ("1.1.2", 4)):
        series = found.add(Series(uid))
        series.data.NumberOfSeriesRelatedInstances = count
    assert StudyList([found]).rows()[0]["instances"] == 7


def test_a_study_level_search_without_counts_shows_them_as_unknown() -> None:
    row = StudyList([study("1.1", "P1", StudyDescription="")]).rows()[0]
    assert (row["series"], row["instances"], row["StudyDescription"]) == (None, None, "")


def series(uid: str, number: int, modality: str, count: int | None = None) -> Series:
    ds = Dataset()
    ds.SeriesNumber = number
    ds.Modality = modality
    ds.SeriesDescription = f"{modality} {number}"
    if count is not None:
        ds.NumberOfSeriesRelatedInstances = count
    return Series(uid, ds)


def two_studies() -> StudyList:
    first, second = study("1.1", "P1", StudyDescription="CT THORAX"), study("1.2", "P2")
    first.add(series("1.1.1", 1, "CT", 10))
    first.add(series("1.1.2", 2, "PT", 5))
    second.add(series("1.2.1", 1, "MR", 7))
    return StudyList([first, second])


def test_series_list_has_a_row_per_series_with_its_study() -> None:
    rows = two_studies().series().rows()
    assert [(r["StudyInstanceUID"], r["SeriesInstanceUID"], r["Modality"], r["instances"]) for r in rows] == [
        ("1.1", "1.1.1", "CT", 10), ("1.1", "1.1.2", "PT", 5), ("1.2", "1.2.1", "MR", 7),
    ]
    assert rows[0]["PatientID"] == "P1"
    assert rows[0]["StudyDescription"] == "CT THORAX"


def test_series_dataframe_can_be_filtered_with_pandas() -> None:
    frame = two_studies().series().to_dataframe()
    assert list(frame[frame["Modality"] == "CT"]["SeriesInstanceUID"]) == ["1.1.1"]
    assert frame["SeriesNumber"].dtype == "int64"


def test_html_caption_sums_up_studies_series_instances_and_modalities() -> None:
    html = two_studies()._repr_html_()
    assert "<caption>2 studies, 3 series, 22 instances; modalities: CT, PT</caption>" in html
    assert "<caption>3 series, 22 instances; modalities: CT, MR, PT</caption>" in two_studies().series()._repr_html_()


def test_without_known_sizes_there_is_no_size_column() -> None:
    found = two_studies()
    assert "bytes" not in found.rows()[0]
    assert "MB" not in found._repr_html_()


# ---------------------------------------------------------------- sizes, from a real download


def patient_studies(orthanc: OrthancServer) -> tuple[Trolley, StudyList]:
    session = requests.Session()
    trolley = Trolley(QidoRS(session, orthanc.dicomweb_url), WadoRS(session, orthanc.dicomweb_url))
    return trolley, trolley.find_studies(Query(PatientID="PAT001"))


@pytest.mark.integration
def test_a_study_downloaded_whole_shows_its_size_and_the_others_are_unknown(
    orthanc: OrthancServer, sample_data: SampleData, tmp_path: Path
) -> None:
    trolley, studies = patient_studies(orthanc)
    summary = trolley.download(studies[0], tmp_path, progress=False)
    shown = studies.with_sizes(summary.study_sizes)
    sizes = {row["StudyInstanceUID"]: row["bytes"] for row in shown.rows()}
    assert sizes[studies[0].uid] == sample_data.study(studies[0].uid).size  # byte-exact: the stored files
    assert [sizes[s.uid] for s in studies[1:]] == [None, None]
    assert f"instances, {UNKNOWN} MB;" in shown._repr_html_()


@pytest.mark.integration
def test_the_caption_totals_the_size_when_every_study_is_known(
    orthanc: OrthancServer, sample_data: SampleData, tmp_path: Path
) -> None:
    trolley, studies = patient_studies(orthanc)
    summary = trolley.download(studies, tmp_path, progress=False)
    total = sum(sample_data.study(s.uid).size for s in studies)
    assert f"instances, {total / 1e6:.1f} MB;" in studies.with_sizes(summary.study_sizes)._repr_html_()


@pytest.mark.integration
def test_a_study_partly_on_disk_before_the_download_has_no_size(orthanc: OrthancServer, tmp_path: Path) -> None:
    trolley, studies = patient_studies(orthanc)
    first = trolley.download(studies[0], tmp_path, progress=False)
    next(p for p in tmp_path.rglob("*") if p.is_file()).unlink()
    again = trolley.download(studies[0], tmp_path, progress=False)
    assert (again.written, again.skipped) == (1, first.written - 1)
    assert again.study_sizes == {}


# ---------------------------------------------------------------- deeper than the search went


def test_series_of_studies_found_without_them_and_no_searcher_is_refused_saying_why() -> None:
    with pytest.raises(NonSeriesParameterError, match=r"found without their series.*query_level='SERIES'"):
        StudyList([study("1.1", "P1")]).series()


def test_instances_of_series_found_without_them_and_no_searcher_is_refused_saying_why() -> None:
    with pytest.raises(NonInstanceParameterError, match=r"without their instances.*query_level='INSTANCE'"):
        two_studies().instances()


def test_instances_of_a_tree_found_to_instance_level_need_no_searcher() -> None:
    found = study("1.1", "P1")
    one = found.add(series("1.1.1", 4, "CT"))
    for number in (2, 1):
        one.add(Instance(f"1.1.1.{number}", json_data={"00200013": {"vr": "IS", "Value": [number]}}))

    rows = StudyList([found]).instances().rows()

    assert [(r["SOPInstanceUID"], r["InstanceNumber"], r["SeriesNumber"], r["PatientID"]) for r in rows] == [
        ("1.1.1.2", 2, 4, "P1"),
        ("1.1.1.1", 1, 4, "P1"),
    ]


@pytest.mark.parametrize("empty", [StudyList(), StudyList().series(), StudyList().instances()])
def test_an_empty_list_gives_a_dataframe_with_the_tables_columns(empty: StudyList | SeriesList | InstanceList) -> None:
    frame = empty.to_dataframe()

    assert frame.empty
    assert list(frame.columns) == list(empty.columns)
    assert "StudyInstanceUID" in frame.columns


@pytest.mark.integration
def test_series_of_a_study_level_search_are_searched_for(orthanc: OrthancServer, sample_data: SampleData) -> None:
    _, studies = patient_studies(orthanc)
    assert not any(s.series for s in studies)

    found = studies.series()

    assert {s.uid for s in found} == {se.uid for st in sample_data.studies if st.patient_id == "PAT001"
                                      for se in st.series}
    assert all(row["Modality"] and row["instances"] for row in found.rows())


@pytest.mark.integration
def test_instances_of_a_study_level_search_are_searched_for(orthanc: OrthancServer, sample_data: SampleData) -> None:
    _, studies = patient_studies(orthanc)

    found = studies.instances()

    expected = {i.uid for st in sample_data.studies if st.patient_id == "PAT001" for se in st.series
                for i in se.instances}
    assert {i.uid for i in found} == expected
    assert all(isinstance(row["InstanceNumber"], int) for row in found.rows())


@pytest.mark.integration
def test_instances_of_a_series_level_search_are_those_of_its_series_only(
    orthanc: OrthancServer, sample_data: SampleData
) -> None:
    session = requests.Session()
    trolley = Trolley(QidoRS(session, orthanc.dicomweb_url), WadoRS(session, orthanc.dicomweb_url))
    ct = trolley.find_studies(Query(PatientID="PAT001", Modality="CT", query_level="series")).series()

    found = ct.instances()

    expected = {i.uid for st in sample_data.studies if st.patient_id == "PAT001" for se in st.series
                if se.modality == "CT" for i in se.instances}
    assert expected
    assert {i.uid for i in found} == expected
