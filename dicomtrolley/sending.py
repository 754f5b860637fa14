"""What every sender shares: the instances to send, the tally of a send, and its summary.

A :class:`~dicomtrolley.roles.Sender` takes files, folders, pydicom datasets
or the bytes of DICOM files. :func:`collect` turns them into
:class:`SendItem` objects, reading no more of each file than its Part 10 file
meta (the SOP class, the SOP instance and the transfer syntax a C-STORE
association and a failure message need): a file's bytes are read again only
while they are sent, so a folder of any size costs memory in proportion to
the number of its files, not their bytes. A file that is not DICOM (no
``DICM`` marker) is skipped, not failed.

:class:`InstanceSender` is the base of the protocol senders (STOW-RS,
C-STORE): it collects the items, times the work, counts what went and turns
the failures into a :class:`SendSummary`, or a
:class:`~dicomtrolley.exceptions.SendError` carrying it.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomtrolley.exceptions import SendError
from dicomtrolley.progress import Progress, ProgressCallback, ProgressReporter
from dicomtrolley.roles import Sender

logger = logging.getLogger(__name__)

Sendable = str | os.PathLike[str] | bytes | bytearray | memoryview | Dataset | io.IOBase
"""One thing :meth:`~dicomtrolley.roles.Sender.send` takes: a file or folder, the bytes of a file, a dataset,
or an open seekable binary file of one instance (sent from where it is, as a download spooled it)."""

OnError = Literal["raise", "collect"]

META_BYTES = 4096
"""Bytes read from the start of a file to find its file meta (read again in full when the meta is longer)."""

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
"""The SOP class of a DICOMDIR: an index of files on a medium, not an instance to store."""

_MAGIC_AT = 128
_META_TAGS = {0x00020002: "sop_class_uid", 0x00020003: "sop_instance_uid", 0x00020010: "transfer_syntax"}


@dataclass(frozen=True)
class SendItem:
    """One instance to send: where its bytes are, and what its file meta says about it.

    Parameters
    ----------
    name
        The file's path, or ``dataset #3`` / ``bytes #2`` for items given in memory.
    size
        Bytes of the whole Part 10 file.
    sop_class_uid, sop_instance_uid, transfer_syntax
        From the file meta (MediaStorageSOPClassUID, MediaStorageSOPInstanceUID, TransferSyntaxUID).
    path
        The file, for items on disk.
    data
        The Part 10 bytes, for items given in memory.
    stream
        An open seekable binary file of the Part 10 bytes, read from its start each time it is sent
        and never closed here (its owner closes it).
    """

    name: str
    size: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)
    stream: IO[bytes] | None = field(default=None, repr=False)

    def open(self) -> IO[bytes]:
        """The Part 10 bytes as a binary file object, read from disk only now."""
        if self.path is not None:
            return self.path.open("rb")
        if self.stream is not None:
            self.stream.seek(0)
            return _Lent(self.stream)  # type: ignore[return-value]
        return io.BytesIO(self.data or b"")


class _Lent(io.RawIOBase):
    """A file lent to a send: read and sought through, but left open when the send closes it."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._file.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()


@dataclass(frozen=True)
class SendFailure:
    """An instance that did not arrive, and why.

    Parameters
    ----------
    name
        The file (or ``dataset #n``) it came from.
    sop_instance_uid
        Its SOPInstanceUID; ``""`` when the file could not be read.
    reason
        What the server (or the file system) said.
    unreachable
        True when the server could not be reached at all (no connection).
    """

    name: str
    sop_instance_uid: str
    reason: str
    unreachable: bool = False

    def __str__(self) -> str:
        uid = f" ({self.sop_instance_uid})" if self.sop_instance_uid and self.sop_instance_uid not in self.name else ""
        return f"{self.name}{uid}: {self.reason}"


@dataclass
class SendSummary:
    """What a send did.

    Parameters
    ----------
    sent
        Instances the destination confirmed it stored.
    bytes_sent
        Bytes of those instances (their Part 10 files).
    skipped
        Files that are not DICOM instances, with the reason: not sent, not failures.
    failures
        Instances that did not arrive, each with the destination's reason.
    warnings
        Instances stored with a warning (coerced or discarded elements), with the warning.
    elapsed
        Seconds the send took.
    """

    sent: int = 0
    bytes_sent: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failures: list[SendFailure] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def failed(self) -> int:
        """How many instances failed."""
        return len(self.failures)

    @property
    def ok(self) -> bool:
        """True when every instance was sent (skipped files do not count against it)."""
        return not self.failures

    @property
    def unreachable(self) -> bool:
        """True when nothing was sent and every failure was a server that could not be reached."""
        return not self.sent and bool(self.failures) and all(f.unreachable for f in self.failures)

    def __str__(self) -> str:
        rate = self.bytes_sent / self.elapsed / 1e6 if self.elapsed else 0.0
        text = (
            f"{self.sent} instances sent ({self.bytes_sent / 1e6:.1f} MB, {rate:.0f} MB/s), "
            f"{len(self.skipped)} skipped"
        )
        if self.failures:
            text += f"; {len(self.failures)} failed"
        if self.warnings:
            text += f"; {len(self.warnings)} with warnings"
        return text


# ---------------------------------------------------------------- what to send


@dataclass
class Collected:
    """The items found in what was given to a send, and the files skipped or unreadable on the way."""

    items: list[SendItem] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failures: list[SendFailure] = field(default_factory=list)


def collect(items: Sendable | Iterable[Sendable]) -> Collected:
    """Every instance in ``items``: files, folders (walked recursively, in name order), bytes and datasets.

    A file without the Part 10 ``DICM`` marker, and a DICOMDIR, is skipped; a
    file that cannot be read, or whose file meta lacks the UIDs, fails.
    """
    found = Collected()
    counts = {"dataset": 0, "bytes": 0, "stream": 0}
    for item in _each(items):
        if isinstance(item, Dataset):
            counts["dataset"] += 1
            _add_bytes(found, f"dataset #{counts['dataset']}", _encode(item))
        elif isinstance(item, io.IOBase):
            counts["stream"] += 1
            _add_stream(found, f"stream #{counts['stream']}", item)  # type: ignore[arg-type]
        elif isinstance(item, (bytes, bytearray, memoryview)):
            counts["bytes"] += 1
            _add_bytes(found, f"bytes #{counts['bytes']}", bytes(item))
        else:
            path = Path(item)
            if path.is_dir():
                for file in _walk(path):
                    _add_file(found, file)
            else:
                _add_file(found, path)
    return found


def _each(items: Sendable | Iterable[Sendable]) -> Iterator[Sendable]:
    if isinstance(items, (str, os.PathLike, bytes, bytearray, memoryview, Dataset, io.IOBase)):
        yield items
        return
    yield from items


def _walk(folder: Path) -> Iterator[Path]:
    """The files under ``folder``, in name order, without following links to folders."""
    for root, folders, files in os.walk(folder):
        folders.sort()
        for name in sorted(files):
            yield Path(root, name)


def _encode(dataset: Dataset) -> bytes:
    """A dataset as the bytes of a Part 10 file; one without file meta gets Explicit VR Little Endian."""
    buffer = io.BytesIO()
    meta = getattr(dataset, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        copy = Dataset(dataset)  # leave the caller's dataset as it is
        copy.file_meta = FileMetaDataset(meta or FileMetaDataset())
        copy.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset = copy
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _add_file(found: Collected, path: Path) -> None:
    name = str(path)
    try:
        with path.open("rb") as file:
            head = file.read(META_BYTES)
            if head[_MAGIC_AT:_MAGIC_AT + 4] != b"DICM":
                found.skipped.append((name, "not a DICOM file"))
                return
            size = os.fstat(file.fileno()).st_size
            if not _meta_complete(head):
                file.seek(0)
                head = file.read(size)
    except OSError as error:
        found.failures.append(SendFailure(name, "", f"cannot be read: {error.strerror or error}"))
        return
    _add(found, name, head, size, path=path)


def _add_stream(found: Collected, name: str, stream: IO[bytes]) -> None:
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    head = stream.read(META_BYTES)
    if head[_MAGIC_AT:_MAGIC_AT + 4] != b"DICM":
        found.skipped.append((name, "not a DICOM file"))
        return
    if not _meta_complete(head):
        stream.seek(0)
        head = stream.read(size)
    _add(found, name, head, size, stream=stream)


def _add_bytes(found: Collected, name: str, data: bytes) -> None:
    if data[_MAGIC_AT:_MAGIC_AT + 4] != b"DICM":
        found.skipped.append((name, "not a DICOM file"))
        return
    _add(found, name, data, len(data), data=data)


def _add(found: Collected, name: str, head: bytes, size: int, *, path: Path | None = None,
         data: bytes | None = None, stream: IO[bytes] | None = None) -> None:
    meta = read_file_meta(head)
    missing = [keyword for keyword in _META_TAGS.values() if not meta.get(keyword)]
    if missing:
        found.failures.append(SendFailure(name, meta.get("sop_instance_uid", ""),
                                          f"its file meta lacks {', '.join(missing)}"))
        return
    if meta["sop_class_uid"] == MEDIA_STORAGE_DIRECTORY:
        found.skipped.append((name, "a DICOMDIR (an index of files, not an instance)"))
        return
    found.items.append(SendItem(name, size, path=path, data=data, stream=stream, **meta))


def _meta_complete(head: bytes) -> bool:
    """True when ``head`` holds the whole file meta group (its group length says how long it is)."""
    start = _MAGIC_AT + 4
    if head[start:start + 4] != b"\x02\x00\x00\x00" or len(head) < start + 12:
        return len(head) < META_BYTES  # no group length: the whole file, or read it all
    length = int.from_bytes(head[start + 8:start + 12], "little")
    return start + 12 + length <= len(head)


def read_file_meta(head: bytes) -> dict[str, str]:
    """The SOP class, SOP instance and transfer syntax UIDs of a Part 10 file's meta, by field name.

    Walks the explicit-VR little-endian elements of group 0002 after the
    ``DICM`` marker; an element it cannot read ends the walk.
    """
    return {_META_TAGS[tag]: head[start:end].rstrip(b"\0 ").decode("ascii", "replace")
            for tag, start, end in _meta_elements(head) if tag in _META_TAGS}


def dataset_offset(head: bytes) -> int | None:
    """Where the data set of a Part 10 file starts: just after its last file meta element.

    ``head`` holds the file's first bytes, the whole meta group among them
    (see :data:`META_BYTES`). None when an element of group 0002 cannot be
    read to its end, so where the data set starts is unknown.
    """
    end = max((end for _tag, _start, end in _meta_elements(head)), default=_MAGIC_AT + 4)
    return None if head[end:end + 2] == b"\x02\x00" else end


def _meta_elements(head: bytes) -> Iterator[tuple[int, int, int]]:
    """``(tag, value start, value end)`` of each file meta element, read in order until one cannot be."""
    position = _MAGIC_AT + 4
    while position + 8 <= len(head) and head[position:position + 2] == b"\x02\x00":
        tag = int.from_bytes(head[position:position + 2], "little") << 16 | int.from_bytes(
            head[position + 2:position + 4], "little")
        vr = head[position + 4:position + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
            length = int.from_bytes(head[position + 8:position + 12], "little")
            start = position + 12
        else:
            length = int.from_bytes(head[position + 6:position + 8], "little")
            start = position + 8
        if length == 0xFFFFFFFF or start + length > len(head):
            return
        yield tag, start, start + length
        position = start + length


# ---------------------------------------------------------------- the tally and the base class


class Tally:
    """Counts what a send delivered, from any number of worker threads, and reports progress.

    Parameters
    ----------
    reporter
        Where progress goes (a bar, a callback, or nowhere).
    total
        Instances to send.
    """

    def __init__(self, reporter: ProgressReporter, total: int) -> None:
        self._reporter = reporter
        self._total = total
        self._lock = threading.Lock()
        self._started = time.perf_counter()
        self.sent = 0
        self.bytes_sent = 0
        self.failures: list[SendFailure] = []
        self.warnings: list[tuple[str, str]] = []

    def delivered(self, item: SendItem, warning: str = "") -> None:
        """``item`` was stored (with ``warning`` when the destination coerced or dropped something)."""
        with self._lock:
            self.sent += 1
            self.bytes_sent += item.size
            if warning:
                self.warnings.append((item.name, warning))
            progress = Progress(self.sent, self._total, self.bytes_sent, time.perf_counter() - self._started)
        self._reporter.update(progress)

    def failed(self, item: SendItem, reason: str, *, unreachable: bool = False) -> None:
        """``item`` did not arrive, for ``reason`` (logged as a warning, unless the server could not be reached)."""
        logger.log(logging.DEBUG if unreachable else logging.WARNING, "Sending %s failed: %s", item.name, reason)
        with self._lock:
            self.failures.append(SendFailure(item.name, item.sop_instance_uid, reason, unreachable))


class InstanceSender(Sender):
    """A :class:`~dicomtrolley.roles.Sender` that sends :class:`SendItem` objects; subclasses say how.

    Subclasses implement :meth:`send_items`; :meth:`send` collects the items,
    counts and times the work, and builds the summary.
    """

    @property
    def destination(self) -> str:
        """Where the instances go, for messages (a URL, an AE title and address)."""
        return "the destination"

    @abstractmethod
    def send_items(self, items: Sequence[SendItem], tally: Tally) -> None:
        """Send ``items``, telling ``tally`` of every instance delivered or failed."""

    def send(
        self,
        items: Sendable | Iterable[Sendable],
        *,
        on_error: OnError = "raise",
        progress: bool | ProgressCallback | None = False,
    ) -> SendSummary:
        """Send files, folders (recursively), datasets or the bytes of DICOM files.

        Parameters
        ----------
        items
            One of them, or several.
        on_error
            ``"raise"``: raise :class:`~dicomtrolley.exceptions.SendError` after
            the send when anything failed; ``"collect"``: return the summary.
        progress
            ``None``: a bar when a terminal or notebook watches (with tqdm);
            ``True``/``False``: bar on or off; a callable: called with each
            :class:`~dicomtrolley.progress.Progress`.

        Raises
        ------
        SendError
            With ``on_error="raise"``, when an instance failed; it carries the summary.
        """
        if on_error not in ("raise", "collect"):
            raise ValueError(f"on_error must be 'raise' or 'collect', not {on_error!r}")
        started = time.perf_counter()
        found = collect(items)
        with ProgressReporter(progress, len(found.items)) as reporter:
            tally = Tally(reporter, len(found.items))
            if found.items:
                self.send_items(found.items, tally)
        summary = SendSummary(
            sent=tally.sent, bytes_sent=tally.bytes_sent, skipped=found.skipped,
            failures=found.failures + tally.failures, warnings=tally.warnings,
            elapsed=time.perf_counter() - started,
        )
        logger.info("Send to %s: %s", self.destination, summary)
        if summary.failures and on_error == "raise":
            first = summary.failures[0]
            raise SendError(
                f"{summary.failed} of {summary.failed + summary.sent} instances were not stored at "
                f"{self.destination}; the first: {first}", summary,
            )
        return summary
