"""Free text kept under Clean Descriptors holds none of the dataset's identifying values, however written."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset, FileMetaDataset

from dicomtrolley._free_text import IdentifyingValues
from dicomtrolley.deidentify import Deidentifier, DeidentifyOptions

KEY = "unit test key, thirty-two bytes!"


@pytest.fixture
def values() -> IdentifyingValues:
    found = IdentifyingValues()
    found.add("PN", ["DOE^JOHN^ALBERT"])
    found.add("LO", ["MRN-4711-ZX"])
    found.add("SH", ["ACC88231"])
    found.add("DA", ["20200131"])
    found.add("SH", ["+41 44 555 12 34"])
    return found


@pytest.mark.parametrize("written", [
    "DOE^JOHN", "John Doe", "J. Doe", "Doe, John", "doe john a.", "JOHN ALBERT DOE", "Dr. J Doe", "Doe J.",
])
def test_a_name_goes_in_any_order_case_and_separator(values: IdentifyingValues, written: str) -> None:
    cleaned = values.clean(f"Seen by {written} today")
    assert cleaned.lower().count("doe") == 0
    assert "john" not in cleaned.lower()
    assert cleaned.startswith("Seen by ")
    assert cleaned.endswith(" today")


@pytest.mark.parametrize("written", ["MRN-4711-ZX", "mrn 4711 zx", "MRN4711ZX", "ACC88231", "acc-88231"])
def test_ids_and_accession_numbers_go_with_any_separators(values: IdentifyingValues, written: str) -> None:
    assert values.clean(f"Prior {written} compared") == "Prior *** compared"


@pytest.mark.parametrize("written", [
    "20200131", "2020-01-31", "31.01.2020", "01/31/2020", "31/01/2020", "31.1.2020", "1/31/20", "2020/01/31",
    "31 Jan 2020", "January 31, 2020", "31 January 2020", "31-Jan-2020", "31st of January 2020", "2020 Jan 31",
    "Jan. 31st, 2020",
])
def test_dates_go_in_the_common_formats(values: IdentifyingValues, written: str) -> None:
    assert values.clean(f"previous scan {written}, stable") == "previous scan ***, stable"


@pytest.mark.parametrize("written", ["+41 44 555 12 34", "044 555 12 34", "0445551234", "(044) 555-1234"])
def test_telephone_numbers_go(values: IdentifyingValues, written: str) -> None:
    assert "555" not in values.clean(f"call {written} after")


@pytest.mark.parametrize("written", ["Pemberton-Hale", "Pemberton Hale", "Q. Pemberton Hale", "PEMBERTON HALE, Q.",
                                     "Dr. Hale"])
def test_a_compound_name_goes_however_its_halves_are_joined(written: str) -> None:
    values = IdentifyingValues()
    values.add("PN", ["Pemberton-Hale^Quirinus"])
    cleaned = values.clean(f"Referred by {written} today")
    assert "pemberton" not in cleaned.lower()
    assert "hale" not in cleaned.lower()
    assert cleaned.startswith("Referred by ")
    assert cleaned.endswith(" today")


@pytest.mark.parametrize("written", ["Lindenstrasse 12", "lindenstrasse-12", "8001 Zurich"])
def test_a_part_of_an_address_goes(written: str) -> None:
    values = IdentifyingValues()
    values.add("LO", ["Lindenstrasse 12, 8001 Zurich"])
    assert values.clean(f"lives at {written} alone") == "lives at *** alone"


@pytest.mark.parametrize("written", ["4711", "88231"])
def test_the_number_of_an_id_goes_alone_when_it_has_five_digits(values: IdentifyingValues, written: str) -> None:
    expected = "prior 4711 seen" if written == "4711" else "prior *** seen"  # four digits: a dose, a year
    assert values.clean(f"prior {written} seen") == expected


@pytest.mark.parametrize("written", ["1.2.826.0.1.3680043.8.498.123", "1.2.840.113619.2.55"])
def test_anything_like_a_uid_goes_whole(values: IdentifyingValues, written: str) -> None:
    assert values.clean(f"see study {written}.") == "see study ***."


def test_text_without_identifying_values_is_left_as_it_is(values: IdentifyingValues) -> None:
    text = "CT Thorax 1.25mm, contrast 80 ml, follow-up"
    assert values.clean(text) == text


def test_a_dataset_is_cleaned_with_the_identifying_values_of_all_its_parts() -> None:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.PatientID = "MRN-4711-ZX"
    dataset.PatientName = "Ørnsköld^Hildegund"
    dataset.PatientBirthDate = "19610304"
    physician = Dataset()
    physician.PersonName = "Pemberton-Hale^Quirinus"
    dataset.ReferringPhysicianIdentificationSequence = [physician]  # removed whole: its name is still collected
    request = Dataset()
    request.RequestedProcedureID = "RP-99812"
    dataset.RequestAttributesSequence = [request]
    dataset.StudyDescription = "H. Ørnsköld, Dr Quirinus Pemberton-Hale, RP 99812, 04.03.1961"
    Deidentifier(DeidentifyOptions(processes=0), key=KEY).deidentify(dataset)
    assert dataset.StudyDescription == "***, Dr ***, ***, ***"


def test_without_clean_descriptors_descriptions_are_removed() -> None:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.StudyDescription = "CT Thorax"
    dataset.PatientComments = "prefers mornings"
    Deidentifier(DeidentifyOptions(processes=0, clean_descriptors=False), key=KEY).deidentify(dataset)
    assert "StudyDescription" not in dataset
    assert "PatientComments" not in dataset

