"""What the table does not name: nothing left by omission; private, overlay and curve groups; violations()."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import DicomDictionary, dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from dicomtrolley._annex_e import TEXT_VRS, Violation, declared_violations, violations
from dicomtrolley._annex_e_table import ROWS
from dicomtrolley._safe_attributes import SAFE_KEYWORDS, SAFE_TAGS
from dicomtrolley.deidentify import Deidentifier, DeidentifyOptions
from tests.support.identifying_data import IDENTIFYING_VALUES, KEPT_PRIVATE_TAG, write_identifying_data

KEY = "unit test key, thirty-two bytes!"
OPTIONS = DeidentifyOptions(processes=0)
TABLED = {int(row[0], 16) for row in ROWS if row[0] != "private" and "x" not in row[0]}
UNTABLED_TEXT = sorted(
    tag for tag, entry in DicomDictionary.items()
    if entry[0].split(" ")[0] in TEXT_VRS and tag not in TABLED and tag >> 16 not in (0x0000, 0x0002)
    and "x" not in f"{tag:08x}"
)


def text_value(vr: str) -> str:
    return {"DA": "20200131", "DT": "20200131101500", "TM": "101500", "AE": "MARKAE", "UR": "http://mark.example",
            "PN": "Mark^Person"}.get(vr, "Mark value")


def item_with(*elements: DataElement) -> Dataset:
    item = Dataset()
    for element in elements:
        item.add(element)
    return item


def pseudonymised(dataset: Dataset, options: DeidentifyOptions = OPTIONS) -> Dataset:
    dataset.file_meta = FileMetaDataset()
    dataset.PatientID = "PAT-RULES-1"
    Deidentifier(options, key=KEY).deidentify(dataset)
    return dataset


# ---------------------------------------------------------------- nothing by omission


def test_every_text_attribute_the_table_does_not_name_is_removed_unless_allow_listed() -> None:
    dataset = Dataset()
    for tag in UNTABLED_TEXT:
        vr = dictionary_VR(tag).split(" ")[0]
        dataset.add(DataElement(tag, vr, text_value(vr)))
    pseudonymised(dataset)
    left = {tag for tag in UNTABLED_TEXT if tag in dataset}
    assert left == {tag for tag in UNTABLED_TEXT if tag in SAFE_TAGS}
    assert len(UNTABLED_TEXT) > 400


def test_allow_listed_text_is_kept_and_cleaned_of_identifying_values() -> None:
    dataset = Dataset()
    dataset.ReferringPhysicianName = "Pemberton^Quirinus"
    dataset.Manufacturer = "ACME"
    dataset.WindowCenterWidthExplanation = "lung window for Quirinus Pemberton"
    pseudonymised(dataset)
    assert dataset.Manufacturer == "ACME"
    assert dataset.WindowCenterWidthExplanation == "lung window for ***"


def test_the_allow_list_names_no_attribute_the_table_names() -> None:
    assert SAFE_TAGS.isdisjoint(TABLED)
    assert len(SAFE_TAGS) == len(SAFE_KEYWORDS)


def test_text_the_table_does_not_name_goes_at_every_depth_and_other_values_stay() -> None:
    deepest = item_with(DataElement(0x00420010, "ST", "Report of Mark Person"), DataElement(0x00280010, "US", 512))
    middle = item_with(DataElement(0x00081115, "SQ", Sequence([deepest])))
    dataset = Dataset()
    dataset.add(DataElement(0x00082218, "SQ", Sequence([middle])))  # AnatomicRegionSequence
    dataset.ImageType = ["ORIGINAL", "PRIMARY"]
    pseudonymised(dataset)
    kept = dataset.AnatomicRegionSequence[0].ReferencedSeriesSequence[0]
    assert "DocumentTitle" not in kept
    assert kept.Rows == 512
    assert dataset.ImageType == ["ORIGINAL", "PRIMARY"]


def test_a_standard_tag_unknown_to_the_dictionary_goes_when_its_vr_holds_text() -> None:
    dataset = Dataset()
    assert not dictionary_has_tag(0x00761234)
    assert not dictionary_has_tag(0x00761236)
    dataset.add(DataElement(0x00761234, "LO", "Mark Person"))
    dataset.add(DataElement(0x00761236, "US", 7))
    pseudonymised(dataset)
    assert 0x00761234 not in dataset
    assert dataset[0x00761236].value == 7


def test_a_sequence_the_table_replaces_keeps_no_text_it_does_not_name() -> None:
    code = item_with(DataElement(0x00080100, "SH", "EMP-4711"), DataElement(0x00080104, "LO", "Mark Person"))
    operator = item_with(DataElement(0x00401101, "SQ", Sequence([code])))  # PersonIdentificationCodeSequence
    dataset = Dataset()
    dataset.add(DataElement(0x00081072, "SQ", Sequence([operator])))  # OperatorIdentificationSequence: X/D
    pseudonymised(dataset)
    person = dataset.OperatorIdentificationSequence[0].PersonIdentificationCodeSequence[0]
    assert "CodeValue" not in person
    assert "CodeMeaning" not in person


# ---------------------------------------------------------------- private, overlays, curves


def private_dataset() -> Dataset:
    dataset = Dataset()
    dataset.add(DataElement(0x00130010, "LO", "ACME 1.0"))
    dataset.add(DataElement(0x00131010, "LO", "table height 1412"))
    dataset.add(DataElement(0x00131011, "LO", "Mark Person"))
    dataset.add(DataElement(0x00150010, "LO", "OTHER 2"))
    dataset.add(DataElement(0x00151001, "LO", "Mark Person"))
    return dataset


def test_private_attributes_go_without_retain_safe_private() -> None:
    dataset = pseudonymised(private_dataset())
    assert [e.tag for e in dataset if e.tag.is_private] == []


def test_retain_safe_private_keeps_the_listed_attribute_and_its_creator_only() -> None:
    options = DeidentifyOptions(processes=0, keep_private_tags=("0013,ACME 1.0,10",))
    dataset = pseudonymised(private_dataset(), options)
    assert [int(e.tag) for e in dataset if e.tag.is_private] == [0x00130010, 0x00131010]
    assert dataset[0x00131010].value == "table height 1412"
    codes = [item.CodeValue for item in dataset.DeidentificationMethodCodeSequence]
    assert "113111" in codes


@pytest.mark.parametrize("group", [0x5000, 0x501E, 0x6000, 0x6002, 0x601E])
def test_overlay_and_curve_groups_go_whole(group: int) -> None:
    dataset = Dataset()
    dataset.add(DataElement((group << 16) | 0x0010, "US", 16))
    dataset.add(DataElement((group << 16) | 0x0022, "LO", "Mark Person"))
    dataset.add(DataElement((group << 16) | 0x3000, "OW", b"\x00\x01" * 4))
    dataset.add(DataElement((group << 16) | 0x4000, "LT", "Mark Person"))
    pseudonymised(dataset)
    assert [e.tag for e in dataset if e.tag >> 16 == group] == []


# ---------------------------------------------------------------- violations()


def test_violations_is_empty_for_a_pseudonymised_dataset() -> None:
    dataset = private_dataset()
    dataset.ReferringPhysicianTelephoneNumbers = "+41 44 555 12 34"
    dataset.PatientComments = "Mark Person prefers mornings"
    dataset.add(DataElement(0x60003000, "OW", b"\x00" * 8))
    assert violations(pseudonymised(dataset), OPTIONS) == []


def test_violations_finds_planted_leftovers_with_their_path_and_never_their_value() -> None:
    dataset = pseudonymised(Dataset())
    dataset.ReferringPhysicianTelephoneNumbers = "+41 44 555 12 34"
    series = Dataset()
    series.PerformingPhysicianName = "Mark^Person"
    series.DocumentTitle = "Mark Person's report"
    dataset.ReferencedSeriesSequence = [series]
    dataset.add(DataElement(0x00131010, "LO", "Mark Person"))
    dataset.add(DataElement(0x60003000, "OW", b"\x00" * 8))
    study = Dataset()
    study.ReferencedSOPInstanceUID = "1.2.3"
    dataset.ReferencedStudySequence = [study]
    found = violations(dataset, OPTIONS)
    assert [(v.path, v.keyword) for v in found] == [
        ("ReferringPhysicianTelephoneNumbers", "ReferringPhysicianTelephoneNumbers"),
        ("ReferencedStudySequence", "ReferencedStudySequence"),
        ("ReferencedSeriesSequence[0].PerformingPhysicianName", "PerformingPhysicianName"),
        ("ReferencedSeriesSequence[0].DocumentTitle", "DocumentTitle"),
        ("(0013,1010)", ""),
        ("OverlayData", "OverlayData"),
    ]
    assert all("Mark" not in v.reason and "555" not in v.reason for v in found)
    assert found[0] == Violation("ReferringPhysicianTelephoneNumbers", "ReferringPhysicianTelephoneNumbers",
                                 "removed by Table E.1-1 (2026c)")


def test_violations_follow_the_options() -> None:
    dataset = pseudonymised(private_dataset(), DeidentifyOptions(processes=0, keep_private_tags=("0013,ACME 1.0,10",)))
    dataset.StudyDescription = "CT Thorax"
    assert violations(dataset, DeidentifyOptions(keep_private_tags=("0013,ACME 1.0,10",))) == []
    found = violations(dataset, DeidentifyOptions(clean_descriptors=False))
    assert [v.path for v in found] == ["StudyDescription", "(0013,0010)", "(0013,1010)"]


@pytest.mark.parametrize("options", [
    OPTIONS,
    DeidentifyOptions(processes=0, retain_modified_dates=False, retain_patient_characteristics=False,
                      retain_device_identity=False, clean_descriptors=False),
    DeidentifyOptions(processes=0, retain_institution_identity=True, keep_private_tags=(KEPT_PRIVATE_TAG,)),
], ids=["defaults", "basic-profile", "institution-and-private-kept"])
def test_the_identifying_test_data_comes_out_without_violations_or_identifying_bytes(
    options: DeidentifyOptions, tmp_path: Path
) -> None:
    data = write_identifying_data(tmp_path)
    deidentifier = Deidentifier(options, key=KEY)
    for path in data.paths:
        dataset = pydicom.dcmread(path)
        deidentifier.deidentify(dataset)
        assert violations(dataset, options) == []
        encoded = io.BytesIO()
        dataset.save_as(encoded, enforce_file_format=True)
        text = encoded.getvalue().decode("utf-8", "replace")
        left = [value for value in IDENTIFYING_VALUES if value in text]
        if options.retain_institution_identity:  # the institution's name and address are kept by that option
            left = [value for value in left if "Hirslanden" not in value and "Witelliker" not in value]
        assert left == []


def test_declared_violations_reads_the_options_from_the_file() -> None:
    options = DeidentifyOptions(processes=0, retain_institution_identity=True, keep_private_tags=("0013,ACME 1.0,10",))
    dataset = private_dataset()
    dataset.InstitutionAddress = "Witellikerstrasse 40, 8032 Zurich"
    pseudonymised(dataset, options)
    assert declared_violations(dataset) == []
    del dataset.DeidentificationMethodCodeSequence  # undeclared: the Basic Profile alone
    assert [v.path for v in declared_violations(dataset)] == ["InstitutionAddress", "(0013,0010)", "(0013,1010)"]
