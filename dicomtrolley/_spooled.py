"""A part's content kept as the chunks it arrived in: no copy, no fresh memory per instance.

The multipart parser hands on each part's bytes as slices of the chunks the
network delivered. Writing them into a :class:`io.BytesIO` (as
:class:`tempfile.SpooledTemporaryFile` does) copies every byte into memory
that is new for each instance, and touching new memory costs the kernel a
page fault per 4 KB: for a study of 500 CT slices, more system time than the
copy itself. :class:`SpooledChunks` keeps references to the slices instead
(the chunks are immutable ``bytes``), reads them back with slicing, and moves
to a temporary file past a threshold, as a SpooledTemporaryFile does.
"""

from __future__ import annotations

import bisect
import io
import os
import tempfile
import threading
from typing import IO, BinaryIO

from dicomtrolley.core import InstancePart

Buffer = bytes | bytearray | memoryview

SPILL_THRESHOLD = 16 << 20
"""Bytes of one part kept in memory before it moves to a temporary file."""

_KEEP_FRACTION = 2
"""A slice is kept by reference when it is at least 1/2 of its chunk; a smaller one is copied,
so a short part never holds a large chunk in memory."""


def _iov_max() -> int:
    """Most buffers one ``os.writev`` takes, at most 1024; 0 when the platform has no ``writev``."""
    if not hasattr(os, "writev"):
        return 0
    try:
        limit = os.sysconf("SC_IOV_MAX")
    except (ValueError, OSError):
        limit = -1
    return min(limit, 1024) if limit > 0 else 16  # 16: the least POSIX allows


_IOV_MAX = _iov_max()

_COPY_BYTES = 1 << 20
_COPY_BUFFER = threading.local()
"""Each thread's buffer for :func:`copy_to_descriptor`, made once and reused."""


def copy_to_descriptor(source: IO[bytes], handle: int) -> int:
    """Write the rest of ``source`` to the file descriptor ``handle``; return how many bytes.

    A :class:`SpooledChunks` in memory hands over its chunks as they are
    (:meth:`SpooledChunks.write_to`). Anything else passes through this
    thread's one buffer (``readinto``), not a new ``bytes`` per read: memory
    the process touches for the first time costs the kernel a page fault per
    4 KB, more than the copy itself.
    """
    if isinstance(source, SpooledChunks) and source.in_memory and _IOV_MAX:
        return source.write_to(handle)
    buffer: memoryview | None = getattr(_COPY_BUFFER, "view", None)
    if buffer is None:
        buffer = _COPY_BUFFER.view = memoryview(bytearray(_COPY_BYTES))
    readinto = getattr(source, "readinto", None)
    written = 0
    while True:
        if readinto is not None:
            count = readinto(buffer)
            view = buffer[:count]
        else:
            view = memoryview(source.read(_COPY_BYTES))
            count = view.nbytes
        if not count:
            return written
        written += count
        while view:
            view = view[os.write(handle, view):]


class SpooledChunks(io.BufferedIOBase, BinaryIO):
    """A seekable binary file that holds what is written to it as a list of chunks, then in a temporary file.

    Written once, by appending, then read: what a parser needs for one part.
    ``bytes`` (and read-only views of ``bytes``) are kept by reference, not
    copied; anything mutable is copied, so a caller may reuse its buffer.

    Parameters
    ----------
    max_size
        Bytes held in memory; once more are written, everything moves to a temporary file.
    dir
        Where that temporary file goes; the system default when None.
    """

    def __init__(self, max_size: int, dir: str | None = None) -> None:
        super().__init__()
        self._max_size = max_size
        self._dir = dir
        self._chunks: list[memoryview] = []
        self._starts: list[int] = []  # offset of each chunk's first byte
        self._size = 0
        self._pos = 0
        self._file: IO[bytes] | None = None

    @property
    def in_memory(self) -> bool:
        """False once the content has moved to a temporary file."""
        return self._file is None

    # -- writing -------------------------------------------------------------------------------

    def write(self, data: Buffer) -> int:  # type: ignore[override]
        """Append ``data``; move to a temporary file once past ``max_size``."""
        self._check_open()
        if self._file is not None:
            return self._file.write(data)
        view = memoryview(data).cast("B")
        size = view.nbytes
        if not size:
            return 0
        owner = view.obj
        if not (view.readonly and isinstance(owner, bytes)) or size * _KEEP_FRACTION < len(owner):
            view = memoryview(bytes(view))
        self._starts.append(self._size)
        self._chunks.append(view)
        self._size += size
        self._pos = self._size
        if self._size > self._max_size:
            self.rollover()
        return size

    def write_from(self, source: IO[bytes]) -> int:
        """Append what is left of ``source``; return how many bytes.

        A :class:`SpooledChunks` in memory hands over its chunks by reference
        (they are immutable: nothing is copied, no memory is new); anything
        else is read through in pieces.
        """
        if isinstance(source, SpooledChunks) and source.in_memory:
            source._check_open()
            return sum(self.write(piece) for piece in source._pieces(source._size - source._pos))
        return sum(self.write(piece) for piece in iter(lambda: source.read(_COPY_BYTES), b""))

    def rollover(self) -> None:
        """Move the content to a temporary file (from now on, reads and writes go there)."""
        self._check_open()
        if self._file is not None:
            return
        file = tempfile.TemporaryFile(dir=self._dir)  # noqa: SIM115 - closed by close()
        try:
            for chunk in self._chunks:
                file.write(chunk)
            file.seek(self._pos)
        except BaseException:
            file.close()
            raise
        self._file = file
        self._chunks, self._starts = [], []

    # -- reading -------------------------------------------------------------------------------

    def readinto(self, buffer: Buffer) -> int:  # type: ignore[override]
        """Copy the next bytes into ``buffer``; return how many (0 at the end)."""
        self._check_open()
        if self._file is not None:
            return self._file.readinto(buffer)  # type: ignore[attr-defined, no-any-return]
        target = memoryview(buffer).cast("B")
        wanted = min(target.nbytes, self._size - self._pos)
        done = 0
        for piece in self._pieces(wanted):
            target[done : done + piece.nbytes] = piece
            done += piece.nbytes
        return done

    def read(self, size: int | None = -1) -> bytes:
        """The next ``size`` bytes (all that is left when ``size`` is None or negative)."""
        self._check_open()
        if self._file is not None:
            return self._file.read(-1 if size is None else size)
        left = self._size - self._pos
        pieces = list(self._pieces(left if size is None or size < 0 else min(size, left)))
        if len(pieces) == 1 and pieces[0].nbytes == len(pieces[0].obj):  # type: ignore[arg-type]
            return pieces[0].obj  # type: ignore[return-value] # a whole chunk as it came: no copy
        return b"".join(pieces)

    read1 = read

    def write_to(self, handle: int) -> int:
        """Write what is left from the position to the file descriptor ``handle``; return how many bytes.

        Held in memory, the chunks go to the kernel as they are (``os.writev``:
        no copy, and the GIL released while the kernel copies); from a
        temporary file, through a buffer.
        """
        self._check_open()
        if self._file is not None or not _IOV_MAX:
            return copy_to_descriptor(self._file or self, handle)
        pieces = self._pieces(self._size - self._pos)
        written = first = 0
        while first < len(pieces):
            count = os.writev(handle, pieces[first : first + _IOV_MAX])
            written += count
            while first < len(pieces) and count >= pieces[first].nbytes:
                count -= pieces[first].nbytes
                first += 1
            if count:  # a short write: the rest of this piece goes next
                pieces[first] = pieces[first][count:]
        return written

    def _pieces(self, count: int) -> list[memoryview]:
        """Views of the next ``count`` bytes, chunk by chunk; the position moves past them."""
        pieces: list[memoryview] = []
        if count <= 0:
            return pieces
        pos, end = self._pos, self._pos + count
        index = bisect.bisect_right(self._starts, pos) - 1
        while pos < end:
            chunk, start = self._chunks[index], self._starts[index]
            stop = min(end - start, chunk.nbytes)
            pieces.append(chunk[pos - start : stop])
            pos = start + stop
            index += 1
        self._pos = end
        return pieces

    # -- position and life -----------------------------------------------------------------------

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position, as :meth:`io.IOBase.seek` does."""
        self._check_open()
        if self._file is not None:
            return self._file.seek(offset, whence)
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence ({whence})")
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        """The position."""
        self._check_open()
        return self._file.tell() if self._file is not None else self._pos

    def fileno(self) -> int:
        """The temporary file's descriptor (moved there first, as a SpooledTemporaryFile does)."""
        self.rollover()
        assert self._file is not None
        return self._file.fileno()

    def readable(self) -> bool:
        """Always True."""
        return True

    def seekable(self) -> bool:
        """Always True."""
        return True

    def writable(self) -> bool:
        """Always True."""
        return True

    def close(self) -> None:
        """Release the chunks or the temporary file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunks, self._starts = [], []
        super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")


def detached(part: InstancePart) -> InstancePart:
    """A copy of ``part`` that outlives it: for work that goes on after the downloader has closed its part.

    Its body shares the chunks of a :class:`SpooledChunks` in memory (no byte
    copied) and is a copy otherwise, spilled to a temporary file past
    :data:`SPILL_THRESHOLD` as any part is.
    """
    body = SpooledChunks(SPILL_THRESHOLD)
    part.body.seek(0)
    body.write_from(part.body)
    body.seek(0)
    return InstancePart(body, part.size, part.content_type, part.source, part.reference, part.headers)
