"""Download over DIMSE: C-GET and C-MOVE (PS3.4 Annex C), with pynetdicom.

Both ask a server to send instances as C-STORE sub-operations. C-GET sends
them back on the same association, so the client must propose every storage
SOP class it wants, in the SCP role, within the 128 presentation contexts an
association allows. C-MOVE sends them over a new association to a
destination the server already knows, so the client runs a Storage SCP for
the duration of the download.

Each instance reaches the sink as it was sent: the file meta information
pynetdicom builds for it followed by the dataset bytes, never decoded and
re-encoded (:mod:`dicomtrolley._retrieve_receiver`). Targets are fetched one
after the other on associations from the peer's pool, which later fetches
reuse (:mod:`dicomtrolley._associations`);
the counts of completed, failed and warning sub-operations of the last
:meth:`~dicomtrolley.core.Downloader.fetch` are kept in ``last_suboperations``.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import KW_ONLY, dataclass
from functools import cached_property, lru_cache, partial
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicomtrolley._associations import Handlers, Proposal
from dicomtrolley._dimse import (
    RETRIEVE_LEVELS,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
    DIMSEPeer,
    check_ae_title,
    status_category,
    status_text,
)
from dicomtrolley._get_contexts import DEFAULT_STORAGE_CLASSES, plan_contexts, storage_contexts
from dicomtrolley._get_contexts import IMAGE_STORAGE as IMAGE_STORAGE
from dicomtrolley._get_contexts import MAX_PRESENTATION_CONTEXTS as MAX_PRESENTATION_CONTEXTS
from dicomtrolley._get_contexts import OTHER_STORAGE as OTHER_STORAGE
from dicomtrolley._retrieve_receiver import STORE_FAILED as STORE_FAILED
from dicomtrolley._retrieve_receiver import Receiver, Taken, accept_senders_syntax, ends_retrieve
from dicomtrolley.core import (
    DICOMObjectLevels,
    FetchFailure,
    InstanceReference,
    PartSink,
    Reference,
    SeriesReference,
)
from dicomtrolley.dicom_qr import DICOMQR, FIND_PROPOSAL
from dicomtrolley.exceptions import DICOMTrolleyError, DIMSEError
from dicomtrolley.roles import Downloader, ProfileParts

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext

logger = logging.getLogger(__name__)

_STUDIES_PER_FIND = 64  # UIDs in one C-FIND's list matching


def get_storage_contexts(sop_classes: Sequence[str] = DEFAULT_STORAGE_CLASSES) -> list[PresentationContext]:
    """The storage presentation contexts a C-GET proposes for ``sop_classes`` (127 at most).

    With the C-GET context that makes at most the 128 an association allows;
    see :mod:`dicomtrolley._get_contexts` for how they are shared out.
    """
    return storage_contexts(sop_classes)


MOVE_PROPOSAL = Proposal(
    ((STUDY_ROOT_MOVE, ()), *FIND_PROPOSAL.contexts), extended=FIND_PROPOSAL.extended, needs=STUDY_ROOT_MOVE
)
"""A C-MOVE association: the move context and, so that it carries searches too, C-FIND's (the
instances come on associations of their own)."""


def get_proposal(sop_classes: Sequence[str]) -> Proposal:
    """What a C-GET association for studies holding ``sop_classes`` is opened with, and pooled under.

    The C-GET context, C-FIND's (so that one association per worker carries
    its searches and the C-FIND for SOPClassesInStudy too), then storage
    contexts shaped as :func:`get_storage_contexts` does, with the SCP role
    for each of their classes. Studies whose classes are a subset of an open
    association's get, while there are few classes, the very same contexts for
    each class, so that association covers them.
    """
    budget = MAX_PRESENTATION_CONTEXTS - 2
    storage = tuple((sop_class, tuple(syntaxes)) for sop_class, *syntaxes in plan_contexts(sop_classes, budget))
    return Proposal(
        ((STUDY_ROOT_GET, ()), *FIND_PROPOSAL.contexts, *storage),
        scp_roles=tuple(dict.fromkeys(c for c, _ in storage)),
        extended=FIND_PROPOSAL.extended,
        needs=STUDY_ROOT_GET,
    )


ANY_GET_PROPOSAL = Proposal(((STUDY_ROOT_GET, ()),), needs=STUDY_ROOT_GET)
"""Covered by every C-GET association, whatever storage contexts it has."""


@lru_cache(maxsize=256)
def _alone(sop_class: str) -> Proposal:
    """The C-GET proposal of a study of ``sop_class`` alone."""
    return get_proposal([sop_class])


@lru_cache(maxsize=64)
def takes_each_class_whole(proposal: Proposal) -> bool:
    """True when every SOP class ``proposal`` takes has the contexts a study of that class alone would get.

    Such an association receives an instance of any of its classes exactly as
    one opened for that instance's study would (in its stored syntax when
    proposed), so a C-GET may be tried on it before the study's classes are
    known: an instance of a class it lacks fails, and the study is retrieved
    again on one shaped for it. The broad default proposal shares contexts
    among syntaxes, so it does not qualify.
    """
    return bool(proposal.scp_roles) and all(proposal.covers(_alone(sop_class)) for sop_class in proposal.scp_roles)


@dataclass(frozen=True)
class SubOperations:
    """How a C-GET or C-MOVE went, in the server's words: the final response's counts."""

    completed: int = 0
    failed: int = 0
    warning: int = 0

    def __add__(self, other: SubOperations) -> SubOperations:
        return SubOperations(
            self.completed + other.completed, self.failed + other.failed, self.warning + other.warning
        )

    def __str__(self) -> str:
        return f"{self.completed} completed, {self.failed} failed, {self.warning} warning"


def retrieve_identifier(target: Reference) -> Dataset:
    """The C-GET/C-MOVE identifier of a study, series or instance: its level and UIDs."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = RETRIEVE_LEVELS[target.level]
    identifier.StudyInstanceUID = target.study_uid
    if isinstance(target, (SeriesReference, InstanceReference)):
        identifier.SeriesInstanceUID = target.series_uid
    if isinstance(target, InstanceReference):
        identifier.SOPInstanceUID = target.instance_uid
    return identifier


def describe(target: Reference) -> str:
    """``study 1.2.3``, ``series 1.2.4`` or ``instance 1.2.5``, for messages."""
    if isinstance(target, InstanceReference):
        return f"instance {target.instance_uid}"
    if isinstance(target, SeriesReference):
        return f"series {target.series_uid}"
    return f"study {target.study_uid}"


@dataclass(frozen=True)
class _Guess:
    """An idle association a retrieve may be tried on before its own proposals are worked out.

    One that covers ``proposal`` and whose own proposal ``fits``; if the try
    fails, the retrieve runs again the long way (:class:`_Plan`).
    """

    proposal: Proposal
    fits: Callable[[Proposal], bool]


@dataclass
class _Plan:
    """What a retrieve's associations must carry and the handlers bound on them.

    ``shape`` works out what the associations must carry and what a new one
    proposes (``wanted``, ``opening``), once, when first needed: for a C-GET
    that costs a C-FIND, which a ``guess`` that succeeds spares.
    """

    shape: Callable[[], tuple[Proposal, Proposal | None]]
    handlers: Handlers = ()
    guess: _Guess | None = None

    @cached_property
    def proposals(self) -> tuple[Proposal, Proposal | None]:
        """``(wanted, opening)``, worked out on first use."""
        return self.shape()

    @property
    def settled(self) -> bool:
        """True once the proposals are worked out: a guess then saves nothing."""
        return "proposals" in self.__dict__


@dataclass(frozen=True)
class _Outcome:
    """How one retrieve went: its counts, its error if it failed, and whether the server answered at all."""

    counts: SubOperations
    error: DIMSEError | None
    heard: bool
    refused: bool = False
    """The sink refused an instance: a failure of ours, which another try would not mend."""

    def answered(self) -> bool:
        """False when the association ended before any answer: a dropped, reused one is then replaced."""
        return self.heard


class _Retriever(DIMSEPeer, Downloader):
    """What C-GET and C-MOVE share: one association for all targets, one outcome rule."""

    operation = ""
    service = ""
    finest_level_needed = DICOMObjectLevels.STUDY
    last_suboperations = SubOperations()  # immutable; each fetch rebinds it on the instance

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host!r}, {self.port}, aet={self.aet!r}, aec={self.aec!r})"

    def report(self) -> dict[str, int]:
        """The sub-operation counts of the last fetch, as the server reported them."""
        counts = self.last_suboperations
        return {"completed": counts.completed, "failed": counts.failed, "warning": counts.warning}

    def fetch(
        self, targets: Sequence[Reference], sink: PartSink, *, stop_on_failure: bool = True
    ) -> list[FetchFailure]:
        """Retrieve each target in turn on the peer's pooled associations; see :meth:`Downloader.fetch`.

        A target fails when the server's final status is not Success, when any
        sub-operation failed (the sink's error is the cause), or when it matched
        nothing. If no association can be opened, every target left fails
        with that error. An error in the sink that is not a DICOMTrolleyError (a
        bug), or an OutputFolderError, aborts the association and is raised.
        """
        receiver = Receiver(sink, stop_on_failure)
        failures: list[FetchFailure] = []
        self.last_suboperations = SubOperations()
        with self._receiving(receiver, targets) as plan:
            for index, target in enumerate(targets):
                if stop_on_failure and failures:
                    break
                receiver.start(target)  # once per target: a second try of it must know what the sink took
                try:
                    outcome = self._run(plan, target, receiver)
                except DIMSEError as refused:
                    failures.extend(FetchFailure(left, refused) for left in targets[index:])
                    break
                self.last_suboperations += outcome.counts
                if outcome.error is not None:
                    logger.info("%s", outcome.error)
                    failures.append(FetchFailure(target, outcome.error))
        logger.info("%s on %s: %s sub-operations", self.operation, self.address, self.last_suboperations)
        return failures

    def _run(self, plan: _Plan, target: Reference, receiver: Receiver) -> _Outcome:
        """Retrieve one target on a pooled association: on the plan's guess first, while one may save work.

        A guess is tried only on an association already open and idle; if the
        server fails any of the target's sub-operations there, the target is
        retrieved again on an association that covers the plan's proposals,
        and that outcome stands (what the sink took on the try is not given to it twice).
        """
        retrieve = partial(self._retrieve, target=target, receiver=receiver)
        if plan.guess is not None and not plan.settled:
            tried = self.run_on_idle(
                plan.guess.proposal, plan.guess.fits, retrieve, answered=_Outcome.answered, handlers=plan.handlers
            )
            if tried is not None and (tried.error is None or tried.refused):
                return tried
            if tried is not None:
                logger.debug("%s; once more with contexts for every SOP class of the study", tried.error)
                receiver.again()
        wanted, opening = plan.proposals
        return self.run_pooled(wanted, retrieve, answered=_Outcome.answered, handlers=plan.handlers, opening=opening)

    @abstractmethod
    def _receiving(self, receiver: Receiver, targets: Sequence[Reference]) -> AbstractContextManager[_Plan]:
        """Make ready to receive ``targets`` for ``receiver``: what the associations need, and their handlers."""

    @abstractmethod
    def _send(self, assoc: Association, identifier: Dataset) -> Iterator[tuple[Dataset, Dataset | None]]:
        """Send the C-GET or C-MOVE request; yield its (status, identifier) responses."""

    def _retrieve(self, assoc: Association, *, target: Reference, receiver: Receiver) -> _Outcome:
        """Run one C-GET/C-MOVE; return its counts and, if it failed, why."""
        what = f"{self.operation} of {describe(target)} from {self.address}"
        final: Dataset | None = None
        last = Dataset()
        for status_ds, _identifier in self._send(assoc, retrieve_identifier(target)):
            if "Status" not in status_ds:
                break  # pynetdicom's sign of a DIMSE timeout or an aborted association
            last = status_ds
            if status_category(status_ds.Status) != "Pending":
                final = status_ds
                break
        taken = receiver.taken()
        fatal = next((e for e in taken.errors if ends_retrieve(e)), None)
        if fatal is not None:
            raise fatal
        counts = SubOperations(
            int(last.get("NumberOfCompletedSuboperations", taken.received) or 0),
            int(last.get("NumberOfFailedSuboperations", 0) or 0),
            int(last.get("NumberOfWarningSuboperations", 0) or 0),
        )
        logger.debug("%s: final status %s, %s sub-operations", what, final.Status if final else None, counts)
        error = self._judge(what, final, counts, taken)
        if error is not None and taken.errors:
            error.__cause__ = taken.errors[0]
        return _Outcome(counts, error, final is not None or bool(taken.received or taken.errors), bool(taken.errors))

    def _judge(
        self, what: str, final: Dataset | None, counts: SubOperations, taken: Taken
    ) -> DIMSEError | None:
        """The error of a retrieve, or None if everything it matched arrived."""
        if final is None:
            return DIMSEError(
                f"{what}: no answer within {self.dimse_timeout} s, or the association was aborted "
                f"({taken.received} instance(s) received)"
            )
        status = int(final.Status)
        if status_category(status) == "Success" and not counts.failed and not taken.errors:
            if counts.completed + counts.warning or taken.received:
                return None
            return DIMSEError(f"{what}: the server found nothing to send", status=status)
        text = f"{what} failed with status {status_text(final, self.service)} ({counts} sub-operations)"
        if taken.errors:
            text += f"; {len(taken.errors)} instance(s) not taken: {taken.errors[0]}"
        return DIMSEError(text + self._hint(status, counts, taken), status=status)

    def _hint(self, status: int, counts: SubOperations, taken: Taken) -> str:
        """What the user should check after a failure status; nothing by default."""
        return ""


class DICOMCGet(_Retriever):
    """Downloads studies, series and instances with C-GET.

    The server sends the instances back on the same association: nothing has
    to be configured on the server beyond allowing us to C-GET. The common
    storage presentation contexts are shaped for the SOP classes the targets'
    studies hold (a C-FIND for SOPClassesInStudy first), one context per
    transfer syntax where the 128-context limit allows, so every instance can
    arrive in its stored transfer syntax (:mod:`dicomtrolley._get_contexts`;
    :data:`IMAGE_STORAGE` and :data:`OTHER_STORAGE` when the server does not say).

    Associations are reused across fetches (:mod:`dicomtrolley._associations`):
    one covers a study when it proposed every context that study's classes
    get. A new association proposes the study's classes together with those
    of the previous one as long as that changes none of the study's contexts,
    so after a few studies of an export one association carries them all.
    While one such association waits idle, a study is first tried on it
    without the C-FIND for its classes (each class there has the contexts it
    would get alone, so an instance arrives as it would on an association of
    its own); if the server fails any of its sub-operations (a class the
    association lacks), the study is retrieved again the long way, and what
    arrived on the try is not handed to the sink twice.

    Parameters are those of :class:`~dicomtrolley._dimse.DIMSEPeer`.

    Attributes
    ----------
    last_suboperations : SubOperations
        Completed, failed and warning sub-operations of the last ``fetch``, summed over its targets.

    Examples
    --------
    >>> downloader = DICOMCGet("pacs.example", 104, aet="MYSCU", aec="PACS")  # doctest: +SKIP
    >>> for ds in downloader.datasets(["1.2.840.113619.2.1.1"]):  # doctest: +SKIP
    ...     print(ds.SOPInstanceUID)
    """

    operation = "C-GET"
    service = "get"
    _recent_classes: tuple[str, ...] = ()
    """The SOP classes the last association opened proposed; immutable, rebound on the instance."""

    def describe(self) -> ProfileParts:
        """``downloader = "c-get"`` and the peer's address; see :meth:`Downloader.describe`."""
        return ProfileParts({"downloader": "c-get", **self.profile_address()})

    @contextmanager
    def _receiving(self, receiver: Receiver, targets: Sequence[Reference]) -> Iterator[_Plan]:
        from pynetdicom import evt

        handlers = [(evt.EVT_C_STORE, receiver.on_store)]
        yield _Plan(partial(self._proposals, targets), handlers, _Guess(ANY_GET_PROPOSAL, takes_each_class_whole))

    def _proposals(self, targets: Sequence[Reference]) -> tuple[Proposal, Proposal]:
        """What the targets' associations must carry (their studies' classes) and what a new one proposes."""
        classes = self._sop_classes_of(targets) or list(DEFAULT_STORAGE_CLASSES)
        wanted = get_proposal(classes)
        widened = get_proposal([*classes, *self._recent_classes])
        opening = widened if widened.covers(wanted) else wanted
        self._recent_classes = tuple(opening.scp_roles)
        return wanted, opening

    def _send(self, assoc: Association, identifier: Dataset) -> Iterator[tuple[Dataset, Dataset | None]]:
        return assoc.send_c_get(identifier, STUDY_ROOT_GET)

    def _sop_classes_of(self, targets: Sequence[Reference]) -> list[str]:
        """The SOP classes the targets' studies hold, as a C-FIND for SOPClassesInStudy says; [] if unknown."""
        studies = sorted({target.study_uid for target in targets})
        finder = DICOMQR(**self.settings())  # same settings: the same pool of associations
        found: list[str] = []
        for start in range(0, len(studies), _STUDIES_PER_FIND):
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.StudyInstanceUID = studies[start:start + _STUDIES_PER_FIND]
            identifier.SOPClassesInStudy = ""
            try:
                rows = finder.c_find(identifier)
            except DIMSEError as error:
                logger.info("No SOPClassesInStudy from %s (%s); proposing the default contexts", self.address, error)
                return []
            for row in rows:
                value = row.get("SOPClassesInStudy")
                found += [str(uid) for uid in (value if isinstance(value, MultiValue) else [value]) if uid]
        logger.debug("SOP classes of %d study(ies) on %s: %s", len(studies), self.address, found)
        return found


@dataclass(eq=False, repr=False)
class DICOMCMove(_Retriever):
    """Downloads studies, series and instances with C-MOVE to a Storage SCP of our own.

    While :meth:`fetch` runs, a Storage SCP listens on ``destination_port``
    with the AE title ``destination_aet``, and every target is moved there.
    The server must already know that AE title with this machine's address
    and that port (in Orthanc: ``DicomModalities``); otherwise the move fails
    with 0xA801 (Orthanc: 0xC000) and the error says so.

    Parameters
    ----------
    host, port, aet, aec, acse_timeout, dimse_timeout, network_timeout
        As for :class:`~dicomtrolley._dimse.DIMSEPeer`.
    destination_port
        The port our Storage SCP listens on.
    destination_aet
        The move destination's AE title; defaults to ``aet``.
    listen_address
        The local address to listen on; ``""`` (default) means every interface,
        which a server on another machine needs.

    Attributes
    ----------
    last_suboperations : SubOperations
        Completed, failed and warning sub-operations of the last ``fetch``, summed over its targets.
    """

    operation = "C-MOVE"
    service = "move"

    _: KW_ONLY
    destination_port: int
    destination_aet: str | None = None
    listen_address: str = ""

    def __post_init__(self) -> None:
        """Check the settings; the move destination's AE title is ``aet`` unless given."""
        super().__post_init__()
        self.destination_port = int(self.destination_port)
        self.destination_aet = check_ae_title(self.destination_aet or self.aet, "destination_aet")

    @property
    def move_aet(self) -> str:
        """The AE title instances are moved to: ``destination_aet``, or ``aet`` when none was given."""
        return self.destination_aet or self.aet

    def describe(self) -> ProfileParts:
        """``downloader = "c-move"``, the peer's address and the move port; see :meth:`Downloader.describe`.

        Raises
        ------
        DICOMTrolleyError
            The move destination is named or bound apart from ``aet``, which a profile cannot say.
        """
        if self.destination_aet != self.aet or self.listen_address:
            raise DICOMTrolleyError(
                f"A profile cannot describe {self!r}: its move destination is named or bound apart from its AE title"
            )
        return ProfileParts({"downloader": "c-move", "move_port": self.destination_port, **self.profile_address()})

    def __repr__(self) -> str:
        return (
            f"DICOMCMove({self.host!r}, {self.port}, aet={self.aet!r}, aec={self.aec!r}, "
            f"destination_aet={self.destination_aet!r}, destination_port={self.destination_port})"
        )

    @contextmanager
    def _receiving(self, receiver: Receiver, targets: Sequence[Reference]) -> Iterator[_Plan]:
        from pynetdicom import ALL_TRANSFER_SYNTAXES, build_context, evt
        from pynetdicom.presentation import AllStoragePresentationContexts

        ae = self.application_entity()
        ae.supported_contexts = [
            build_context(str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
            for context in AllStoragePresentationContexts
        ]
        try:
            server = ae.start_server(
                (self.listen_address, self.destination_port),
                block=False,
                ae_title=self.destination_aet,
                evt_handlers=[
                    (evt.EVT_C_STORE, receiver.on_store),
                    (evt.EVT_CONN_OPEN, receiver.on_connection),
                    (evt.EVT_REQUESTED, accept_senders_syntax),
                ],
            )
        except OSError as error:
            raise DIMSEError(
                f"Cannot listen for C-MOVE on {self.listen_address or '*'}:{self.destination_port}: {error}"
            ) from error
        assert server is not None  # start_server(block=False) returns the running server
        try:
            yield _Plan(lambda: (MOVE_PROPOSAL, None))
        finally:
            receiver.close()
            for incoming in server.active_associations:
                if incoming.is_established:
                    logger.debug("Aborting the association %s still had open to us", incoming.requestor.ae_title)
                    incoming.abort()
            server.shutdown()

    def _send(self, assoc: Association, identifier: Dataset) -> Iterator[tuple[Dataset, Dataset | None]]:
        return assoc.send_c_move(identifier, self.move_aet, STUDY_ROOT_MOVE)

    def _hint(self, status: int, counts: SubOperations, taken: Taken) -> str:
        nobody_came = taken.connections == 0
        if status == 0xA801 or (status_category(status) == "Failure" and nobody_came and not counts.completed):
            return (
                f". The server sent nothing to {self.destination_aet!r} on port {self.destination_port}: "
                f"it must list the move destination AE title {self.destination_aet!r} with this "
                f"machine's host/IP and port {self.destination_port} in its configuration "
                "(Orthanc: DicomModalities)"
            )
        return ""
