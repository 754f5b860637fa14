"""Keyed replacement values: the same original gives the same pseudonym, valid for its VR; dates move whole days."""

from __future__ import annotations

import pytest
from pydicom.uid import UID

from dicomtrolley._pseudonyms import Pseudonymiser

KEY = b"unit test key, thirty-two bytes!"


def test_a_uid_gets_the_same_valid_new_uid_under_a_key_and_another_under_another_key() -> None:
    first, again = Pseudonymiser(KEY).uid("1.2.3.4"), Pseudonymiser(KEY).uid("1.2.3.4")
    other = Pseudonymiser(KEY.upper()).uid("1.2.3.4")
    assert first == again != other
    assert UID(first).is_valid


def test_an_identifier_is_twelve_letters_and_digits_fit_for_every_text_vr() -> None:
    identifier = Pseudonymiser(KEY).identifier("MRN-4711")
    assert len(identifier) == 12
    assert identifier.isalnum()
    assert identifier.isupper() or identifier.isdigit()


@pytest.mark.parametrize(("vr", "original", "shifted"), [
    ("DA", "20200131", "20200121"),
    ("DA", "2020.01.31", "20200121"),
    ("DT", "20200131101500.123456+0100", "20200121101500.123456+0100"),
    ("DA", "20200101-20200131", ""),
    ("DT", "20200131-20200201", ""),
    ("DA", "202001", ""),
    ("DA", "20200231", ""),
])
def test_dates_move_back_whole_days_and_what_cannot_move_goes(vr: str, original: str, shifted: str) -> None:
    assert Pseudonymiser(KEY).shift(original, vr, 10) == shifted
