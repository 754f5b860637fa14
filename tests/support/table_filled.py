"""A study in which every text attribute of PS3.15 Table E.1-1 holds an identifying value.

Generated from the table itself (:data:`dicomtrolley._annex_e_table.ROWS`): every
row whose tag is an exact standard tag (pydicom's dictionary knows it) and whose
VR can hold text (:data:`TEXT_VRS`, and UI) gets a marker valid for its VR and
distinct from every other row's, so that a marker found in an output names the
row it came from. Each marker stands in every instance:

- at top level;
- in the item of each sequence of :data:`WALKED`: one the table does not name,
  one it keeps (X/Z/U*), one it removes or cleans (Clean Descriptors), one whose
  contents it replaces (D);
- in the item of OtherPatientIDsSequence, a sequence the table removes (text
  markers only, with their own suffix, ``R`` instead of ``Q``).

The descriptors that Clean Descriptors keeps hold, beside their marker, the
patient's identity as people write it (:data:`WRITTEN_FORMS`): the name in other
orders and cases, the ID, the accession number, the birth date in several
formats and the telephone number. :func:`may_survive` says, from the table's
codes alone, which markers an option set lets through.

The attributes an archive needs to file the instances (PatientID, the study,
series and instance UIDs) hold valid values that are markers too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, generate_uid

from dicomtrolley._annex_e_table import ROWS
from tests.support.dicom_files import add_pixels, part10_dataset
from tests.support.sample_data import UID_PREFIX

TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "UR", "AE", "DA", "DT", "TM"})
"""The VRs that can hold a name, an ID, a date or words."""
STRING_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "UR", "AE"})
"""The text VRs whose markers also go into the removed sequence (dates and UIDs stand there once already)."""
FREE_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
"""The VRs Clean Descriptors cleans instead of keeping or removing."""

PATIENT_NAME = "Doe^John"
PATIENT_ID = "PIDQ-73519"
ACCESSION = "ACCQ-88231"
BIRTH_DATE = "19610304"
STUDY_DATE = "20230405"
PHONE = "+41 44 555 12 34"
ADDRESS = "Lindenstrasse 12, 8001 Zurich"
REFERRER = "Pemberton-Hale^Quirinus"
WRITTEN_FORMS = (
    "John Doe", "J. Doe", "DOE, JOHN", PATIENT_ID, "PIDQ 73519", ACCESSION, "prior 88231", "1961-03-04",
    "04.03.1961", "March 4, 1961", "04-Mar-1961", "4th of March 1961", "5 April 2023", PHONE,
    "Dr. Quirinus Pemberton-Hale", "Q. Pemberton Hale", "Lindenstrasse 12", "1.2.826.0.1.3680043.9.4242.17",
)
"""The identities of the study as a person writes them in a description: the patient's name in other orders
and cases, the ID with another separator, the accession number and its number alone, dates in several
formats, the telephone number, the referring physician's compound name with a hyphen and with a space, a
part of the address, a prior study's UID. None may be left in a pseudonymised output."""
SHORT_FORMS = ("John Doe", "J. Doe")
"""The forms that fit an SH descriptor beside its marker (16 characters)."""

WALKED = {
    "ReferencedSeriesSequence": "not in the table: walked with the table's rules",
    "ReferencedImageSequence": "X/Z/U*: kept, its UIDs replaced",
    "RequestAttributesSequence": "X, C under Clean Descriptors: removed, or kept and cleaned",
    "VerifyingObserverSequence": "D: kept, nothing the table does not name left in it",
}
"""The sequences whose item holds every row's marker too, by keyword, with what the table does to them."""
REMOVED = 0x00101002
"""OtherPatientIDsSequence: X in the table, so its item goes whole."""
INSTANCES = 3
SPECIAL = {"PatientName": PATIENT_NAME, "PatientID": PATIENT_ID, "AccessionNumber": ACCESSION,
           "PatientBirthDate": BIRTH_DATE, "StudyDate": STUDY_DATE, "PatientTelephoneNumbers": PHONE,
           "PatientAddress": ADDRESS, "ReferringPhysicianName": REFERRER}
"""Rows whose marker is the patient's identity itself, so the descriptors can repeat it."""
STRUCTURAL = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})
"""UIDs an archive files the instances by: valid and distinct per instance, set apart from the rows' markers."""


def table_uid(*parts: object) -> str:
    """A fixed UID of this study."""
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=["dicomtrolley-table-filled", *map(str, parts)]))


STUDY_UID = table_uid("study")
SERIES_UID = table_uid("series")
INSTANCE_UIDS = tuple(table_uid("instance", number) for number in range(1, INSTANCES + 1))


@dataclass(frozen=True)
class Planted:
    """One row's marker: where the row is, its VR, and the value each place holds."""

    index: int
    """The row's position in ROWS (what makes its markers distinct)."""
    tag: int
    keyword: str
    vr: str
    value: str
    """At top level and in the walked sequence."""
    removed_value: str | None
    """In the removed sequence (string VRs only)."""
    descriptor: bool
    """Kept, cleaned, under Clean Descriptors: the value holds :data:`WRITTEN_FORMS` besides its marker."""

    def markers(self, value: str) -> tuple[str, ...]:
        """The strings that show ``value`` (one of the row's) in a file: the marker, or a name's parts."""
        if self.descriptor:
            return (value.split(" ", 1)[0],)
        if self.vr == "PN" and self.keyword not in SPECIAL:
            return tuple(value.split("^"))
        return (value,)


def _row_vr(tag: int) -> str | None:
    if not dictionary_has_tag(tag):
        return None
    return dictionary_VR(tag).split(" ")[0]


def _date(index: int, base: date) -> date:
    return base + timedelta(days=index)


def marker(index: int, vr: str, variant: str = "Q") -> str:
    """A value valid for ``vr`` that only row ``index`` holds (``variant`` tells the places apart)."""
    if vr == "PN":
        return f"FAMILY{index:03d}{variant}^GIVEN{index:03d}{variant}"
    if vr in ("LO", "SH", "UC", "AE"):
        return f"MKR{index:03d}{variant}"
    if vr in ("ST", "LT", "UT"):
        return f"MKR{index:03d}{variant} noted by the clinic"
    if vr == "UR":
        return f"http://mkr{index:03d}{variant.lower()}.example/record"
    if vr == "DA":
        return _date(index, date(1900, 1, 1)).strftime("%Y%m%d")
    if vr == "DT":
        return _date(index, date(1930, 1, 1)).strftime("%Y%m%d") + f"101500.{index:06d}"
    if vr == "TM":
        return f"1015{index % 60:02d}.{index:06d}"
    if vr == "UI":
        return f"1.2.826.0.1.3680043.9.7777.{index}"
    raise ValueError(f"no marker for VR {vr}")


def _descriptor(index: int, vr: str) -> str:
    forms = SHORT_FORMS if vr == "SH" else WRITTEN_FORMS
    if vr in ("ST", "LT", "UT", "UC"):
        text = "; ".join(forms)
    else:
        text = forms[index % len(forms)]
        if vr == "LO":
            text = f"{text}, {forms[(index + 1) % len(forms)]}"
    return f"{marker(index, vr)} {text}"


def _is_descriptor(options: dict[str, str], vr: str) -> bool:
    """Whether an option keeps the row's text cleaned (C of any column but the dates')."""
    return vr in FREE_TEXT_VRS and any(code == "C" for column, code in options.items() if column != "modified_dates")


def planted_rows() -> tuple[Planted, ...]:
    """Every row of the table the study fills, with its markers."""
    planted = []
    for index, (tag_text, _keyword, _name, _basic, options, _source) in enumerate(ROWS):
        if tag_text == "private" or "x" in tag_text or tag_text[:4] in ("0000", "0002"):
            continue  # wildcards, command and file meta groups: not attributes of a stored dataset
        tag = int(tag_text, 16)
        vr = _row_vr(tag)
        keyword = keyword_for_tag(tag)
        if vr is None or vr not in TEXT_VRS | {"UI"} or keyword in STRUCTURAL:
            continue
        descriptor = _is_descriptor(options, vr) and keyword not in SPECIAL
        value = SPECIAL.get(keyword) or (_descriptor(index, vr) if descriptor else marker(index, vr))
        removed = marker(index, vr, "R") if vr in STRING_VRS else None
        planted.append(Planted(index, tag, keyword, vr, value, removed, descriptor))
    return tuple(planted)


PLANTED = planted_rows()


def may_survive(planted: Planted, columns: set[str]) -> bool:
    """Whether the table lets the row's marker through with these option columns on.

    K of an option keeps it; C of Modified Dates keeps a time (dates move by whole
    days); C of another option (Clean Descriptors, Retain Patient Characteristics)
    keeps a descriptor's own words (the written forms of the identity in it go).
    Every other code removes, empties or replaces it.
    """
    options = ROWS[planted.index][4]
    codes = {options[column]: column for column in columns if column in options}
    if "K" in codes:
        return True
    if codes.get("C") == "modified_dates":
        return planted.vr == "TM"
    return "C" in codes and planted.vr in FREE_TEXT_VRS


def forbidden_markers(columns: set[str]) -> dict[str, str]:
    """Every marker that must not appear in a pseudonymised output with these option columns -> its keyword.

    The removed sequence's markers always; the identity's written forms, the
    archive's UIDs (unless Retain UIDs) and each row's markers unless
    :func:`may_survive`.
    """
    forbidden = {form: "written form" for form in WRITTEN_FORMS}
    forbidden.update({PATIENT_NAME: "PatientName", REFERRER: "ReferringPhysicianName"})
    if "uids" not in columns:
        forbidden.update({uid: "UID" for uid in (STUDY_UID, SERIES_UID, *INSTANCE_UIDS)})
    for planted in PLANTED:
        if planted.removed_value is not None:
            forbidden.update(dict.fromkeys(planted.markers(planted.removed_value), planted.keyword))
        if not may_survive(planted, columns):
            forbidden.update(dict.fromkeys(planted.markers(planted.value), planted.keyword))
    return forbidden


def _fill(dataset: Dataset, removed_copy: bool) -> None:
    for planted in PLANTED:
        if removed_copy:
            if planted.removed_value is not None:
                dataset.add(DataElement(planted.tag, planted.vr, planted.removed_value))
        else:
            dataset.add(DataElement(planted.tag, planted.vr, planted.value))


def _instance(number: int) -> Dataset:
    instance_uid = INSTANCE_UIDS[number - 1]
    ds = part10_dataset(instance_uid, study_uid=STUDY_UID, series_uid=SERIES_UID, sop_class=CTImageStorage)
    _fill(ds, removed_copy=False)
    for keyword in WALKED:
        walked = Dataset()
        _fill(walked, removed_copy=False)
        setattr(ds, keyword, Sequence([walked]))
    removed = Dataset()
    _fill(removed, removed_copy=True)
    ds.add(DataElement(REMOVED, "SQ", Sequence([removed])))
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.BurnedInAnnotation = "NO"
    add_pixels(ds, (np.arange(64, dtype=np.uint16) * number).reshape(8, 8))
    return ds


def write_table_filled(directory: Path) -> list[Path]:
    """Write the study's instances under ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(1, INSTANCES + 1):
        path = directory / f"table-filled-{number}.dcm"
        _instance(number).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
