"""What a pseudonymised file says about itself (PS3.15 E.1.1): identity removed, dates, the options applied."""

from __future__ import annotations

import functools

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

_METHOD_CODES = 0x00120064  # DeidentificationMethodCodeSequence

PROFILE_CODES = (
    ("", "113100", "Basic Application Confidentiality Profile"),
    ("modified_dates", "113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("patient_characteristics", "113108", "Retain Patient Characteristics Option"),
    ("device_identity", "113109", "Retain Device Identity Option"),
    ("clean_descriptors", "113105", "Clean Descriptors Option"),
    ("uids", "113110", "Retain UIDs Option"),
    ("safe_private", "113111", "Retain Safe Private Option"),
    ("institution_identity", "113112", "Retain Institution Identity Option"),
)
"""PS3.16 CID 7050, De-identification Method: (option column that applies it, code value, code meaning)."""


def declare_profile(dataset: Dataset, columns: frozenset[str]) -> None:
    """Say in the file what was done: identity removed, dates modified or removed, which options applied."""
    if str(dataset.get("BurnedInAnnotation", "")).upper() != "YES":
        dataset.PatientIdentityRemoved = "YES"
    dataset.LongitudinalTemporalInformationModified = "MODIFIED" if "modified_dates" in columns else "REMOVED"
    codes = tuple(sorted(columns))
    meta = getattr(dataset, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")
    if syntax and syntax.is_little_endian and not syntax.is_deflated:
        # The same items in every file: encoded once, not built and written each time
        # (a fifth of the work of pseudonymising a CT header otherwise).
        value = _encoded_profile_codes(codes, syntax.is_implicit_VR)
        dataset[_METHOD_CODES] = RawDataElement(
            BaseTag(_METHOD_CODES), None if syntax.is_implicit_VR else "SQ", len(value), value, 0,
            syntax.is_implicit_VR, True,
        )
    else:
        dataset.DeidentificationMethodCodeSequence = _profile_codes(codes)


def _profile_codes(columns: tuple[str, ...]) -> list[Dataset]:
    items = []
    for column, value, meaning in PROFILE_CODES:
        if column and column not in columns:
            continue
        code = Dataset()
        code.CodeValue = value
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = meaning
        items.append(code)
    return items


@functools.lru_cache(maxsize=64)
def _encoded_profile_codes(columns: tuple[str, ...], implicit: bool) -> bytes:
    """DeidentificationMethodCodeSequence's value, encoded little endian with explicit or implicit VRs."""
    holder = Dataset()
    holder.DeidentificationMethodCodeSequence = _profile_codes(columns)
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, implicit
    write_dataset(encoded, holder)
    header = 8 if implicit else 12  # tag, (VR, reserved,) length
    return bytes(encoded.getvalue()[header:])
