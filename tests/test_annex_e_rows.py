"""Every row of Table E.1-1, pseudonymised under each option set: the action the table names is what happened.

Generated from the table itself: for each row a dataset holds the attribute
at top level and inside a sequence item, with a marker valid for its VR (the
VR from pydicom's dictionary). The expected outcome is read here from the
row's codes, as the standard defines them, independently of the engine.
"""

from __future__ import annotations

from datetime import date

import pytest
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from dicomtrolley._annex_e import violations
from dicomtrolley._annex_e_table import ROWS
from dicomtrolley.deidentify import Deidentifier, DeidentifyOptions

KEY = "unit test key, thirty-two bytes!"
PATIENT_ID = "PAT-ROWS-7"
HOLDER = 0x00081115  # ReferencedSeriesSequence: not in the table, so walked with the table's rules
SAFE_CODE = "MKCODE"  # a CodeValue: allow-listed, so kept in a walked sequence and gone from a replaced one
LINKING = {0x00100020, 0x00080050, 0x00200010}  # PatientID, AccessionNumber, StudyID: pseudonyms where Z allows
FREE_TEXT = {"LO", "SH", "ST", "LT", "UT", "UC"}

OPTION_SETS = {
    "basic-profile": DeidentifyOptions(
        processes=0, retain_modified_dates=False, retain_patient_characteristics=False,
        retain_device_identity=False, clean_descriptors=False,
    ),
    "defaults": DeidentifyOptions(processes=0),
    "every-option": DeidentifyOptions(
        processes=0, retain_institution_identity=True, retain_uids=True, keep_private_tags=("0013,ACME 1.0,10",),
    ),
}
COLUMNS_ON = {
    "basic-profile": set(),
    "defaults": {"modified_dates", "patient_characteristics", "device_identity", "clean_descriptors"},
    "every-option": {"modified_dates", "patient_characteristics", "device_identity", "clean_descriptors",
                     "institution_identity", "uids", "safe_private"},
}
EXACT_ROWS = [row for row in ROWS if row[0] != "private" and "x" not in row[0]]


def vr_of(tag: int) -> str:
    return dictionary_VR(tag).split(" ")[0] if dictionary_has_tag(tag) else "LO"


def marker(index: int, vr: str) -> object:
    """A value valid for the VR, distinct per row; free text also names the referring physician."""
    text = {"PN": f"Mark{index}^Person", "AE": f"M{index}AE", "CS": f"M{index}", "DA": "20200131",
            "DT": "20200131101500", "TM": "101500", "UI": f"1.2.826.0.1.3680043.9.7.{index}",
            "UR": f"http://m{index}.example", "AS": "042Y", "IS": "4242", "DS": "42.5"}
    if vr in text:
        return text[vr]
    if vr in FREE_TEXT:
        return f"M{index} J. Doe"
    if vr in ("US", "SS", "UL", "SL", "UV", "SV", "AT"):
        return 4242
    if vr in ("FL", "FD"):
        return 42.5
    if vr == "SQ":
        item = Dataset()
        item.CodeValue = SAFE_CODE
        return Sequence([item])
    return b"MKMKMKMK"


def expected(row: tuple, columns: set[str], vr: str) -> str:
    """The outcome the table names for this row under these option columns (K of any option beats C)."""
    tag, _keyword, _name, basic, options, _source = row
    codes = {options[column]: column for column in columns if column in options}
    if "K" in codes:
        return "walked" if vr == "SQ" else "kept"
    if "C" in codes:
        column = codes["C"]
        if column == "modified_dates" and vr in ("DA", "DT"):
            return "shifted"
        if column == "modified_dates" and vr == "TM":
            return "kept"  # dates move by whole days: a time of day stays what it was
        if column != "modified_dates" and vr == "SQ":
            return "walked"
        if column != "modified_dates" and vr in FREE_TEXT:
            return "cleaned"
    code = "X" if "X" in codes else basic
    outcomes = {"X": "gone", "Z": "empty", "X/Z": "empty", "D": "dummy", "Z/D": "dummy", "X/D": "dummy",
                "X/Z/D": "dummy", "U": "uid"}
    if code == "X/Z/U*":
        return "walked" if vr == "SQ" else "uid" if vr == "UI" else "empty"
    outcome = outcomes[code]
    if outcome == "dummy" and vr == "UI":
        return "uid"
    if outcome == "empty" and vr != "SQ" and (vr == "PN" or int(tag, 16) in LINKING):
        return "empty-or-dummy"
    return outcome


def build(tag: int, vr: str, value: object) -> Dataset:
    """A dataset holding the attribute at top level and in an item of ReferencedSeriesSequence."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.PatientID = PATIENT_ID
    dataset.ReferringPhysicianName = "Doe^John"
    item = Dataset()
    if tag >> 16 == 0x0002:
        dataset.file_meta.add(DataElement(tag, vr, value))
    else:
        dataset.add(DataElement(tag, vr, value))
        item.add(DataElement(tag, vr, marker_copy(value)))
    dataset.add(DataElement(HOLDER, "SQ", Sequence([item])))
    return dataset


def marker_copy(value: object) -> object:
    if isinstance(value, Sequence):
        item = Dataset()
        item.CodeValue = SAFE_CODE
        return Sequence([item])
    return value


@pytest.fixture(scope="module")
def deidentifiers() -> dict[str, Deidentifier]:
    return {name: Deidentifier(options, key=KEY) for name, options in OPTION_SETS.items()}


@pytest.mark.parametrize("option_set", list(OPTION_SETS))
@pytest.mark.parametrize("row", EXACT_ROWS, ids=[f"{row[0]}-{row[1] or row[2]}" for row in EXACT_ROWS])
def test_each_row_gets_the_action_the_table_names(
    row: tuple, option_set: str, deidentifiers: dict[str, Deidentifier]
) -> None:
    tag, index = int(row[0], 16), ROWS.index(row)
    vr = vr_of(tag)
    value = marker(index, vr)
    dataset = build(tag, vr, value)
    deidentifier = deidentifiers[option_set]
    deidentifier.deidentify(dataset)
    outcome = expected(row, COLUMNS_ON[option_set], vr)
    holders = [dataset.file_meta] if tag >> 16 == 0x0002 else [dataset, dataset[HOLDER].value[0]]
    for holder in holders:
        _assert_outcome(holder, tag, vr, value, outcome, deidentifier.date_shift_days(PATIENT_ID))
    if outcome == "uid" and len(holders) == 2:
        assert holders[0][tag].value == holders[1][tag].value  # the same UID gets the same new UID everywhere
    assert violations(dataset, OPTION_SETS[option_set]) == []


def _assert_outcome(holder: Dataset, tag: int, vr: str, value: object, outcome: str, shift: int) -> None:
    if outcome == "gone":
        assert tag not in holder
        return
    assert tag in holder, f"{outcome} expected, but the attribute is gone"
    element = holder[tag]
    assert vr == element.VR
    new = element.value
    if outcome == "kept":
        assert new == value if vr != "SQ" else new[0].CodeValue == SAFE_CODE
    elif outcome == "walked":
        assert len(new) == 1
        assert new[0].CodeValue == SAFE_CODE
    elif outcome == "empty":
        assert new in (None, "", b"", []) or (vr == "SQ" and len(new) == 0)
    elif outcome == "empty-or-dummy":
        assert new in (None, "") or str(new) != str(value)
    elif outcome == "dummy":
        if vr == "SQ":  # replaced as a whole: its items stay, nothing the table does not name stays in them
            assert all("CodeValue" not in item for item in new)
        else:
            assert new not in (None, "", b"")
            assert new != value
    elif outcome == "uid":
        assert new != value
        assert UID(str(new)).is_valid
    elif outcome == "cleaned":
        assert "Doe" not in str(new)
        assert str(new).startswith(str(value).split(" ")[0])
        assert "***" in str(new)
    elif outcome == "shifted":
        old = date(2020, 1, 31)
        moved = date(int(new[:4]), int(new[4:6]), int(new[6:8]))
        assert (old - moved).days == shift
        assert new[8:] == str(value)[8:]
    else:
        raise AssertionError(f"unknown outcome {outcome}")


def test_every_row_is_exercised_under_every_option_set() -> None:
    assert len(EXACT_ROWS) == len(ROWS) - 4  # the private row and the three overlay and curve rows have their own
    outcomes = {expected(row, COLUMNS_ON[name], vr_of(int(row[0], 16))) for row in EXACT_ROWS for name in OPTION_SETS}
    assert outcomes == {"gone", "empty", "empty-or-dummy", "dummy", "uid", "kept", "walked", "cleaned", "shifted"}
