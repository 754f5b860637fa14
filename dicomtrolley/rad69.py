"""Download over IHE RAD-69 (Retrieve Imaging Document Set), as Vitrea Connection serves it.

A RAD-69 retrieve is a SOAP 1.2 POST that lists every instance wanted, by
study, series and SOPInstanceUID (the *DocumentUniqueId*), with the transfer
syntaxes the client accepts. The server answers with an MTOM message: a
multipart/related body whose root part is a SOAP envelope naming each
delivered document and the Content-ID of the part that carries its bytes,
followed by those parts, in any order.

:class:`Rad69` builds the request with an XML library, streams the answer
through the package's multipart parser, and hands each instance to the
storage as it arrives, byte-exact, matched to its DocumentUniqueId through
its Content-ID (parts that arrive before the envelope wait for it). A
``PartialSuccess`` answer keeps what arrived and reports every missing
instance with its error code; a ``Failure`` answer or a SOAP Fault raises
:class:`~dicomtrolley.exceptions.Rad69ServerError` naming the codes.

RAD-69 needs the instances themselves, so the trolley searches down to
instance level first (``finest_level_needed``), and resume, retry,
recovery and the completeness check work as for WADO-RS.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

import requests

from dicomtrolley._concurrency import run_targets
from dicomtrolley._http import (
    DEFAULT_TIMEOUT,
    RetryPolicy,
    Timeout,
    iter_body,
    raise_for_status,
    read_bounded,
    redact_url,
)
from dicomtrolley._http_downloader import HTTPDownloader
from dicomtrolley._multipart import Part, boundary_of, is_multipart, iter_parts, parse_content_type
from dicomtrolley._spooled import SPILL_THRESHOLD
from dicomtrolley.core import (
    DICOMObjectLevels,
    FetchFailure,
    InstancePart,
    InstanceReference,
    PartSink,
    Reference,
)
from dicomtrolley.exceptions import (
    DICOMTrolleyError,
    DownloadCancelledError,
    MalformedResponseError,
    Rad69ServerError,
    XDSMissingDocumentError,
)
from dicomtrolley.roles import ProfileParts

__all__ = [
    "DEFAULT_TRANSFER_SYNTAXES",
    "Rad69",
    "Rad69ServerError",
    "RetrieveAnswer",
    "XDSMissingDocumentError",
    "read_envelope",
]

logger = logging.getLogger(__name__)

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
XDSI = "urn:ihe:rad:xdsi-b:2009"
XDS = "urn:ihe:iti:xds-b:2007"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
XOP = "http://www.w3.org/2004/08/xop/include"
for _prefix, _namespace in (("soap", SOAP), ("wsa", WSA), ("xdsi", XDSI), ("xds", XDS), ("rs", RS)):
    ET.register_namespace(_prefix, _namespace)

ACTION = "urn:ihe:rad:2009:RetrieveImagingDocumentSet"
ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"
SOAP_MEDIA_TYPES = frozenset({"application/soap+xml", "application/xml", "text/xml"})

DEFAULT_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
"""Lossless syntaxes only, uncompressed first: a server that keeps an instance
in one of them can send it as stored, and none is asked to compress lossily."""

DEFAULT_REPOSITORY_UID = "1.3.6.1.4.1000"
"""The RepositoryUniqueId sent with each document (Vitrea's, as the reference client sends it)."""

MAX_ENVELOPE_BYTES = 16 << 20
"""The largest SOAP envelope read (one DocumentResponse per instance: a few MB for a large series)."""

EXCERPT_BYTES = 200
"""How much of an answer that is not RAD-69 an error message quotes."""

MISSING_DOCUMENT = "XDSMissingDocument"

Report = Callable[[FetchFailure], None]


class Rad69(HTTPDownloader):
    """Fetches instances over IHE RAD-69, one request per series (or per study), several at once.

    Parameters
    ----------
    session
        The session to send on, typically one from :func:`~dicomtrolley.auth.create_session`
        (shared with the searcher; it logs in again when the server's session expires).
    url
        The RAD-69 endpoint, e.g. ``https://vitrea/rids``.
    transfer_syntaxes
        The transfer syntaxes to accept, most wanted first.
    request_per_series
        One request per series (the default, gentle on the server and what
        lets several requests run at once), or one per study.
    repository_uid
        The RepositoryUniqueId sent with each document.
    workers
        Requests (series or studies) in flight at once, 4 by default; the connection pool is sized to match.
    timeout
        Seconds to connect and to wait for data.
    retry
        When a failed request is tried again (a retrieve only reads, so its POST may be repeated).
    spill_threshold
        Instances larger than this many bytes are held in a temporary file, not memory.
    errors_to_ignore
        4.x's error types to skip (``[XDSMissingDocumentError]``, say): a
        failure of one of these types is logged as a warning and not
        returned, so :meth:`fetch` and :meth:`datasets` go on without it.
        :meth:`Trolley.download <dicomtrolley.trolley.Trolley.download>` still
        counts what it left out as missing (the files are not there); give
        it ``on_error="collect"`` to finish and list them.
    use_async, max_workers
        4.x's switches, accepted with a DeprecationWarning: requests always run
        in parallel; ``max_workers``, when given, sets ``workers``.
    """

    finest_level_needed = DICOMObjectLevels.INSTANCE
    default_workers = 4

    def __init__(
        self,
        session: requests.Session,
        url: str,
        request_per_series: bool = True,
        errors_to_ignore: Iterable[type[BaseException]] = (),
        *,
        transfer_syntaxes: Sequence[str] = DEFAULT_TRANSFER_SYNTAXES,
        repository_uid: str = DEFAULT_REPOSITORY_UID,
        workers: int | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        spill_threshold: int = SPILL_THRESHOLD,
        use_async: bool | None = None,
        max_workers: int | None = None,
    ) -> None:
        super().__init__(
            session, url, workers=workers, timeout=timeout, retry=retry, spill_threshold=spill_threshold,
            use_async=use_async, max_workers=max_workers,
        )
        if not transfer_syntaxes:
            raise ValueError("transfer_syntaxes must name at least one transfer syntax")
        self.transfer_syntaxes = tuple(transfer_syntaxes)
        self.request_per_series = request_per_series
        self.repository_uid = repository_uid
        self.errors_to_ignore = tuple(errors_to_ignore)

    def describe(self) -> ProfileParts:
        """``downloader = "rad69"`` at this endpoint; see :meth:`Downloader.describe`.

        Raises
        ------
        DICOMTrolleyError
            A setting a profile cannot say: other transfer syntaxes, one request per study,
            another repository, or errors to ignore.
        """
        defaults = (DEFAULT_TRANSFER_SYNTAXES, True, DEFAULT_REPOSITORY_UID, ())
        settings = (self.transfer_syntaxes, self.request_per_series, self.repository_uid, self.errors_to_ignore)
        if settings != defaults:
            raise DICOMTrolleyError(f"A profile cannot describe {self!r}: only the default RAD-69 settings")
        return self._described(downloader="rad69", rad69_url=self.url)

    def __repr__(self) -> str:
        return f"Rad69({redact_url(self.url)!r}, request_per_series={self.request_per_series})"

    def fetch(
        self, targets: Sequence[Reference], sink: PartSink, *, stop_on_failure: bool = True
    ) -> list[FetchFailure]:
        """Fetch the instances with one request per series (or study); see :meth:`Downloader.fetch`.

        A request that fails as a whole is returned as a failure of its
        series (or study); an instance the server reports missing, as a
        failure of that instance.

        Raises
        ------
        DICOMTrolleyError
            A target is a study or series: RAD-69 asks for instances by UID,
            so resolve them first (a Trolley with a searcher does).
        """
        coarse = [t for t in targets if not isinstance(t, InstanceReference)]
        if coarse:
            raise DICOMTrolleyError(
                f"RAD-69 fetches instances by UID; {coarse[0]} must first be resolved to its "
                "instances (give the Trolley a searcher)"
            )
        batches: dict[Reference, list[InstanceReference]] = {}
        for instance in targets:
            assert isinstance(instance, InstanceReference)
            key = instance.series_reference if self.request_per_series else instance.study_reference
            batches.setdefault(key, []).append(instance)
        reported: list[FetchFailure] = []
        lock = threading.Lock()

        def report(failure: FetchFailure) -> None:
            if self._ignored(failure.target, failure.error):
                return
            logger.info("RAD-69 could not deliver %s: %s", failure.target, failure.error)  # told in the summary
            with lock:
                reported.append(failure)

        def retrieve(batch: Reference) -> None:
            try:
                self._retrieve(batch, batches[batch], sink, report)
            except self.errors_to_ignore as error:
                if not self._ignored(batch, error):
                    raise

        failures = run_targets(batches, retrieve, workers=self.workers, stop_on_failure=stop_on_failure)
        return failures + reported

    def _ignored(self, target: Reference, error: BaseException) -> bool:
        """Whether ``error`` is of a type in ``errors_to_ignore`` (then logged as skipped).

        A stop asked for by the reader of :meth:`datasets` is never ignored.
        """
        if not isinstance(error, self.errors_to_ignore) or isinstance(error, DownloadCancelledError):
            return False
        logger.warning("RAD-69: skipping %s, its error is on the ignore list: %s", target, error)
        return True

    def _fetch_one(self, target: Reference, sink: PartSink) -> None:
        """Fetch one instance with a request of its own (:meth:`fetch` batches instead); raise what is missing."""
        if not isinstance(target, InstanceReference):
            raise DICOMTrolleyError(f"RAD-69 fetches instances by UID, not {target}")

        def report(failure: FetchFailure) -> None:
            raise failure.error

        self._retrieve(target, [target], sink, report)

    def request_body(self, instances: Sequence[InstanceReference]) -> bytes:
        """The SOAP 1.2 envelope that asks for ``instances`` (grouped by study and series), as UTF-8 XML."""
        envelope = ET.Element(f"{{{SOAP}}}Envelope")
        header = ET.SubElement(envelope, f"{{{SOAP}}}Header")
        ET.SubElement(header, f"{{{WSA}}}Action", {f"{{{SOAP}}}mustUnderstand": "1"}).text = ACTION
        ET.SubElement(header, f"{{{WSA}}}MessageID").text = f"urn:uuid:{uuid.uuid4()}"
        reply_to = ET.SubElement(header, f"{{{WSA}}}ReplyTo", {f"{{{SOAP}}}mustUnderstand": "1"})
        ET.SubElement(reply_to, f"{{{WSA}}}Address").text = ANONYMOUS
        ET.SubElement(header, f"{{{WSA}}}To").text = redact_url(self.url)
        body = ET.SubElement(envelope, f"{{{SOAP}}}Body")
        request = ET.SubElement(body, f"{{{XDSI}}}RetrieveImagingDocumentSetRequest")
        studies: dict[str, dict[str, list[str]]] = {}
        for instance in instances:
            studies.setdefault(instance.study_uid, {}).setdefault(instance.series_uid, []).append(
                instance.instance_uid
            )
        for study_uid, series in studies.items():
            study = ET.SubElement(request, f"{{{XDSI}}}StudyRequest", {"studyInstanceUID": study_uid})
            for series_uid, documents in series.items():
                one = ET.SubElement(study, f"{{{XDSI}}}SeriesRequest", {"seriesInstanceUID": series_uid})
                for document_uid in documents:
                    document = ET.SubElement(one, f"{{{XDS}}}DocumentRequest")
                    ET.SubElement(document, f"{{{XDS}}}RepositoryUniqueId").text = self.repository_uid
                    ET.SubElement(document, f"{{{XDS}}}DocumentUniqueId").text = document_uid
        syntaxes = ET.SubElement(request, f"{{{XDSI}}}TransferSyntaxUIDList")
        for syntax in self.transfer_syntaxes:
            ET.SubElement(syntaxes, f"{{{XDSI}}}TransferSyntaxUID").text = syntax
        xml: bytes = ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
        return xml

    # ------------------------------------------------------------ one request

    def _retrieve(
        self, batch: Reference, instances: list[InstanceReference], sink: PartSink, report: Report
    ) -> None:
        """POST one retrieve for ``instances``; hand what arrives to ``sink``, what is missing to ``report``."""
        response = self.http.send(
            "POST",
            self.url,
            data=self.request_body(instances),
            headers={
                "Content-Type": f'application/soap+xml; charset=utf-8; action="{ACTION}"',
                "Accept": "multipart/related, application/soap+xml",
                "Accept-Encoding": "identity",
            },
            stream=True,
        )
        with response:
            source = redact_url(response.url or self.url)
            answer = _Answer(
                source, response.status_code, batch, {i.instance_uid: i for i in instances}, report,
                self.spill_threshold,
            )
            media_type, parameters = parse_content_type(response.headers.get("Content-Type") or "unknown/unknown")
            if is_multipart(media_type):
                raise_for_status(response)
                parts = iter_parts(
                    iter_body(response), boundary_of(response.headers["Content-Type"]),
                    spill_threshold=self.spill_threshold,
                )
                documents = answer.documents(parts, parameters.get("start", ""))
            elif media_type in SOAP_MEDIA_TYPES:
                too_large = f"The SOAP answer from {redact_url(response.url)} is larger than {MAX_ENVELOPE_BYTES} bytes"
                documents = answer.inline_documents(read_bounded(iter_body(response), MAX_ENVELOPE_BYTES, too_large))
            else:
                raise_for_status(response)
                start = next(iter_body(response, EXCERPT_BYTES), b"")[:EXCERPT_BYTES]
                raise MalformedResponseError(
                    f"The RAD-69 answer from {source} (status {response.status_code}) has Content-Type "
                    f"{response.headers.get('Content-Type')!r}, not multipart/related or SOAP; it starts {start!r}"
                )
            # Read on this thread, not ahead on another: the socket's buffer reads
            # ahead already, and the other requests in flight overlap network and
            # disk; a reading thread per request only fought them for the GIL
            # (measured: 10-20% slower, one request or four).
            count = 0
            with contextlib.closing(documents):  # a sink that raises leaves no part waiting
                for part in documents:
                    try:
                        sink(part)
                    finally:
                        part.close()
                    count += 1
        logger.debug("Received %d of %d instance(s) from %s", count, len(instances), source)


# ---------------------------------------------------------------- the answer


@dataclass(frozen=True)
class RegistryError:
    """One ``RegistryError`` of a RAD-69 answer: what went wrong, and for which document."""

    code: str
    context: str = ""
    location: str = ""
    severity: str = ""


@dataclass
class RetrieveAnswer:
    """What the SOAP envelope of a RAD-69 answer says.

    Parameters
    ----------
    status
        ``Success``, ``PartialSuccess`` or ``Failure`` (the end of the registry status URN);
        ``Fault`` for a SOAP Fault.
    documents
        Content-ID (without ``<>``) -> DocumentUniqueId, for documents sent as MTOM parts.
    inline
        DocumentUniqueId -> bytes, for documents sent inside the envelope (base64).
    errors
        The registry errors, or the fault's code and reason.
    """

    status: str
    documents: dict[str, str] = field(default_factory=dict)
    inline: dict[str, bytes] = field(default_factory=dict)
    errors: list[RegistryError] = field(default_factory=list)


def read_envelope(data: bytes, source: str, http_status: int) -> RetrieveAnswer:
    """Read a RAD-69 SOAP envelope (or SOAP Fault).

    Raises
    ------
    MalformedResponseError
        The bytes are not a SOAP envelope holding a RetrieveDocumentSetResponse or a Fault.
    """

    def malformed(reason: str) -> MalformedResponseError:
        return MalformedResponseError(
            f"The RAD-69 answer from {source} (status {http_status}) cannot be read: {reason}; "
            f"it starts {data[:EXCERPT_BYTES]!r}"
        )

    if b"<!DOCTYPE" in data:
        raise malformed("it declares a DTD, which a SOAP message never may")
    try:
        envelope = ET.fromstring(data)  # noqa: S314 - no DTD (checked above), so no entities to expand
    except ET.ParseError as error:
        raise malformed(f"it is not XML ({error})") from None
    if envelope.tag != f"{{{SOAP}}}Envelope":
        raise malformed(f"its root element is {envelope.tag}, not a SOAP 1.2 Envelope")
    fault = envelope.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    if fault is not None:
        codes = [value.text or "" for value in fault.iter(f"{{{SOAP}}}Value")]
        reasons = [text.text or "" for text in fault.iter(f"{{{SOAP}}}Text")]
        return RetrieveAnswer("Fault", errors=[RegistryError(code, " ".join(reasons)) for code in codes or ["?"]])
    response = envelope.find(f"{{{SOAP}}}Body/{{{XDS}}}RetrieveDocumentSetResponse")
    registry = response.find(f"{{{RS}}}RegistryResponse") if response is not None else None
    if response is None or registry is None:
        raise malformed("its Body holds no RetrieveDocumentSetResponse with a RegistryResponse")
    status = registry.get("status", "").rpartition(":")[2]
    if status not in ("Success", "PartialSuccess", "Failure"):
        raise malformed(f"its registry status {registry.get('status')!r} is not Success, PartialSuccess or Failure")
    answer = RetrieveAnswer(status)
    for item in registry.iter(f"{{{RS}}}RegistryError"):
        answer.errors.append(
            RegistryError(
                item.get("errorCode", ""), item.get("codeContext", "") or (item.text or "").strip(),
                item.get("location", ""), item.get("severity", "").rpartition(":")[2],
            )
        )
    for document in response.iter(f"{{{XDS}}}DocumentResponse"):
        uid = (document.findtext(f"{{{XDS}}}DocumentUniqueId") or "").strip()
        content = document.find(f"{{{XDS}}}Document")
        if not uid or content is None:
            raise malformed("a DocumentResponse lacks its DocumentUniqueId or Document")
        include = content.find(f"{{{XOP}}}Include")
        if include is not None:
            answer.documents[_content_id(unquote(include.get("href", "")).removeprefix("cid:"))] = uid
        else:
            try:
                answer.inline[uid] = base64.b64decode(content.text or "", validate=False)
            except ValueError:
                raise malformed(f"document {uid} is neither an xop:Include nor base64") from None
    return answer


def _content_id(value: str) -> str:
    return value.strip().removeprefix("<").removesuffix(">").strip()


@dataclass
class _Answer:
    """Reads one answer: its envelope, its parts in any order, and what they leave out."""

    source: str
    http_status: int
    batch: Reference
    wanted: dict[str, InstanceReference]
    report: Report
    spill_threshold: int
    """Bytes of parts held in memory while they wait for the envelope; later ones wait on disk."""

    def documents(self, parts: Iterator[Part], start: str) -> Generator[InstancePart, None, None]:
        """Each document of an MTOM body as soon as both it and the envelope naming it have arrived.

        Parts that come before the envelope wait for it; past ``spill_threshold``
        bytes they wait in temporary files, so an envelope sent last costs disk, not memory.
        """
        start = _content_id(start)
        waiting: dict[str, Part] = {}
        held = 0
        envelope: RetrieveAnswer | None = None
        delivered: set[str] = set()
        try:
            for part in parts:
                content_id = _content_id(part.headers.get("content-id", ""))
                if envelope is None and (content_id == start or not start):
                    envelope = self._check(read_envelope(_read_part(part, self.source), self.source, self.http_status))
                    for early in list(waiting):
                        yield from self._instance(waiting.pop(early), early, envelope, delivered)
                elif envelope is None:
                    waiting[content_id] = part
                    held += part.size
                    if held > self.spill_threshold:
                        _to_disk(part)
                else:
                    yield from self._instance(part, content_id, envelope, delivered)
        finally:
            for part in waiting.values():
                part.close()
        if envelope is None:
            raise MalformedResponseError(
                f"The RAD-69 answer from {self.source} has no SOAP envelope part (start={start!r})"
            )
        for content_id in envelope.documents.keys() - delivered:
            self._missing(envelope.documents[content_id], MalformedResponseError(
                f"{self.source} named document {envelope.documents[content_id]} (Content-ID {content_id!r}) "
                "in its envelope but sent no part for it"
            ))

    def inline_documents(self, data: bytes) -> Generator[InstancePart, None, None]:
        """The documents of an answer that is a plain SOAP envelope (usually none: a failure)."""
        envelope = self._check(read_envelope(data, self.source, self.http_status))
        for uid, content in envelope.inline.items():
            if self._wants(uid):
                yield InstancePart(io.BytesIO(content), len(content), "application/dicom", self.batch, self.wanted[uid])
        if envelope.documents:
            raise MalformedResponseError(
                f"The RAD-69 answer from {self.source} refers to MTOM parts but is not multipart"
            )

    def _check(self, envelope: RetrieveAnswer) -> RetrieveAnswer:
        """Raise for a Fault or a Failure; report each document a PartialSuccess lists as missing."""
        if envelope.status in ("Fault", "Failure"):
            codes = tuple(dict.fromkeys(error.code for error in envelope.errors))
            message = "; ".join(dict.fromkeys(e.context for e in envelope.errors if e.context))
            kind = XDSMissingDocumentError if codes == (MISSING_DOCUMENT,) else Rad69ServerError
            raise kind(self.source, self.http_status, codes or (envelope.status,), message)
        if self.http_status >= 400:
            raise Rad69ServerError(self.source, self.http_status, (envelope.status,), "HTTP error status")
        for error in envelope.errors:
            kind = XDSMissingDocumentError if error.code == MISSING_DOCUMENT else Rad69ServerError
            self._missing(error.location, kind(self.source, self.http_status, (error.code,), error.context))
        accounted = {*envelope.documents.values(), *envelope.inline, *(e.location for e in envelope.errors)}
        for uid in self.wanted.keys() - accounted:
            self._missing(uid, MalformedResponseError(
                f"{self.source} answered {envelope.status} but neither sent document {uid} nor reported it missing"
            ))
        return envelope

    def _missing(self, uid: str, error: DICOMTrolleyError) -> None:
        self.report(FetchFailure(self.wanted.get(uid, self.batch), error))

    def _instance(
        self, part: Part, content_id: str, envelope: RetrieveAnswer, delivered: set[str]
    ) -> Iterator[InstancePart]:
        """The part as the instance its envelope names; nothing (and the part closed) if it names none or
        one that was not asked for or has arrived already."""
        uid = envelope.documents.get(content_id)
        if uid is None or content_id in delivered or not self._wants(uid):
            if uid is None:
                logger.warning("%s sent a part (Content-ID %r) that its envelope does not name; ignored",
                               self.source, content_id)
            part.close()
            return
        delivered.add(content_id)
        content_type = part.content_type or "application/dicom"
        yield InstancePart(part.body, part.size, content_type, self.batch, self.wanted[uid], headers=part.headers)

    def _wants(self, uid: str) -> bool:
        if uid in self.wanted:
            return True
        logger.warning("%s sent document %s, which was not asked for; ignored", self.source, uid)
        return False


def _to_disk(part: Part) -> None:
    """Move a part held in memory into its temporary file."""
    rollover = getattr(part.body, "rollover", None)  # the parser's SpooledChunks have it
    if rollover is not None:
        rollover()


def _read_part(part: Part, source: str) -> bytes:
    try:
        if part.size > MAX_ENVELOPE_BYTES:
            raise MalformedResponseError(
                f"The SOAP envelope part from {source} is larger than {MAX_ENVELOPE_BYTES} bytes"
            )
        return part.body.read()
    finally:
        part.close()
