"""Grouping flat search results (DICOM JSON rows, pydicom Datasets) into the study tree."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset

from dicomtrolley._tree import attribute_level, tree_from_datasets, tree_from_json
from dicomtrolley.core import DICOMObjectLevels, QueryLevels
from dicomtrolley.exceptions import MalformedResponseError

SOURCE = "http://server/dicom-web/instances"


def attr(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def instance_row(study: str, series: str, instance: str, **extra: dict[str, Any]) -> dict[str, Any]:
    row = {
        "00080005": attr("CS", "ISO_IR 192"),
        "00080018": attr("UI", instance),
        "00080020": attr("DA", "20200101"),
        "00080060": attr("CS", "CT"),
        "00100010": attr("PN", {"Alphabetic": "Müller^Jürgen"}),
        "00100020": attr("LO", "PAT1"),
        "0020000D": attr("UI", study),
        "0020000E": attr("UI", series),
        "00200011": attr("IS", 3),
        "00200013": attr("IS", 7),
    }
    row.update(extra)
    return row


def test_instance_rows_are_grouped_by_study_and_series_in_order_of_appearance() -> None:
    rows = [
        instance_row("1.1", "1.1.1", "1.1.1.1"),
        instance_row("1.2", "1.2.1", "1.2.1.1"),
        instance_row("1.1", "1.1.2", "1.1.2.1"),
        instance_row("1.1", "1.1.1", "1.1.1.2"),
    ]

    studies = tree_from_json(rows, QueryLevels.INSTANCE, source=SOURCE)

    assert [s.uid for s in studies] == ["1.1", "1.2"]
    assert [s.uid for s in studies[0].series] == ["1.1.1", "1.1.2"]
    assert [i.uid for i in studies[0].series[0].instances] == ["1.1.1.1", "1.1.1.2"]
    instance = studies[0].series[0].instances[1]
    assert instance.parent is studies[0].series[0]
    assert str(instance.reference().study_uid) == "1.1"


def test_the_node_at_the_query_level_gets_the_whole_row() -> None:
    row = instance_row("1.1", "1.1.1", "1.1.1.1")

    instance = tree_from_json([row], QueryLevels.INSTANCE, source=SOURCE)[0].series[0].instances[0]

    assert instance.data.InstanceNumber == 7
    assert instance.data.SOPInstanceUID == "1.1.1.1"
    assert instance.to_dict()["data"] == row


def test_a_study_made_from_instance_rows_keeps_patient_and_study_attributes_only() -> None:
    study = tree_from_json([instance_row("1.1", "1.1.1", "1.1.1.1")], QueryLevels.INSTANCE, source=SOURCE)[0]

    assert study.data.PatientName == "Müller^Jürgen"
    assert study.data.StudyDate == "20200101"
    assert study.data.SpecificCharacterSet == "ISO_IR 192"
    assert "SOPInstanceUID" not in study.data
    assert "Modality" not in study.data
    assert "SeriesInstanceUID" not in study.data


def test_a_series_made_from_instance_rows_keeps_series_and_study_attributes_only() -> None:
    series = tree_from_json([instance_row("1.1", "1.1.1", "1.1.1.1")], QueryLevels.INSTANCE, source=SOURCE)[0].series[0]

    assert series.data.Modality == "CT"
    assert series.data.SeriesNumber == 3
    assert series.data.PatientID == "PAT1"
    assert "SOPInstanceUID" not in series.data
    assert "InstanceNumber" not in series.data


def test_study_rows_make_studies_without_children() -> None:
    rows = [{"0020000D": attr("UI", "1.1"), "00100020": attr("LO", "P")}, {"0020000D": attr("UI", "1.2")}]

    studies = tree_from_json(rows, QueryLevels.STUDY, source=SOURCE)

    assert [(s.uid, s.series) for s in studies] == [("1.1", []), ("1.2", [])]
    assert studies[0].data.PatientID == "P"


def test_series_rows_make_series_without_instances() -> None:
    rows = [instance_row("1.1", "1.1.1", "1.1.1.1"), instance_row("1.1", "1.1.2", "1.1.2.1")]

    study = tree_from_json(rows, QueryLevels.SERIES, source=SOURCE)[0]

    assert [(s.uid, s.instances) for s in study.series] == [("1.1.1", []), ("1.1.2", [])]


def test_a_repeated_row_is_kept_once() -> None:
    row = instance_row("1.1", "1.1.1", "1.1.1.1")

    study = tree_from_json([row, dict(row)], QueryLevels.INSTANCE, source=SOURCE)[0]

    assert len(study.all_instances()) == 1


def test_uids_fixed_by_the_request_fill_in_for_rows_that_leave_them_out() -> None:
    row = {"00080018": attr("UI", "1.1.1.1")}

    study = tree_from_json([row], QueryLevels.INSTANCE, source=SOURCE, study_uid="1.1", series_uid="1.1.1")[0]

    assert study.uid == "1.1"
    assert study.series[0].instances[0].reference().series_uid == "1.1.1"


@pytest.mark.parametrize(
    ("level", "remove", "named"),
    [
        (QueryLevels.STUDY, "0020000D", "StudyInstanceUID"),
        (QueryLevels.SERIES, "0020000E", "SeriesInstanceUID"),
        (QueryLevels.INSTANCE, "00080018", "SOPInstanceUID"),
    ],
)
def test_a_row_without_a_uid_the_tree_needs_raises_naming_the_source(
    level: QueryLevels, remove: str, named: str
) -> None:
    row = instance_row("1.1", "1.1.1", "1.1.1.1")
    del row[remove]

    with pytest.raises(MalformedResponseError, match=rf"Result 1 from {SOURCE} has no {named}"):
        tree_from_json([instance_row("1.1", "1.1.1", "1.1.1.0"), row], level, source=SOURCE)


@pytest.mark.parametrize(
    "element",
    [attr("UI"), {"vr": "UI", "Value": []}, {"vr": "UI", "Value": "1.2.3"}, {"vr": "UI", "Value": [None]}],
    ids=["no-value", "empty-list", "string-not-list", "null"],
)
def test_an_empty_or_malformed_uid_counts_as_missing(element: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponseError, match="has no StudyInstanceUID"):
        tree_from_json([{"0020000D": element}], QueryLevels.STUDY, source=SOURCE)


@pytest.mark.parametrize("row", [["0020000D"], "study", 7, None], ids=["list", "string", "number", "null"])
def test_a_row_that_is_not_an_object_raises(row: Any) -> None:
    with pytest.raises(MalformedResponseError, match=f"Result 0 from {SOURCE} is not a DICOM JSON object"):
        tree_from_json([row], QueryLevels.STUDY, source=SOURCE)


@pytest.mark.parametrize(
    "element", [{"Value": ["1.2"]}, "1.2", ["1.2"], None], ids=["no-vr", "string", "list", "null"]
)
def test_an_attribute_that_is_not_a_dicom_json_attribute_raises_naming_it(element: Any) -> None:
    row = {"0020000D": attr("UI", "1.1"), "00100020": element}

    with pytest.raises(MalformedResponseError, match="attribute 00100020 is not a DICOM JSON attribute"):
        tree_from_json([row], QueryLevels.STUDY, source=SOURCE)


def dataset(study: str, series: str, instance: str) -> Dataset:
    ds = Dataset()
    ds.PatientID = "PAT1"
    ds.StudyInstanceUID = study
    ds.StudyDescription = "CT THORAX"
    ds.SeriesInstanceUID = series
    ds.Modality = "CT"
    ds.SOPInstanceUID = instance
    ds.InstanceNumber = 1
    return ds


def test_datasets_are_grouped_like_json_rows() -> None:
    datasets = [
        dataset("1.1", "1.1.1", "1.1.1.1"),
        dataset("1.1", "1.1.1", "1.1.1.2"),
        dataset("1.2", "1.2.1", "1.2.1.1"),
    ]

    studies = tree_from_datasets(datasets, QueryLevels.INSTANCE, source="C-FIND X@host:104")

    assert [(s.uid, [(se.uid, [i.uid for i in se.instances]) for se in s.series]) for s in studies] == [
        ("1.1", [("1.1.1", ["1.1.1.1", "1.1.1.2"])]),
        ("1.2", [("1.2.1", ["1.2.1.1"])]),
    ]
    assert studies[0].series[0].instances[1].data is datasets[1]
    assert studies[0].data.StudyDescription == "CT THORAX"
    assert studies[0].data.PatientID == "PAT1"
    assert "SOPInstanceUID" not in studies[0].data
    assert studies[0].series[0].data.Modality == "CT"
    assert "InstanceNumber" not in studies[0].series[0].data


def test_a_dataset_without_its_series_uid_raises_naming_the_source() -> None:
    ds = dataset("1.1", "", "1.1.1.1")

    with pytest.raises(MalformedResponseError, match="Result 0 from C-FIND X@host:104 has no SeriesInstanceUID"):
        tree_from_datasets([ds], QueryLevels.SERIES, source="C-FIND X@host:104")


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("PatientName", DICOMObjectLevels.STUDY),
        ("00100020", DICOMObjectLevels.STUDY),
        ("AccessionNumber", DICOMObjectLevels.STUDY),
        ("InstitutionName", DICOMObjectLevels.STUDY),
        ("Modality", DICOMObjectLevels.SERIES),
        ("SeriesDescription", DICOMObjectLevels.SERIES),
        ("SOPInstanceUID", DICOMObjectLevels.INSTANCE),
        ("InstanceNumber", DICOMObjectLevels.INSTANCE),
    ],
)
def test_attribute_level_places_patient_study_series_and_instance_attributes(
    name: str, level: DICOMObjectLevels
) -> None:
    assert attribute_level(name) is level


def test_attribute_level_rejects_a_name_that_is_neither_keyword_nor_tag() -> None:
    with pytest.raises(ValueError, match="not a DICOM keyword"):
        attribute_level("Patient")
