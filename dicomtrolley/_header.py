"""Reading the few attributes a download needs from the first bytes of an instance.

Every instance written to disk is named by some of its own attributes (its
UIDs, or the fields of a path template), and its transfer syntax is reported.
``pydicom.dcmread`` finds them, but it builds every element before the pixel
data into a Dataset, which on a small machine slows the server that feeds the
download as much as the client (figures in docs/performance.md).

:func:`read_header` walks the encoded elements itself, keeps only those
asked for, and decodes their values with pydicom's own converters (character
sets included), so a value is exactly what ``dcmread`` would give. Whatever
the walk does not handle (no Part 10 preamble, a deflated or big-endian
dataset, a header longer than :data:`PREFIX_BYTES`) is read by ``dcmread``,
so the fast path never changes an answer, only its cost.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import IO, Any

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag
from pydicom.valuerep import VR
from pydicom.values import convert_value

from dicomtrolley.exceptions import HeaderError

logger = logging.getLogger(__name__)

PREFIX_BYTES = 64 * 1024
"""How much of an instance the fast walk reads; a longer header is read by pydicom."""

_PREAMBLE = 128
_MAGIC = b"DICM"
_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL_DATA = 0x7FE00008  # the first of the three pixel data elements
_SPECIFIC_CHARACTER_SET = 0x00080005
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_KNOWN_VRS = frozenset(vr.value.encode("ascii") for vr in VR)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_IMPLICIT_LE = "1.2.840.10008.1.2"
_NOT_EXPLICIT_LE = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"})  # deflated, big endian
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class _UnhandledError(Exception):
    """The walk met something it leaves to pydicom."""


@dataclass(frozen=True)
class Header:
    """What :func:`read_header` found in an instance.

    Parameters
    ----------
    attributes
        The wanted attributes the instance has, by keyword, decoded as pydicom
        decodes them (``IS`` values are ints, multi-valued ones ``MultiValue``).
    transfer_syntax
        TransferSyntaxUID of the file meta; ``""`` without file meta.
    media_sop_instance_uid
        MediaStorageSOPInstanceUID of the file meta; ``""`` without file meta.
    """

    attributes: dict[str, Any]
    transfer_syntax: str = ""
    media_sop_instance_uid: str = ""

    def get(self, keyword: str) -> Any:
        """The value of ``keyword``, ``None`` when the instance lacks it."""
        return self.attributes.get(keyword)

    def text(self, keyword: str) -> str:
        """The value of ``keyword`` as text, ``""`` when the instance lacks it."""
        value = self.attributes.get(keyword)
        return "" if value is None else str(value)


def read_header(body: IO[bytes], keywords: Collection[str]) -> Header:
    """The named attributes of an instance and its transfer syntax, leaving ``body`` at position 0.

    Parameters
    ----------
    body
        The instance's bytes, a DICOM Part 10 file as a server sends it.
    keywords
        The attributes wanted, as DICOM keywords.

    Returns
    -------
    Header
        Large values are not loaded, so a 256 MB instance costs the same as a small one.

    Raises
    ------
    HeaderError
        The bytes are not a DICOM instance.
    """
    keywords = frozenset(keywords)
    try:
        body.seek(0)
        try:
            return _walk(body.read(PREFIX_BYTES), keywords)
        except (_UnhandledError, struct.error) as reason:
            logger.debug("Reading the header with pydicom: %s", reason or "the header runs past the prefix")
        body.seek(0)
        try:
            dataset = pydicom.dcmread(body, stop_before_pixels=True, defer_size="64 KB", force=True)
        except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError) as error:
            raise HeaderError(f"Downloaded bytes are not a readable DICOM instance: {error}") from error
        meta = getattr(dataset, "file_meta", None) or Dataset()
        return Header(
            {keyword: dataset[keyword].value for keyword in keywords if keyword in dataset},
            str(meta.get("TransferSyntaxUID", "")),
            str(meta.get("MediaStorageSOPInstanceUID", "")),
        )
    finally:
        body.seek(0)


@lru_cache(maxsize=64)
def _tags_for(keywords: frozenset[str]) -> Mapping[int, str]:
    """The tags of ``keywords``, and of SpecificCharacterSet, which decodes them; each with its keyword.

    A name that is no keyword is absent from every instance.
    """
    tags = {int(tag): keyword for keyword in keywords if (tag := tag_for_keyword(keyword)) is not None}
    return MappingProxyType({**tags, _SPECIFIC_CHARACTER_SET: "SpecificCharacterSet"})


def pixel_data_span(data: bytes) -> tuple[int, int] | None:
    """Where the top-level pixel data element of a Part 10 instance starts and ends in ``data``.

    Lets pseudonymisation decode and re-encode only the attributes before the
    pixel data, and copy the pixel data as it came. ``(len(data), len(data))``
    when there is none; ``None`` when the walk leaves the instance to pydicom
    (no preamble, a deflated or big-endian dataset, a malformed element).
    """
    try:
        position, _, syntax = _file_meta(data)
        implicit = syntax == _IMPLICIT_LE
        while position < len(data):
            group, number = _TAG.unpack_from(data, position)
            start = position
            *_, position = _element(data, position, implicit=implicit)
            if group << 16 | number >= _FLOAT_PIXEL_DATA:
                return start, position
        return len(data), len(data)
    except (_UnhandledError, struct.error):
        return None


def _file_meta(data: bytes) -> tuple[int, dict[int, bytes], str]:
    """Where the dataset of a Part 10 file starts, its file meta elements, and its (explicit LE) transfer syntax."""
    if data[_PREAMBLE:_PREAMBLE + 4] != _MAGIC:
        raise _UnhandledError("no Part 10 preamble")
    position = _PREAMBLE + 4
    meta: dict[int, bytes] = {}
    while position + 8 <= len(data) and _U16.unpack_from(data, position)[0] == 0x0002:
        tag, _, start, length, position = _element(data, position, implicit=False)
        meta[tag] = data[start:start + length] if length != _UNDEFINED else b""
    syntax = _meta_text(meta, 0x00020010)
    if not syntax:
        raise _UnhandledError("no TransferSyntaxUID in the file meta")
    if syntax in _NOT_EXPLICIT_LE:
        raise _UnhandledError(f"transfer syntax {syntax}")
    return position, meta, syntax


def _walk(data: bytes, keywords: frozenset[str]) -> Header:
    """Find the wanted top-level elements of a Part 10 file and decode them."""
    wanted = _tags_for(keywords)
    position, meta, syntax = _file_meta(data)
    implicit = syntax == _IMPLICIT_LE
    last = max(wanted)
    whole = len(data) < PREFIX_BYTES
    found: dict[int, RawDataElement] = {}
    while True:
        if position == len(data) and whole:
            break  # the instance ends before any pixel data
        group, number = _TAG.unpack_from(data, position)
        tag = group << 16 | number
        if tag > last or tag == _PIXEL_DATA:
            break
        tag, vr, start, length, position = _element(data, position, implicit=implicit)
        if tag in wanted:
            if length == _UNDEFINED:
                raise _UnhandledError(f"wanted element {tag:08X} is a sequence")
            value = data[start:start + length]
            found[tag] = RawDataElement(BaseTag(tag), vr, length, value, start, implicit, True)
    charset = found.pop(_SPECIFIC_CHARACTER_SET, None)
    encodings = convert_encodings(_decode(charset)) if charset is not None else None
    return Header(
        {wanted[tag]: _decode(element, encodings) for tag, element in found.items()},
        syntax,
        _meta_text(meta, 0x00020003),
    )


def _decode(element: RawDataElement, encodings: list[str] | None = None) -> Any:
    vr = element.VR or dictionary_VR(element.tag)
    return convert_value(vr, element, encodings)


def _meta_text(meta: dict[int, bytes], tag: int) -> str:
    return meta.get(tag, b"").rstrip(b"\0 ").decode("ascii", "replace")


def _element(data: bytes, position: int, *, implicit: bool) -> tuple[int, str | None, int, int, int]:
    """The element at ``position``: tag, VR (``None`` when implicit), value start and length, next position.

    An undefined length (a sequence of items) is returned as such; the next
    position is then after the sequence's delimiter.
    """
    group, number = _TAG.unpack_from(data, position)
    tag = group << 16 | number
    vr: str | None
    if implicit:
        vr, (length,), start = None, _U32.unpack_from(data, position + 4), position + 8
    else:
        code = data[position + 4:position + 6]
        if code not in _KNOWN_VRS:
            raise _UnhandledError(f"unknown VR {code!r} at {tag:08X}")
        vr = code.decode("ascii")
        if code in _LONG_VRS:
            (length,), start = _U32.unpack_from(data, position + 8), position + 12
        else:
            (length,), start = _U16.unpack_from(data, position + 6), position + 8
    if length == _UNDEFINED:
        # A sequence (or UN data, which is encoded as implicit VR) of items.
        return tag, vr, start, length, _skip_items(data, start, implicit=implicit or vr == "UN")
    end = start + length
    if end > len(data):
        raise _UnhandledError("the header runs past the prefix")
    return tag, vr, start, length, end


def _skip_items(data: bytes, position: int, *, implicit: bool) -> int:
    """Where an undefined-length sequence that starts at ``position`` ends."""
    while True:
        group, number = _TAG.unpack_from(data, position)
        (length,) = _U32.unpack_from(data, position + 4)
        marker = group << 16 | number
        position += 8
        if marker == _SEQUENCE_END:
            return position
        if marker != _ITEM:
            raise _UnhandledError(f"unexpected tag {marker:08X} in a sequence")
        if length != _UNDEFINED:
            position += length
            continue
        while True:
            group, number = _TAG.unpack_from(data, position)
            if group << 16 | number == _ITEM_END:
                position += 8
                break
            *_, position = _element(data, position, implicit=implicit)
