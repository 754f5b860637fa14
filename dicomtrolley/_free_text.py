"""Free text without the identities it names: the Clean Descriptors option's cleaning.

A description or comment that is kept must not hold the dataset's identifying
values in any way a person writes them. :class:`IdentifyingValues` collects
those values from the whole dataset (every name, ID, date, telephone number
and address the table removes or replaces, wherever it sits) before anything
is cleaned; its :meth:`~IdentifyingValues.clean` then cuts out of a text:

- each name part, with the initials and separators around it, in any order and
  case (``DOE^JOHN``, ``John Doe``, ``J. Doe``, ``Doe, John`` all become ``***``); a
  compound name also by its halves (``Pemberton-Hale`` as ``Pemberton Hale`` or ``Hale``);
- each ID, also with other separators or none (``MRN-4711`` as ``MRN 4711``, ``mrn4711``);
- each part of a value that lists several (an address: ``Lindenstrasse 12`` of
  ``Lindenstrasse 12, 8001 Zurich``), when it holds three letters or digits or more;
- each number of five digits or more in an ID, also alone (``88231`` of ``ACC-88231``);
- each date, as ``20200131``, ``2020-01-31``, ``31.01.2020``, ``01/31/2020``, ``31/01/2020``,
  ``31 Jan 2020``, ``31-Jan-2020``, ``31st of January 2020``, ``2020 Jan 31`` or ``January 31, 2020``,
  with or without leading zeros, with two-digit years;
- and, when in doubt, anything that looks like a UID, a date or a telephone number, whoever's it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

CUT = "***"
"""What a cut-out value is replaced with."""

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
_SEPARATORS = r"[\s\-./]"
_ANY_DATE = rf"\d{{1,4}}{_SEPARATORS}\d{{1,2}}{_SEPARATORS}\d{{2,4}}"
_ANY_PHONE = r"\+?\(?\d(?:[\s\-./()]*\d){6,}"
"""Seven digits or more, separated or not: a telephone number, an ID or a date, never harmless in a description."""
_ANY_UID = r"\d+(?:\.\d+){3,}"
"""Four numbers or more joined by dots: a UID (or its root), which names a study or a patient's image."""
_DIGIT_RUN = re.compile(r"\d{5,}")
"""The number of an ID (``88231`` of ``ACC-88231``), which is written alone too."""
_NAMED_SEPARATORS = r"(?:\s*of)?[\s\-./,]*"
"""Between a day and a month's name: ``31 Jan``, ``31-Jan``, ``31st of January``."""


class IdentifyingValues:
    """The identifying values of one dataset, collected before its free text is cleaned."""

    def __init__(self) -> None:
        self._names: set[str] = set()
        self._words: set[str] = set()
        self._dates: set[date] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, vr: str, values: Iterable[object]) -> None:
        """Remember the values of an element the table removes or replaces (its VR says how to read them)."""
        for value in values:
            text = str(value).strip() if value is not None else ""
            if not text:
                continue
            self._pattern = None
            if vr == "PN":
                parts = [part for part in re.split(r"[\^=\s,]+", text.lower()) if len(part) >= 2]
                # A compound name is also written with a space or by one of its halves: "Pemberton Hale".
                self._names.update(parts, (half for part in parts for half in part.split("-") if len(half) >= 2))
            elif vr in ("DA", "DT"):
                self._add_date(text.replace(".", "")[:8])
            elif vr != "TM":
                # An address or a list is also written in parts: "Lindenstrasse 12" of "Lindenstrasse 12, 8001 Zurich".
                self._words.update([text, *(part.strip() for part in re.split(r"[,;\n\r]+", text))])
                self._words.update(_DIGIT_RUN.findall(text))

    def _add_date(self, text: str) -> None:
        try:
            self._dates.add(date(int(text[:4]), int(text[4:6]), int(text[6:8])))
        except ValueError:  # not a full calendar date: nothing a person would write
            return

    def clean(self, text: str) -> str:
        """``text`` with every identifying value (and anything like a date or telephone number) cut out."""
        if not text:
            return text
        if self._pattern is None:
            self._pattern = re.compile(self._regex(), re.IGNORECASE)
        return self._pattern.sub(CUT, text)

    def _regex(self) -> str:
        alternatives = [_date_regex(day) for day in sorted(self._dates)]
        alternatives += [_id_regex(word) for word in sorted(self._words, key=len, reverse=True) if _alnum(word) >= 3]
        if self._names:
            part = "|".join(re.escape(name) for name in sorted(self._names, key=len, reverse=True))
            initial = r"[^\W\d_]\.?"
            # A run of name parts and initials, holding at least one name part: "J. Doe", "Doe, John A."
            alternatives.append(
                rf"(?<!\w)(?:(?:{initial}|{part})[\s,^]+)*(?:{part})(?:[\s,^]+(?:{part}|{initial}(?!\w)))*(?!\w)"
            )
        alternatives += [rf"(?<![\w.]){_ANY_UID}(?!\w|\.\d)", rf"(?<!\w){_ANY_DATE}(?!\w)",
                         rf"(?<![\w.]){_ANY_PHONE}(?!\w)"]
        return "|".join(f"(?:{a})" for a in alternatives)


def _alnum(text: str) -> int:
    return sum(character.isalnum() for character in text)


def _id_regex(value: str) -> str:
    """The value, its runs of letters and of digits joined by any separators or none."""
    runs = re.findall(r"[^\W\d_]+|\d+", value)
    return r"(?<![^\W_])" + r"[\W_]*".join(re.escape(run) for run in runs) + r"(?![^\W_])"


def _date_regex(day: date) -> str:
    """``day`` as people write it: digits in the three usual orders, or the month by name."""
    d, m, y = rf"0?{day.day}", rf"0?{day.month}", rf"(?:{day.year}|{day.year % 100:02d})"
    month = _MONTHS[day.month - 1]
    named = rf"(?:{month}|{month[:3]}\.?)"
    forms = [
        f"{day.year}{day.month:02d}{day.day:02d}",
        rf"{day.year}{_SEPARATORS}{m}{_SEPARATORS}{d}",
        rf"{d}{_SEPARATORS}{m}{_SEPARATORS}{y}",
        rf"{m}{_SEPARATORS}{d}{_SEPARATORS}{y}",
        rf"{d}(?:st|nd|rd|th|\.)?{_NAMED_SEPARATORS}{named}[\s\-./,]*{y}",
        rf"{named}[\s\-./,]*{d}(?:st|nd|rd|th)?[\s\-./,]*{y}",
        rf"{y}[\s\-./,]*{named}[\s\-./,]*{d}",
    ]
    return r"(?<!\d)(?:" + "|".join(forms) + r")(?!\d)"
