"""Metadata without pixels: datasets, typed rows and DataFrames from WADO-RS /metadata, streamed."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from datetime import date, time

import pandas
import pydicom
import pytest
import requests

from dicomtrolley.core import Query, QueryLevels, SeriesReference, StudyReference
from dicomtrolley.metadata import Metadata, rows_from_json, typed_value
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS, WadoRSMetaData
from dicomtrolley.wado_uri import WadoURI
from tests.support.orthanc import OrthancServer
from tests.support.sample_data import SampleSeries

# ---------------------------------------------------------------- typed values


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        ({"vr": "DA", "Value": ["20190314"]}, date(2019, 3, 14)),
        ({"vr": "DA", "Value": ["2019-bad"]}, "2019-bad"),
        ({"vr": "TM", "Value": ["091500.25"]}, time(9, 15, 0, 250000)),
        ({"vr": "TM", "Value": ["0915"]}, time(9, 15)),
        ({"vr": "IS", "Value": [12]}, 12),
        ({"vr": "IS", "Value": ["12"]}, 12),
        ({"vr": "DS", "Value": ["2.5"]}, 2.5),
        ({"vr": "DS", "Value": [5, 5]}, (5.0, 5.0)),
        ({"vr": "US", "Value": [512]}, 512),
        ({"vr": "CS", "Value": ["ORIGINAL", "PRIMARY"]}, ("ORIGINAL", "PRIMARY")),
        ({"vr": "PN", "Value": [{"Alphabetic": "DOE^JOHN"}]}, "DOE^JOHN"),
        ({"vr": "LO"}, None),
        ({"vr": "OW", "BulkDataURI": "http://x/bulk/7fe00010"}, "http://x/bulk/7fe00010"),
        ({"vr": "OB", "InlineBinary": "AAE="}, b"\x00\x01"),
    ],
)
def test_values_get_python_types(element: dict[str, object], expected: object) -> None:
    assert typed_value(element) == expected


def test_a_sequence_is_a_tuple_of_keyword_dicts() -> None:
    element = {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["T-1"]}}]}
    assert typed_value(element) == ({"CodeValue": "T-1"},)


def test_rows_hold_the_keywords_asked_for_and_none_for_missing_ones() -> None:
    rows = list(rows_from_json([{"00200013": {"vr": "IS", "Value": [3]}}], ["InstanceNumber", "SliceThickness"]))
    assert rows == [{"InstanceNumber": 3, "SliceThickness": None}]


def test_rows_without_keywords_hold_every_attribute() -> None:
    rows = list(rows_from_json([{"00200013": {"vr": "IS", "Value": [3]}, "00091001": {"vr": "LO", "Value": ["x"]}}]))
    assert rows == [{"InstanceNumber": 3, "00091001": "x"}]


def test_dataframe_columns_have_proper_types() -> None:
    objects = [
        {"00080020": {"vr": "DA", "Value": ["20190314"]}, "00200013": {"vr": "IS", "Value": [1]},
         "00180050": {"vr": "DS", "Value": [2.5]}, "00280030": {"vr": "DS", "Value": [0.5, 0.5]}},
        {"00080020": {"vr": "DA", "Value": ["20200101"]}, "00180050": {"vr": "DS", "Value": [1]}},
    ]
    frame = Metadata(lambda: iter(objects), origin="test").to_dataframe(
        ["StudyDate", "InstanceNumber", "SliceThickness", "PixelSpacing"]
    )
    assert str(frame["StudyDate"].dtype).startswith("datetime64")
    assert str(frame["InstanceNumber"].dtype) == "Int64"
    assert frame["SliceThickness"].dtype == "float64"
    assert frame["PixelSpacing"][0] == (0.5, 0.5)
    assert pandas.isna(frame["InstanceNumber"][1])


def test_dataframe_is_built_with_the_garbage_collector_held_off_and_restored() -> None:
    seen: list[bool] = []

    def source() -> Iterator[dict[str, object]]:
        for number in (1, 2):
            seen.append(gc.isenabled())
            yield {"00200013": {"vr": "IS", "Value": [number]}}

    assert gc.isenabled()
    frame = Metadata(source, origin="test").to_dataframe(["InstanceNumber"])
    assert list(frame["InstanceNumber"]) == [1, 2]
    assert seen == [False, False]
    assert gc.isenabled()


# ---------------------------------------------------------------- against Orthanc


def trolley_for(orthanc: OrthancServer, downloader: object = None) -> Trolley:
    session = requests.Session()
    return Trolley(QidoRS(session, orthanc.dicomweb_url), downloader or WadoRS(session, orthanc.dicomweb_url))


def assert_matches_file(dataset: pydicom.Dataset, series: SampleSeries) -> None:
    path = next(i.path for i in series.instances if i.uid == dataset.SOPInstanceUID)
    stored = pydicom.dcmread(path, stop_before_pixels=True)
    for element in stored:
        assert element.keyword in dataset, element.keyword
        assert dataset[element.tag].value == element.value, element.keyword


@pytest.mark.integration
def test_series_metadata_equals_the_stored_headers(orthanc: OrthancServer) -> None:
    study = orthanc.sample.studies[0]
    series = study.series[0]
    datasets = list(trolley_for(orthanc).metadata(SeriesReference(study.uid, series.uid)))
    assert sorted(d.SOPInstanceUID for d in datasets) == sorted(i.uid for i in series.instances)
    for dataset in datasets:
        assert_matches_file(dataset, series)


@pytest.mark.integration
def test_metadata_leaves_out_pixel_data_and_keeps_its_uri(orthanc: OrthancServer) -> None:
    study = orthanc.sample.studies[0]
    dataset = next(iter(trolley_for(orthanc).metadata(study.uid)))
    assert "PixelData" not in dataset
    assert dataset.bulk_data_uris["PixelData"].startswith(orthanc.dicomweb_url)


@pytest.mark.integration
def test_study_metadata_dataframe_has_a_typed_row_per_instance(orthanc: OrthancServer) -> None:
    study = orthanc.sample.studies[0]
    frame = trolley_for(orthanc).metadata(StudyReference(study.uid)).to_dataframe(
        ["SOPInstanceUID", "InstanceNumber", "StudyDate", "PixelSpacing", "SliceThickness"]
    )
    assert sorted(frame["SOPInstanceUID"]) == sorted(i.uid for i in study.instances)
    assert str(frame["InstanceNumber"].dtype) == "Int64"
    assert set(frame["StudyDate"].dt.strftime("%Y%m%d")) == {study.study_date}
    stored = pydicom.dcmread(study.instances[0].path, stop_before_pixels=True)
    row = frame[frame["SOPInstanceUID"] == stored.SOPInstanceUID].iloc[0]
    assert row["PixelSpacing"] == tuple(float(v) for v in stored.PixelSpacing)
    assert row["SliceThickness"] == float(stored.SliceThickness)


@pytest.mark.integration
def test_wado_rs_metadata_class_of_4x_yields_header_datasets(orthanc: OrthancServer) -> None:
    study = orthanc.sample.studies[1]
    series = study.series[0]
    downloader = WadoRSMetaData(requests.Session(), orthanc.dicomweb_url)
    datasets = list(downloader.datasets([SeriesReference(study.uid, series.uid)]))
    assert len(datasets) == len(series.instances)
    for dataset in datasets:
        assert_matches_file(dataset, series)


@pytest.mark.integration
def test_without_metadata_support_an_instance_search_answers_and_says_so(
    orthanc: OrthancServer, caplog: pytest.LogCaptureFixture
) -> None:
    study = orthanc.sample.studies[0]
    trolley = trolley_for(orthanc, WadoURI(requests.Session(), orthanc.wado_url))
    with caplog.at_level(logging.WARNING, logger="dicomtrolley"):
        metadata = trolley.metadata(study.uid, keywords=["SliceThickness", "InstanceNumber"])
    assert metadata.origin == "instance-level search"
    assert "instance level" in caplog.text
    frame = metadata.to_dataframe(["SOPInstanceUID", "SliceThickness", "InstanceNumber"])
    assert sorted(frame["SOPInstanceUID"]) == sorted(i.uid for i in study.instances)
    for instance in study.instances:
        stored = pydicom.dcmread(instance.path, stop_before_pixels=True)
        row = frame[frame["SOPInstanceUID"] == instance.uid].iloc[0]
        assert (row["SliceThickness"], row["InstanceNumber"]) == (float(stored.SliceThickness), stored.InstanceNumber)


@pytest.mark.integration
def test_metadata_of_a_large_study_streams_every_instance(orthanc: OrthancServer) -> None:
    large = max(orthanc.sample.studies, key=lambda s: len(s.instances))
    trolley = trolley_for(orthanc)
    numbers = [row["InstanceNumber"] for row in trolley.metadata(large.uid).rows(["InstanceNumber"])]
    assert sorted(numbers) == sorted(i.number for i in large.instances)


@pytest.mark.integration
def test_metadata_of_found_series_needs_no_uids_typed_by_hand(orthanc: OrthancServer) -> None:
    trolley = trolley_for(orthanc)
    study = orthanc.sample.studies[0]
    found = trolley.find_studies(Query(StudyInstanceUID=study.uid, query_level=QueryLevels.SERIES))
    rows = list(trolley.metadata(found.series()).rows(["SeriesInstanceUID"]))
    assert len(rows) == len(study.instances)


class MetadataCountingSession(requests.Session):
    """A session that records the /metadata URLs it requests."""

    def __init__(self) -> None:
        super().__init__()
        self.metadata_urls: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
        if str(request.url).endswith("/metadata"):
            self.metadata_urls.append(str(request.url))
        return super().send(request, **kwargs)  # type: ignore[arg-type]


@pytest.mark.integration
def test_a_studys_series_are_requested_side_by_side(orthanc: OrthancServer) -> None:
    study = next(s for s in orthanc.sample.studies if len(s.series) > 1)
    session = MetadataCountingSession()
    trolley = Trolley(QidoRS(session, orthanc.dicomweb_url), WadoRS(session, orthanc.dicomweb_url))
    uids = [row["SOPInstanceUID"] for row in trolley.metadata(study.uid).rows(["SOPInstanceUID"])]
    assert sorted(uids) == sorted(i.uid for i in study.instances)
    assert sorted(session.metadata_urls) == sorted(
        f"{orthanc.dicomweb_url}/studies/{study.uid}/series/{series.uid}/metadata" for series in study.series
    )


@pytest.mark.integration
def test_without_a_searcher_a_study_is_one_request(orthanc: OrthancServer) -> None:
    study = orthanc.sample.studies[0]
    session = MetadataCountingSession()
    trolley = Trolley(downloader=WadoRS(session, orthanc.dicomweb_url))
    assert len(list(trolley.metadata(study.uid).rows(["SOPInstanceUID"]))) == len(study.instances)
    assert session.metadata_urls == [f"{orthanc.dicomweb_url}/studies/{study.uid}/metadata"]
