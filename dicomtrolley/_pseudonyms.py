"""Keyed replacement values: new UIDs, IDs, names and dates, each an HMAC of the original under a key.

The table says *what* is replaced (:mod:`dicomtrolley._annex_e`); this module
says *with what*. The values are those dicognito gives when its randomizer is
keyed with HMAC-SHA256 (as this package did before it applied the table
itself): a UID ``2.<10**39 + n>``, an ID of twelve letters and digits, a name
from dicognito's lists (chosen by the person's sex, when the item gives it).
So a key gives the same pseudonyms as it gave in earlier versions, and a
resumed export or an old mapping table stay right. Every date of a patient
moves back by the same whole number of days; times of day stay.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from pydicom.multival import MultiValue

if TYPE_CHECKING:
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_ID_LENGTH = 12
_TEXT_DUMMY_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "AE"})
_FIXED_DUMMIES: dict[str, Any] = {
    "DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000Y", "CS": "DUMMY", "UR": "urn:dummy",
    "IS": "0", "DS": "0", "US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0, "AT": 0,
}
"""Dummy values of VRs that a keyed value would not make more useful (dates here: no modified-dates option)."""
_BINARY_DUMMY = b"\x00" * 8
_TIME_AND_ZONE = re.compile(r"\d{0,6}(?:\.\d{1,6})?(?:[+-]\d{4})?")
"""What may follow the date in a DT: a time of day and a UTC offset, nothing that could be another date."""


class Pseudonymiser:
    """The keyed replacement values of one key.

    Parameters
    ----------
    key
        The secret key; never kept anywhere but here.
    """

    def __init__(self, key: bytes) -> None:
        from dicognito.pnanonymizer import PNAnonymizer
        from dicognito.randomizer import Randomizer

        number = self.number

        class KeyedRandomizer(Randomizer):
            def __init__(self) -> None:
                super().__init__(seed="")

            def to_int(self, original_value: str) -> int:
                return number(original_value)

        self._key = key
        self._names = PNAnonymizer(KeyedRandomizer())

    def number(self, original: str) -> int:
        """A 128-bit number that only the key turns ``original`` into."""
        digest = hmac.new(self._key, f"dicognito\0{original}".encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:16], "big")

    def uid(self, original: str) -> str:
        """The UID that replaces ``original`` (the same in every file, so references still resolve)."""
        return "2." + str(10**39 + self.number(str(original)))

    def identifier(self, original: str) -> str:
        """Twelve letters and digits for an ID or a text value: valid in every text VR (AE and SH included)."""
        number = self.number(str(original))
        characters = []
        for _ in range(_ID_LENGTH):
            number, index = divmod(number, len(_ALPHABET))
            characters.append(_ALPHABET[index])
        return "".join(characters)

    def shift(self, original: str, vr: str, days: int) -> str:
        """A date (DA) or date-time (DT) moved back ``days`` days; empty when it is not a calendar date."""
        text = str(original).strip().replace(".", "") if vr == "DA" else str(original).strip()
        rest = text[8:]
        if not _TIME_AND_ZONE.fullmatch(rest) or (vr == "DA" and rest):
            return ""  # a range, a partial or a malformed value cannot be moved; when in doubt it goes
        try:
            day = date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        except ValueError:
            return ""
        return (day - timedelta(days=days)).strftime("%Y%m%d") + rest

    def dummy(self, dataset: Dataset, element: DataElement) -> None:
        """Give ``element`` a dummy value of its VR (D): a keyed name or ID for text, a fixed value otherwise."""
        vr, value = element.VR, element.value
        if vr == "PN":
            self._names(dataset, element)
        elif vr == "UI":
            element.value = _each(value, self.uid)
        elif vr in _TEXT_DUMMY_VRS:
            element.value = _each(value, self.identifier)
        elif vr in _FIXED_DUMMIES:
            element.value = _FIXED_DUMMIES[vr]
        else:
            element.value = _BINARY_DUMMY


def _each(value: Any, function: Any) -> Any:
    if isinstance(value, (list, MultiValue)):
        return [function(item) if item else item for item in value]
    return function(value)
