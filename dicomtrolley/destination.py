"""Another archive as the place a download goes: a :class:`~dicomtrolley.roles.Storage` that sends.

A :class:`Destination` joins a :class:`~dicomtrolley.roles.Sender` (STOW-RS,
C-STORE) with a :class:`~dicomtrolley.roles.Searcher` of the same archive
(QIDO-RS, C-FIND). The download hands it each instance as it arrives, and it
sends the bytes from where the download spooled them (in memory, or a
temporary file past the spill threshold), never a whole study at once. It asks
the archive once per study which instances it already holds, so that a rerun
sends nothing, and, through :meth:`Destination.held`, how many it holds once
a study is sent, so that an export trusts what arrived rather than what was
answered.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from dicomtrolley._header import read_header
from dicomtrolley.core import (
    FetchFailure,
    InstancePart,
    InstanceReference,
    PartSink,
    Query,
    QueryLevels,
    StudyReference,
)
from dicomtrolley.exceptions import DICOMTrolleyError, HeaderError, StorageError
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.roles import Attributes, SavedInstance, Searcher, Sender, Storage
from dicomtrolley.storage import INDEX_KEYWORDS
from dicomtrolley.stow_rs import StowRS

logger = logging.getLogger(__name__)

_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")

HANDOVER_BYTES = 4 << 20
"""An instance up to this size is copied and sent on the destination's threads while the download goes on;
a larger one is sent from its spooled file in the thread that fetched it (memory stays bounded)."""


class Destination(Storage):
    """Another archive as a :class:`~dicomtrolley.roles.Storage`: instances saved to it are sent to it.

    Parameters
    ----------
    sender
        Stores the instances (:class:`~dicomtrolley.stow_rs.StowRS`,
        :class:`~dicomtrolley.dimse_store.DICOMCStore`).
    searcher
        Searches the same archive (:class:`~dicomtrolley.qido_rs.QidoRS`,
        :class:`~dicomtrolley.dicom_qr.DICOMQR`): which instances it already
        holds, and whether what was sent arrived.
    workers
        Instances sent at once, shared by every download that sends here: sending
        one at a time in the fetching thread would leave the download waiting for
        each answer.
    """

    def __init__(self, sender: Sender, searcher: Searcher, *, workers: int = 4) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.sender = sender
        self.searcher = searcher
        self.workers = workers
        self._known: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"Destination({self.sender!r})"

    @property
    def fields(self) -> tuple[str, ...]:
        """The three UIDs: an instance is found at the destination by them alone."""
        return _UIDS

    def may_hold(self, study_uids: Collection[str]) -> bool:
        """True when the archive holds any instance of these studies (one search per study, remembered)."""
        return any(self._instances(uid) for uid in study_uids)

    def has(self, attributes: Attributes) -> bool:
        """True when the archive holds this instance, by what one search of its study found."""
        study_uid, sop_uid = attributes.get("StudyInstanceUID"), attributes.get("SOPInstanceUID")
        if not study_uid or not sop_uid:
            return False
        return str(sop_uid) in self._instances(str(study_uid))

    def held(self, study_uid: str) -> int:
        """How many instances of the study the archive holds now: a new search, not the remembered one."""
        with self._lock:
            self._known.pop(study_uid, None)
        count = len(self._search(study_uid))
        logger.debug("%r holds %d instances of %s", self, count, study_uid)
        return count

    def locate(self, attributes: Attributes) -> str:
        """``study/series/instance`` UIDs: how an instance is named at the archive.

        Raises
        ------
        StorageError
            One of the three UIDs is missing.
        """
        values = [attributes.get(name) for name in _UIDS]
        if any(value in (None, "") for value in values):
            raise StorageError(f"An instance sent to {self!r} needs {', '.join(_UIDS)}")
        return "/".join(str(value) for value in values)

    def save(self, part: InstancePart) -> SavedInstance:
        """Send one instance, from the file or memory the download spooled it to.

        Raises
        ------
        StorageError
            The bytes are not a Part 10 DICOM file, or the archive did not store them (with its reason).
        """
        try:
            header = read_header(part.body, (*_UIDS, *INDEX_KEYWORDS), name=f"an instance for {self!r}")
        except HeaderError as error:
            raise StorageError(str(error)) from error
        relative = self.locate(header.attributes)
        summary = self.sender.send(part.body, on_error="collect", progress=False)
        if summary.failures:
            raise StorageError(f"{self!r} did not store {relative}: {summary.failures[0].reason}")
        if not summary.sent:
            raise StorageError(f"Not sent to {self!r}: {relative} is not a Part 10 DICOM file")
        study_uid, series_uid, sop_uid = relative.split("/")
        with self._lock:
            self._known.pop(study_uid, None)  # what was remembered of the study is out of date
        return SavedInstance(
            InstanceReference(study_uid, series_uid, sop_uid), Path(relative), part.size,
            header.transfer_syntax, header.attributes, relative=relative,
        )

    def parallel(self, sink: PartSink, failures: list[FetchFailure]) -> _Handover:
        """A sink that hands each part of up to :data:`HANDOVER_BYTES` to the destination's threads and returns.

        On exit it waits for the parts it handed over, and appends those whose ``sink`` raised to ``failures``.
        """
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="dicomtrolley-destination")
            pool = self._pool
        return _Handover(pool, self.workers, sink, failures)

    def _instances(self, study_uid: str) -> frozenset[str]:
        with self._lock:
            known = self._known.get(study_uid)
            if known is None:
                known = self._known[study_uid] = self._search(study_uid)
            return known

    def _search(self, study_uid: str) -> frozenset[str]:
        query = Query(StudyInstanceUID=study_uid, query_level=QueryLevels.INSTANCE)
        return frozenset(
            instance.uid for study in self.searcher.find_studies(query) for instance in study.all_instances()
        )


class _Handover:
    """One download's parts, sent on the destination's shared threads, at most ``depth`` of them at once."""

    def __init__(self, pool: ThreadPoolExecutor, depth: int, sink: PartSink, failures: list[FetchFailure]) -> None:
        self._pool = pool
        self._sink = sink
        self._failures = failures
        self._slots = threading.BoundedSemaphore(depth)
        self._pending: list[tuple[InstancePart, Future[None]]] = []

    def __enter__(self) -> PartSink:
        return self

    def __call__(self, part: InstancePart) -> None:
        if part.size > HANDOVER_BYTES:
            self._sink(part)  # sent from where it was spooled; the fetching thread waits for it
            return
        part.body.seek(0)
        copy = InstancePart(  # the downloader closes its part once this returns
            io.BytesIO(part.body.read()), part.size, part.content_type, part.source, part.reference, part.headers
        )
        self._slots.acquire()
        future = self._pool.submit(self._send, copy)
        self._pending.append((copy, future))

    def _send(self, part: InstancePart) -> None:
        try:
            self._sink(part)
        finally:
            part.close()
            self._slots.release()

    def __exit__(self, *exc: object) -> None:
        wait([future for _, future in self._pending])
        for part, future in self._pending:
            error = future.exception()
            if error is not None and not isinstance(error, Exception):
                raise error  # KeyboardInterrupt, SystemExit: not a failure of one instance
            if error is not None:
                target = part.reference or part.source or StudyReference("unknown")
                self._failures.append(FetchFailure(target, error))
        self._pending.clear()


def as_destination(target: Sender | Destination) -> Destination:
    """A :class:`Destination` for ``target``: itself, or a STOW-RS sender with QIDO-RS at the same URL.

    The searcher shares the sender's session, so its login and certificates apply to both.

    Raises
    ------
    DICOMTrolleyError
        A sender of another kind (C-STORE): which searcher its archive has is not known;
        give ``Destination(sender, searcher)``.
    """
    if isinstance(target, Destination):
        return target
    if isinstance(target, StowRS):
        return Destination(target, QidoRS(target.http.session, target.url))
    raise DICOMTrolleyError(
        f"Cannot tell how to search the archive of {target!r}, to check what arrived: "
        "give Destination(sender, searcher) with its C-FIND or QIDO-RS searcher"
    )
