"""Read the objects of a JSON array as its bytes arrive, never holding the whole array.

A WADO-RS ``/metadata`` answer is one JSON array with an object per instance:
tens of megabytes for a large study. :func:`iter_json_array` decodes one
element at a time with the standard library's C decoder and keeps only the
undecoded rest of the text, so memory is bounded by the largest element plus
one chunk, not by the answer.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from typing import Any

from dicomtrolley.exceptions import MalformedResponseError

_WHITESPACE = " \t\r\n"
_decoder = json.JSONDecoder()


def iter_json_array(chunks: Iterable[bytes], *, source: str = "the response") -> Iterator[Any]:
    """Yield each element of the JSON array spread over ``chunks`` (UTF-8 bytes).

    An element cut by a chunk boundary is decoded once enough text has
    arrived; the buffer must at least double before a failed element is tried
    again, so decoding stays linear however the chunks fall.

    Parameters
    ----------
    chunks
        The body, in pieces of any size.
    source
        Named in errors (a URL).

    Raises
    ------
    MalformedResponseError
        The body is not a JSON array, or ends inside it.
    """
    text = _Text(chunks)
    if not text.skip_to_any("["):
        raise MalformedResponseError(f"{source} is empty, expected a JSON array")
    if text.peek() != "[":
        raise MalformedResponseError(f"{source} is not a JSON array (starts with {text.peek()!r})")
    text.advance(1)
    first = True
    while True:
        if not text.skip_to_any("]," if not first else "]{[\"0123456789-tfn"):
            raise MalformedResponseError(f"{source} ends inside its JSON array")
        char = text.peek()
        if char == "]":
            return
        if char == ",":
            if first:
                raise MalformedResponseError(f"{source}: a JSON array may not start with ','")
            text.advance(1)
            if not text.skip_to_any("{[\"0123456789-tfn"):
                raise MalformedResponseError(f"{source} ends inside its JSON array")
        first = False
        yield text.decode_value(source)


class _Text:
    """Decoded text with a read position, refilled from the chunks on demand."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""
        self._pos = 0
        self._ended = False

    def _more(self) -> bool:
        """Append the next chunk; drop the text already consumed. False at the end."""
        while not self._ended:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._ended = True
                added = self._utf8.decode(b"", final=True)
            else:
                added = self._utf8.decode(chunk)
            if added:
                self._buffer = self._buffer[self._pos:] + added
                self._pos = 0
                return True
        return False

    def peek(self) -> str:
        return self._buffer[self._pos]

    def advance(self, count: int) -> None:
        self._pos += count

    def skip_to_any(self, allowed: str) -> bool:
        """Skip whitespace up to the next character; True if it is one of ``allowed``.

        Raises on any other character; False when the text ended first.
        """
        while True:
            while self._pos < len(self._buffer) and self._buffer[self._pos] in _WHITESPACE:
                self._pos += 1
            if self._pos < len(self._buffer):
                char = self._buffer[self._pos]
                if char not in allowed:
                    raise MalformedResponseError(f"Unexpected {char!r} in a JSON array")
                return True
            if not self._more():
                return False

    def decode_value(self, source: str) -> Any:
        """Decode the value that starts at the position, reading more text while it is cut off."""
        tried_at = 0
        while True:
            available = len(self._buffer) - self._pos
            if available >= 2 * tried_at or self._ended:
                try:
                    value, end = _decoder.raw_decode(self._buffer, self._pos)
                except json.JSONDecodeError as error:
                    if self._ended:
                        raise MalformedResponseError(f"{source} is not valid JSON: {error}") from error
                    tried_at = max(available, 1)
                else:
                    if end < len(self._buffer) or self._ended or self._buffer[self._pos] in "{[\"":
                        # A number or literal that ends the buffer may go on in the next chunk.
                        self._pos = end
                        return value
                    tried_at = max(available, 1)
            if not self._more():
                if self._ended and tried_at:
                    tried_at = 0  # decode once more, with all the text there is
                    continue
                raise MalformedResponseError(f"{source} ends inside its JSON array")
