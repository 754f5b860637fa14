"""A search answer whose values break their type: tables, trees and counts read what can be read.

Servers send DICOM JSON that a type does not allow: an IS with two values in a
count, a dict where a number belongs, text that is no date. Nothing here may
raise a TypeError; what cannot be read is kept as the text the server sent.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from dicomtrolley._tree import tree_from_json
from dicomtrolley._values import whole_number
from dicomtrolley.core import QueryLevels, Study
from dicomtrolley.exceptions import MalformedResponseError
from dicomtrolley.results import UNKNOWN, StudyList

SOURCE = "http://server/dicom-web/series"
STUDY, SERIES = "1.2.3", "1.2.3.4"

NUMERIC_AND_DATE_VRS = ["IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "DA", "DT", "TM"]

WRONG_SHAPES: dict[str, Any] = {
    "two-values": [123, 3],
    "dict": [{"a": 1}],
    "garbage-text": ["twelve"],
    "null": [None],
    "value-not-a-list": 5,
    "value-a-dict": {"x": 1},
    "value-null": None,
    "value-a-string": "20200101",
    "nested-list": [[1, 2]],
    "boolean": [True],
}

ATTRIBUTES = {
    "NumberOfStudyRelatedSeries": "00201206",
    "NumberOfStudyRelatedInstances": "00201208",
    "StudyDate": "00080020",
    "NumberOfSeriesRelatedInstances": "00201209",
    "SeriesNumber": "00200011",
}
"""The attributes the tables read, by tag."""


def row(broken_tag: str, vr: str, value: Any) -> dict[str, Any]:
    """A series-level QIDO-RS row with one broken attribute and the rest fine."""
    return {
        "0020000D": {"vr": "UI", "Value": [STUDY]},
        "0020000E": {"vr": "UI", "Value": [SERIES]},
        "00100020": {"vr": "LO", "Value": ["PAT1"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        broken_tag: {"vr": vr, "Value": value},
    }


def studies(broken_tag: str, vr: str, value: Any) -> StudyList:
    return StudyList(tree_from_json([row(broken_tag, vr, value)], QueryLevels.SERIES, source=SOURCE))


def test_an_is_with_two_values_in_a_count_is_shown_as_the_text_the_server_sent() -> None:
    found = studies("00201206", "IS", [123, 3])

    (study_row,) = found.rows()
    assert study_row["series"] == "123\\3"
    assert study_row["PatientID"] == "PAT1"
    assert "123\\3" in found.to_table()
    assert f"{UNKNOWN} series" in found._repr_html_()


def test_a_count_that_is_a_dict_is_kept_as_text_and_logged_naming_the_attribute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="dicomtrolley"):
        (study,) = studies("00201206", "IS", [{"a": 1}])
        data = study.data

    assert json.loads(data.NumberOfStudyRelatedSeries) == [{"a": 1}]
    assert data.PatientID == "PAT1"
    assert "NumberOfStudyRelatedSeries (00201206)" in caplog.text
    assert SOURCE in caplog.text


@pytest.mark.parametrize("shape", WRONG_SHAPES.values(), ids=WRONG_SHAPES.keys())
@pytest.mark.parametrize("vr", NUMERIC_AND_DATE_VRS)
@pytest.mark.parametrize("keyword", ATTRIBUTES)
def test_every_view_of_a_result_with_a_value_of_the_wrong_shape_reads_the_rest(
    keyword: str, vr: str, shape: Any
) -> None:
    found = studies(ATTRIBUTES[keyword], vr, shape)
    (study,) = found

    assert found.rows()[0]["PatientID"] == "PAT1"
    assert found.series().rows()[0]["Modality"] == "CT"
    for table in (found, found.series()):
        assert table.to_table()
        assert table._repr_html_()
        assert len(table.to_dataframe()) == 1
    assert study.series[0].first_value("Modality") == "CT"
    study.series[0].first_value(keyword)
    study.first_value(keyword)
    assert json.dumps(study.to_dict())
    assert study == study
    assert study.series[0].data.PatientID == "PAT1"
    assert json.dumps(study.series[0].data.to_json_dict())


def test_a_key_that_is_no_tag_is_malformed_naming_it() -> None:
    study = Study(STUDY, json_data={"PatientIDX": {"vr": "LO", "Value": [{"a": 1}]}})

    with pytest.raises(MalformedResponseError, match="'PatientIDX' is not a tag"):
        study.data  # noqa: B018  # reading it is the test


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3), ("3", 3), (" -3 ", -3), ([3], 3), (3.0, 3), ("0042", 42),
     (3.5, None), ([1, 2], None), ({"a": 1}, None), (None, None), ("abc", None), (True, None), ([], None)],
)
def test_whole_number_reads_one_whole_number_and_nothing_else(value: Any, expected: int | None) -> None:
    assert whole_number(value) == expected
