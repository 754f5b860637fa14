"""Encoding a decoded header back into Part 10 bytes: what ``pydicom.dcmwrite`` writes, at a fraction of the cost.

Pseudonymisation decodes the header of every instance, changes some of its
elements and encodes it again. ``dcmwrite`` copies and checks the file meta
first, and passes every element, changed or not, through its general writer
(a buffer object per element). Most elements of a header are never decoded:
pydicom keeps them as the bytes it read (raw elements). Here those are written
from their bytes with their tag, VR and length, as pydicom's writer would write
them, and only the decoded ones go through pydicom. The output is byte for byte
``dcmwrite(..., enforce_file_format=False)``'s (tested on files other programs
wrote); a dataset this module does not handle is given to ``dcmwrite`` whole.
"""

from __future__ import annotations

import io

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from dicomtrolley._header import _MAGIC, _PIXEL_TAGS, _PREAMBLE, _TAG, _U16, _U32, _UNDEFINED

__all__ = ["element_header", "encode_element", "encode_part10", "padded", "with_group_length"]

_GROUP_LENGTH = 0x00020000
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), length 0, little endian


def encode_part10(dataset: Dataset) -> bytes:
    """``dataset`` as ``pydicom.dcmwrite(..., enforce_file_format=False)`` writes it, byte for byte.

    A dataset in a standard little endian transfer syntax that is not deflated,
    with neither pixel data nor group 0 or 2 elements in its body, is written
    here (preamble as read, file meta with its group length recomputed, body);
    any other is left to ``dcmwrite``, which encodes it or says why not.
    """
    meta = getattr(dataset, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")
    preamble = getattr(dataset, "preamble", None)
    if (
        not syntax.is_transfer_syntax or syntax.is_private or syntax.is_deflated
        or (preamble and len(preamble) != _PREAMBLE)
        or any(tag >> 16 in (0, 2) or tag in _PIXEL_TAGS for tag in dataset.keys())  # noqa: SIM118 - tags, not values
    ):
        encoded = io.BytesIO()
        pydicom.dcmwrite(encoded, dataset, enforce_file_format=False)
        return encoded.getvalue()
    out = DicomBytesIO()
    if preamble:
        out.write(preamble)
        out.write(_MAGIC)
    if meta:
        out.write(_file_meta(meta))
    out.is_implicit_VR, out.is_little_endian = syntax.is_implicit_VR, syntax.is_little_endian
    if syntax.is_little_endian and _as_read(dataset, implicit=syntax.is_implicit_VR):
        _write_elements(out, dataset, dataset.get("SpecificCharacterSet", "iso8859"))
    else:  # pydicom converts every element first (another VR form, byte order or character set)
        write_dataset(out, dataset)
    return out.getvalue()


def _file_meta(meta: FileMetaDataset) -> bytes:
    """The file meta group as ``write_file_meta_info(enforce_standard=False)`` writes it."""
    length_element = meta.get_item(_GROUP_LENGTH)
    if (
        any(tag >> 16 != 2 for tag in meta.keys())  # noqa: SIM118 - tags, not values
        or (length_element is not None and length_element.VR != "UL")
        or not _as_read(meta, implicit=False)
    ):
        out = DicomBytesIO()
        write_file_meta_info(out, meta, enforce_standard=False)  # refuses the first; converts the others
        return out.getvalue()
    out = DicomBytesIO()
    out.is_implicit_VR, out.is_little_endian = False, True
    _write_elements(out, meta, "iso8859", skip=_GROUP_LENGTH)
    elements = out.getvalue()
    if length_element is None:
        return elements
    return with_group_length(elements, _GROUP_LENGTH, "UL")


def _write_elements(out: DicomBytesIO, dataset: Dataset, encoding: str | list[str], *, skip: int = -1) -> None:
    """Write the elements of ``dataset`` in tag order, little endian, as ``write_dataset`` writes them."""
    implicit = out.is_implicit_VR
    for tag in sorted(dataset.keys()):
        if tag == skip or (tag & 0xFFFF == 0 and tag >> 16 > 6):  # retired group lengths are not written
            continue
        element = dataset.get_item(tag)
        encoded = _raw(element, implicit) if isinstance(element, RawDataElement) else _text(element, implicit)
        if encoded is not None:
            out.write(encoded)
        else:
            write_data_element(out, element, encoding)


def _as_read(dataset: Dataset, *, implicit: bool) -> bool:
    """True when ``dataset`` is written little endian in the form it was read (its raw elements can stay raw)."""
    return (
        dataset.original_encoding == (implicit, True)
        and dataset.original_character_set == dataset._character_set
    )


def _raw(element: RawDataElement, implicit: bool) -> bytes | None:
    """A raw element encoded as it was read; None for a form left to pydicom's writer."""
    value = element.value
    if value is None:
        return None
    undefined = element.length == _UNDEFINED
    vr = None if implicit else element.VR
    if not implicit and (
        vr is None or len(vr) != 2  # an ambiguous VR: pydicom refuses it
        or (vr not in EXPLICIT_VR_LENGTH_32 and (undefined or len(value) > 0xFFFF))  # more than 16 bits hold
    ):
        return None
    head = element_header(element.tag, vr, _UNDEFINED if undefined else len(value))
    return head + value + (_SEQUENCE_DELIMITER if undefined else b"")


_TEXT_PADDING = {
    **dict.fromkeys(("AE", "AS", "CS", "DA", "DT", "TM", "UR", "LO", "LT", "SH", "ST", "UC", "UT"), b" "),
    "UI": b"\0",
}
"""The value representations whose decoded value, when it is ASCII text, is written here; each with its padding."""


def _text(element: DataElement, implicit: bool) -> bytes | None:
    """A decoded element of a text VR whose value is ASCII text, as pydicom's writer writes it; None for others.

    ASCII is the same bytes in every character set DICOM allows, so the
    dataset's does not matter. The values are joined with backslashes and
    padded to even length (a UID with a NUL). Other values (dates as objects,
    names, numbers, non-ASCII text) and a value too long for a 16-bit length
    go to pydicom's writer.
    """
    padding = _TEXT_PADDING.get(element.VR)
    value = element.value
    if padding is None:
        return None
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (list, tuple, MultiValue)) and all(isinstance(item, str) for item in value):
        text = "\\".join(value)
    else:
        return None
    if not text.isascii():
        return None
    raw = padded(text, padding)
    vr = None if implicit else element.VR
    if vr is not None and vr not in EXPLICIT_VR_LENGTH_32 and len(raw) > 0xFFFF:
        return None
    return encode_element(element.tag, vr, raw)


def encode_element(tag: int, vr: str | None, value: bytes) -> bytes:
    """A whole little endian element: its :func:`element_header`, then ``value`` (already of even length)."""
    return element_header(tag, vr, len(value)) + value


def with_group_length(elements: bytes, tag: int, vr: str | None) -> bytes:
    """``elements`` of one group, after their group length element ``tag`` (gggg,0000: UL, or None in implicit VR)."""
    return encode_element(tag, vr, _U32.pack(len(elements))) + elements


def element_header(tag: int, vr: str | None, length: int) -> bytes:
    """The tag, VR and length of a little endian element (PS3.5 7.1.2); ``vr`` None for implicit VR.

    Explicit VRs with a 32-bit length (OB, SQ, UN, ...) have two reserved
    bytes before it; the others a 16-bit length.
    """
    head = _TAG.pack(tag >> 16, tag & 0xFFFF)
    if vr is None:
        return head + _U32.pack(length)
    if vr in EXPLICIT_VR_LENGTH_32:
        return head + vr.encode("ascii") + b"\0\0" + _U32.pack(length)
    return head + vr.encode("ascii") + _U16.pack(length)


def padded(text: str, pad: bytes = b"\0") -> bytes:
    """A text value at even length (PS3.5 6.2): a UID padded with a NUL, other text with a space.

    Encoded as Latin-1, as pydicom's writer encodes values without a character set.
    """
    raw = text.encode("latin-1")
    return raw + pad if len(raw) % 2 else raw
