"""Reading the few attributes a download needs from the first bytes of an instance.

Every instance written to disk is named by some of its own attributes (its
UIDs, or the fields of a path template), and its transfer syntax is reported.
``pydicom.dcmread`` finds them, but it builds every element before the pixel
data into a Dataset, which on a small machine slows the server that feeds the
download as much as the client (figures in docs/performance.md).

:func:`read_header` walks the encoded elements itself, keeps only those
asked for, and converts them with pydicom's own element conversion (VR lookup
of ``UN`` elements and character sets included), so a value is exactly what
``dcmread(stop_before_pixels=True)`` would give. A single plain value (a UID, a
code, a date, an ASCII ID) is decoded directly, as pydicom would decode it, but
about ten times faster: a download reads eight of them per instance. Whatever the walk does not
handle (no Part 10 preamble, big endian, elements out of order, a VR that
contradicts the transfer syntax, a header longer than :data:`PREFIX_BYTES`) is
read by pydicom, so the fast path never changes an answer, only its cost.

Bytes from a server are not trusted: a deflated dataset is inflated only up to
:data:`INFLATED_HEADER_LIMIT`, no length field makes anything allocate more than
the instance holds, and whatever pydicom cannot read becomes a
:class:`~dicomtrolley.exceptions.HeaderError` naming the instance.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import IO, Any

import pydicom
from pydicom import config as pydicom_config
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.tag import BaseTag
from pydicom.uid import UID, PrivateTransferSyntaxes
from pydicom.valuerep import IS, VR

from dicomtrolley.exceptions import HeaderError

logger = logging.getLogger(__name__)

PREFIX_BYTES = 64 * 1024
"""How much of an instance the fast walk reads; a longer header is read by pydicom."""

INFLATED_HEADER_LIMIT = 16 * 1024 * 1024
"""At most this much of a deflated dataset is inflated to find its header (a deflate bomb stops here)."""

_PREAMBLE = 128
_MAGIC = b"DICM"
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # where dcmread(stop_before_pixels) stops
_FLOAT_PIXEL_DATA = min(_PIXEL_TAGS)  # the first of the three pixel data elements
_SPECIFIC_CHARACTER_SET = 0x00080005
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_MAX_NESTING = 16  # deeper sequences are left to pydicom
_KNOWN_VRS = frozenset(vr.value.encode("ascii") for vr in VR)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_IMPLICIT_LE = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")

# What pydicom raises on bytes it cannot read; each becomes a HeaderError.
_UNREADABLE = (
    InvalidDicomError, BytesLengthException, EOFError, ValueError, KeyError, TypeError, IndexError,
    AttributeError, NotImplementedError, OverflowError, RecursionError, OSError, struct.error, zlib.error,
)


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


def read_header(body: IO[bytes], keywords: Collection[str], *, name: str = "instance") -> Header:
    """The named attributes of an instance and its transfer syntax, leaving ``body`` at position 0.

    Parameters
    ----------
    body
        The instance's bytes, a DICOM Part 10 file as a server sends it.
    keywords
        The attributes wanted, as DICOM keywords.
    name
        What the bytes are (e.g. the instance requested), for error messages.

    Returns
    -------
    Header
        Large values are not loaded, so a 256 MB instance costs the same as a small one.

    Raises
    ------
    HeaderError
        The bytes are not a DICOM instance pydicom can read; the message starts with ``name``.
    """
    keywords = frozenset(keywords)
    try:
        body.seek(0)
        prefix = body.read(PREFIX_BYTES)
        try:
            return _read_fast(body, prefix, keywords)
        except (_UnhandledError, struct.error) as reason:
            logger.debug("Reading the header of %s with pydicom: %s", name, reason or "a short element")
        body.seek(0)
        return _read_by_pydicom(body, keywords)
    except (*_UNREADABLE, _UnhandledError) as error:
        raise HeaderError(f"{name}: downloaded bytes are not a readable DICOM instance: {error!r}") from error
    finally:
        body.seek(0)


def _read_fast(body: IO[bytes], prefix: bytes, keywords: frozenset[str]) -> Header:
    """The walk over the prefix (or over the inflated start of a deflated dataset)."""
    wanted = _tags_for(keywords)
    meta, position = _file_meta(prefix)
    syntax = _meta_text(meta, 0x00020010)
    if not syntax or syntax == _BIG_ENDIAN or syntax in PrivateTransferSyntaxes:
        raise _UnhandledError(f"transfer syntax {syntax or 'missing'}")
    if syntax == _DEFLATED:
        data, complete = _inflate(body, position)
        found = _walk(data, 0, wanted, implicit=False, complete=complete)
    else:
        found = _walk(prefix, position, wanted, implicit=syntax == _IMPLICIT_LE, complete=len(prefix) < PREFIX_BYTES)
    charset = found.pop(_SPECIFIC_CHARACTER_SET, None)
    encodings = convert_encodings(_convert(charset, None)) if charset is not None else None
    return Header(
        {wanted[tag]: _convert(element, encodings) for tag, element in found.items()},
        syntax,
        _meta_text(meta, 0x00020003),
    )


def _read_by_pydicom(body: IO[bytes], keywords: frozenset[str]) -> Header:
    """``dcmread`` up to the pixel data; a deflated dataset the walk could not read is refused."""
    head = body.read(PREFIX_BYTES)
    body.seek(0)
    if _DEFLATED.encode("ascii") in head[:_meta_end(head)]:
        # dcmread inflates the whole dataset in memory: a few MB can become many GB.
        raise _UnhandledError("a deflated dataset whose header the bounded reader could not read")
    dataset = pydicom.dcmread(body, stop_before_pixels=True, defer_size=PREFIX_BYTES, force=True)
    size = _size(body)
    for tag in _tags_for(keywords):
        # A deferred value is read from the body when asked for: its length must fit in the body.
        raw = dataset._dict.get(BaseTag(tag))
        if isinstance(raw, RawDataElement) and raw.value is None and raw.value_tell + raw.length > size:
            raise _UnhandledError(f"element {tag:08X} claims {raw.length} bytes past the end")
    meta = getattr(dataset, "file_meta", None) or Dataset()
    return Header(
        {keyword: dataset[keyword].value for keyword in keywords if keyword in dataset},
        _meta_value(meta, "TransferSyntaxUID"),
        _meta_value(meta, "MediaStorageSOPInstanceUID"),
    )


def _meta_value(meta: Dataset, keyword: str) -> str:
    """A file meta value as text; ``""`` when it is absent or unreadable (the dataset still may be read)."""
    try:
        return str(meta.get(keyword, ""))
    except _UNREADABLE:
        return ""


def _size(body: IO[bytes]) -> int:
    position = body.tell()
    try:
        return body.seek(0, io.SEEK_END)
    finally:
        body.seek(position)


def _meta_end(head: bytes) -> int:
    """Where the file meta of ``head`` ends, as far as its group length says (bounded by ``head``)."""
    try:
        (length,) = _U32.unpack_from(head, _PREAMBLE + 4 + 8)
    except struct.error:
        return len(head)
    return min(len(head), _PREAMBLE + 4 + 12 + length) if length < len(head) else len(head)


@lru_cache(maxsize=64)
def _tags_for(keywords: frozenset[str]) -> Mapping[int, str]:
    """The tags of ``keywords``, and of SpecificCharacterSet, which decodes them; each with its keyword.

    A name that is no keyword is absent from every instance.
    """
    tags = {int(tag): keyword for keyword in keywords if (tag := tag_for_keyword(keyword)) is not None}
    return MappingProxyType({**tags, _SPECIFIC_CHARACTER_SET: "SpecificCharacterSet"})


def pixel_data_span(data: bytes, size: int | None = None) -> tuple[int, int] | None:
    """Where the top-level pixel data element of a Part 10 instance starts and ends.

    Lets pseudonymisation decode and re-encode only the attributes before the
    pixel data, and copy the pixel data as it came. ``data`` is the instance,
    or only its first bytes when ``size`` gives the whole length: a span is
    then found when the pixel data starts within them and has a defined
    length. ``(size, size)`` when there is no pixel data; ``None`` when the
    walk leaves the instance to pydicom (no preamble, a deflated or big-endian
    dataset, a malformed element, encapsulated pixel data past ``data``).
    """
    total = len(data) if size is None else size
    try:
        meta, position = _file_meta(data)
        syntax = _meta_text(meta, 0x00020010)
        if not syntax or syntax in (_BIG_ENDIAN, _DEFLATED) or syntax in PrivateTransferSyntaxes:
            return None
        implicit = syntax == _IMPLICIT_LE
        while position < total:
            group, number = _TAG.unpack_from(data, position)
            if group << 16 | number >= _FLOAT_PIXEL_DATA:
                _, _, start, length = _element_header(data, position, implicit=implicit)
                end = start + length if length != _UNDEFINED else _element(data, position, implicit=implicit)[-1]
                return (position, end) if end <= total else None
            *_, position = _element(data, position, implicit=implicit)
        return total, total
    except (_UnhandledError, struct.error):
        return None


def _file_meta(data: bytes) -> tuple[dict[int, bytes], int]:
    """The file meta elements of a Part 10 file, and where the dataset starts."""
    if data[_PREAMBLE:_PREAMBLE + 4] != _MAGIC:
        raise _UnhandledError("no Part 10 preamble")
    position = _PREAMBLE + 4
    _check_explicit(data, position, implicit=False)
    meta: dict[int, bytes] = {}
    previous = -1
    while position + 8 <= len(data) and _U16.unpack_from(data, position)[0] == 0x0002:
        tag, vr, start, length, position = _element(data, position, implicit=False)
        if tag <= previous or vr in ("SQ", "UN") or length == _UNDEFINED:
            raise _UnhandledError(f"file meta element {tag:08X} out of order or not plain")
        previous = tag
        meta[tag] = data[start:start + length]
    if position + 2 <= len(data) and _U16.unpack_from(data, position)[0] == 0x0000:
        raise _UnhandledError("a command set follows the file meta")
    return meta, position


def _inflate(body: IO[bytes], position: int) -> tuple[bytes, bool]:
    """The start of a deflated dataset, at most :data:`INFLATED_HEADER_LIMIT` bytes; and whether that is all."""
    body.seek(position)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    while len(out) < INFLATED_HEADER_LIMIT and not inflater.eof:
        chunk = inflater.unconsumed_tail or body.read(PREFIX_BYTES)
        if not chunk:
            raise _UnhandledError("the deflated dataset is truncated")  # as zlib.decompress says
        out += inflater.decompress(chunk, INFLATED_HEADER_LIMIT - len(out))
    return bytes(out), inflater.eof


def _check_explicit(data: bytes, position: int, *, implicit: bool) -> None:
    """Hand over a dataset whose first element is encoded otherwise than announced (pydicom then switches)."""
    code = data[position + 4:position + 6]
    if len(code) == 2 and (0x40 < code[0] < 0x5B and 0x40 < code[1] < 0x5B) == implicit:
        raise _UnhandledError("the VR encoding differs from the transfer syntax")


def _walk(
    data: bytes, position: int, wanted: Mapping[int, str], *, implicit: bool, complete: bool
) -> dict[int, RawDataElement]:
    """The wanted top-level elements of a dataset that starts at ``position``, up to the pixel data.

    ``complete`` says ``data`` holds the whole dataset; otherwise reaching its
    end before the pixel data hands the instance to pydicom.
    """
    _check_explicit(data, position, implicit=implicit)
    found: dict[int, RawDataElement] = {}
    previous = -1
    size = len(data)
    unpack_tag, unpack_u16, unpack_u32 = _TAG.unpack_from, _U16.unpack_from, _U32.unpack_from
    # _element inlined: every element up to the pixel data is stepped over, so this loop is the cost.
    while True:
        if position == size and complete:
            break  # the instance ends before any pixel data
        group, number = unpack_tag(data, position)
        tag = group << 16 | number
        if tag in _PIXEL_TAGS:
            break
        if tag <= previous:
            raise _UnhandledError(f"element {tag:08X} out of order")
        previous = tag
        code: bytes | None = None
        if implicit:
            (length,), start = unpack_u32(data, position + 4), position + 8
        else:
            code = data[position + 4:position + 6]
            if code in _LONG_VRS:
                (length,), start = unpack_u32(data, position + 8), position + 12
            elif code in _KNOWN_VRS:
                (length,), start = unpack_u16(data, position + 6), position + 8
            else:
                raise _UnhandledError(f"unknown VR {code!r} at {tag:08X}")
        if length == _UNDEFINED:
            if tag in wanted:
                raise _UnhandledError(f"wanted element {tag:08X} is a sequence")
            position = _skip_items(data, start, implicit=implicit or code == b"UN", depth=1)
            continue
        position = start + length
        if position > size:
            raise _UnhandledError("the header runs past the prefix")
        if tag in wanted:
            vr = None if code is None else code.decode("ascii")
            found[tag] = RawDataElement(BaseTag(tag), vr, length, data[start:position], start, implicit, True)
    return found


_PLAIN_VRS = frozenset({"AS", "CS"})
"""VRs pydicom decodes as ISO 8859-1 whatever the character set, trailing spaces and nulls stripped."""
_DATE_TIME_VRS = frozenset({"DA", "DT", "TM"})
"""Decoded as the plain VRs are, unless pydicom is set to convert them to date and time objects."""
_TEXT_VRS = frozenset({"SH", "LO"})
"""Decoded in the character set; the same as the plain VRs when every byte is ASCII with no escape."""


def _convert(element: RawDataElement, encodings: list[str] | None) -> Any:
    """The element's value as pydicom gives it (VR from the dictionary for ``UN`` or implicit VR).

    A single, non-empty value of a string VR (or a whole number of VR IS)
    is decoded here: the value and type pydicom gives, without pydicom's
    per-value validation, which costs most of the time.
    """
    raw = element.value
    if isinstance(raw, bytes) and raw and b"\\" not in raw:
        vr = element.VR if element.VR not in (None, "UN") else _dictionary_vr(element.tag)
        text = raw.decode("latin-1").rstrip("\0 ")
        if not text:
            pass  # empty: pydicom's empty value (None or "", as configured)
        elif vr == "UI":
            return UID(text, pydicom_config.IGNORE)
        elif vr in _PLAIN_VRS or (vr in _DATE_TIME_VRS and not pydicom_config.datetime_conversion) or (
            vr in _TEXT_VRS and raw.isascii() and b"\x1b" not in raw
        ):
            return text
        elif vr == "IS" and text.strip().lstrip("+-").isdigit():
            return IS(text, pydicom_config.IGNORE)
    converted = convert_raw_data_element(element, encoding=encodings)
    if converted.VR == VR.SQ or " or " in converted.VR:
        raise _UnhandledError(f"wanted element {element.tag} has VR {converted.VR}")
    return converted.value


@lru_cache(maxsize=256)
def _dictionary_vr(tag: int) -> str | None:
    """The VR the data dictionary gives ``tag``; ``None`` for a tag it does not know."""
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _meta_text(meta: dict[int, bytes], tag: int) -> str:
    return meta.get(tag, b"").rstrip(b"\0 ").decode("ascii", "replace")


def _element(
    data: bytes, position: int, *, implicit: bool, depth: int = 0
) -> tuple[int, str | None, int, int, int]:
    """The element at ``position``: tag, VR (``None`` when implicit), value start and length, next position.

    An undefined length (a sequence of items) is returned as such; the next
    position is then after the sequence's delimiter.
    """
    tag, vr, start, length = _element_header(data, position, implicit=implicit)
    if length == _UNDEFINED:
        # A sequence (or UN data, which is encoded as implicit VR) of items.
        return tag, vr, start, length, _skip_items(data, start, implicit=implicit or vr == "UN", depth=depth + 1)
    end = start + length
    if end > len(data):
        raise _UnhandledError("the header runs past the prefix")
    return tag, vr, start, length, end


def _element_header(data: bytes, position: int, *, implicit: bool) -> tuple[int, str | None, int, int]:
    """The tag, VR (``None`` when implicit), value start and length of the element at ``position``."""
    group, number = _TAG.unpack_from(data, position)
    tag = group << 16 | number
    if implicit:
        return tag, None, position + 8, _U32.unpack_from(data, position + 4)[0]
    code = data[position + 4:position + 6]
    if code not in _KNOWN_VRS:
        raise _UnhandledError(f"unknown VR {code!r} at {tag:08X}")
    if code in _LONG_VRS:
        return tag, code.decode("ascii"), position + 12, _U32.unpack_from(data, position + 8)[0]
    return tag, code.decode("ascii"), position + 8, _U16.unpack_from(data, position + 6)[0]


def _skip_items(data: bytes, position: int, *, implicit: bool, depth: int) -> int:
    """Where an undefined-length sequence that starts at ``position`` ends."""
    if depth > _MAX_NESTING:
        raise _UnhandledError("sequences nested too deep")
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
            *_, position = _element(data, position, implicit=implicit, depth=depth)
