"""What every DIMSE operation needs: associations, statuses, AE titles, SOP classes, timeouts.

The C-FIND searcher (:mod:`dicomtrolley.dicom_qr`) and the C-GET / C-MOVE
downloaders (:mod:`dicomtrolley.dimse_retrieve`) build on :class:`DIMSEPeer`:

- operations run on associations lent by the peer's pool
  (:mod:`dicomtrolley._associations`): kept open for the next operation that
  fits, released when idle, aborted on every path that raises (an exception,
  a timeout, Ctrl-C), so no server is left holding a half-used association;
  a reused association the peer dropped in the meantime is replaced by a
  fresh one without the caller noticing;
- a failure status, a refused association or a timeout raises
  :class:`~dicomtrolley.exceptions.DIMSEError` naming the status in hex and
  its meaning, never an empty result.

pynetdicom is an optional dependency (``pip install dicomtrolley[dimse]``):
this module imports without it and says what to install when a DIMSE object
is created.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydicom.dataset import Dataset

from dicomtrolley._associations import AssociationPool, Handlers, Proposal, discard_pool, pool_for
from dicomtrolley.core import DICOMObjectLevels
from dicomtrolley.exceptions import DICOMTrolleyError, DIMSEConnectionError, DIMSEError

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pynetdicom import AE
    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext

T = TypeVar("T")

DEFAULT_AET = "DICOMTROLLEY"
"""The calling AE title (ours) unless one is given."""

DEFAULT_AEC = "ANY-SCP"
"""The called AE title (the server's) unless one is given."""

DEFAULT_ACSE_TIMEOUT = 30.0
"""Seconds to open the TCP connection and to wait for the association to be accepted."""

DEFAULT_DIMSE_TIMEOUT = 300.0
"""Seconds to wait for each DIMSE message. pynetdicom's 30 s is too short for a
C-FIND over a big archive or a server that prepares a large study before its
first C-STORE."""

DEFAULT_NETWORK_TIMEOUT = 300.0
"""Seconds an association may stay silent before it is given up."""

MAX_PDU_SIZE = 1024 * 1024
"""The largest PDU we accept. Every PDU is a trip through pynetdicom's state
machine, so fewer, larger PDUs move images faster (see docs/performance.md)."""

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"

RETRIEVE_LEVELS: Mapping[DICOMObjectLevels, str] = {
    DICOMObjectLevels.STUDY: "STUDY",
    DICOMObjectLevels.SERIES: "SERIES",
    DICOMObjectLevels.INSTANCE: "IMAGE",
}
"""The QueryRetrieveLevel of each object level (DICOM calls instances IMAGE)."""

# ---------------------------------------------------------------- pynetdicom, optional


def require_pynetdicom() -> None:
    """Fail with a clear message when the optional DIMSE dependency is missing.

    Raises
    ------
    DICOMTrolleyError
        pynetdicom cannot be imported.
    """
    try:
        import pynetdicom  # noqa: F401 - optional dependency, checked when first needed
    except ImportError as error:
        raise DICOMTrolleyError(
            "DIMSE (C-FIND, C-GET, C-MOVE) needs pynetdicom: pip install 'dicomtrolley[dimse]'"
        ) from error


# ---------------------------------------------------------------- statuses


def status_meaning(status: int, service: str) -> str:
    """What a DIMSE status code means for a service ("find", "get" or "move").

    Parameters
    ----------
    status
        The (0000,0900) Status value.
    service
        Which table of PS3.4 to read it in ("store" too): codes such as 0xA801 only exist for some services.
    """
    from pynetdicom import status as statuses

    table: Mapping[int, tuple[str, str]] = {
        "find": statuses.QR_FIND_SERVICE_CLASS_STATUS,
        "get": statuses.QR_GET_SERVICE_CLASS_STATUS,
        "move": statuses.QR_MOVE_SERVICE_CLASS_STATUS,
        "store": statuses.STORAGE_SERVICE_CLASS_STATUS,
    }[service]
    category, meaning = table.get(status, (statuses.code_to_category(status), ""))
    return meaning or category


def status_category(status: int) -> str:
    """``"Success"``, ``"Pending"``, ``"Warning"``, ``"Failure"``, ``"Cancel"`` or ``"Unknown"``."""
    from pynetdicom.status import code_to_category

    return str(code_to_category(status))


def status_text(status_ds: Dataset, service: str) -> str:
    """``0xC000 (Unable to Process)``, plus the server's ErrorComment if it sent one."""
    status = int(status_ds.Status)
    text = f"0x{status:04X} ({status_meaning(status, service)})"
    comment = status_ds.get("ErrorComment")
    if comment:
        text += f": {comment}"
    return text


# ---------------------------------------------------------------- the connection


@dataclass(eq=False, repr=False)
class DIMSEPeer:
    """Where a DIMSE server listens, who we are to it, and how long to wait.

    The base of the searcher, the downloaders and the C-STORE sender: it
    runs their operations on associations from its pool (:attr:`associations`),
    which every DIMSE object of this process with the same address, titles
    and timeouts shares.

    Parameters
    ----------
    host, port
        The server's DICOM address.
    aet
        Our (calling) AE title, which the server may have to know.
    aec
        The server's (called) AE title.
    acse_timeout
        Seconds to connect and to have the association accepted or rejected.
    dimse_timeout
        Seconds to wait for each DIMSE message; ``None`` waits forever.
    network_timeout
        Seconds an association may stay silent before it is given up.

    A dataclass, so that a subclass adding settings (:class:`~dicomtrolley.dimse_retrieve.DICOMCMove`)
    declares only those, as keyword-only fields, and its constructor takes these too.
    """

    host: str
    port: int
    aet: str = DEFAULT_AET
    aec: str = DEFAULT_AEC
    _: KW_ONLY
    acse_timeout: float = DEFAULT_ACSE_TIMEOUT
    dimse_timeout: float | None = DEFAULT_DIMSE_TIMEOUT
    network_timeout: float | None = DEFAULT_NETWORK_TIMEOUT

    def __post_init__(self) -> None:
        """Check the titles and say what to install when pynetdicom is missing."""
        require_pynetdicom()
        self.port = int(self.port)
        self.aet = check_ae_title(self.aet, "aet")
        self.aec = check_ae_title(self.aec, "aec")

    def settings(self) -> dict[str, Any]:
        """This peer's constructor arguments: another peer on the same server, as the same caller, takes them."""
        return {
            "host": self.host, "port": self.port, "aet": self.aet, "aec": self.aec, "acse_timeout": self.acse_timeout,
            "dimse_timeout": self.dimse_timeout, "network_timeout": self.network_timeout,
        }

    def profile_address(self) -> dict[str, Any]:
        """The profile fields of this peer's address, titles and timeouts (a profile has one read timeout).

        Raises
        ------
        DICOMTrolleyError
            Its DIMSE and network timeouts differ, which a profile cannot say.
        """
        if self.dimse_timeout != self.network_timeout:
            raise DICOMTrolleyError(f"A profile cannot describe {self!r}: its DIMSE and network timeouts differ")
        return {
            "host": self.host, "port": self.port, "aet": self.aet, "aec": self.aec,
            "connect_timeout": self.acse_timeout, "read_timeout": self.dimse_timeout,
        }

    @property
    def address(self) -> str:
        """``AEC@host:port``, for messages."""
        return f"{self.aec}@{self.host}:{self.port}"

    @property
    def associations(self) -> AssociationPool:
        """The pool of open associations to this peer, shared with every peer object of the same settings.

        Set ``associations.keep = 0`` to open an association per operation
        (a server that mishandles a second operation on one association), or
        change ``associations.idle_timeout``; :meth:`close` releases the idle ones.
        """
        settings = self.settings()
        return pool_for(tuple(settings.items()), lambda: AssociationPool(
            DIMSEPeer(**settings).open_for, name=self.address))

    def close(self) -> None:
        """Release the idle associations to this peer now, rather than when idle or at exit."""
        discard_pool(tuple(self.settings().items()))

    def open_for(self, proposal: Proposal) -> Association:
        """Open a fresh association for ``proposal`` (the pool's opener).

        Raises
        ------
        DIMSEError
            As :meth:`open_association`, or the peer did not accept the context the proposal ``needs``.
        """
        assoc = self.open_association(
            self.application_entity(), proposal.presentation_contexts(), ext_neg=proposal.negotiation_items()
        )
        accepted = {str(context.abstract_syntax) for context in assoc.accepted_contexts}
        if proposal.needs is None or proposal.needs in accepted:
            return assoc
        self.close_association(assoc, clean=True)
        from pydicom.uid import UID

        raise DIMSEError(
            f"{self.address} (calling AE title {self.aet!r}) accepted the association but not "
            f"{UID(proposal.needs).name}: it does not serve that to us"
        )

    def run_pooled(
        self,
        proposal: Proposal,
        operation: Callable[[Association], T],
        *,
        answered: Callable[[T], bool],
        handlers: Handlers = (),
        opening: Proposal | None = None,
    ) -> T:
        """Run ``operation`` on a pooled association that covers ``proposal``, with ``handlers`` bound.

        When a reused association gets no answer at all (``answered`` says),
        the peer most likely dropped it while it was idle, perhaps just as it
        was lent: the operation runs once more on a freshly opened association,
        whose outcome stands whatever it is. A new association is opened with
        ``opening`` (covering ``proposal``) when given.

        Raises
        ------
        DIMSEError
            No association could be opened.
        """
        with self.associations.lease(proposal, handlers, opening=opening) as lease:
            outcome = operation(lease.association)
            if not answered(outcome):
                lease.association.abort()  # over, though pynetdicom may not say so yet: never lent again
        if not lease.reused or answered(outcome):
            return outcome
        logger.info("%s answered nothing on a reused association; once more on a new one", self.address)
        with self.associations.lease(proposal, handlers, fresh=True, opening=opening) as lease:
            return operation(lease.association)

    def run_on_idle(
        self,
        proposal: Proposal,
        fits: Callable[[Proposal], bool],
        operation: Callable[[Association], T],
        *,
        answered: Callable[[T], bool],
        handlers: Handlers = (),
    ) -> T | None:
        """Run ``operation`` on an idle pooled association that covers ``proposal`` and ``fits``, if one waits.

        Nothing is opened: None when no idle association fits, or when the one
        lent answered nothing (the peer dropped it; it is aborted). The caller
        then goes the long way.
        """
        with self.associations.lease_idle(proposal, fits, handlers) as lease:
            if lease is None:
                return None
            outcome = operation(lease.association)
            if not answered(outcome):
                lease.association.abort()
                return None
        return outcome

    def application_entity(self) -> AE:
        """A pynetdicom AE with our title and timeouts; one per association, so associations never share state."""
        from pynetdicom import AE

        ae = AE(ae_title=self.aet)
        ae.acse_timeout = self.acse_timeout
        ae.connection_timeout = self.acse_timeout
        ae.dimse_timeout = self.dimse_timeout
        ae.network_timeout = self.network_timeout
        ae.maximum_pdu_size = MAX_PDU_SIZE
        return ae

    def open_association(
        self,
        ae: AE,
        contexts: Sequence[PresentationContext],
        *,
        ext_neg: Sequence[Any] = (),
        evt_handlers: Sequence[tuple[Any, Any]] = (),
    ) -> Association:
        """Request an association; pair every call with :meth:`close_association`.

        Raises
        ------
        DIMSEError
            The connection failed, or the server rejected or aborted the association.
        """
        from pynetdicom import evt

        connected = threading.Event()

        def on_open(event: Any) -> None:
            _no_delay(event)
            connected.set()

        assoc = ae.associate(
            self.host,
            self.port,
            contexts=list(contexts),
            ae_title=self.aec,
            max_pdu=MAX_PDU_SIZE,
            ext_neg=list(ext_neg) or None,
            evt_handlers=[(evt.EVT_CONN_OPEN, on_open), *evt_handlers],
        )
        if not assoc.is_established:
            raise self._not_established(assoc, connected.is_set())
        _unless_logged(assoc)
        return assoc

    @staticmethod
    def close_association(assoc: Association, *, clean: bool) -> None:
        """Release the association after finished work (``clean``); abort it otherwise.

        Aborting stops a server in the middle of sending at once; releasing
        would first wait for the rest.
        """
        if not assoc.is_established:
            return  # the peer aborted it, or pynetdicom did after a timeout
        if clean:
            assoc.release()
        else:
            assoc.abort()

    @contextmanager
    def associate(
        self,
        ae: AE,
        contexts: Sequence[PresentationContext],
        *,
        ext_neg: Sequence[Any] = (),
        evt_handlers: Sequence[tuple[Any, Any]] = (),
    ) -> Iterator[Association]:
        """Open an association for the block; release it after, abort it if the block raises."""
        assoc = self.open_association(ae, contexts, ext_neg=ext_neg, evt_handlers=evt_handlers)
        clean = False
        try:
            yield assoc
            clean = True
        finally:
            self.close_association(assoc, clean=clean)

    def _not_established(self, assoc: Association, connected: bool) -> DIMSEError:
        who = f"{self.address} (calling AE title {self.aet!r})"
        answer = assoc.acceptor.primitive
        if assoc.is_rejected and answer is not None:
            return DIMSEError(
                f"{who} rejected the association: {answer.result_str}, by the {answer.source_str}: "
                f"{answer.reason_str}. Check the called AE title and that the server knows ours."
            )
        if not connected:
            return DIMSEConnectionError(
                f"Cannot connect to {self.host}:{self.port} for {self.aec}: "
                f"nothing listens there, or it is unreachable within {self.acse_timeout} s"
            )
        return DIMSEError(
            f"{who} did not accept the association: it closed the connection or aborted (some "
            "servers reject this way; check the called AE title and that the server knows ours), sent "
            f"no answer within {self.acse_timeout} s, or accepted none of the proposed presentation contexts"
        )


def _no_delay(event: Any) -> None:
    """Send each PDU at once (TCP_NODELAY): with Nagle's algorithm every small message
    (a C-STORE, or the C-STORE response of a C-GET) could wait ~40 ms for an ACK."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_MESSAGE_EVENTS = ("EVT_DIMSE_RECV", "EVT_DIMSE_SENT", "EVT_PDU_RECV", "EVT_PDU_SENT")


def _unless_logged(assoc: Association) -> None:
    """Unbind pynetdicom's own logging of every message and PDU while its logger would drop it.

    pynetdicom binds these on every association, and they format each message
    whatever the level: for a C-GET of small instances, a C-STORE request and
    its response each. Someone debugging with ``logging.getLogger("pynetdicom")``
    at DEBUG keeps them.
    """
    if logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
        return
    from pynetdicom import evt

    for name in _MESSAGE_EVENTS:
        event = getattr(evt, name)
        bound = cast("list[tuple[Callable[..., Any], Any]]", assoc.get_handlers(event))  # a notification event's
        for handler, _args in list(bound):
            if getattr(handler, "__module__", "").startswith("pynetdicom."):
                assoc.unbind(event, handler)


def check_ae_title(title: str, what: str) -> str:
    """Return ``title`` if it is a valid AE title (1-16 printable ASCII characters, no backslash).

    Raises
    ------
    DICOMTrolleyError
        It is not.
    """
    stripped = title.strip() if isinstance(title, str) else ""
    if (
        not stripped
        or len(title) > 16
        or "\\" in title
        or not all(" " <= char <= "~" for char in title)
    ):
        raise DICOMTrolleyError(
            f"{what}={title!r} is not an AE title: 1 to 16 printable ASCII characters, no backslash"
        )
    return stripped
