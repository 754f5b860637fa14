"""DICOM dates and date ranges read from text, by the same rules wherever a user writes one.

A :class:`~dicomtrolley.core.Query`, a worklist's ``StudyDate`` column and
the command line's ``--from``/``--to`` all read dates here, so a date that one
of them takes, the others take too. A day is written as DICOM writes it
(``YYYYMMDD``, PS3.5 6.2 DA) or as ISO 8601 writes it (``YYYY-MM-DD``); a range
as DICOM matching writes it (PS3.4 C.2.2.2.5): ``A-B``, ``-B`` (up to B) or
``A-`` (from A), either end in either form.

Errors are :class:`ValueError`, so that pydantic reports them as a validation
error of the field, and a worklist as a bad row.
"""

from __future__ import annotations

import re
from datetime import date, datetime

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
