"""A streaming parser for multipart/related bodies (RFC 2046, RFC 2387).

WADO-RS answers a study or series request with one multipart/related body that
holds every instance. This module turns the bytes of such a body into parts as
they arrive, so a downloader can store instance N while instance N+1 is still
on the wire, and memory stays bounded however large the study is. It knows no
HTTP library: feed :func:`iter_parts` any iterable of byte chunks.

The parser scans each byte a bounded number of times: between chunks it keeps
only the last ``len(delimiter) - 1`` bytes, and a part that declares its
Content-Length is copied without being scanned at all.
"""

from __future__ import annotations

import enum
import logging
import re
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from dicomtrolley._spooled import SPILL_THRESHOLD, SpooledChunks
from dicomtrolley.exceptions import MultipartError, TruncatedBodyError

logger = logging.getLogger(__name__)

MAX_HEADER_SIZE = 64 * 1024
"""Most bytes one part's header block may take, so a broken body cannot exhaust memory."""

_MAX_PADDING = 1024  # most transport padding (spaces, tabs) accepted after a delimiter

_CR, _LF, _DASH, _SP, _HT = 13, 10, 45, 32, 9

_PARAMETER = re.compile(r';\s*([^\s=;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_DIGITS = re.compile(r"[0-9]+")


_FIND_WINDOW = 24 * 1024
"""How much of a chunk one search for the delimiter covers.

CPython searches a haystack shorter than 30,000 bytes with its Horspool-like
scan, which skips ahead on most bytes, and a longer one with the Two-Way
algorithm, which on pixel data runs two to three times slower; searching
window by window keeps every search on the fast path."""


def _find(data: bytes, needle: bytes, start: int) -> int:
    """``data.find(needle, start)``, window by window (see :data:`_FIND_WINDOW`)."""
    end, overlap = len(data), len(needle) - 1
    while start < end:
        found = data.find(needle, start, start + _FIND_WINDOW + overlap)
        if found >= 0:
            return found
        start += _FIND_WINDOW
    return -1


def parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    """Split a Content-Type header into its media type and parameters.

    A WADO-RS client needs both halves: the media type says whether the server
    sent multipart/related or a single ``application/dicom`` body, and the
    parameters carry the boundary, the ``type`` and the transfer syntax.

    Parameters
    ----------
    value
        The header value, e.g. ``multipart/related; type="application/dicom"; boundary=abc``.

    Returns
    -------
    tuple[str, dict[str, str]]
        The media type in lower case, and the parameters with lower-case names
        and values unquoted (quoted values may hold ``;`` and backslash escapes).

    Raises
    ------
    MultipartError
        When the value is missing or empty.

    Examples
    --------
    >>> parse_content_type('Multipart/Related; Type="application/dicom"; boundary=xyz')
    ('multipart/related', {'type': 'application/dicom', 'boundary': 'xyz'})
    """
    if value is None or not value.strip():
        raise MultipartError("the response has no Content-Type, so its parts cannot be told apart")
    media_type, _, rest = value.partition(";")
    parameters: dict[str, str] = {}
    for match in _PARAMETER.finditer(";" + rest if rest else ""):
        name, quoted, bare = match.groups()
        parameters[name.lower()] = _QUOTED_PAIR.sub(r"\1", quoted) if quoted is not None else bare.strip()
    return media_type.strip().lower(), parameters


MULTIPART_MEDIA_TYPES: frozenset[str] = frozenset({"multipart/related", "multipart/mixed", "multipart/form-data"})
"""The labels under which a server sends a body of parts.

DICOMweb says ``multipart/related``; some servers and proxies label the same
body ``multipart/mixed`` or ``multipart/form-data``. The framing is the same
(RFC 2046), so the parts are read alike, whatever the label."""


def is_multipart(media_type: str) -> bool:
    """True for a media type (lower case, as :func:`parse_content_type` gives it) whose body is read as parts."""
    return media_type in MULTIPART_MEDIA_TYPES


def boundary_of(content_type: str | None) -> str:
    """Return the boundary of a multipart Content-Type.

    Parameters
    ----------
    content_type
        The Content-Type header of the response; the boundary may be quoted or not.

    Returns
    -------
    str
        The boundary, without quotes.

    Raises
    ------
    MultipartError
        When the content type is missing, not multipart, or has no boundary;
        the message names the content type the server sent.
    """
    media_type, parameters = parse_content_type(content_type)
    if not media_type.startswith("multipart/"):
        raise MultipartError(f"expected a multipart response but the Content-Type is {content_type!r}")
    boundary = parameters.get("boundary", "")
    if not boundary:
        raise MultipartError(f"the multipart Content-Type {content_type!r} has no boundary parameter")
    return boundary


@dataclass
class Part:
    """One part of a multipart body: its headers and its content.

    Parameters
    ----------
    headers
        The part's headers, names in lower case (``content-type``,
        ``content-length``, ``content-location``, ...).
    body
        The content, seekable and positioned at 0: in memory up to the spill
        threshold (the slices of the chunks it arrived in, not a copy), in a
        temporary file beyond it (see :class:`~dicomtrolley._spooled.SpooledChunks`).
        Call :meth:`close` to free it.
    size
        Length of the content in bytes.
    """

    headers: dict[str, str]
    body: IO[bytes]
    size: int

    @property
    def content_type(self) -> str:
        """The part's Content-Type header, or ``""`` when the part has none.

        An empty value lets the caller fall back on the ``type`` parameter of
        the multipart/related body rather than on a guessed default.
        """
        return self.headers.get("content-type", "")

    def close(self) -> None:
        """Release the memory or the temporary file that holds the content."""
        self.body.close()


def iter_parts(
    chunks: Iterable[bytes],
    boundary: str,
    *,
    spill_threshold: int = SPILL_THRESHOLD,
    spill_dir: str | None = None,
) -> Generator[Part, None, None]:
    """Parse a multipart body chunk by chunk and yield each part as soon as it is complete.

    A preamble before the first delimiter and an epilogue after the closing
    one are skipped; the rest of ``chunks`` is read to its end. The CRLF before
    each delimiter belongs to the delimiter, so each part's content is byte-exact.
    Header lines may end in CRLF or a bare LF.

    Parameters
    ----------
    chunks
        The body, in chunks of any size (e.g. ``response.iter_content(1 << 20)``).
    boundary
        The boundary from the Content-Type (see :func:`boundary_of`).
    spill_threshold
        Bytes of one part held in memory; a larger part moves to a temporary
        file. 0 puts every part in a temporary file.
    spill_dir
        Directory for those temporary files; the system default when None.

    Yields
    ------
    Part
        Each part, in body order. The caller owns it and closes it.

    Raises
    ------
    MultipartError
        When the body holds no delimiter, ends in the middle of a part, lacks
        the closing delimiter, has an oversized or malformed header block, or a
        part's Content-Length is not followed by a delimiter. Parts completed
        before the fault have already been yielded; the message says how many.
    """
    if spill_threshold < 0:
        raise ValueError(f"spill_threshold must be 0 or more, not {spill_threshold}")
    parser = _Parser(boundary, spill_threshold, spill_dir)
    try:
        error: MultipartError | None = None
        for chunk in chunks:
            try:
                parser.feed(chunk if isinstance(chunk, bytes) else bytes(chunk))
            except MultipartError as exc:
                error = exc
            yield from parser.drain()
            if error is not None:
                raise error
        try:
            parser.finish()
        except MultipartError as exc:
            error = exc
        yield from parser.drain()
        if error is not None:
            raise error
    finally:
        parser.discard()


class _State(enum.Enum):
    PREAMBLE = "preamble"  # scanning for the first delimiter, discarding
    BOUNDARY_LINE = "boundary line"  # after a delimiter: "--" closes, padding + line end opens a part
    HEADERS = "headers"
    BODY = "body"  # no Content-Length: scanning for the delimiter
    SIZED_BODY = "sized body"  # Content-Length known: copying without a scan
    AFTER_SIZED_BODY = "after sized body"  # the delimiter must follow right here
    EPILOGUE = "epilogue"  # after the closing delimiter, discarding


class _Parser:
    """The state machine behind :func:`iter_parts`: feed chunks, collect finished parts."""

    def __init__(self, boundary: str, spill_threshold: int, spill_dir: str | None) -> None:
        try:
            encoded = boundary.encode("ascii")
        except UnicodeEncodeError:
            raise MultipartError(f"the multipart boundary {boundary!r} is not ASCII") from None
        if not encoded or b"\r" in encoded or b"\n" in encoded:
            raise MultipartError(f"the multipart boundary {boundary!r} is empty or holds a line break")
        self._boundary = boundary
        self._delimiter = b"\r\n--" + encoded
        self._keep = len(self._delimiter) - 1  # bytes to carry over: a delimiter cut by a chunk end
        self._spill_threshold = spill_threshold
        self._spill_dir = spill_dir
        self._handlers: dict[_State, Callable[[bytes, int], int]] = {
            _State.PREAMBLE: self._scan,
            _State.BODY: self._scan,
            _State.BOUNDARY_LINE: self._boundary_line,
            _State.HEADERS: self._header_block,
            _State.SIZED_BODY: self._sized_body,
            _State.AFTER_SIZED_BODY: self._after_sized_body,
            _State.EPILOGUE: self._epilogue,
        }
        self._state = _State.PREAMBLE
        # The body's first delimiter may open the body without a CRLF before it,
        # and a part's header block may end with the CRLF of the next delimiter
        # (an empty part, RFC 2046): such a scan starts as if a CRLF came first.
        # That CRLF is virtual: never content, even when no delimiter follows.
        self._tail = b"\r\n"
        self._virtual = len(self._tail)  # leading bytes of the tail that are not content
        self._delimiter_virtual = 0  # of them, how many the delimiter candidate took
        self._origin = _State.PREAMBLE  # the state a delimiter candidate interrupted
        self._line = bytearray()  # the boundary line so far, or the current header line
        self._header_lines: list[bytes] = []
        self._header_size = 0
        self._headers: dict[str, str] = {}
        self._body: SpooledChunks | None = None
        self._size = 0
        self._remaining = 0  # Content-Length bytes still to copy
        self._matched = 0  # delimiter bytes seen after a sized body
        self._received = 0
        self._completed = 0
        self._ready: deque[Part] = deque()

    # -- driving ---------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """Consume one chunk; finished parts wait in the ready list."""
        self._received += len(chunk)
        pos, end = 0, len(chunk)
        while pos < end:
            pos = self._handlers[self._state](chunk, pos)

    def drain(self) -> Iterator[Part]:
        """Hand over the parts finished so far, one at a time."""
        while self._ready:
            yield self._ready.popleft()

    def finish(self) -> None:
        """Check that the body ended where a body may end."""
        state = self._state
        if state is _State.EPILOGUE:
            return
        if state is _State.PREAMBLE:
            if not self._received:
                raise MultipartError("the multipart body is empty")
            raise MultipartError(
                f"no multipart delimiter '--{self._boundary}' in the {self._received} bytes of the body; "
                "it is not a multipart body with that boundary"
            )
        if state is _State.BOUNDARY_LINE:
            # Nothing but padding can follow: the delimiter stands and ends the part before it.
            if self._origin is not _State.PREAMBLE:
                self._complete_part()
            raise self._missing_close()
        if state is _State.HEADERS and not self._header_size:
            raise self._missing_close()
        if state is _State.HEADERS:
            where = "in the headers"
        elif state is _State.SIZED_BODY:
            where = f"after {self._size} of the {self._size + self._remaining} bytes (Content-Length)"
        elif state is _State.AFTER_SIZED_BODY:
            where = f"after the {self._size} bytes (Content-Length) but before the delimiter"
        else:
            where = f"after {self._size} bytes of the content"
        raise TruncatedBodyError(
            f"the multipart body is truncated: it ended {where} of part {self._completed + 1}; "
            f"{self._completed} part(s) completed before"
        )

    def discard(self) -> None:
        """Close what the caller will never receive (a part in progress, unyielded parts)."""
        if self._body is not None:
            self._body.close()
            self._body = None
        while self._ready:
            self._ready.popleft().close()

    # -- states ----------------------------------------------------------------------------

    def _scan(self, chunk: bytes, pos: int) -> int:
        """Look for the delimiter; pass the bytes before it on as content (or preamble)."""
        delimiter, keep = self._delimiter, self._keep
        tail = self._tail
        if tail:
            # A delimiter may start in the carried tail; look at the junction only.
            head = chunk[pos : pos + keep]
            window = tail + head
            found = window.find(delimiter)
            if found >= 0:  # it starts inside the tail, since head is shorter than a delimiter
                self._tail = b""
                taken = self._virtual if found == 0 else 0
                self._tail_content(window[:found])
                self._delimiter_found(virtual=taken)
                return pos + found + len(delimiter) - len(tail)
            if len(head) < keep:  # the chunk ends too soon to decide about the tail
                cut = max(0, len(window) - keep)
                self._tail_content(window[:cut])
                self._tail = window[cut:]
                return pos + len(head)
            self._tail = b""
            self._tail_content(tail)
        found = _find(chunk, delimiter, pos)
        if found >= 0:
            self._content(memoryview(chunk)[pos:found])
            self._delimiter_found()
            return found + len(delimiter)
        cut = max(pos, len(chunk) - keep)
        self._content(memoryview(chunk)[pos:cut])
        self._tail = chunk[cut:]
        return len(chunk)

    def _boundary_line(self, chunk: bytes, pos: int) -> int:
        """Decide what follows a delimiter: "--" (the end), or padding and a line end (a part)."""
        line = self._line
        while pos < len(chunk):
            byte = chunk[pos]
            if line[:1] == b"-":
                if byte != _DASH:
                    return self._not_a_delimiter(pos)
                self._delimiter_confirmed(closing=True)
                return pos + 1
            if byte == _LF:
                self._delimiter_confirmed(closing=False)
                return pos + 1
            if line.endswith(b"\r"):
                return self._not_a_delimiter(pos)
            if byte in (_CR, _SP, _HT) or (byte == _DASH and not line):
                if len(line) >= _MAX_PADDING:
                    raise MultipartError(
                        f"more than {_MAX_PADDING} bytes of padding after a multipart delimiter; "
                        f"{self._completed} part(s) completed before"
                    )
                line.append(byte)
                pos += 1
                continue
            return self._not_a_delimiter(pos)
        return pos

    def _header_block(self, chunk: bytes, pos: int) -> int:
        """Collect header lines up to the blank line, within MAX_HEADER_SIZE."""
        line = self._line
        while pos < len(chunk):
            room = MAX_HEADER_SIZE - self._header_size
            newline = chunk.find(b"\n", pos, pos + room)
            stop = newline if newline >= 0 else min(len(chunk), pos + room)
            line += memoryview(chunk)[pos:stop]
            self._header_size += stop - pos + (newline >= 0)
            if newline < 0:
                if self._header_size >= MAX_HEADER_SIZE:
                    raise MultipartError(
                        f"the headers of part {self._completed + 1} exceed {MAX_HEADER_SIZE} bytes; "
                        f"{self._completed} part(s) completed before"
                    )
                return stop
            pos = newline + 1
            if line.endswith(b"\r"):
                del line[-1]
            if not line:
                self._open_part()
                return pos
            self._header_lines.append(bytes(line))
            line.clear()
        return pos

    def _sized_body(self, chunk: bytes, pos: int) -> int:
        """Copy Content-Length bytes without scanning them."""
        take = min(self._remaining, len(chunk) - pos)
        if take:
            self._content(memoryview(chunk)[pos : pos + take])
            self._remaining -= take
        if not self._remaining:
            self._state = _State.AFTER_SIZED_BODY
            self._matched = 0
        return pos + take

    def _after_sized_body(self, chunk: bytes, pos: int) -> int:
        """Verify that the delimiter follows the Content-Length bytes."""
        delimiter, matched = self._delimiter, self._matched
        if not matched and not self._size and chunk[pos] == _DASH:
            # Content-Length 0 and the header block's last CRLF is the delimiter's (RFC 2046).
            matched = self._matched = 2
        take = min(len(delimiter) - matched, len(chunk) - pos)
        if chunk[pos : pos + take] != delimiter[matched : matched + take]:
            raise self._length_mismatch()
        self._matched += take
        if self._matched == len(delimiter):
            self._delimiter_found()
        return pos + take

    def _epilogue(self, chunk: bytes, pos: int) -> int:
        return len(chunk)

    # -- transitions -----------------------------------------------------------------------

    def _content(self, data: bytes | memoryview) -> None:
        if not data:
            return
        if self._body is None:  # preamble
            return
        self._body.write(data)
        self._size += len(data)

    def _tail_content(self, data: bytes) -> None:
        """Content taken from the start of the carried tail, less its virtual bytes."""
        skip = min(self._virtual, len(data))
        self._virtual -= skip
        self._content(data[skip:])

    def _delimiter_found(self, *, virtual: int = 0) -> None:
        self._virtual = 0
        self._delimiter_virtual = virtual
        self._origin = self._state
        self._state = _State.BOUNDARY_LINE
        self._line.clear()

    def _delimiter_confirmed(self, *, closing: bool) -> None:
        if self._origin is not _State.PREAMBLE:
            self._complete_part()
        self._line.clear()
        if closing:
            self._state = _State.EPILOGUE
            return
        self._state = _State.HEADERS
        self._header_lines = []
        self._header_size = 0

    def _not_a_delimiter(self, pos: int) -> int:
        """The delimiter bytes were content after all: give them back and scan on from ``pos``."""
        if self._origin is _State.AFTER_SIZED_BODY:
            raise self._length_mismatch()
        # None of these bytes can start a delimiter (a CR among them is not followed by
        # LF); the byte at ``pos`` may, so the scan resumes there.
        self._state = self._origin
        self._content(self._delimiter[self._delimiter_virtual:] + self._line)
        self._line.clear()
        self._tail = b""
        return pos

    def _open_part(self) -> None:
        self._headers = self._parse_headers(self._header_lines)
        self._line.clear()
        body = SpooledChunks(self._spill_threshold, self._spill_dir)
        if not self._spill_threshold:
            body.rollover()
        self._body = body
        self._size = 0
        length = self._headers.get("content-length")
        if length is not None and _DIGITS.fullmatch(length.strip()):
            self._remaining = int(length)
            self._state = _State.SIZED_BODY
            if not self._remaining:
                self._state = _State.AFTER_SIZED_BODY
                self._matched = 0
            return
        if length is not None:
            logger.debug("part %d: ignoring Content-Length %r", self._completed + 1, length)
        self._tail = b"\r\n"  # virtual: the header block's last CRLF may open the delimiter
        self._virtual = len(self._tail)
        self._state = _State.BODY

    def _parse_headers(self, lines: list[bytes]) -> dict[str, str]:
        headers: dict[str, str] = {}
        name = ""
        for raw in lines:
            text = raw.decode("latin-1")
            if text[:1] in (" ", "\t") and name:  # an obsolete folded continuation line
                headers[name] += " " + text.strip()
                continue
            key, colon, value = text.partition(":")
            if not colon or not key.strip():
                raise MultipartError(
                    f"part {self._completed + 1} has a malformed header line {text[:80]!r}; "
                    f"{self._completed} part(s) completed before"
                )
            name = key.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return headers

    def _complete_part(self) -> None:
        body = self._body
        assert body is not None  # a delimiter that ends a part comes after its body was opened
        self._body = None
        body.seek(0)
        self._ready.append(Part(headers=self._headers, body=body, size=self._size))
        self._completed += 1

    def _missing_close(self) -> TruncatedBodyError:
        return TruncatedBodyError(
            f"the multipart body ended without its closing delimiter '--{self._boundary}--'; "
            f"{self._completed} part(s) completed before"
        )

    def _length_mismatch(self) -> MultipartError:
        return MultipartError(
            f"part {self._completed + 1} declares Content-Length {self._size} but no multipart "
            f"delimiter follows its content; {self._completed} part(s) completed before"
        )
