"""The rules of pseudonymisation: PS3.15 Table E.1-1, row by row, under the options a protocol picks.

Every action comes from the table (:mod:`dicomtrolley._annex_e_table`, edition
2026c): for one set of options each row becomes one of a few handlers, looked
up by tag in a dictionary built once (:func:`rules_for`). What the table does
not name is decided here too, never left alone by omission: a text attribute
is removed unless :mod:`dicomtrolley._safe_attributes` names it, a sequence is
walked at every depth, a private attribute goes unless Retain Safe Private
keeps it, and overlay and curve groups go whole.

The compound codes are resolved without knowing the IOD, so that the file
stays valid whatever its type: X/Z as Z, X/D, X/Z/D and Z/D as D, X/Z/U* as
"keep the sequence, replace the UIDs in it". D gives a keyed dummy of the
element's VR; Z an empty value, except for names and the IDs that link a
patient's files (a keyed pseudonym is a dummy value Z allows); a sequence
under D keeps its items but nothing in them that the table does not name.

The keyed values are dicognito's (:mod:`dicomtrolley._pseudonyms`), so the
pseudonyms of earlier versions stay what they were under the same key.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicomtrolley._annex_e_profile import PROFILE_CODES
from dicomtrolley._annex_e_table import EDITION, ROWS
from dicomtrolley._free_text import IdentifyingValues
from dicomtrolley._safe_attributes import SAFE_TAGS

if TYPE_CHECKING:
    from dicomtrolley._pseudonyms import Pseudonymiser
    from dicomtrolley.deidentify import DeidentifyOptions

__all__ = ["EDITION", "PRIVATE_TAG", "Rules", "Violation", "declared_violations", "parse_private_tag", "rules_for",
           "violations"]

TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "UR", "AE", "DA", "DT", "TM"})
"""VRs that can hold a name, an ID, a date or words: what is removed when the table does not name it."""
FREE_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
"""VRs of text that is cleaned when kept."""
PRIVATE_TAG = re.compile(r"^\s*([0-9A-Fa-f]{4})\s*,\s*(.+?)\s*,\s*([0-9A-Fa-f]{2})\s*$")

# The handlers a row becomes (small ints: looked up for every element of every instance).
KEEP, CLEAN, REMOVE, EMPTY, DUMMY, UID, SHIFT, WALK, WALK_STRICT, PRIVATE, BY_VR = range(11)
HANDLER_NAMES = ("kept", "cleaned", "removed", "emptied", "replaced", "new UID", "date shifted",
                 "kept, contents walked", "kept, contents replaced", "private", "by VR")
"""What each handler does, in words (the docs' table and the violations' reasons)."""

LINKING_IDS = frozenset({0x00100020, 0x00080050, 0x00200010})
"""PatientID, AccessionNumber and StudyID: under Z or D they get keyed pseudonyms, which link a patient's files."""

OPTION_COLUMNS = {
    "retain_modified_dates": "modified_dates",
    "retain_patient_characteristics": "patient_characteristics",
    "retain_device_identity": "device_identity",
    "retain_institution_identity": "institution_identity",
    "clean_descriptors": "clean_descriptors",
    "retain_uids": "uids",
}
"""DeidentifyOptions' switches and the table's option columns they turn on (Retain Safe Private:
``keep_private_tags`` not empty)."""


@dataclass(frozen=True)
class Violation:
    """An element of a pseudonymised dataset that the table says must be gone.

    ``path`` leads to it through sequence items (``ReferencedStudySequence[0].ReferringPhysicianName``);
    ``reason`` says which rule it breaks. Neither ever holds the element's value.
    """

    path: str
    keyword: str
    reason: str


def columns_of(options: DeidentifyOptions) -> frozenset[str]:
    """The table's option columns that ``options`` turn on."""
    columns = {column for field, column in OPTION_COLUMNS.items() if getattr(options, field)}
    if options.keep_private_tags:
        columns.add("safe_private")
    return frozenset(columns)


def _vr(tag: int) -> str:
    """The dictionary's VR of a standard tag ('UN' when unknown; the first of 'US or SS')."""
    return dictionary_VR(tag).split(" ")[0] if dictionary_has_tag(tag) else "UN"


def resolve(basic: str, options: dict[str, str], columns: frozenset[str], vr: str, tag: int) -> int:
    """The handler of one row: its basic action, changed by the options turned on, for this VR."""
    codes = {options[column]: column for column in columns if column in options}
    if "K" in codes:
        return WALK if vr == "SQ" else KEEP
    if "C" in codes:
        handler = _cleaned(codes["C"], vr)
        if handler is not None:
            return handler
    code = "X" if "X" in codes else basic
    if code == "X":
        return REMOVE
    if code == "U":
        return UID if vr == "UI" else DUMMY
    if code == "X/Z/U*":
        return WALK if vr == "SQ" else UID if vr == "UI" else EMPTY
    if code in ("Z", "X/Z"):
        return EMPTY if vr == "SQ" or (vr != "PN" and tag not in LINKING_IDS) else DUMMY
    # D, Z/D, X/D, X/Z/D: a dummy (the IOD may need a value)
    return WALK_STRICT if vr == "SQ" else UID if vr == "UI" else DUMMY


def _cleaned(column: str, vr: str) -> int | None:
    """What C of an option column does to this VR; None where it cannot, and the basic action applies."""
    if column == "modified_dates":
        return SHIFT if vr in ("DA", "DT") else KEEP if vr == "TM" else None
    if vr == "SQ":
        return WALK
    return CLEAN if vr in FREE_TEXT_VRS else None


class Rules:
    """Table E.1-1 under one set of option columns, as a lookup from tag to handler."""

    def __init__(self, columns: frozenset[str]) -> None:
        self.columns = columns
        self._normal: dict[int, int] = {}
        self._strict: dict[int, int] = {}
        self._wildcards: list[tuple[int, int | None, int]] = []
        self.keeps_listed_private = False
        """The private row's C under Retain Safe Private: keep the private attributes listed as safe."""
        for tag_text, _keyword, _name, basic, options, _source in ROWS:
            if tag_text == "private":
                self.keeps_listed_private = "safe_private" in columns and options.get("safe_private") == "C"
            elif "x" in tag_text:
                element = None if tag_text[4:] == "xxxx" else int(tag_text[4:], 16)
                self._wildcards.append((int(tag_text[:2], 16) << 8, element, resolve(basic, options, columns, "UN", 0)))
            else:
                tag = int(tag_text, 16)
                self._normal[tag] = self._strict[tag] = resolve(basic, options, columns, _vr(tag), tag)

    def handler(self, tag: int, strict: bool) -> int:
        """What happens to the element with this tag (``strict``: inside a sequence the table replaces)."""
        known = self._strict if strict else self._normal
        found = known.get(tag)
        if found is None:
            found = known[tag] = self._untabled(tag, strict)
        return found

    def _untabled(self, tag: int, strict: bool) -> int:
        group, element = tag >> 16, tag & 0xFFFF
        if group % 2:
            return PRIVATE
        if element == 0:
            return KEEP  # a group length
        if group & 0xFF00 in (0x5000, 0x6000) and group <= (group & 0xFF00) + 0x1E:
            for base, wildcard_element, handler in self._wildcards:
                if base == group & 0xFF00 and wildcard_element in (None, element):
                    return handler
            return REMOVE  # the rest of an overlay whose data and comments go: no overlay is left to describe
        if not dictionary_has_tag(tag):
            return BY_VR
        return self._untabled_by_vr(tag, _vr(tag), strict)

    def _untabled_by_vr(self, tag: int, vr: str, strict: bool) -> int:
        """An attribute the table does not name: text goes unless reviewed as harmless; sequences are walked."""
        if vr == "SQ":
            return WALK_STRICT if strict else WALK
        if vr not in TEXT_VRS and vr != "UN":
            return KEEP
        if strict or tag not in SAFE_TAGS:
            return REMOVE
        if vr in ("DA", "DT", "TM"):
            if "modified_dates" not in self.columns:
                return REMOVE
            return KEEP if vr == "TM" else SHIFT
        return CLEAN if vr in FREE_TEXT_VRS else KEEP

    def handler_of_element(self, tag: int, vr: str | None, strict: bool) -> int:
        """:meth:`handler`, with a tag the dictionary does not know decided by the element's own VR."""
        found = self.handler(tag, strict)
        return self._untabled_by_vr(0, vr or "UN", strict) if found == BY_VR else found


@functools.lru_cache(maxsize=32)
def rules_for(columns: frozenset[str]) -> Rules:
    """The rules of these option columns, built once per process."""
    return Rules(columns)


def parse_private_tag(tag: str) -> tuple[int, str, int]:
    """``"0019,ACME 1.0,0C"`` as (group, private creator, element within the creator's block)."""
    match = PRIVATE_TAG.match(tag)
    assert match is not None  # checked by DeidentifyOptions
    return int(match.group(1), 16), match.group(2), int(match.group(3), 16)


def private_kept(dataset: Dataset, tag: int, keep: set[tuple[int, str, int]]) -> bool:
    """Whether Retain Safe Private keeps this private element (a creator: when one of its block is listed)."""
    if not keep:
        return False
    group, element = tag >> 16, tag & 0xFFFF
    if 0x10 <= element <= 0xFF:  # a private creator
        creator = str(dataset[tag].value)
        return any(g == group and c == creator for g, c, _ in keep)
    if element < 0x1000:
        return False
    creator_element = dataset.get((group, element >> 8))
    return creator_element is not None and (group, str(creator_element.value), element & 0xFF) in keep


# ---------------------------------------------------------------- applying the rules


class Application:
    """One dataset's pseudonymisation: the walk, then the cleaning of the free text it kept."""

    def __init__(self, rules: Rules, keyed: Pseudonymiser, shift_days: int, keep: set[tuple[int, str, int]]) -> None:
        self.rules = rules
        self.keyed = keyed
        self.shift_days = shift_days
        self.keep = keep
        self.identifying = IdentifyingValues()
        self._to_clean: list[Any] = []

    def run(self, dataset: Dataset) -> None:
        """Apply the rules to ``dataset`` (and its file meta), then clean the free text kept."""
        meta = getattr(dataset, "file_meta", None)
        if meta is not None:
            self.walk(meta, strict=False)
        self.walk(dataset, strict=False)
        for element in self._to_clean:
            values = _values(element.value)
            cleaned = [self.identifying.clean(str(value)) for value in values]
            if cleaned != [str(value) for value in values]:
                element.value = cleaned if len(cleaned) > 1 else cleaned[0]

    def walk(self, dataset: Dataset, strict: bool) -> None:
        """Apply the rules to every element of ``dataset``, at every depth."""
        rules = self.rules
        for tag in list(dataset.keys()):
            handler = rules.handler(tag, strict)
            if handler == KEEP:
                continue
            if handler == BY_VR:
                handler = rules.handler_of_element(tag, dataset.get_item(tag).VR, strict)
            if handler == PRIVATE:
                if not (rules.keeps_listed_private and private_kept(dataset, tag, self.keep)):
                    self._remember(dataset, tag)
                    del dataset[tag]
                continue
            if handler == KEEP:
                continue
            element = dataset[tag]
            vr = element.VR
            if handler in (WALK, WALK_STRICT):
                for item in element.value or ():
                    self.walk(item, strict or handler == WALK_STRICT)
            elif handler == CLEAN:
                if element.value not in (None, "") and vr in FREE_TEXT_VRS:
                    self._to_clean.append(element)
            elif handler == REMOVE:
                self._remember(dataset, tag)
                del dataset[tag]
            else:
                self._change(dataset, element, handler)

    def _change(self, dataset: Dataset, element: Any, handler: int) -> None:
        value, vr = element.value, element.VR
        if value in (None, "", b"") or (vr == "SQ" and not value):
            return
        if vr == "SQ":  # EMPTY: the items go, but what they held identifies and is remembered
            for item in value:
                self._remember_all(item)
            element.value = []
            return
        if vr in TEXT_VRS:
            self.identifying.add(vr, _values(value))
        if handler == EMPTY:
            element.value = None
        elif handler == UID:
            element.value = _map(value, self.keyed.uid)
        elif handler == SHIFT:
            element.value = _map(value, lambda v: self.keyed.shift(v, vr, self.shift_days))
        else:
            self.keyed.dummy(dataset, element)

    def _remember(self, dataset: Dataset, tag: int) -> None:
        """Keep what an element that is about to go held, for the cleaning of the free text."""
        raw = dataset.get_item(tag)
        vr = raw.VR if raw is not None else None
        if vr in TEXT_VRS or vr == "SQ":
            element = dataset[tag]
            if vr == "SQ":
                for item in element.value or ():
                    self._remember_all(item)
            elif element.value not in (None, ""):
                self.identifying.add(vr, _values(element.value))

    def _remember_all(self, dataset: Dataset) -> None:
        """Remember, in a sequence item that goes as a whole, what the rules would have taken from it."""
        for tag in list(dataset.keys()):
            handler = self.rules.handler_of_element(tag, dataset.get_item(tag).VR, False)
            if handler not in (KEEP, CLEAN):
                self._remember(dataset, tag)


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, MultiValue)) else [value]


def _map(value: Any, function: Any) -> Any:
    if isinstance(value, (list, MultiValue)):
        return [function(v) if v else v for v in value]
    return function(value)


# ---------------------------------------------------------------- checking a pseudonymised dataset


def violations(dataset: Dataset, options: DeidentifyOptions) -> list[Violation]:
    """Elements of an already pseudonymised ``dataset`` that the table, under ``options``, says must be gone.

    Found at every depth: what the table removes (X, or a compound code this
    package resolves to X), text the table does not name and no allow list
    keeps, private attributes Retain Safe Private does not keep, overlay and
    curve groups, and sequences the table empties that still hold items.
    The audit of a pseudonymised output calls this for every file.
    """
    keep = {parse_private_tag(tag) for tag in options.keep_private_tags}
    return _violations(dataset, rules_for(columns_of(options)), keep)


def declared_violations(dataset: Dataset) -> list[Violation]:
    """:func:`violations` under the options ``dataset`` declares it was pseudonymised with.

    The options are read from its DeidentificationMethodCodeSequence (none: the
    Basic Profile alone, the strictest). Which private attributes were listed as
    safe is not declared, so under Retain Safe Private none is reported. This is
    the check an audit runs on files it knows nothing else about.
    """
    items = dataset.get("DeidentificationMethodCodeSequence", None) or ()
    declared = {str(item.get("CodeValue", "")) for item in items}
    columns = frozenset(column for column, code, _meaning in PROFILE_CODES if column and code in declared)
    return _violations(dataset, rules_for(columns), None if "safe_private" in columns else set())


def _violations(dataset: Dataset, rules: Rules, keep: set[tuple[int, str, int]] | None) -> list[Violation]:
    """The violations under these rules; ``keep`` None: any private attribute may have been kept."""
    found: list[Violation] = []
    for part in (getattr(dataset, "file_meta", None), dataset):
        if part is not None:
            _check(part, rules, keep, "", False, found)
    return found


def _check(dataset: Dataset, rules: Rules, keep: set[tuple[int, str, int]] | None, prefix: str, strict: bool,
           found: list[Violation]) -> None:
    for tag in sorted(dataset.keys()):
        raw = dataset.get_item(tag)
        handler = rules.handler_of_element(tag, raw.VR if raw is not None else None, strict)
        keyword = keyword_for_tag(tag)
        path = prefix + (keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})")
        if handler == PRIVATE and keep is not None and not (
            rules.keeps_listed_private and private_kept(dataset, tag, keep)
        ):
            found.append(Violation(path, keyword, "private attribute that Retain Safe Private does not keep"))
        elif handler == REMOVE:
            found.append(Violation(path, keyword, _removal_reason(rules, tag, strict)))
        elif handler in (WALK, WALK_STRICT, EMPTY) and dataset[tag].VR == "SQ":
            items = dataset[tag].value or ()
            if handler == EMPTY and items:
                found.append(Violation(path, keyword, f"sequence that Table E.1-1 ({EDITION}) empties holds items"))
            for index, item in enumerate(items):
                _check(item, rules, keep, f"{path}[{index}].", strict or handler == WALK_STRICT, found)


def _removal_reason(rules: Rules, tag: int, strict: bool) -> str:
    tag_text = f"{tag:08X}"
    if any(row[0] == tag_text for row in ROWS):
        return f"removed by Table E.1-1 ({EDITION})"
    if (tag >> 16) & 0xFF00 in (0x5000, 0x6000):
        return "overlay or curve data"
    if strict:
        return "text inside a sequence that Table E.1-1 replaces"
    return "text attribute that neither Table E.1-1 nor the allow list names"
