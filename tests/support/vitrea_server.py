"""A Vitrea-like server: MINT search and IHE RAD-69 retrieve over a real Orthanc's data, behind the login gateway.

No public MINT or RAD-69 server can be installed here, so this one is built
from the protocols' public descriptions (see the project's notes): it answers
MINT searches from Orthanc's QIDO-RS and RAD-69 retrieves with Orthanc's
stored files, byte for byte, and sits behind
:class:`~tests.support.vitrea_gateway.VitreaGateway`, so every request needs
the Vitrea session login.

Switches (attributes of :attr:`VitreaServer.switches`) make the error shapes
seen in practice happen on purpose: documents reported missing in a
``PartialSuccess``, a total ``Failure`` as a plain SOAP envelope, a SOAP Fault,
parts out of order, a stream cut short, an HTML page with status 200, and any
MINT body a test wants.

Usage::

    with VitreaServer(orthanc.base_url) as vitrea:
        session = create_session(vitrea.login_url, vitrea.user, vitrea.password)
        trolley = Trolley(Mint(session, vitrea.mint_url), Rad69(session, vitrea.rad69_url))
        vitrea.switches.missing_documents = {some_sop_instance_uid}

Command line, for demos and benchmarks (run from the repository root)::

    python -m tests.support.vitrea_server --orthanc http://127.0.0.1:8042 [--port 8043]
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

from dicomtrolley.rad69 import SOAP, WSA, XDS, XDSI
from tests.support.http_server import TrackingHTTPServer
from tests.support.vitrea_gateway import VitreaGateway

MINT_PATH = "/MINTApi"
RAD69_PATH = "/rids"

MINT = "http://medical.nema.org/mint"
# SOAP, WSA, XDSI and XDS, the request's namespaces, are the client's (test_rad69 checks the request it
# builds against the standard's names); the answer's own are written here, so the client's reading is tested.
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
XOP = "http://www.w3.org/2004/08/xop/include"
STATUS_URN = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:"
SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
MISSING_DOCUMENT = "XDSMissingDocument"

HTML_PAGE = b"<!DOCTYPE html><html><head><title>Vitrea</title></head><body><h1>Service unavailable</h1></body></html>"

_QIDO_RESOURCE = {"STUDY": "studies", "SERIES": "series", "INSTANCE": "instances"}
_DEFAULT_FIELDS = {
    "STUDY": ["StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "AccessionNumber",
              "StudyDescription", "ModalitiesInStudy"],
    "SERIES": ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "PatientID", "PatientName", "StudyDate"],
    "INSTANCE": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber",
                 "PatientID", "PatientName"],
}
# Where an attribute of a QIDO-RS row goes in the MINT answer (patient attributes, group 0010, go with the study).
_STUDY_TAGS = frozenset({
    "00080005", "00080020", "00080030", "00080050", "00080061", "00080062", "00080080", "00080090", "00081030",
    "0020000D", "00200010", "00201206", "00201208",
})
_SERIES_TAGS = frozenset({"00080060", "0008103E", "0020000E", "00200011", "00201209", "00180015"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "SQ"})


@dataclass
class Switches:
    """What the server does wrong on purpose; tests set these while it runs.

    Attributes
    ----------
    missing_documents
        SOPInstanceUIDs answered as ``XDSMissingDocument`` (in a ``PartialSuccess``
        when other documents are delivered, in a ``Failure`` when none are).
    failure
        ``"plain"``: every retrieve fails with a plain SOAP ``Failure`` envelope
        (``XDSRepositoryError``); ``"fault"``: with a SOAP Fault and status 500.
    parts_out_of_order
        Send the document parts in reverse order, before the SOAP envelope part.
    cut_after_parts
        Break the connection after this many document parts...
    cuts
        ...in this many answers (then answer whole again).
    dropped_documents
        SOPInstanceUIDs left out of the answer without a word (status ``Success``).
    html_page
        Answer every MINT and RAD-69 request with an HTML page and status 200.
    unavailable
        Answer this many RAD-69 requests with 503 Service Unavailable (and ``Retry-After: 0``) first.
    mint_body
        Answer MINT searches with these bytes (status 200, ``text/xml``) instead of the real answer.
    """

    missing_documents: set[str] = field(default_factory=set)
    failure: str | None = None
    parts_out_of_order: bool = False
    cut_after_parts: int | None = None
    cuts: int = 1
    dropped_documents: set[str] = field(default_factory=set)
    html_page: bool = False
    unavailable: int = 0
    mint_body: bytes | None = None


class VitreaServer:
    """MINT and RAD-69 over an Orthanc, behind a :class:`VitreaGateway`, on free loopback ports.

    Parameters
    ----------
    upstream
        Orthanc's base URL (its REST API; ``/dicom-web`` below it).
    upstream_auth
        ``(user, password)`` for Orthanc, if it needs them.
    gateway_options
        Passed on to :class:`VitreaGateway` (``login_delay``, ``user``, ...).
    """

    def __init__(self, upstream: str, *, upstream_auth: tuple[str, str] | None = None, **gateway_options: Any) -> None:
        self.upstream = upstream.rstrip("/")
        self.upstream_auth = upstream_auth
        self.switches = Switches()
        self._gateway_options = gateway_options
        self._lock = threading.Lock()
        self._local = threading.local()
        self._files: dict[str, bytes] = {}
        self._retrieves: list[list[str]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.gateway: VitreaGateway | None = None

    # --- what clients and tests use -----------------------------------------------------

    @property
    def url(self) -> str:
        """The gateway's base URL: everything goes through the login."""
        return self._require_gateway().url

    @property
    def login_url(self) -> str:
        """Where to POST the Vitrea login."""
        return self._require_gateway().login_url

    @property
    def user(self) -> str:
        """The user the login accepts."""
        return self._require_gateway().user

    @property
    def password(self) -> str:
        """The password the login accepts."""
        return self._require_gateway().password

    @property
    def mint_url(self) -> str:
        """The MINT root (``/studies`` below it)."""
        return self.url + MINT_PATH

    @property
    def rad69_url(self) -> str:
        """The RAD-69 endpoint."""
        return self.url + RAD69_PATH

    @property
    def retrieves(self) -> list[list[str]]:
        """The DocumentUniqueIds of every RAD-69 request received, one list per request."""
        with self._lock:
            return [list(one) for one in self._retrieves]

    def _require_gateway(self) -> VitreaGateway:
        if self.gateway is None:
            raise RuntimeError("the Vitrea server is not running")
        return self.gateway

    # --- running --------------------------------------------------------------------------

    def start(self) -> None:
        """Serve the protocols on one free port and the gateway in front of them on another."""
        if self._server is not None:
            raise RuntimeError("the Vitrea server is already running")
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = self._server.serve_in_background("vitrea-protocols")
        self.gateway = VitreaGateway(f"http://127.0.0.1:{self._server.server_address[1]}", **self._gateway_options)
        self.gateway.start()

    def stop(self) -> None:
        """Stop the gateway and the protocol server."""
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        if self._server is not None and self._thread is not None:
            self._server.stop_serving(self._thread)
            self._server = None
            self._thread = None

    def __enter__(self) -> VitreaServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # --- talking to Orthanc ----------------------------------------------------------------

    def _orthanc(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.auth = self.upstream_auth
        return session

    def qido(self, level: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Orthanc's QIDO-RS answer at ``level`` (STUDY, SERIES, INSTANCE)."""
        response = self._orthanc().get(
            f"{self.upstream}/dicom-web/{_QIDO_RESOURCE[level]}", params=params,
            headers={"Accept": "application/dicom+json"}, timeout=60,
        )
        response.raise_for_status()
        return response.json() if response.content.strip() else []

    def stored_file(self, sop_uid: str) -> bytes | None:
        """The file Orthanc stores for an instance, as it stores it; None if it has none (kept once read)."""
        with self._lock:
            cached = self._files.get(sop_uid)
        if cached is not None:
            return cached
        session = self._orthanc()
        found = session.post(f"{self.upstream}/tools/lookup", data=sop_uid, timeout=60)
        found.raise_for_status()
        ids = [item["ID"] for item in found.json() if item.get("Type") == "Instance"]
        if not ids:
            return None
        answer = session.get(f"{self.upstream}/instances/{ids[0]}/file", timeout=60)
        answer.raise_for_status()
        with self._lock:
            self._files[sop_uid] = answer.content
        return answer.content

    def _record_retrieve(self, documents: list[str]) -> None:
        with self._lock:
            self._retrieves.append(documents)

    def _take_unavailable(self) -> bool:
        """Whether to answer this RAD-69 request 503 (counting it off)."""
        with self._lock:
            if self.switches.unavailable <= 0:
                return False
            self.switches.unavailable -= 1
            return True

    def _take_cut(self) -> int | None:
        """The number of parts after which to cut this answer, if it is to be cut."""
        with self._lock:
            switches = self.switches
            if switches.cut_after_parts is None or switches.cuts <= 0:
                return None
            switches.cuts -= 1
            return switches.cut_after_parts


class _Server(TrackingHTTPServer):
    def __init__(self, address: tuple[str, int], handler: type[_Handler], vitrea: VitreaServer) -> None:
        super().__init__(address, handler)
        self.vitrea = vitrea

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client drops its connection (the gateway does, when its client goes away)."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


# --- MINT -----------------------------------------------------------------------------------


def mint_answer(rows: Iterable[dict[str, Any]], level: str, studies_found: dict[str, dict[str, Any]]) -> bytes:
    """Group QIDO-RS rows into a MINT ``studySearchResults`` document.

    ``studies_found`` are the study-level rows of the studies in ``rows``: a
    study's attributes come from there, since Orthanc leaves them out of
    some series and instance answers.
    """
    # Unqualified names under a default namespace declared by hand, as MINT servers write it.
    root = ET.Element("studySearchResults", {"xmlns": MINT})
    studies: dict[str, ET.Element] = {}
    series_of: dict[tuple[str, str], ET.Element] = {}
    for row in rows:
        study_uid = _first(row.get("0020000D"))
        study = studies.get(study_uid)
        if study is None:
            study = studies[study_uid] = ET.SubElement(root, "study", {
                "studyUUID": str(uuid.uuid5(uuid.NAMESPACE_OID, study_uid)),
                "lastModified": "2024-01-01T00:00:00.000Z",
            })
            _add_attrs(study, studies_found.get(study_uid, row), _is_study_tag)
        if level == "STUDY":
            continue
        series_uid = _first(row.get("0020000E"))
        series = series_of.get((study_uid, series_uid))
        if series is None:
            series = series_of[(study_uid, series_uid)] = ET.SubElement(study, "series")
            _add_attrs(series, row, lambda tag: tag in _SERIES_TAGS)
        if level == "INSTANCE":
            instance = ET.SubElement(series, "instance")
            _add_attrs(instance, row, lambda tag: not (_is_study_tag(tag) or tag in _SERIES_TAGS))
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml


def _is_study_tag(tag: str) -> bool:
    return tag.startswith("0010") or tag in _STUDY_TAGS


def _first(element: dict[str, Any] | None) -> str:
    values = (element or {}).get("Value") or [""]
    return str(values[0])


def _add_attrs(parent: ET.Element, row: dict[str, Any], belongs: Any) -> None:
    for tag, element in sorted(row.items()):
        if not belongs(tag) or element.get("vr") in _BINARY_VRS:
            continue
        attributes = {"tag": tag, "vr": element["vr"]}
        values = element.get("Value")
        if values:
            attributes["val"] = "\\".join(_text(value) for value in values)
        ET.SubElement(parent, "attr", attributes)


def _text(value: Any) -> str:
    if isinstance(value, dict):  # a person name
        return "=".join(value.get(key, "") for key in ("Alphabetic", "Ideographic", "Phonetic")).rstrip("=")
    return str(value)


# --- RAD-69 -------------------------------------------------------------------------------------


@dataclass
class _Retrieve:
    message_id: str
    documents: list[str]
    transfer_syntaxes: list[str]


def _read_retrieve(body: bytes) -> _Retrieve:
    envelope = ET.fromstring(body)  # noqa: S314 - the test server reads its own client's requests
    request = envelope.find(f"{{{SOAP}}}Body/{{{XDSI}}}RetrieveImagingDocumentSetRequest")
    if request is None:
        raise ValueError("no RetrieveImagingDocumentSetRequest in the SOAP Body")
    documents = [
        (document.findtext(f"{{{XDS}}}DocumentUniqueId") or "").strip()
        for document in request.iter(f"{{{XDS}}}DocumentRequest")
    ]
    syntaxes = [(s.text or "").strip() for s in request.iter(f"{{{XDSI}}}TransferSyntaxUID")]
    return _Retrieve(envelope.findtext(f"{{{SOAP}}}Header/{{{WSA}}}MessageID") or "", documents, syntaxes)


def soap_envelope(body_child: ET.Element, relates_to: str) -> bytes:
    """A SOAP 1.2 envelope around ``body_child``, answering the message ``relates_to``."""
    envelope = ET.Element(f"{{{SOAP}}}Envelope")
    header = ET.SubElement(envelope, f"{{{SOAP}}}Header")
    ET.SubElement(header, f"{{{WSA}}}Action", {f"{{{SOAP}}}mustUnderstand": "true"}).text = (
        "urn:ihe:iti:2007:RetrieveDocumentSetResponse"
    )
    ET.SubElement(header, f"{{{WSA}}}RelatesTo").text = relates_to
    ET.SubElement(envelope, f"{{{SOAP}}}Body").append(body_child)
    xml: bytes = ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
    return xml


def retrieve_response(status: str, delivered: dict[str, str], errors: list[tuple[str, str, str]]) -> ET.Element:
    """A RetrieveDocumentSetResponse: ``delivered`` maps DocumentUniqueId -> Content-ID;
    ``errors`` are ``(errorCode, codeContext, location)``."""
    response = ET.Element(f"{{{XDS}}}RetrieveDocumentSetResponse")
    registry = ET.SubElement(response, f"{{{RS}}}RegistryResponse", {"status": STATUS_URN + status})
    if errors:
        listing = ET.SubElement(registry, f"{{{RS}}}RegistryErrorList")
        for code, context, location in errors:
            ET.SubElement(listing, f"{{{RS}}}RegistryError", {
                "errorCode": code, "codeContext": context, "location": location, "severity": SEVERITY_ERROR,
            })
    for uid, content_id in delivered.items():
        document = ET.SubElement(response, f"{{{XDS}}}DocumentResponse")
        ET.SubElement(document, f"{{{XDS}}}RepositoryUniqueId").text = "1.3.6.1.4.1000"
        ET.SubElement(document, f"{{{XDS}}}DocumentUniqueId").text = uid
        ET.SubElement(document, f"{{{XDS}}}mimeType").text = "application/dicom"
        content = ET.SubElement(document, f"{{{XDS}}}Document")
        ET.SubElement(content, f"{{{XOP}}}Include", {"href": f"cid:{content_id}"})
    return response


def soap_fault(code: str, reason: str) -> ET.Element:
    """A SOAP 1.2 Fault."""
    fault = ET.Element(f"{{{SOAP}}}Fault")
    ET.SubElement(ET.SubElement(fault, f"{{{SOAP}}}Code"), f"{{{SOAP}}}Value").text = code
    reason_element = ET.SubElement(fault, f"{{{SOAP}}}Reason")
    ET.SubElement(reason_element, f"{{{SOAP}}}Text", {"{http://www.w3.org/XML/1998/namespace}lang": "en"}).text = reason
    return fault


# --- the handler -----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if self.server.vitrea.switches.html_page:
            self._send(200, "text/html; charset=utf-8", HTML_PAGE)
        elif parts.path == f"{MINT_PATH}/studies":
            self._mint(parse_qsl(parts.query, keep_blank_values=True))
        else:
            self._send(404, "text/plain", b"not found")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.server.vitrea.switches.html_page:
            self._send(200, "text/html; charset=utf-8", HTML_PAGE)
        elif urlsplit(self.path).path == RAD69_PATH and self.server.vitrea._take_unavailable():
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif urlsplit(self.path).path == RAD69_PATH:
            self._rad69(body)
        else:
            self._send(404, "text/plain", b"not found")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # --- MINT

    def _mint(self, params: list[tuple[str, str]]) -> None:
        vitrea = self.server.vitrea
        if vitrea.switches.mint_body is not None:
            self._send(200, "text/xml; charset=utf-8", vitrea.switches.mint_body)
            return
        given = dict(params)
        level = given.pop("QueryLevel", "STUDY").upper()
        if level not in _QIDO_RESOURCE:
            self._send(400, "text/plain", f"unknown QueryLevel {level}".encode())
            return
        low, high = given.pop("min_study_date", ""), given.pop("max_study_date", "")
        if bool(low) != bool(high):
            self._send(400, "text/plain", b"min_study_date and max_study_date must be given together")
            return
        qido: list[tuple[str, str]] = [(key, value) for key, value in given.items() if key not in ("IncludeFields",
                                                                                                  "limit")]
        if low:
            qido.append(("StudyDate", f"{low}-{high}"))
        fields = _DEFAULT_FIELDS[level] + [f for f in given.get("IncludeFields", "").split(",") if f]
        qido.append(("includefield", ",".join(dict.fromkeys(fields))))
        if given.get("limit", "0") != "0":
            qido.append(("limit", given["limit"]))
        try:
            rows = vitrea.qido(level, qido)
            study_uids = ",".join(dict.fromkeys(_first(row.get("0020000D")) for row in rows))
            studies = vitrea.qido("STUDY", [("StudyInstanceUID", study_uids), ("includefield", ",".join(
                _DEFAULT_FIELDS["STUDY"] + [f for f in given.get("IncludeFields", "").split(",") if f]
            ))]) if level != "STUDY" and study_uids else []
        except requests.RequestException as error:
            self._send(500, "text/plain", f"search failed: {error}".encode())
            return
        found = {_first(row.get("0020000D")): row for row in studies}
        self._send(200, "text/xml; charset=utf-8", mint_answer(rows, level, found))

    # --- RAD-69

    def _rad69(self, body: bytes) -> None:
        vitrea = self.server.vitrea
        switches = vitrea.switches
        try:
            retrieve = _read_retrieve(body)
        except (ET.ParseError, ValueError) as error:
            self._soap(500, soap_envelope(soap_fault("soap:Sender", f"unreadable request: {error}"), ""))
            return
        vitrea._record_retrieve(retrieve.documents)
        if switches.failure == "fault":
            fault = soap_fault("soap:Receiver", "The imaging document source is unavailable")
            self._soap(500, soap_envelope(fault, retrieve.message_id))
            return
        if switches.failure == "plain":
            errors = [("XDSRepositoryError", "Repository unavailable", uid) for uid in retrieve.documents]
            self._soap(200, soap_envelope(retrieve_response("Failure", {}, errors), retrieve.message_id))
            return
        files: dict[str, bytes] = {}
        errors = []
        for uid in retrieve.documents:
            if uid in switches.dropped_documents:
                continue
            stored = None if uid in switches.missing_documents else vitrea.stored_file(uid)
            if stored is None:
                errors.append((MISSING_DOCUMENT, "Unable to locate SOP from MINT.", uid))
            else:
                files[uid] = stored
        if not files:
            self._soap(200, soap_envelope(retrieve_response("Failure", {}, errors), retrieve.message_id))
            return
        content_ids = {uid: f"{secrets.token_hex(8)}@vitrea.test" for uid in files}
        status = "PartialSuccess" if errors else "Success"
        envelope = soap_envelope(retrieve_response(status, content_ids, errors), retrieve.message_id)
        self._mtom(envelope, [(content_ids[uid], data) for uid, data in files.items()])

    def _soap(self, status: int, envelope: bytes) -> None:
        self._send(status, "application/soap+xml; charset=utf-8", envelope)

    def _mtom(self, envelope: bytes, documents: list[tuple[str, bytes]]) -> None:
        """Stream an MTOM answer: the envelope part and one part per document, chunked."""
        boundary = f"MIMEBoundary_{secrets.token_hex(12)}"
        root_id = f"root.{secrets.token_hex(6)}@vitrea.test"
        self.send_response(200)
        self.send_header(
            "Content-Type",
            f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; start="<{root_id}>"; '
            'start-info="application/soap+xml"',
        )
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        root = (root_id, b'application/xop+xml; charset=utf-8; type="application/soap+xml"', envelope)
        parts = [(cid, b"application/dicom", data) for cid, data in documents]
        switches = self.server.vitrea.switches
        ordered = [*reversed(parts), root] if switches.parts_out_of_order else [root, *parts]
        cut = self.server.vitrea._take_cut()
        sent = 0
        for number, (content_id, content_type, data) in enumerate(ordered):
            if cut is not None and sent >= cut and content_type == b"application/dicom":
                self.close_connection = True
                self.wfile.flush()
                return  # no closing delimiter, no last chunk: the stream just stops
            # The body starts with the first delimiter, no CRLF before it, as SOAP stacks write it.
            self._chunk(
                (b"\r\n" if number else b"") + b"--" + boundary.encode() + b"\r\nContent-Type: " + content_type
                + b"\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <" + content_id.encode() + b">\r\n\r\n"
            )
            self._chunk(data)
            sent += content_type == b"application/dicom"
        self._chunk(b"\r\n--" + boundary.encode() + b"--\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")


# --- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run a Vitrea-like server in front of a running Orthanc until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.vitrea_server", description=__doc__.split("\n")[0])
    parser.add_argument("--orthanc", required=True, help="Orthanc's base URL")
    parser.add_argument("--ready", help="write the URLs and credentials to this JSON file once serving")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    with VitreaServer(args.orthanc) as vitrea:
        ready = {
            "url": vitrea.url, "login_url": vitrea.login_url, "user": vitrea.user, "password": vitrea.password,
            "mint_url": vitrea.mint_url, "rad69_url": vitrea.rad69_url,
        }
        print(json.dumps(ready), flush=True)
        if args.ready:
            with open(args.ready, "w", encoding="utf-8") as out:
                json.dump(ready, out)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
