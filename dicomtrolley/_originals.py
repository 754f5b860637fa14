"""The originals' identifying values: taken as each instance is pseudonymised, kept outside the output folder.

The audit (:mod:`dicomtrolley.audit`) proves that a pseudonymised output holds
none of the values it replaced. To search for them it needs them, so the
pseudonymisation records every value it replaced or removed (names, IDs,
dates, UIDs, addresses, free text) in the *state folder*, beside the state
database and the mapping table, never in the output folder.

They are kept as they were, not hashed: the audit searches every byte of
every file for them in the forms a file can hold them (case, name order,
date formats, encodings), which a hash of the whole value cannot do. The
state folder re-identifies already (the mapping table, the worklist), so it
is as sensitive as before: keep it where only those allowed to re-identify
can read it.

The file holds one JSON array per line, ``["PatientName", "Doe^John", ""]``:
the attribute the value came from, the value, and its patient. A date is a
patient's (``["StudyDate", "20230405", "<pseudonymous PatientID>"]``): another
patient's shifted dates may fall on it, so the audit counts it only beside
that patient's pseudonymous ID. Lines are appended as studies arrive; a value
is written once per process.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

VALUES_NAME = "identifying-values.jsonl"
"""The file of the originals' identifying values, in the state folder."""

RECORDED_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "UR", "AE", "DA", "DT", "UI"})
"""The value representations whose replaced values are recorded: those that can hold an identity.

Coded strings (CS), numbers, ages and times are left out: ``NO`` becoming
``YES`` in PatientIdentityRemoved is no identity, and searching for it would
find it everywhere."""

_DECODED = RECORDED_VRS | {"SQ", None}
"""Raw elements of these VRs are decoded by a snapshot (None: implicit VR, known only once decoded)."""

Snapshot = dict[tuple[int, ...], tuple[str, str, str]]
"""Every recorded value of a dataset by its place (tags and item numbers): keyword, value, VR."""


def default_state_folder(output: Path, mapping: Path | None) -> Path:
    """Where a pseudonymised output's state goes unless told: ``<output name>.state`` beside the mapping table.

    Without a mapping table (or with one inside the output folder), beside the
    output folder. The export keeps its state database and report there too.
    """
    output = output.resolve()
    beside = mapping.resolve().parent if mapping is not None else output.parent
    if beside.is_relative_to(output):
        beside = output.parent
    return beside / f"{output.name}.state"


def snapshot(dataset: Dataset) -> Snapshot:
    """The values of ``dataset`` (file meta included) that :func:`replaced` compares, at every depth."""
    values: Snapshot = {}
    _collect(dataset, (), values)
    meta = getattr(dataset, "file_meta", None)
    if meta is not None:
        _collect(meta, (-1,), values)
    return values


_PATIENT_ID = 0x00100020

SCOPED_VRS = frozenset({"DA", "DT"})
"""The value representations whose values are a patient's: searched beside that patient's pseudonymous ID."""

Recorded = tuple[str, str, str]
"""A recorded value: the attribute it came from, the value, and its patient's pseudonymous ID (or ``""``)."""


UNRECORDED = frozenset({"CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning"})
"""Parts of a code that name the code, not a person, though a removed sequence takes them along."""


def replaced(before: Snapshot, dataset: Dataset) -> list[Recorded]:
    """The values of ``before`` that ``dataset`` no longer holds at their place: replaced or removed.

    A replaced value always is one. A removed value that the pseudonymised
    dataset still holds elsewhere is not: a removed sequence takes codes
    (``DCM``, ``113100``) along that the profile keeps or adds.
    """
    # A date counts beside its patient's pseudonym, and beside the original PatientID (a plain copy).
    patients = {str(dataset.get("PatientID", "") or ""), before.get((_PATIENT_ID,), ("", "", ""))[1]} - {""}
    kept: set[str] | None = None  # every value the dataset still holds: only asked for when a value was removed
    found: list[Recorded] = []
    for place, (kind, value, vr) in before.items():
        if kind in UNRECORDED:
            continue
        now = _value_at(dataset, place)
        if now is None:
            if kept is None:
                after: Snapshot = {}
                _collect(dataset, (), after, converted_only=True)
                kept = {text for _, text, _ in after.values()}
            if value in kept:
                continue
        elif now == value:
            continue
        found.extend((kind, value, patient) for patient in (patients or {""} if vr in SCOPED_VRS else {""}))
    return found


def _value_at(dataset: Dataset, place: tuple[int, ...]) -> str | None:
    """The text at ``place`` in ``dataset`` (looked up, not walked), or None when nothing is there."""
    current: Dataset | None = dataset.file_meta if place[0] == -1 else dataset
    steps = place[1:] if place[0] == -1 else place
    for index in range(0, len(steps) - 1, 2):
        element = current.get(steps[index]) if current is not None else None
        items = element.value if element is not None and element.VR == "SQ" else None
        current = items[steps[index + 1]] if items is not None and steps[index + 1] < len(items) else None
    element = current.get(steps[-1]) if current is not None else None
    return _text(element.value) if element is not None and element.value not in (None, "") else None


def _collect(dataset: Dataset, place: tuple[int, ...], values: Snapshot, *, converted_only: bool = False) -> None:
    """Add the recorded values of ``dataset`` to ``values``.

    Elements still raw whose VR is known and holds nothing recorded are not
    decoded; with ``converted_only`` no raw element is (a pseudonymised
    dataset's raw elements are what the profile added, encoded once).
    """
    for tag in dataset.keys():  # noqa: SIM118 - iterating the dataset would decode every element
        element = dataset.get_item(tag)
        if isinstance(element, RawDataElement):
            if converted_only or element.VR not in _DECODED:
                continue
            element = dataset[tag]  # decoded once: the pseudonymisation needs it decoded too
        if element.VR == "SQ":
            for number, item in enumerate(element.value or ()):
                _collect(item, (*place, element.tag, number), values, converted_only=converted_only)
        elif element.VR in RECORDED_VRS and element.value not in (None, ""):
            text = _text(element.value)
            if text:
                key = (*place, element.tag)
                values[key] = (element.keyword or f"{element.tag:08X}", text, element.VR)


def _text(value: Any) -> str:
    if isinstance(value, (list, MultiValue)):
        return "\\".join(str(item) for item in value)
    return str(value).strip()


class OriginalValues:
    """The file of the originals' identifying values in a state folder: appended as instances are pseudonymised.

    The file stays open between values (every instance brings new UIDs, and
    opening it for each cost more than the write); each value is in the file,
    past a kill -9, once :meth:`add` returns. :meth:`close` closes it, and the
    next :meth:`add` opens it again.

    Parameters
    ----------
    folder
        The state folder (made at the first value); the file is :data:`VALUES_NAME` in it.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / VALUES_NAME
        self._lock = threading.Lock()
        self._known: set[tuple[str, str]] = set()
        self._handle: int | None = None
        self._closer: weakref.finalize[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"OriginalValues({str(self.path.parent)!r})"

    def add(self, values: Iterable[Recorded]) -> None:
        """Append the values this process has not written yet, in one ``write`` (whole lines, however many write)."""
        with self._lock:
            new: dict[tuple[str, str], str] = {}
            for kind, value, scope in values:
                if (value, scope) not in self._known:
                    new.setdefault((value, scope), kind)  # the first attribute it stands in
            if not new:
                return
            text = "".join(json.dumps([kind, key[0], key[1]], ensure_ascii=False) + "\n" for key, kind in new.items())
            handle = self._opened()
            view = memoryview(text.encode("utf-8"))
            while view:
                view = view[os.write(handle, view):]
            self._known.update(new)

    def _opened(self) -> int:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
            self._handle = os.open(self.path, flags, 0o600)
            self._closer = weakref.finalize(self, os.close, self._handle)  # closed when forgotten unclosed
        return self._handle

    def close(self) -> None:
        """Close the file; a later :meth:`add` opens it again."""
        with self._lock:
            if self._closer is not None:
                self._closer()
            self._handle = self._closer = None

    @staticmethod
    def read(folder: str | os.PathLike[str]) -> dict[str, tuple[str, frozenset[str]]]:
        """The values recorded in ``folder``: each with the attribute it came from first, and its patients.

        An empty set of patients means everywhere (the value was recorded once without one).
        Empty when nothing was recorded.

        Raises
        ------
        OSError
            The file exists but cannot be read.
        ValueError
            A line is not a recorded value (the file was changed by hand).
        """
        path = Path(folder) / VALUES_NAME
        kinds: dict[str, str] = {}
        scopes: dict[str, set[str]] = {}
        if not path.is_file():
            return {}
        with path.open(encoding="utf-8") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                entry = json.loads(line)
                if not (isinstance(entry, list) and len(entry) == 3 and all(isinstance(x, str) for x in entry)):
                    raise ValueError(f"{path}, line {number}: not a [kind, value, patient] triple")
                kind, value, scope = entry
                kinds.setdefault(value, kind)
                scopes.setdefault(value, set()).add(scope)  # "": everywhere
        return {value: (kind, frozenset() if "" in scopes[value] else frozenset(scopes[value]))
                for value, kind in kinds.items()}
