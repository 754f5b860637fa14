"""The rules of pseudonymisation: dicognito's, keyed by HMAC, and what PS3.15 Annex E adds to them.

dicognito replaces names, IDs, UIDs, dates and addresses, and removes a few
attributes; it leaves private attributes, overlays, people's identification
code sequences and free text, and shifts every date by one offset. This
module keys dicognito's pseudonyms with HMAC-SHA256, gives it a settable date
shift (one per patient, set by :mod:`dicomtrolley.deidentify`), and does the
rest of what the Basic Profile with the Clean Descriptors option asks.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID

from dicomtrolley.exceptions import DeidentificationError

if TYPE_CHECKING:
    from dicognito.anonymizer import Anonymizer
    from dicognito.datetimeanonymizer import DateTimeAnonymizer

_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
_STRING_VRS = _TEXT_VRS | {"PN", "DA", "DT", "TM", "UI", "CS", "AE", "AS", "IS", "DS", "UR"}
_CLEANED = "***"
_METHOD_CODES = 0x00120064  # DeidentificationMethodCodeSequence
PRIVATE_TAG = re.compile(r"^\s*([0-9A-Fa-f]{4})\s*,\s*(.+?)\s*,\s*([0-9A-Fa-f]{2})\s*$")

# PS3.16 CID 7050, De-identification Method: what was applied, for the file's readers.
_PROFILE_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
    ("113109", "Retain Device Identity Option"),
    ("113105", "Clean Descriptors Option"),
)


def remove_what_dicognito_leaves(dataset: Dataset, keep: set[tuple[int, str, int]]) -> list[tuple[DataElement, Any]]:
    """Remove, at every depth, what Annex E removes and dicognito leaves; return the text left.

    Removed: private attributes (except the kept ones and their creators);
    overlays (groups 6000-601E), which can hold burned-in text; and the
    sequences of people's identification codes (keywords ending in
    ``IdentificationSequence``, e.g. ReferringPhysicianIdentificationSequence).
    Returned: every string-valued element left (file meta included), with
    its value, so that what dicognito then replaces can be told apart.
    """
    left: list[tuple[DataElement, Any]] = []

    def visit(ds: Dataset, element: DataElement) -> None:
        tag = element.tag
        if tag.is_private:
            if tag.is_private_creator:
                block = tag.element
                if any(_kept(ds, tag.group, (block << 8) | offset, keep) for offset in range(256)):
                    return
            elif _kept(ds, tag.group, tag.element, keep):
                return
            del ds[tag]
        elif (0x6000 <= tag.group <= 0x601E and tag.group % 2 == 0) or (
            element.VR == "SQ" and element.keyword.endswith("IdentificationSequence")
        ):
            del ds[tag]
        elif element.VR in _STRING_VRS and element.value not in (None, ""):
            left.append((element, element.value))

    dataset.walk(visit)
    if getattr(dataset, "file_meta", None) is not None:
        dataset.file_meta.walk(visit)
    return left


def keyed_anonymizer(key: bytes) -> tuple[Anonymizer, DateTimeAnonymizer]:
    """dicognito's anonymizer, with every pseudonym an HMAC of the original and a settable date shift.

    dicognito derives its values from MD5 of a seed and the original; its
    handlers are rebound to a randomizer that uses HMAC-SHA256 under the key.
    The device-identity option keeps StationName, which dicognito replaces.
    """
    from dicognito.anonymizer import Anonymizer
    from dicognito.datetimeanonymizer import DateTimeAnonymizer
    from dicognito.randomizer import Randomizer
    from dicognito.value_keeper import ValueKeeper

    class KeyedRandomizer(Randomizer):
        def __init__(self) -> None:
            super().__init__(seed="")

        def to_int(self, original_value: str) -> int:
            digest = hmac.new(key, f"dicognito\0{original_value}".encode(), hashlib.sha256).digest()
            return int.from_bytes(digest[:16], "big")  # 128 bits, as dicognito's MD5 gave

    anonymizer = Anonymizer()
    keyed = KeyedRandomizer()
    dates = DateTimeAnonymizer(0)
    handlers = anonymizer._element_handlers  # dicognito has no public way to swap them
    for index, handler in enumerate(handlers):
        if isinstance(handler, DateTimeAnonymizer):
            handlers[index] = dates
        for name, value in vars(handler).items():
            if isinstance(value, Randomizer):
                setattr(handler, name, keyed)
    unkeyed = [h for h in handlers for v in vars(h).values() if isinstance(v, Randomizer) and v is not keyed]
    if unkeyed or dates not in handlers:
        raise DeidentificationError(
            f"This dicognito version's handlers could not all be keyed ({unkeyed or 'no date handler'}); "
            "install the version dicomtrolley[deidentify] names"
        )
    anonymizer.add_element_handler(ValueKeeper("StationName"))
    for handler in handlers:
        for name in ("tags", "id_tags"):  # looked up with `in` for every element: a set is faster than a list
            if isinstance(getattr(handler, name, None), list):
                setattr(handler, name, frozenset(getattr(handler, name)))
    return anonymizer, dates


def parse_private_tag(tag: str) -> tuple[int, str, int]:
    match = PRIVATE_TAG.match(tag)
    assert match is not None  # checked by DeidentifyOptions
    return int(match.group(1), 16), match.group(2), int(match.group(3), 16)


def _kept(dataset: Dataset, group: int, element: int, keep: set[tuple[int, str, int]]) -> bool:
    if not keep or element < 0x1000:
        return False
    creator = dataset.get((group, element >> 8))
    return creator is not None and (group, str(creator.value), element & 0xFF) in keep


def clean_descriptors(before: list[tuple[DataElement, Any]]) -> None:
    """Cut every value the profile replaced out of the free text it left (the Clean Descriptors option)."""
    tokens = _identifier_tokens([(element.VR, old) for element, old in before if element.value != old])
    left = [(element, old) for element, old in before if element.VR in _TEXT_VRS and element.value == old]
    suspects = [element for element, old in left if any(t in str(old).lower() for t in tokens)]
    if not suspects:
        return
    alternatives = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))
    pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
    for element in suspects:
        if isinstance(element.value, (list, MultiValue)):
            element.value = [pattern.sub(_CLEANED, str(v)) for v in element.value]
        else:
            element.value = pattern.sub(_CLEANED, str(element.value))


def _identifier_tokens(values: list[tuple[str, Any]]) -> set[str]:
    """Each replaced value, the parts of each name, and each date as people write it; lower case."""
    tokens: set[str] = set()
    for vr, value in values:
        for item in value if isinstance(value, (list, MultiValue)) else [value]:
            text = str(item).strip().lower()
            tokens.add(text)
            if vr == "PN":
                tokens.update(re.split(r"[\^=\s,]+", text))
            tokens.update(_date_spellings(text))
    return {t for t in tokens if len(t) >= 2}


def _date_spellings(text: str) -> list[str]:
    if not re.fullmatch(r"\d{8}", text):
        return []
    try:
        day = datetime.strptime(text, "%Y%m%d")  # a calendar date, no zone
    except ValueError:
        return []
    return [day.strftime(f) for f in ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d")]


def declare_profile(dataset: Dataset) -> None:
    """Say in the file what was done (PS3.15 E.1.1): identity removed, dates modified, which options."""
    if str(dataset.get("BurnedInAnnotation", "")).upper() != "YES":
        dataset.PatientIdentityRemoved = "YES"
    dataset.LongitudinalTemporalInformationModified = "MODIFIED"
    meta = getattr(dataset, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")
    if syntax and syntax.is_little_endian and not syntax.is_deflated:
        # The same five items in every file: encoded once, not built and written each time
        # (a fifth of the work of pseudonymising a CT header otherwise).
        value = _encoded_profile_codes(syntax.is_implicit_VR)
        dataset[_METHOD_CODES] = RawDataElement(
            BaseTag(_METHOD_CODES), None if syntax.is_implicit_VR else "SQ", len(value), value, 0,
            syntax.is_implicit_VR, True,
        )
    else:
        dataset.DeidentificationMethodCodeSequence = _profile_codes()


def _profile_codes() -> list[Dataset]:
    codes = []
    for value, meaning in _PROFILE_CODES:
        code = Dataset()
        code.CodeValue = value
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = meaning
        codes.append(code)
    return codes


@functools.lru_cache(maxsize=2)
def _encoded_profile_codes(implicit: bool) -> bytes:
    """DeidentificationMethodCodeSequence's value, encoded little endian with explicit or implicit VRs."""
    holder = Dataset()
    holder.DeidentificationMethodCodeSequence = _profile_codes()
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, implicit
    write_dataset(encoded, holder)
    header = 8 if implicit else 12  # tag, (VR, reserved,) length
    return bytes(encoded.getvalue()[header:])
