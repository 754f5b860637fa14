"""Another archive as the place a download goes: a :class:`~dicomtrolley.roles.Storage` that sends.

A :class:`Destination` joins a :class:`~dicomtrolley.roles.Sender` (STOW-RS,
C-STORE) with a :class:`~dicomtrolley.roles.Searcher` of the same archive
(QIDO-RS, C-FIND). The download hands it each instance as it arrives, and it
sends the bytes from where the download spooled them (in memory, or a
temporary file past the spill threshold), never a whole study at once.
Instances saved at the same time travel in batches shaped by the sender's own
limits (:attr:`~dicomtrolley.roles.Sender.batch_limits`: a STOW-RS body of up
to 8 instances or 1 MB), each still saved, or failed with the archive's
reason, on its own. It asks the archive once per study which instances it
already holds, so that a rerun sends nothing, and, through
:meth:`Destination.held`, how many it holds once a study is sent, so that an
export trusts what arrived rather than what was answered.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from dicomtrolley._header import read_header
from dicomtrolley._spooled import detached
from dicomtrolley._values import whole_number
from dicomtrolley.core import (
    FetchFailure,
    InstancePart,
    InstanceReference,
    PartSink,
    Query,
    QueryLevels,
    Study,
    StudyReference,
)
from dicomtrolley.exceptions import DICOMTrolleyError, HeaderError, StorageError
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.roles import Attributes, SavedInstance, Searcher, Sender, Storage
from dicomtrolley.sending import SendItem, collect
from dicomtrolley.storage import INDEX_KEYWORDS
from dicomtrolley.stow_rs import StowRS

logger = logging.getLogger(__name__)

_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_STUDY_COUNT = "NumberOfStudyRelatedInstances"

HANDOVER_BYTES = 4 << 20
"""An instance up to this size is copied and sent on the destination's threads while the download goes on;
a larger one is sent from its spooled file in the thread that fetched it (memory stays bounded). The copies
waiting to be sent to one destination hold at most ``workers`` times this many bytes."""


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
        Requests in flight at once (each a batch of up to the sender's
        :attr:`~dicomtrolley.roles.Sender.batch_limits`), shared by every download
        that sends here: sending one at a time in the fetching thread would leave
        the download waiting for each answer.
    """

    def __init__(self, sender: Sender, searcher: Searcher, *, workers: int = 4) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.sender = sender
        self.searcher = searcher
        self.workers = workers
        self._known: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()
        self._batches = _Batches(sender, workers)
        # Enough instances waiting to fill the next batch of every request in flight.
        self._budget = _Budget(workers * HANDOVER_BYTES, 2 * workers * sender.batch_limits.instances)
        self._pool: ThreadPoolExecutor | None = None
        self._handovers = 0

    def __repr__(self) -> str:
        return f"Destination({self.sender!r})"

    @property
    def fields(self) -> tuple[str, ...]:
        """The three UIDs: an instance is found at the destination by them alone."""
        return _UIDS

    def may_hold(self, study_uids: Collection[str]) -> bool:
        """True when the archive holds any instance of these studies (searches per study, remembered).

        A study-level search first: an archive answers it from its index, where an
        instance-level one may cost it a read of every file (Orthanc: five times the
        CPU). Only a study the archive has is then searched instance by instance.
        """
        return any(self._instances(uid) for uid in study_uids if self._present(uid))

    def has(self, attributes: Attributes) -> bool:
        """True when the archive holds this instance, by what one search of its study found."""
        study_uid, sop_uid = attributes.get("StudyInstanceUID"), attributes.get("SOPInstanceUID")
        if not study_uid or not sop_uid:
            return False
        return str(sop_uid) in self._instances(str(study_uid))

    def held(self, study_uid: str) -> int:
        """How many instances of the study the archive holds now: a new study-level search, not the remembered one."""
        with self._lock:
            self._known.pop(study_uid, None)
        count = self._count(study_uid)
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
        """Send one instance, from the file or memory the download spooled it to; return once it is stored.

        Instances saved at the same time, from several threads, go in one batch
        (see :class:`_Batches`); the answer is read for each of them.

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
        found = collect(part.body)
        if not found.items:
            problem = found.failures[0].reason if found.failures else "is not a Part 10 DICOM file"
            raise StorageError(f"Not sent to {self!r}: {relative} {problem}")
        reason = self._batches.send(found.items[0])
        if reason:
            raise StorageError(f"{self!r} did not store {relative}: {reason}")
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
        The threads are shared by the downloads sending here at the same time, and stop when the last ends.
        """
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._budget.parts, thread_name_prefix="dicomtrolley-destination")
            self._handovers += 1
            pool = self._pool
        return _Handover(pool, self._budget, sink, failures, self._handover_ended)

    def _handover_ended(self) -> None:
        """Stop the threads once no download is handing parts over (they would outlive the destination's use)."""
        with self._lock:
            self._handovers -= 1
            pool, self._pool = (self._pool, None) if not self._handovers else (None, self._pool)
        if pool is not None:
            pool.shutdown()  # quick: every part handed over was waited for

    def _instances(self, study_uid: str) -> frozenset[str]:
        with self._lock:
            known = self._known.get(study_uid)
            if known is None:
                known = self._known[study_uid] = self._search(study_uid)
            return known

    def _present(self, study_uid: str) -> bool:
        """Whether the archive has the study at all (a study-level search); an absent one is remembered empty."""
        with self._lock:
            if study_uid in self._known:
                return True  # what _instances remembers answers
        if self._study(study_uid):
            return True
        with self._lock:
            self._known.setdefault(study_uid, frozenset())
        return False

    def _count(self, study_uid: str) -> int:
        """Instances of the study at the archive, as it counts them; else by an instance-level search.

        NumberOfStudyRelatedInstances is optional in an answer: without it, only
        the instances themselves can tell.
        """
        studies = self._study(study_uid)
        counts = [whole_number(study.first_value(_STUDY_COUNT)) for study in studies]
        if all(count is not None for count in counts):
            return sum(count for count in counts if count is not None)
        return len(self._search(study_uid))

    def _study(self, study_uid: str) -> list[Study]:
        """The study as a study-level search finds it (none or one), with the archive's count of its instances."""
        return self.searcher.find_studies(Query(StudyInstanceUID=study_uid, include_fields=[_STUDY_COUNT]))

    def _search(self, study_uid: str) -> frozenset[str]:
        query = Query(StudyInstanceUID=study_uid, query_level=QueryLevels.INSTANCE)
        return frozenset(
            instance.uid for study in self.searcher.find_studies(query) for instance in study.all_instances()
        )


@dataclass(eq=False)
class _Waiting:
    """An instance waiting in :class:`_Batches`; ``wake`` is set when its batch is done, or when its thread may lead."""

    item: SendItem
    reason: str = "not sent: the thread sending it stopped"
    taken: bool = False
    done: bool = False
    wake: threading.Event = field(default_factory=threading.Event)


class _Batches:
    """Instances on their way to one archive, sent in batches of the sender's limits, ``workers`` batches at once.

    It has no thread of its own: the threads waiting for their instances do the
    sending. Whenever fewer than ``workers`` requests are out, a thread whose
    instance still waits takes the oldest waiting instances, as many as
    :attr:`~dicomtrolley.roles.Sender.batch_limits` allow, and sends them in one
    call of the sender. So an instance goes at once while the archive keeps up,
    and instances gather into full batches while it does not. The sender's
    summary names each failed instance by its SOPInstanceUID, and so each
    waiting thread learns the fate of its own. Each thread sleeps on an event
    of its own: a request that ends wakes the threads of its batch and the
    thread of the oldest instance still waiting, not every thread.
    """

    def __init__(self, sender: Sender, workers: int) -> None:
        self._sender = sender
        self._limits = sender.batch_limits
        self._free = workers
        self._waiting: deque[_Waiting] = deque()
        self._lock = threading.Lock()

    def send(self, item: SendItem) -> str:
        """Send ``item`` in a batch; ``""`` once the archive stored it, else the reason it did not."""
        waiting = _Waiting(item)
        with self._lock:
            self._waiting.append(waiting)
        try:
            while True:
                with self._lock:
                    if waiting.done:
                        return waiting.reason
                    batch = self._start() if not waiting.taken and self._free else None
                    if batch is None:
                        waiting.wake.clear()  # under the lock: a wake-up set after this is not lost
                if batch is None:
                    waiting.wake.wait()
                else:
                    self._send(batch)
        finally:
            with self._lock:
                if not waiting.taken:  # a send of others' instances raised: this one is not sent either
                    self._waiting.remove(waiting)

    def _start(self) -> list[_Waiting]:
        """Take a request slot and the next batch; wake the next thread to lead if a slot is still free."""
        self._free -= 1
        batch = self._take()
        if self._free and self._waiting:
            self._waiting[0].wake.set()
        return batch

    def _send(self, batch: list[_Waiting]) -> None:
        """Send ``batch``, then give its slot back: wake its threads, and the oldest waiting instance's to lead."""
        try:
            self._post(batch)
        finally:
            with self._lock:
                self._free += 1
                for each in batch:
                    each.done = True
                    each.wake.set()
                if self._waiting:
                    self._waiting[0].wake.set()

    def _take(self) -> list[_Waiting]:
        """The oldest waiting instances, as many as fit in one batch (one at least)."""
        batch: list[_Waiting] = []
        size = 0
        while self._waiting and not self._limits.closes(len(batch), size, self._waiting[0].item.size):
            waiting = self._waiting.popleft()
            waiting.taken = True
            batch.append(waiting)
            size += waiting.item.size
        return batch

    def _post(self, batch: list[_Waiting]) -> None:
        # Each item holds the open file it was collected from (a download's part: an io.IOBase).
        streams = cast("list[io.IOBase]", [waiting.item.stream for waiting in batch])
        summary = self._sender.send(streams, on_error="collect", progress=False)
        reasons = {failure.sop_instance_uid: failure.reason for failure in summary.failures}
        for waiting in batch:
            waiting.reason = reasons.get(waiting.item.sop_instance_uid, "")
        logger.debug("Sent %d instances to %r in one call: %s", len(batch), self._sender, summary)


class _Budget:
    """What is handed over to one destination and not yet sent: at most ``size`` bytes in ``parts`` instances.

    Shared by every download sending there, so that memory stays bounded however many studies are in flight.
    """

    def __init__(self, size: int, parts: int) -> None:
        self.size = size
        self.parts = parts
        self._used = 0
        self._count = 0
        self._changed = threading.Condition()

    def take(self, size: int) -> None:
        """Wait until ``size`` more bytes fit (an instance alone always fits), and count them."""
        with self._changed:
            self._changed.wait_for(
                lambda: not self._count or (self._count < self.parts and self._used + size <= self.size)
            )
            self._used += size
            self._count += 1

    def give(self, size: int) -> None:
        """``size`` bytes were sent (or failed): they no longer count."""
        with self._changed:
            self._used -= size
            self._count -= 1
            self._changed.notify_all()


class _Handover:
    """One download's parts, sent on the destination's shared threads, within the destination's budget."""

    def __init__(self, pool: ThreadPoolExecutor, budget: _Budget, sink: PartSink,
                 failures: list[FetchFailure], ended: Callable[[], None]) -> None:
        self._pool = pool
        self._budget = budget
        self._sink = sink
        self._failures = failures
        self._ended = ended
        self._pending: list[tuple[InstancePart, Future[None]]] = []

    def __enter__(self) -> PartSink:
        return self

    def __call__(self, part: InstancePart) -> None:
        if part.size > HANDOVER_BYTES:
            self._sink(part)  # sent from where it was spooled; the fetching thread waits for it
            return
        copy = detached(part)  # the downloader closes its part once this returns
        self._budget.take(copy.size)
        future = self._pool.submit(self._send, copy)
        self._pending.append((copy, future))

    def _send(self, part: InstancePart) -> None:
        try:
            self._sink(part)
        finally:
            part.close()
            self._budget.give(part.size)

    def __exit__(self, *exc: object) -> None:
        wait([future for _, future in self._pending])
        try:
            for part, future in self._pending:
                error = future.exception()
                if error is not None and not isinstance(error, Exception):
                    raise error  # KeyboardInterrupt, SystemExit: not a failure of one instance
                if error is not None:
                    target = part.reference or part.source or StudyReference("unknown")
                    self._failures.append(FetchFailure(target, error))
        finally:
            self._pending.clear()
            self._ended()


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
