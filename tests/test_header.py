"""Reading an instance's naming attributes: the fast walk must agree with pydicom on every input."""

from __future__ import annotations

import io
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from dicomtrolley import _header as header
from dicomtrolley._header import PREFIX_BYTES, Header, read_header
from dicomtrolley.exceptions import HeaderError
from tests.support.dicom_files import CT_IMAGE_STORAGE, part10_dataset

DCMREAD = pydicom.dcmread  # kept: the no_pydicom_reader fixture replaces pydicom.dcmread

KEYWORDS = [
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientName", "PatientID",
    "StudyDate", "SeriesNumber", "InstanceNumber", "Modality", "SliceThickness",
]


def instance(syntax: str = ExplicitVRLittleEndian, **extra: Any) -> Dataset:
    ds = part10_dataset(
        "1.2.3.4.5.6", study_uid="1.2.3", series_uid="1.2.3.4", sop_class=CT_IMAGE_STORAGE, syntax=syntax
    )
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyDate = "20240102"
    ds.Modality = "CT"
    ds.ReferencedImageSequence = Sequence([Dataset(), Dataset()])
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "9.9.9"
    ds.ReferencedImageSequence[1].ReferencedSOPInstanceUID = "9.9.8"
    ds.PatientName = "Müller^Jörg"
    ds.PatientID = "PAT-1"
    ds.SliceThickness = "1.25"
    ds.SeriesNumber = 7
    ds.InstanceNumber = "12"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"]) if syntax == JPEGBaseline8Bit else b"\0" * 64
    ds.Rows, ds.Columns, ds.BitsAllocated = 4, 8, 16
    return ds


def encode(ds: Dataset, *, undefined_lengths: bool = False) -> io.BytesIO:
    out = io.BytesIO()
    if undefined_lengths:
        for item in ds.ReferencedImageSequence:
            item.is_undefined_length_sequence_item = True
        ds["ReferencedImageSequence"].is_undefined_length = True
    ds.save_as(out, enforce_file_format=True)
    out.seek(0)
    return out


def values(found: Dataset | Header) -> dict[str, Any]:
    return {keyword: found.get(keyword) for keyword in KEYWORDS}


def by_pydicom(body: io.BytesIO) -> dict[str, Any]:
    dataset = DCMREAD(io.BytesIO(body.getvalue()), stop_before_pixels=True, force=True)
    return values(dataset)


@pytest.fixture
def no_pydicom_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if the fast walk hands the instance to pydicom's reader."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("read_header fell back to pydicom.dcmread")

    monkeypatch.setattr(header.pydicom, "dcmread", refuse)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit])
@pytest.mark.parametrize("undefined_lengths", [False, True], ids=["defined-lengths", "undefined-lengths"])
def test_fast_walk_reads_what_pydicom_reads(syntax: str, undefined_lengths: bool, no_pydicom_reader: None) -> None:
    body = encode(instance(syntax), undefined_lengths=undefined_lengths)
    expected = by_pydicom(body)
    found = read_header(body, KEYWORDS)
    assert values(found) == expected
    assert expected["PatientName"] == "Müller^Jörg"
    assert {keyword: type(value) for keyword, value in found.attributes.items()} == {
        keyword: type(value) for keyword, value in expected.items()
    }
    assert found.transfer_syntax == syntax
    assert found.media_sop_instance_uid == "1.2.3.4.5.6"
    assert body.tell() == 0


@pytest.mark.parametrize(
    ("charset", "patient_id"),
    [("ISO_IR 192", "Jörg-7"), ("ISO_IR 100", "Jörg-7"), ("ISO 2022 IR 87", "ID-7"), (None, "ID 7  ")],
)
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_text_values_equal_pydicoms_in_every_character_set(
    syntax: str, charset: str | None, patient_id: str, no_pydicom_reader: None
) -> None:
    ds = instance(syntax, PatientID=patient_id, AccessionNumber="", StudyDescription="  padded ", Modality="MR ")
    if charset is None:
        del ds.SpecificCharacterSet
    else:
        ds.SpecificCharacterSet = charset
    body = encode(ds)
    keywords = ["PatientID", "AccessionNumber", "StudyDescription", "Modality", "StudyInstanceUID", "StudyDate"]
    found = read_header(body, keywords).attributes
    expected = DCMREAD(io.BytesIO(body.getvalue()), stop_before_pixels=True, force=True)
    assert found == {k: expected[k].value for k in keywords if k in expected}
    assert {k: type(v) for k, v in found.items()} == {k: type(expected[k].value) for k in found}


def test_numbers_keep_their_types_for_format_specs(no_pydicom_reader: None) -> None:
    found = read_header(encode(instance()), ["SeriesNumber", "InstanceNumber", "SliceThickness"]).attributes
    assert f"{found['SeriesNumber']:03d}_{found['InstanceNumber']:05d}" == "007_00012"
    assert float(found["SliceThickness"]) == 1.25


def test_missing_attribute_is_absent(no_pydicom_reader: None) -> None:
    found = read_header(encode(instance()), ["AccessionNumber", "SOPInstanceUID", "NoSuchKeyword"])
    assert found.attributes == {"SOPInstanceUID": "1.2.3.4.5.6"}


def test_multi_valued_text_is_a_multi_value(no_pydicom_reader: None) -> None:
    body = encode(instance(ImageType=["ORIGINAL", "PRIMARY", "AXIAL"]))
    assert list(read_header(body, ["ImageType"]).get("ImageType")) == ["ORIGINAL", "PRIMARY", "AXIAL"]


def test_header_longer_than_the_prefix_is_read_by_pydicom() -> None:
    big = instance()
    block = big.private_block(0x0009, "DICOMTROLLEY TEST", create=True)  # group 0009: before the series number
    block.add_new(0x10, "OB", b"\0" * (PREFIX_BYTES + 10))
    assert read_header(encode(big), ["SeriesNumber"]).get("SeriesNumber") == 7


def test_deflated_instance_is_read_by_pydicom() -> None:
    body = encode(instance(DeflatedExplicitVRLittleEndian))
    assert values(read_header(body, KEYWORDS)) == by_pydicom(body)


def test_dataset_without_preamble_is_read_by_pydicom() -> None:
    ds = instance(ImplicitVRLittleEndian)
    raw = io.BytesIO()
    ds.save_as(raw, implicit_vr=True, little_endian=True)  # no preamble, no file meta
    raw.seek(0)
    assert read_header(raw, ["SOPInstanceUID"]).get("SOPInstanceUID") == "1.2.3.4.5.6"


def test_wanted_sequence_is_read_by_pydicom() -> None:
    found = read_header(encode(instance()), ["ReferencedImageSequence"]).get("ReferencedImageSequence")
    assert [item.ReferencedSOPInstanceUID for item in found] == ["9.9.9", "9.9.8"]


def test_bytes_that_are_not_dicom_give_no_attributes() -> None:
    assert read_header(io.BytesIO(b"<html>502 Bad Gateway</html>"), ["SOPInstanceUID"]).get("SOPInstanceUID") is None


def test_truncated_instance_is_read_as_far_as_it_goes() -> None:
    whole = encode(instance()).getvalue()
    cut = io.BytesIO(whole[: whole.index(b"PAT-1")])
    assert read_header(cut, ["StudyDate", "PatientID"]).get("StudyDate") == "20240102"


def test_text_of_a_value_and_of_an_absent_attribute(no_pydicom_reader: None) -> None:
    found = read_header(encode(instance()), ["SeriesNumber", "AccessionNumber"])
    assert (found.text("SeriesNumber"), found.text("AccessionNumber")) == ("7", "")


def as_un(ds: Dataset, *keywords: str) -> Dataset:
    """The dataset with these elements encoded with VR UN, as some archives send them."""
    for keyword in keywords:
        element = ds[keyword]
        raw = element.value.encode("utf-8") if isinstance(element.value, str) else bytes(element.value)
        ds[keyword] = pydicom.DataElement(element.tag, "UN", raw + b"\0" * (len(raw) % 2))
    return ds


def test_uids_encoded_as_un_read_as_pydicom_reads_them(no_pydicom_reader: None) -> None:
    body = encode(as_un(instance(), "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyDate"))
    found = read_header(body, KEYWORDS)
    assert values(found) == by_pydicom(body)
    assert found.get("SOPInstanceUID") == "1.2.3.4.5.6"


def test_character_set_encoded_as_un_decodes_the_names(no_pydicom_reader: None) -> None:
    body = encode(as_un(instance(), "SpecificCharacterSet"))
    assert read_header(body, ["PatientName"]).get("PatientName") == "Müller^Jörg"


def test_elements_out_of_order_are_read_as_pydicom_reads_them() -> None:
    whole = encode(instance()).getvalue()
    patient_id = whole.index(b"\x10\x00\x20\x00LO")
    element = whole[patient_id:patient_id + 8 + 6]  # (0010,0020) LO "PAT-1 "
    pixel_data = b"\xe0\x7f\x10\x00"
    rest = whole[patient_id + len(element):].replace(pixel_data, element + pixel_data, 1)
    body = io.BytesIO(whole[:patient_id] + rest)
    assert read_header(body, ["PatientID", "StudyDate"]).get("PatientID") == by_pydicom(body)["PatientID"] == "PAT-1"


def test_unreadable_bytes_raise_a_header_error_naming_the_instance() -> None:
    whole = encode(instance(DeflatedExplicitVRLittleEndian)).getvalue()
    cut = io.BytesIO(whole[: len(whole) - 40])  # the deflated stream ends early: zlib.error in pydicom
    with pytest.raises(HeaderError, match=r"^instance 1\.2\.3: "):
        read_header(cut, ["SOPInstanceUID"], name="instance 1.2.3")


def test_bytes_pydicom_cannot_read_raise_a_header_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(*args: Any, **kwargs: Any) -> None:
        raise InvalidDicomError("not DICOM")

    monkeypatch.setattr(header.pydicom, "dcmread", unreadable)
    with pytest.raises(HeaderError, match="not a readable DICOM instance"):
        read_header(io.BytesIO(b"no preamble here"), ["SOPInstanceUID"])


# ---------------------------------------------------------------- where the pixel data lies


def _bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit])
def test_pixel_data_span_finds_the_pixel_data_element_as_pydicom_does(syntax: str) -> None:
    ds = instance(syntax, Rows=2, Columns=2, BitsAllocated=16)
    ds.PixelData = encapsulate([b"frame one", b"frame 2!"]) if syntax == JPEGBaseline8Bit else b"\x01\x02" * 4
    data = _bytes(ds)
    stream = io.BytesIO(data)
    DCMREAD(stream, stop_before_pixels=True)
    assert header.pixel_data_span(data) == (stream.tell(), len(data))


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_pixel_data_span_of_native_pixels_is_found_from_the_first_bytes_alone(syntax: str) -> None:
    ds = instance(syntax, Rows=64, Columns=64, BitsAllocated=16)
    ds.PixelData = b"\x01\x02" * 64 * 64
    data = _bytes(ds)
    start, end = header.pixel_data_span(data) or (0, 0)
    assert header.pixel_data_span(data[:start + 16], len(data)) == (start, end)


def test_pixel_data_span_of_encapsulated_pixels_past_the_first_bytes_is_left_unknown() -> None:
    ds = instance(JPEGBaseline8Bit)
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\0" * 8192 + b"\xff\xd9"])
    data = _bytes(ds)
    start, _ = header.pixel_data_span(data) or (0, 0)
    assert header.pixel_data_span(data[:start + 64], len(data)) is None


def test_pixel_data_span_without_pixel_data_is_the_end() -> None:
    ds = instance()
    del ds.PixelData
    data = _bytes(ds)
    assert header.pixel_data_span(data) == (len(data), len(data))


def test_pixel_data_span_leaves_a_deflated_dataset_to_pydicom() -> None:
    assert header.pixel_data_span(_bytes(instance(DeflatedExplicitVRLittleEndian))) is None
