"""Encoding a decoded header again: byte for byte what pydicom's ``dcmwrite`` writes, changed or not."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomtrolley._part10 import encode_part10
from dicomtrolley.deidentify import Deidentifier
from tests.test_header import encode, instance

DCMREAD = pydicom.dcmread
PYDICOM_TEST_FILES = sorted(str(path) for path in (Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))
"""The DICOM files pydicom ships for its own tests (written by many other programs); never downloaded."""


def _dcmwrite(ds: Dataset) -> bytes:
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=False)
    return out.getvalue()


def _changed(ds: Dataset) -> Dataset:
    """``ds`` with elements decoded and changed, one removed, its file meta changed: as pseudonymisation leaves it."""
    ds.PatientName = "PSEUDONYM^ONE"
    ds.PatientID = "PSEUDO-ID-1"
    if "StudyDate" in ds:
        del ds.StudyDate
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = "2.25.1234"
    return ds


def _assert_same_as_dcmwrite(path: str, prepare: object) -> None:
    read = [DCMREAD(path, force=True, stop_before_pixels=True) for _ in range(2)]
    try:
        expected = _dcmwrite(prepare(read[0]))  # type: ignore[operator]
    except (ValueError, TypeError, AttributeError, KeyError) as error:  # pydicom refuses: so must we
        with pytest.raises(type(error)):
            encode_part10(prepare(read[1]))  # type: ignore[operator]
        return
    assert encode_part10(prepare(read[1])) == expected  # type: ignore[operator]


@pytest.mark.parametrize("path", PYDICOM_TEST_FILES, ids=lambda path: path.rsplit("/", 1)[-1])
def test_a_header_read_and_not_changed_is_written_as_dcmwrite_writes_it(path: str) -> None:
    _assert_same_as_dcmwrite(path, lambda ds: ds)


@pytest.mark.parametrize("path", PYDICOM_TEST_FILES, ids=lambda path: path.rsplit("/", 1)[-1])
def test_a_header_with_changed_and_removed_elements_is_written_as_dcmwrite_writes_it(path: str) -> None:
    _assert_same_as_dcmwrite(path, _changed)


def _decoded(ds: Dataset) -> Dataset:
    """``ds`` with every element decoded, at every depth and in its file meta: each is written from its value."""
    for element in [*ds.iterall(), *getattr(ds, "file_meta", Dataset())]:
        assert element.VR is not None
    return ds


@pytest.mark.parametrize("path", PYDICOM_TEST_FILES, ids=lambda path: path.rsplit("/", 1)[-1])
def test_a_header_with_every_element_decoded_is_written_as_dcmwrite_writes_it(path: str) -> None:
    _assert_same_as_dcmwrite(path, _decoded)


@pytest.mark.parametrize(
    ("vr", "value"),
    [
        ("UI", "1.2.345"), ("UI", ["1.2.3", "1.2.34"]), ("CS", ["ORIGINAL", "PRIMARY", "AXIAL"]), ("LO", "odd"),
        ("LO", ""), ("LO", None), ("SH", ("A", "", "B")), ("DA", "20240131"), ("TM", "101010.5"), ("UR", "urn:x"),
        ("LO", "Müller"), ("UT", "x" * 70_001), ("LT", "x" * 70_001), ("PN", "Doe^John"), ("DS", "1.5"),
    ],
    ids=lambda item: item if isinstance(item, str) and len(item) < 20 else type(item).__name__,
)
@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_a_decoded_text_value_is_written_as_dcmwrite_writes_it(vr: str, value: object, syntax: str) -> None:
    written = Dataset()
    written.file_meta = FileMetaDataset()
    written.file_meta.TransferSyntaxUID = syntax
    written.SpecificCharacterSet = "ISO_IR 100"
    written.StudyDescription = "read from a file, as a download is"
    ds = DCMREAD(io.BytesIO(_dcmwrite(written)), force=True)
    ds.add_new(0x00211010, vr, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns when it writes a long value as UN: so do we, through it
        assert encode_part10(ds) == _dcmwrite(ds)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
@pytest.mark.parametrize("undefined_lengths", [False, True])
def test_a_pseudonymised_header_is_written_as_dcmwrite_writes_it(syntax: str, undefined_lengths: bool) -> None:
    deidentifier = Deidentifier(key="a test key, not a secret: 32 byt")
    encoded = encode(instance(syntax), undefined_lengths=undefined_lengths).getvalue()
    ours, theirs = (DCMREAD(io.BytesIO(encoded), force=True, stop_before_pixels=True) for _ in range(2))
    deidentifier.deidentify(ours)
    deidentifier.deidentify(theirs)
    assert encode_part10(ours) == _dcmwrite(theirs)
    assert b"PAT-1" not in encode_part10(ours)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_a_header_is_written_as_dcmwrite_writes_it_with_and_without_pixel_data(syntax: str) -> None:
    for stop_before_pixels in (False, True):
        encoded = encode(instance(syntax)).getvalue()
        ours = encode_part10(DCMREAD(io.BytesIO(encoded), force=True, stop_before_pixels=stop_before_pixels))
        assert ours == _dcmwrite(DCMREAD(io.BytesIO(encoded), force=True, stop_before_pixels=stop_before_pixels))


def test_a_dataset_without_preamble_is_written_without_one() -> None:
    ds = DCMREAD(encode(instance()), force=True, stop_before_pixels=True)
    ds.preamble = None
    assert encode_part10(ds) == _dcmwrite(ds)
    assert not encode_part10(ds).startswith(b"\0" * 128)


def test_a_file_meta_without_group_length_is_written_without_one() -> None:
    ds = DCMREAD(encode(instance()), force=True, stop_before_pixels=True)
    del ds.file_meta.FileMetaInformationGroupLength
    assert encode_part10(ds) == _dcmwrite(ds)
    assert b"\x02\x00\x00\x00UL" not in encode_part10(ds)
