"""The core model: references, the study tree, the query."""

from __future__ import annotations

import json
import pickle
from datetime import date, datetime

import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset

from dicomtrolley import core
from dicomtrolley.exceptions import DICOMTrolleyError


def tree() -> core.Study:
    study = core.Study("1", json_data={"00100020": {"vr": "LO", "Value": ["P1"]}})
    for s in range(3):
        series = study.add(core.Series(f"1.{s}"))
        for i in range(100):
            series.add(core.Instance(f"1.{s}.{i}"))
    return study


def test_references_are_frozen_hashable_and_compare_by_value() -> None:
    one, other = core.InstanceReference("1", "2", "3"), core.InstanceReference("1", "2", "3")
    assert one is not other
    assert {one, other} == {one}
    with pytest.raises(AttributeError):
        core.StudyReference("1").study_uid = "2"  # type: ignore[misc]


def test_tree_objects_give_their_reference() -> None:
    study = tree()
    instance = study.series[1].instances[5]
    assert instance.reference() == core.InstanceReference("1", "1.1", "1.1.5")
    assert study.series[2].reference() == core.SeriesReference("1", "1.2")
    assert study.reference() == core.StudyReference("1")


def test_equal_trees_are_equal_without_recursion_through_parents() -> None:
    assert tree() == tree()
    assert tree().series[0].instances[0] == tree().series[0].instances[0]
    other = tree()
    other.series[2].add(core.Instance("extra"))
    assert tree() != other


def test_repr_of_any_object_is_one_short_line() -> None:
    study = tree()
    for obj in (study, study.series[0], study.series[0].instances[0]):
        assert "\n" not in repr(obj)
        assert len(repr(obj)) < 100
    assert repr(study) == "Study('1', series=3)"


def test_to_dict_serialises_the_tree_to_json() -> None:
    data = json.loads(json.dumps(tree().to_dict()))
    assert data["uid"] == "1"
    assert data["data"]["00100020"]["Value"] == ["P1"]
    assert len(data["children"]) == 3
    assert len(data["children"][0]["children"]) == 100


def test_trees_pickle_and_come_back_equal() -> None:
    assert pickle.loads(pickle.dumps(tree())) == tree()  # noqa: S301 - our own data


def test_data_is_built_from_json_when_first_read() -> None:
    study = tree()
    assert isinstance(study.data, Dataset)
    assert study.data.PatientID == "P1"


def test_all_series_and_all_instances_walk_down() -> None:
    study = tree()
    assert len(study.all_series()) == 3
    assert len(study.all_instances()) == 300
    assert study.series[0].all_instances()[0].uid == "1.0.0"


def test_get_finds_children_by_uid() -> None:
    study = tree()
    assert study["1.2"].get("1.2.7").uid == "1.2.7"
    with pytest.raises(KeyError):
        study.get("nope")


def test_a_tree_object_needs_a_uid() -> None:
    with pytest.raises(DICOMTrolleyError, match="needs a uid"):
        core.Study("")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("1.2.3", core.StudyReference("1.2.3")),
        (" 1.2.3 ", core.StudyReference("1.2.3")),
        (core.SeriesReference("1", "2"), core.SeriesReference("1", "2")),
    ],
)
def test_to_reference_accepts_uid_strings_and_references(given: object, expected: object) -> None:
    assert core.to_reference(given) == expected  # type: ignore[arg-type]


def test_to_reference_refuses_what_it_cannot_download() -> None:
    with pytest.raises(DICOMTrolleyError, match="Cannot download"):
        core.to_reference(42)  # type: ignore[arg-type]


def test_query_refuses_an_unknown_include_field_naming_it() -> None:
    with pytest.raises(ValidationError, match="NotAKeyword"):
        core.Query(include_fields=["PatientID", "NotAKeyword"])


def test_query_accepts_keywords_hex_tags_and_all() -> None:
    fields = ["PatientID", "0020000D", "all"]
    assert core.Query(include_fields=fields).include_fields == fields


def test_query_refuses_unknown_parameters() -> None:
    with pytest.raises(ValidationError):
        core.Query(PatientNmae="DOE")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (date(2020, 1, 1), date(2020, 12, 31), "20200101-20201231"),
        (date(2020, 1, 1), None, "20200101-"),
        (None, date(2020, 12, 31), "-20201231"),
        (date(2020, 5, 5), date(2020, 5, 5), "20200505"),
        (None, None, ""),
    ],
)
def test_study_date_range_may_be_open_at_either_end(low: date | None, high: date | None, expected: str) -> None:
    assert core.Query(min_study_date=low, max_study_date=high).study_date_range() == expected


def test_datetimes_are_taken_as_their_date() -> None:
    assert core.Query(min_study_date=datetime(2020, 1, 1, 12, 30)).min_study_date == date(2020, 1, 1)


def test_reversed_date_range_is_refused() -> None:
    with pytest.raises(ValidationError, match="after"):
        core.Query(min_study_date=date(2021, 1, 1), max_study_date=date(2020, 1, 1))


@pytest.mark.parametrize("text", ["20200101", "2020-01-01", " 20200101 "])
def test_study_date_bounds_take_dicom_and_iso_date_strings(text: str) -> None:
    query = core.Query(min_study_date=text, max_study_date=text)

    assert (query.min_study_date, query.max_study_date) == (date(2020, 1, 1), date(2020, 1, 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20200101-20201231", "20200101-20201231"),
        ("2020-01-01-2020-12-31", "20200101-20201231"),
        ("20200101 - 2020-12-31", "20200101-20201231"),
        ("-20201231", "-20201231"),
        ("2020-01-01-", "20200101-"),
        ("20200505", "20200505"),
        ("2020-05-05", "20200505"),
    ],
)
def test_study_date_takes_a_day_or_a_range_open_at_either_end(text: str, expected: str) -> None:
    assert core.Query(StudyDate=text).study_date_range() == expected


@pytest.mark.parametrize(
    "text", ["yesterday", "2020-1-1", "20200231", "-", "20200101-20200101-20200101", "20201231-20200101", "2020"]
)
def test_study_date_that_is_no_day_or_range_is_refused_quoting_it(text: str) -> None:
    with pytest.raises(ValidationError, match=repr(text).replace("-", r"\-") if text == "-" else "date"):
        core.Query(StudyDate=text)


def test_study_date_and_min_study_date_together_are_refused() -> None:
    with pytest.raises(ValidationError, match="not both"):
        core.Query(StudyDate="20200101-", min_study_date="20210101")


def test_a_study_date_bound_that_is_no_day_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"min_study_date\n.*'20200231' is not a valid date"):
        core.Query(min_study_date="20200231")


@pytest.mark.parametrize("text", ["series", "Series", "SERIES", " series "])
def test_query_level_is_read_in_any_case(text: str) -> None:
    assert core.Query(query_level=text).query_level is core.QueryLevels.SERIES


def test_query_level_image_is_the_instance_level_as_c_find_calls_it() -> None:
    assert core.QueryLevels("image") is core.QueryLevels.INSTANCE


def test_an_unknown_query_level_is_refused() -> None:
    with pytest.raises(ValidationError, match="query_level"):
        core.Query(query_level="patient")


def test_patient_birth_date_written_in_iso_is_sent_as_dicom_writes_it() -> None:
    assert core.Query(PatientBirthDate="1970-01-31").PatientBirthDate == "19700131"
    assert core.Query(PatientBirthDate="1970-01-01-1979-12-31").PatientBirthDate == "19700101-19791231"


def test_attributes_lists_only_the_set_dicom_fields() -> None:
    query = core.Query(PatientID="P1", Modality="CT", query_level=core.QueryLevels.SERIES, limit=5)
    assert query.attributes() == {"PatientID": "P1", "Modality": "CT"}
    assert "limit=5" in query.to_short_string()


def test_searcher_and_downloader_still_import_from_core_as_in_4x() -> None:
    from dicomtrolley import roles

    assert (core.Searcher, core.Downloader) == (roles.Searcher, roles.Downloader)


def test_core_lends_no_other_name() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Handoff'"):
        core.Handoff  # noqa: B018 - the attribute access is the test


def test_the_package_root_exports_the_roles_the_download_error_and_the_http_settings() -> None:
    import dicomtrolley
    from dicomtrolley import _http, exceptions, roles

    assert dicomtrolley.Searcher is roles.Searcher
    assert dicomtrolley.Downloader is roles.Downloader
    assert dicomtrolley.DownloadError is exceptions.DownloadError
    assert dicomtrolley.RetryPolicy is _http.RetryPolicy
    assert dicomtrolley.Timeout == _http.Timeout
