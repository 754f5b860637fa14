"""DICOM query/retrieve over DIMSE (PS3.4 Annex C): the C-FIND searcher and what DIMSE needs everywhere.

:class:`DICOMQR` searches with C-FIND in the Study Root information model and
returns the same study tree as the other searchers. The C-GET and C-MOVE
downloaders live in :mod:`dicomtrolley.dimse_retrieve` and share this
module's connection handling:

- an association is released when its work is done and aborted on every
  other path (an exception, a timeout, Ctrl-C), so no server is left holding
  a half-used association;
- a failure status, a refused association or a timeout raises
  :class:`~dicomtrolley.exceptions.DIMSEError` naming the status in hex and
  its meaning, never an empty result.

pynetdicom is an optional dependency (``pip install dicomtrolley[dimse]``):
this module imports without it and says what to install when a DIMSE object
is created.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicomtrolley._tree import attribute_level, tree_from_datasets
from dicomtrolley.core import DICOMObjectLevels, ExtendedQuery, Query, QueryLevels, Searcher, Study
from dicomtrolley.exceptions import DICOMTrolleyError, DIMSEError, UnSupportedParameterError

if TYPE_CHECKING:
    from pynetdicom import AE
    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext

logger = logging.getLogger(__name__)

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
machine: with a server that sends 128 KB PDUs, a C-GET of 512 KB images ran
25% faster than with pynetdicom's 16 KB default."""

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"

RETRIEVE_LEVELS: Mapping[DICOMObjectLevels, str] = {
    DICOMObjectLevels.STUDY: "STUDY",
    DICOMObjectLevels.SERIES: "SERIES",
    DICOMObjectLevels.INSTANCE: "IMAGE",
}
"""The QueryRetrieveLevel of each object level (DICOM calls instances IMAGE)."""

_LEVEL_ORDER = (DICOMObjectLevels.STUDY, DICOMObjectLevels.SERIES, DICOMObjectLevels.INSTANCE)

RETURN_KEYS: Mapping[DICOMObjectLevels, tuple[str, ...]] = {
    DICOMObjectLevels.STUDY: (
        "StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "StudyDescription",
        "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    ),
    DICOMObjectLevels.SERIES: (
        "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
    ),
    DICOMObjectLevels.INSTANCE: ("SOPInstanceUID", "SOPClassUID", "InstanceNumber"),
}
"""What a C-FIND asks the server to return at each level, besides the matching keys.

C-FIND returns only the attributes it is asked for; a query at a level asks
for the keys of that level and of every level above it.
"""


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
        Which table of PS3.4 to read it in: codes such as 0xA801 only exist for some services.
    """
    from pynetdicom import status as statuses

    table: Mapping[int, tuple[str, str]] = {
        "find": statuses.QR_FIND_SERVICE_CLASS_STATUS,
        "get": statuses.QR_GET_SERVICE_CLASS_STATUS,
        "move": statuses.QR_MOVE_SERVICE_CLASS_STATUS,
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


class DIMSEPeer:
    """Where a DIMSE server listens, who we are to it, and how long to wait.

    The base of the searcher and the downloaders: it opens associations and
    guarantees they are released or aborted.

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
    """

    def __init__(
        self,
        host: str,
        port: int,
        aet: str = DEFAULT_AET,
        aec: str = DEFAULT_AEC,
        *,
        acse_timeout: float = DEFAULT_ACSE_TIMEOUT,
        dimse_timeout: float | None = DEFAULT_DIMSE_TIMEOUT,
        network_timeout: float | None = DEFAULT_NETWORK_TIMEOUT,
    ) -> None:
        require_pynetdicom()
        self.host = host
        self.port = int(port)
        self.aet = check_ae_title(aet, "aet")
        self.aec = check_ae_title(aec, "aec")
        self.acse_timeout = acse_timeout
        self.dimse_timeout = dimse_timeout
        self.network_timeout = network_timeout

    @property
    def address(self) -> str:
        """``AEC@host:port``, for messages."""
        return f"{self.aec}@{self.host}:{self.port}"

    def application_entity(self) -> AE:
        """A pynetdicom AE with our title and timeouts; one per operation, so calls never share state."""
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
        assoc = ae.associate(
            self.host,
            self.port,
            contexts=list(contexts),
            ae_title=self.aec,
            max_pdu=MAX_PDU_SIZE,
            ext_neg=list(ext_neg) or None,
            evt_handlers=[(evt.EVT_CONN_OPEN, lambda _event: connected.set()), *evt_handlers],
        )
        if not assoc.is_established:
            raise self._not_established(assoc, connected.is_set())
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
            return DIMSEError(
                f"Cannot connect to {self.host}:{self.port} for {self.aec}: "
                f"nothing listens there, or it is unreachable within {self.acse_timeout} s"
            )
        return DIMSEError(
            f"{who} did not accept the association: it closed the connection or aborted (some "
            "servers reject this way; check the called AE title and that the server knows ours), sent "
            f"no answer within {self.acse_timeout} s, or accepted none of the proposed presentation contexts"
        )


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


# ---------------------------------------------------------------- C-FIND


class DICOMQR(DIMSEPeer, Searcher):
    """Searches a DICOM server with C-FIND (Study Root, STUDY / SERIES / IMAGE level).

    Each call opens one association, sends one C-FIND and releases it. Every
    :class:`~dicomtrolley.core.Query` field is sent as a matching key; a
    field C-FIND cannot express raises
    :class:`~dicomtrolley.exceptions.UnSupportedParameterError` instead of
    widening the search. Relational queries are proposed, so a SERIES or
    IMAGE query without a StudyInstanceUID works on servers that allow it.

    Parameters are those of :class:`DIMSEPeer`.

    Examples
    --------
    >>> searcher = DICOMQR("pacs.example", 104, aet="MYSCU", aec="PACS")  # doctest: +SKIP
    >>> searcher.find_studies(Query(PatientID="PAT001"))  # doctest: +SKIP
    """

    def __repr__(self) -> str:
        return f"DICOMQR({self.host!r}, {self.port}, aet={self.aet!r}, aec={self.aec!r})"

    def find_studies(self, query: Query) -> list[Study]:
        """Every study matching ``query``, with series and instances down to its query level.

        Raises
        ------
        UnSupportedParameterError
            The query uses a field C-FIND cannot send at its level.
        DIMSEError
            The association failed or the server answered with a failure status.
        """
        rows = self.send_c_find(query)
        logger.debug("C-FIND at %s level on %s: %d match(es)", query.query_level.value, self.address, len(rows))
        return tree_from_datasets(rows, query.query_level, source=f"C-FIND {self.address}")

    def c_find(self, identifier: Dataset) -> list[Dataset]:
        """Send one Study Root C-FIND and return the identifiers of every match.

        Parameters
        ----------
        identifier
            The query: QueryRetrieveLevel, matching keys and (empty) return keys.

        Raises
        ------
        DIMSEError
            A failure, cancel or warning status (after a cancel or a warning the
            answer is incomplete: Orthanc cancels at its LimitFindResults), a
            timeout, or an aborted association.
        """
        from pynetdicom import build_context
        from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

        relational = SOPClassExtendedNegotiation()
        relational.sop_class_uid = STUDY_ROOT_FIND
        relational.service_class_application_information = b"\x01"
        what = f"C-FIND at {identifier.QueryRetrieveLevel} level on {self.address}"
        rows: list[Dataset] = []
        final: Dataset | None = None
        ae = self.application_entity()
        with self.associate(ae, [build_context(STUDY_ROOT_FIND)], ext_neg=[relational]) as assoc:
            for status_ds, row in assoc.send_c_find(identifier, STUDY_ROOT_FIND):
                if "Status" not in status_ds:
                    raise DIMSEError(
                        f"{what}: no answer within {self.dimse_timeout} s, or the association was aborted"
                    )
                if status_category(status_ds.Status) != "Pending":
                    final = status_ds
                    break
                if row is not None:
                    rows.append(row)
        if final is None:
            raise DIMSEError(f"{what}: the server sent no final status")
        status = int(final.Status)
        if status_category(status) != "Success":
            raise DIMSEError(
                f"{what} failed with status {status_text(final, 'find')}"
                + _hint_for_find(status, identifier, len(rows)),
                status=status,
            )
        return rows

    def send_c_find(self, query: Query) -> list[Dataset]:
        """The C-FIND answer to ``query`` as flat identifier Datasets, not yet a tree (4.x name).

        Raises
        ------
        UnSupportedParameterError, DIMSEError
            As :meth:`find_studies`.
        """
        return self.c_find(find_identifier(query))

    @staticmethod
    def parse_c_find_response(responses: Sequence[Dataset]) -> list[Study]:
        """Group C-FIND identifiers into the study tree, down to the finest level they name (4.x name).

        Raises
        ------
        MalformedResponseError
            A row lacks a UID its level needs.
        """
        level = QueryLevels.STUDY
        if any("SOPInstanceUID" in row for row in responses):
            level = QueryLevels.INSTANCE
        elif any("SeriesInstanceUID" in row for row in responses):
            level = QueryLevels.SERIES
        return tree_from_datasets(responses, level, source="C-FIND")


class DICOMQuery(ExtendedQuery):
    """A query with the matching fields 4.x's DICOM-QR searcher added (4.x name).

    Any :class:`~dicomtrolley.core.Query` works with :class:`DICOMQR`; this
    one also matches ProtocolName and StudyID.
    """

    ProtocolName: str = ""
    StudyID: str = ""

    def as_dataset(self) -> Dataset:
        """The C-FIND identifier this query sends."""
        return find_identifier(self)


def _hint_for_find(status: int, identifier: Dataset, matches: int) -> str:
    """Say what a failed C-FIND most likely means for the user."""
    if status_category(status) in ("Cancel", "Warning"):
        return (
            f" after {matches} match(es): the answer is incomplete (the server may cap how many "
            "results it returns); narrow the query"
        )
    if identifier.QueryRetrieveLevel != "STUDY" and not identifier.get("StudyInstanceUID"):
        return (
            ". Servers that only allow hierarchical queries need a StudyInstanceUID "
            "below the STUDY level"
        )
    return ""


def find_identifier(query: Query) -> Dataset:
    """The C-FIND identifier for ``query``: level, matching keys, return keys.

    Raises
    ------
    UnSupportedParameterError
        ``limit``/``offset`` (C-FIND cannot page), ``include_fields=["all"]``
        (C-FIND returns only what it names), or a field that belongs below the
        query level (e.g. ``Modality`` in a STUDY query; use ``ModalitiesInStudy``).
    """
    level = query.query_level.object_level
    if query.limit is not None or query.offset:
        raise UnSupportedParameterError(
            "C-FIND cannot page: limit and offset are not supported by DICOMQR"
        )
    if "all" in query.include_fields:
        raise UnSupportedParameterError(
            "C-FIND returns only the attributes it asks for: name them in include_fields instead of 'all'"
        )
    matching = query.attributes()
    for keyword in matching:
        key_level = attribute_level(keyword)
        if key_level < level:
            raise UnSupportedParameterError(
                f"{keyword} is a {key_level.name} attribute; a C-FIND at {query.query_level.value} level "
                f"cannot match on it (query at {key_level.name} level"
                + (", or use ModalitiesInStudy)" if keyword == "Modality" else ")")
            )
    identifier = Dataset()
    identifier.QueryRetrieveLevel = RETRIEVE_LEVELS[level]
    return_keys = [key for one in _LEVEL_ORDER if one >= level for key in RETURN_KEYS[one]]
    for name in [*return_keys, *query.include_fields]:
        _add_empty(identifier, name)
    for keyword, value in matching.items():
        # A Query lists UIDs with commas, as QIDO-RS does; C-FIND lists values with backslashes.
        setattr(identifier, keyword, value.split(",") if keyword.endswith("UID") and "," in value else value)
    date_range = query.study_date_range()
    if date_range:
        identifier.StudyDate = date_range
    if not all(value.isascii() for value in matching.values()):
        identifier.SpecificCharacterSet = "ISO_IR 192"
    return identifier


def _add_empty(identifier: Dataset, name: str) -> None:
    """Ask for an attribute by keyword or 8-hex tag: an empty element is a return key."""
    number = tag_for_keyword(name)
    tag = Tag(number if number is not None else int(name, 16))
    if tag in identifier:
        return
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = "UN"  # a private tag: the server knows its VR, we need none to ask for it
    identifier.add_new(tag, vr, None)
