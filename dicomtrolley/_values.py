"""DICOM values read by the same rules wherever they come in: dates and date ranges, whole numbers.

A :class:`~dicomtrolley.core.Query`, a worklist's ``StudyDate`` column and
the command line's ``--from``/``--to`` all read dates here, so a date that one
of them takes, the others take too. A day is written as DICOM writes it
(``YYYYMMDD``, PS3.5 6.2 DA) or as ISO 8601 writes it (``YYYY-MM-DD``); a range
as DICOM matching writes it (PS3.4 C.2.2.2.5): ``A-B``, ``-B`` (up to B) or
``A-`` (from A), either end in either form.

Errors are :class:`ValueError`, so that pydantic reports them as a validation
error of the field, and a worklist as a bad row.

A server's answer is read more leniently: :func:`lenient_dataset` reads the
DICOM JSON of a search result attribute by attribute, keeping one whose value
breaks its type as text, and :func:`whole_number` says whether a count (an
``IS`` as a JSON number or text, a one-value list) is one, rather than
raising on ``[123, 3]`` or ``{"a": 1}``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from dicomtrolley.exceptions import MalformedResponseError

logger = logging.getLogger(__name__)

_JSON_ERRORS = (TypeError, ValueError, AttributeError, KeyError, RecursionError)
"""What pydicom raises on DICOM JSON that breaks a value's type."""

_DAY = r"\d{8}|\d{4}-\d{2}-\d{2}"
_RANGE = re.compile(rf"\s*({_DAY})?\s*-\s*({_DAY})?\s*")

DateRange = tuple[date | None, date | None]
"""The first and the last day of a range, either ``None`` for an open end."""


def parse_date(value: str | date) -> date:
    """One day from ``YYYYMMDD``, ``YYYY-MM-DD``, a ``date`` or a ``datetime`` (its time is dropped).

    Raises
    ------
    ValueError
        The text is not a day in either form, or no such day exists (``20200231``).
    """
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    if not re.fullmatch(_DAY, text):
        raise ValueError(f"{value!r} is not a date: write YYYYMMDD or YYYY-MM-DD")
    try:
        return datetime.strptime(text.replace("-", ""), "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"{value!r} is not a valid date: no such day") from None


def parse_date_range(value: str | date) -> DateRange:
    """The days a DICOM date criterion covers: one day (both ends the same), or a range with an end open.

    Examples
    --------
    >>> parse_date_range("20200101-")
    (datetime.date(2020, 1, 1), None)
    >>> parse_date_range("2020-01-01-2020-12-31")
    (datetime.date(2020, 1, 1), datetime.date(2020, 12, 31))

    Raises
    ------
    ValueError
        Not a day nor a range of days, a range open at both ends, or one that ends before it starts.
    """
    if isinstance(value, date) or re.fullmatch(_DAY, str(value).strip()):
        day = parse_date(value)
        return day, day
    match = _RANGE.fullmatch(str(value))
    if match is None or not any(match.groups()):
        raise ValueError(
            f"{value!r} is not a date (YYYYMMDD or YYYY-MM-DD) or a range of dates (A-B, -B, A-)"
        )
    low, high = (parse_date(end) if end else None for end in match.groups())
    check_order(low, high)
    return low, high


def check_order(low: date | None, high: date | None) -> None:
    """Refuse a range that ends before it starts.

    Raises
    ------
    ValueError
        ``low`` is after ``high``.
    """
    if low is not None and high is not None and low > high:
        raise ValueError(f"the date range starts on {low} and ends before, on {high}")


def dicom_date(day: date) -> str:
    """A day as DICOM writes it: ``YYYYMMDD``."""
    return day.strftime("%Y%m%d")


def dicom_date_range(low: date | None, high: date | None) -> str:
    """A range as DICOM matching writes it (``A-B``, ``A-``, ``-B``; one day alone as ``A``), or ''."""
    if low is None and high is None:
        return ""
    start = dicom_date(low) if low else ""
    end = dicom_date(high) if high else ""
    return start if start == end else f"{start}-{end}"


def normalise_date_criterion(value: str | date) -> str:
    """A date or range written either way, as DICOM writes it (for ``PatientBirthDate``); '' stays ''.

    Raises
    ------
    ValueError
        See :func:`parse_date_range`.
    """
    if isinstance(value, str) and not value.strip():
        return ""
    return dicom_date_range(*parse_date_range(value))


def whole_number(value: Any) -> int | None:
    """``value`` as an int when it is one whole number (``3``, ``"3"``, ``" 3 "``, ``[3]``, ``3.0``), else ``None``.

    For counts and numbers a server sends (IS, US, UL, SV, ...): what breaks
    the type (two values, a dict, text that is no number, ``null``) gives
    ``None``, so that the caller decides how to show it, instead of a TypeError.
    """
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return whole_number(value[0]) if len(value) == 1 else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def lenient_dataset(attributes: Mapping[str, Any], where: str) -> Dataset:
    """A Dataset of a search result's DICOM JSON, every attribute that can be read read.

    An attribute whose value breaks its type (``{"vr": "IS", "Value":
    [{"a": 1}]}``, a ``Value`` that is no list) is kept as text: the JSON of its
    value (or inline binary), with VR ``UT``, so nothing the server said is lost; a warning names
    it and ``where`` the result came from.

    Raises
    ------
    MalformedResponseError
        A key is not a tag (8 hex digits): the answer is not DICOM JSON at all.
    """
    try:
        return Dataset.from_json(dict(attributes))
    except _JSON_ERRORS:
        pass  # read what can be read, below
    dataset = Dataset()
    for key, element in attributes.items():
        try:
            tag = int(key, 16) if len(key) == 8 else None
        except ValueError:
            tag = None
        if tag is None:
            raise MalformedResponseError(f"{where} is not valid DICOM JSON: {key!r} is not a tag")
        try:
            dataset.update(Dataset.from_json({key: element}))
        except _JSON_ERRORS as error:
            value = element
            if isinstance(element, Mapping):
                value = next((element[k] for k in ("Value", "InlineBinary", "BulkDataURI") if k in element), None)
            text = json.dumps(value, default=str)
            logger.warning(
                "%s: %s (%s) is not valid DICOM JSON (%s: %s); kept as text %s",
                where, keyword_for_tag(tag) or "attribute", key, type(error).__name__, error, text[:80],
            )
            dataset.add(DataElement(tag, "UT", text))
    return dataset
