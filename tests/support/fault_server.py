"""A DICOMweb server on loopback that misbehaves on purpose, for reliability tests.

:class:`FaultServer` serves a handful of real DICOM instances over QIDO-RS,
WADO-RS and WADO-URI, the way Orthanc does, until a test tells it to fail.
A :class:`FaultRule` names a :class:`Fault` (a body cut off mid-part, a reset
connection, a broken multipart framing, a slow drip, an error status, a
redirect, JSON that is not DICOM JSON, ...), where it applies (a
:class:`Route`, an exact path, or everywhere) and how often; after that many
times the server answers normally again. Every request is recorded (method,
path, query, headers), so a test can check what was asked for, how often and
with which credentials.

Every fault ends by itself: a slow drip stops after a few seconds, a stall
ends, every handler thread is a daemon, and :meth:`FaultServer.stop` wakes and
closes whatever connection is still open.

Usage::

    with FaultServer(make_instances()) as server:
        server.add_fault(Fault.RESET, route=Route.WADO_RS_SERIES, times=1, after_parts=2)
        WadoRS(requests.Session(), server.dicomweb_url).fetch(...)
        server.count(Route.WADO_RS_INSTANCE)
"""

from __future__ import annotations

import enum
import functools
import json
import random
import secrets
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.support import stow_answers
from tests.support.dicom_files import CT_IMAGE_STORAGE, add_pixels, part10_bytes, part10_dataset
from tests.support.http_server import TrackingHTTPServer

BOUNDARY = "fault-server-7d1f0c6a9b2e4d58a3c1e6f0b9d2a4c7"
"""The multipart boundary of normal answers (unquoted, like Orthanc's)."""

QUOTED_BOUNDARY = "fault server: boundary=7d1f/0c6a?"
"""A boundary with a space, colon, equals sign, slash and question mark: legal, and must be quoted."""

SESSION_COOKIE = "VITREA_SESSION"
LOGIN_PATH = "/login"
DICOMWEB_ROOT = "/dicom-web"
WADO_URI_PATH = "/wado"

TRANSFER_SYNTAX = str(ExplicitVRLittleEndian)
_UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root, meant for this kind of use


# --- the instances served ----------------------------------------------------------------


@dataclass(frozen=True)
class ServedInstance:
    """One DICOM instance the server holds: its UIDs, its file bytes and its attributes."""

    study_uid: str
    series_uid: str
    sop_uid: str
    data: bytes
    dataset: Dataset = field(repr=False, compare=False)

    @property
    def size(self) -> int:
        """Length of the file in bytes."""
        return len(self.data)


def make_instances(
    *,
    series_sizes: Sequence[int] = (3, 2),
    patient_id: str = "FAULT-001",
    pixels: int = 32,
    name: str = "fault-study",
) -> list[ServedInstance]:
    """Generate one small CT study with pydicom: ``series_sizes[i]`` instances in series ``i``.

    Parameters
    ----------
    series_sizes
        How many instances each series holds.
    patient_id
        The PatientID of every instance (hostile values welcome).
    pixels
        Rows and columns of the 16-bit image: the file is about ``2 * pixels**2`` bytes
        plus a kilobyte of attributes.
    name
        Seeds the UIDs: the same name gives the same UIDs, another name another study.
    """
    study_uid = _uid(name, "study")
    instances = []
    for series_number, size in enumerate(series_sizes, start=1):
        series_uid = _uid(name, "series", series_number)
        for number in range(1, size + 1):
            sop_uid = _uid(name, "instance", series_number, number)
            ds = _dataset(study_uid, series_uid, sop_uid, series_number, number, patient_id, pixels)
            instances.append(ServedInstance(study_uid, series_uid, sop_uid, part10_bytes(ds), ds))
    return instances


def _uid(*parts: object) -> str:
    return str(generate_uid(prefix=_UID_ROOT, entropy_srcs=["dicomtrolley-fault-server", *map(str, parts)]))


def _dataset(
    study_uid: str, series_uid: str, sop_uid: str, series_number: int, number: int, patient_id: str, pixels: int
) -> Dataset:
    ds = part10_dataset(sop_uid, study_uid=study_uid, series_uid=series_uid, sop_class=CT_IMAGE_STORAGE)
    ds.PatientID = patient_id
    ds.PatientName = "FAULT^INJECTION"
    ds.StudyDate = "20240102"
    ds.Modality = "CT"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = number
    add_pixels(ds, np.full((pixels, pixels), number, dtype=np.uint16))
    return ds


# --- what can go wrong --------------------------------------------------------------------


class Route(enum.Enum):
    """The kinds of request the server answers."""

    LOGIN = "login"
    QIDO = "qido"
    WADO_RS_STUDY = "wado-rs study"
    WADO_RS_SERIES = "wado-rs series"
    WADO_RS_INSTANCE = "wado-rs instance"
    WADO_URI = "wado-uri"
    STOW_RS = "stow-rs"
    UNKNOWN = "unknown"


class Fault(enum.Enum):
    """How an answer goes wrong. ``k`` is the rule's ``after_parts``."""

    TRUNCATE = "truncate"
    """Send k whole parts and half of the next, then close (multipart bodies end at close).
    A single-instance answer declares its Content-Length and sends half of it."""
    SHORT_BODY = "short body"
    """Declare the Content-Length of the whole multipart body, send k parts and half of the next, close."""
    RESET = "reset"
    """Send k whole parts and half of the next, then reset the connection (RST, SO_LINGER 0)."""
    NO_CLOSING_DELIMITER = "no closing delimiter"
    """Every part, then the body ends: no delimiter after the last part's content."""
    UNCLOSED = "delimiter without closing dashes"
    """Every part, each followed by its delimiter, but the last delimiter lacks its ``--``."""
    WRONG_BOUNDARY = "wrong boundary"
    """The Content-Type names one boundary, the body uses another."""
    MISSING_BOUNDARY = "missing boundary"
    """``multipart/related`` without a boundary parameter."""
    QUOTED_BOUNDARY = "quoted boundary"
    """A boundary that must be quoted in the Content-Type (legal: must work)."""
    NO_CONTENT_TYPE = "no content type"
    """The multipart body without any Content-Type header."""
    PREAMBLE_EPILOGUE = "preamble and epilogue"
    """Text before the first delimiter and after the last (legal: must work)."""
    MULTIPART_MIXED = "multipart/mixed"
    """The body labelled ``multipart/mixed`` instead of ``multipart/related`` (seen in the field: must work)."""
    FORM_DATA = "multipart/form-data"
    """Labelled ``multipart/form-data``, each part with a Content-Disposition (seen in the field: must work)."""
    NOT_DICOM_PART = "not DICOM part"
    """Part k+1 holds text, not DICOM; the others are fine."""
    HUGE_PART_HEADER = "huge part header"
    """Part k+1 carries a header line of ``size`` bytes (default 2 MB)."""
    HUGE_HTTP_HEADER = "huge HTTP header"
    """The response carries an HTTP header line of ``size`` bytes."""
    SLOW_DRIP = "slow drip"
    """Send k parts, then the next one byte by byte, one every ``interval`` seconds, for at most
    ``duration`` seconds."""
    STALL = "stall"
    """Send nothing at all for ``duration`` seconds, then close."""
    STATUS = "status"
    """Answer ``status`` (with Retry-After if set) and a short text body."""
    REDIRECT = "redirect"
    """Answer 307 to ``location`` + the same path and query."""
    PARTIAL = "206 partial"
    """Answer 206 with the first k parts only, properly closed."""
    SHORTFALL = "shortfall"
    """Answer 200 with the first k parts only, properly closed: fewer than the search listed."""
    BODY = "body"
    """Answer 200 with ``payload`` as the body and ``content_type`` (e.g. JSON that is not DICOM JSON)."""
    HUGE_BODY = "huge body"
    """Answer 200 with ``size`` bytes of a DICOM JSON list, streamed until the connection closes."""
    GZIP_BOMB = "gzip bomb"
    """Answer 200 with ``Content-Encoding: gzip``: a small body that inflates to ``size`` bytes of JSON."""
    REFUSE = "refuse"
    """STOW-RS: answer 202, refusing the first k instances of the body (FailedSOPSequence, FailureReason
    ``status``) and storing the others; ``status`` 409 refuses them all with HTTP 409; a warning
    ``status`` (0xBxxx) stores them all, the first k with that WarningReason."""
    TOO_LARGE = "too large"
    """STOW-RS: answer 413 to a body of more than k instances; store a smaller one."""


@dataclass
class FaultRule:
    """One fault, where it applies and how often.

    Parameters
    ----------
    fault
        What goes wrong.
    route
        Only requests of this kind; ``None`` for every kind (the login aside).
    path
        Only requests for exactly this path (no query); ``None`` for any path.
    times
        How many answers go wrong; ``None`` for all of them.
    chance
        The probability that a request it matches goes wrong (drawn from the server's seeded
        generator); a request it spares is matched against the next rules.
    after_parts
        Whole parts sent before a mid-stream fault (``k`` in :class:`Fault`).
    status, retry_after, location, payload, content_type, size, interval, duration
        The details of some faults; see :class:`Fault`.
    """

    fault: Fault
    route: Route | None = None
    path: str | None = None
    times: int | None = None
    chance: float = 1.0
    after_parts: int = 1
    status: int = 503
    retry_after: str | None = None
    location: str = ""
    payload: bytes = b""
    content_type: str = "application/dicom+json"
    size: int = 2 * 1024 * 1024
    interval: float = 1.0
    duration: float = 2.0
    applied: int = 0

    def matches(self, route: Route, path: str) -> bool:
        """True when this rule still applies to a request."""
        if self.times is not None and self.applied >= self.times:
            return False
        if route is Route.LOGIN and self.route is not Route.LOGIN:
            return False
        return (self.route is None or self.route is route) and (self.path is None or self.path == path)


@dataclass(frozen=True)
class SeenRequest:
    """One request as the server received it.

    Attributes
    ----------
    method, path, query
        The request line; ``path`` without the query, ``query`` parsed.
    headers
        Every header received, names in lower case.
    route
        What kind of request the server took it for.
    fault
        The fault it answered with, if any.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    route: Route
    fault: Fault | None


# --- the server ---------------------------------------------------------------------------


class FaultServer:
    """A threaded HTTP server on ``host`` serving ``instances``, with faults on demand.

    Parameters
    ----------
    instances
        What the server holds, e.g. from :func:`make_instances`.
    host
        The loopback address to listen on; ``127.0.0.2`` is another host for redirects.
    require_login
        Answer 401 to every request without a session cookie from ``POST /login``.
    user, password
        The credentials ``POST /login`` accepts (``X-Userid``/``X-Password``).
    tls
        Serve HTTPS with this server-side context (a self-signed certificate, say).
    seed
        Seeds the draws of rules with a ``chance``: the same requests in the same order meet the same faults.
    """

    def __init__(
        self,
        instances: Iterable[ServedInstance],
        *,
        host: str = "127.0.0.1",
        require_login: bool = False,
        user: str = "fault-user",
        password: str = "fault-Pa55-4e1d",  # noqa: S107 - a test credential
        tls: ssl.SSLContext | None = None,
        seed: int = 0,
    ) -> None:
        self.instances = list(instances)
        self.tls = tls
        self.host = host
        self.require_login = require_login
        self.user = user
        self.password = password
        self.rules: list[FaultRule] = []
        self._random = random.Random(seed)
        self._sessions: set[str] = set()
        self._seen: list[SeenRequest] = []
        self.stored: list[bytes] = []
        """The files STOW-RS requests stored, in order of arrival."""
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- configuration --------------------------------------------------------------------

    def add_fault(self, fault: Fault, **settings: Any) -> FaultRule:
        """Make answers go wrong; see :class:`FaultRule` for the settings. Rules apply in order."""
        rule = FaultRule(fault, **settings)
        with self._lock:
            self.rules.append(rule)
        return rule

    def add_random_faults(
        self, share: float, faults: Sequence[tuple[Fault, dict[str, Any]]], routes: Iterable[Route]
    ) -> None:
        """Make ``share`` of the requests on ``routes`` go wrong, each with one of ``faults`` (fault, settings).

        Every fault gets the same chance, drawn in turn, so that one at least strikes ``share`` of the requests.
        """
        chance = 1 - (1 - share) ** (1 / len(faults))
        for route in routes:
            for fault, settings in faults:
                self.add_fault(fault, route=route, chance=chance, **settings)

    def clear_faults(self) -> None:
        """Answer normally from now on."""
        with self._lock:
            self.rules.clear()

    # --- what tests read ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://<host>:<port>``."""
        if self._server is None:
            raise RuntimeError("the fault server is not running")
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self._server.server_address[1]}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root, for QidoRS and WadoRS."""
        return self.url + DICOMWEB_ROOT

    @property
    def wado_url(self) -> str:
        """The WADO-URI endpoint."""
        return self.url + WADO_URI_PATH

    @property
    def login_url(self) -> str:
        """Where a Vitrea-style login is POSTed."""
        return self.url + LOGIN_PATH

    @property
    def seen(self) -> list[SeenRequest]:
        """Every request received so far, in order of arrival."""
        with self._lock:
            return list(self._seen)

    def count(self, route: Route | None = None) -> int:
        """How many requests of this kind (of any kind: ``None``) arrived."""
        return sum(1 for r in self.seen if route is None or r.route is route)

    def paths(self, route: Route) -> list[str]:
        """The paths requested for one kind of request, in order."""
        return [r.path for r in self.seen if r.route is route]

    def reset_log(self) -> None:
        """Forget the requests seen so far."""
        with self._lock:
            self._seen.clear()

    def study_uid(self) -> str:
        """The StudyInstanceUID of the first instance (the study, usually)."""
        return self.instances[0].study_uid

    def series_uids(self) -> list[str]:
        """Every SeriesInstanceUID, in order."""
        return list(dict.fromkeys(i.series_uid for i in self.instances))

    def study_path(self) -> str:
        """The WADO-RS path of the study (of the first instance)."""
        return f"{DICOMWEB_ROOT}/studies/{self.study_uid()}"

    def series_path(self, series_uid: str) -> str:
        """The WADO-RS path of one series."""
        study = next(i.study_uid for i in self.instances if i.series_uid == series_uid)
        return f"{DICOMWEB_ROOT}/studies/{study}/series/{series_uid}"

    def instance_path(self, instance: ServedInstance) -> str:
        """The WADO-RS path of one instance."""
        return f"{self.series_path(instance.series_uid)}/instances/{instance.sop_uid}"

    def by_uid(self, sop_uid: str) -> ServedInstance:
        """The instance with this SOPInstanceUID."""
        return next(i for i in self.instances if i.sop_uid == sop_uid)

    # --- running --------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on a free port of ``host`` and serve in a daemon thread."""
        self.stopping.clear()
        self._server = _Server((self.host, 0), _Handler, self)
        if self.tls is not None:
            # The handshake happens in accept(); one that fails is dropped by the server loop.
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"fault-server-{self.host}", daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, end every fault in progress and close every connection."""
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FaultServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- used by the handler --------------------------------------------------------------

    def _rule_for(self, route: Route, path: str) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(route, path) and (rule.chance >= 1 or self._random.random() < rule.chance):
                    rule.applied += 1
                    return rule
        return None

    def _record(self, request: SeenRequest) -> None:
        with self._lock:
            self._seen.append(request)

    def _log_in(self, user: str | None, password: str | None) -> str | None:
        if user != self.user or password != self.password:
            return None
        token = secrets.token_hex(16)
        with self._lock:
            self._sessions.add(token)
        return token

    def _has_session(self, cookie_header: str | None) -> bool:
        if not cookie_header:
            return False
        try:
            cookies = SimpleCookie(cookie_header)
        except CookieError:
            return False
        morsel = cookies.get(SESSION_COOKIE)
        with self._lock:
            return morsel is not None and morsel.value in self._sessions


class _Server(TrackingHTTPServer):
    """The fault server's HTTP server, knowing its owner; quiet about clients that hang up."""

    def __init__(self, address: tuple[str, int], handler: type[_Handler], owner: FaultServer) -> None:
        super().__init__(address, handler)
        self.owner = owner

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is what these tests are about: no traceback."""


_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class _Handler(BaseHTTPRequestHandler):
    """One connection, HTTP/1.1: fixed-size answers keep it alive, multipart answers end at close."""

    protocol_version = "HTTP/1.1"
    timeout = 10
    server: _Server
    body: bytes = b""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read :attr:`FaultServer.seen` instead."""

    @property
    def owner(self) -> FaultServer:
        return self.server.owner

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        route = _route_of(self.command, path)
        refused = self.owner.require_login and route is not Route.LOGIN and not self._has_session()
        rule = None if refused else self.owner._rule_for(route, path)
        self.owner._record(
            SeenRequest(
                self.command, path, query, {k.lower(): v for k, v in self.headers.items()}, route,
                rule.fault if rule else None,
            )
        )
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # a login's: in headers
        try:
            if refused:
                self._send_text(401, "Unauthorized: log in first")
            else:
                self._answer(route, path, query, rule)
        except _CLIENT_GONE:
            self.close_connection = True

    # --- routing --------------------------------------------------------------------------

    def _answer(self, route: Route, path: str, query: dict[str, list[str]], rule: FaultRule | None) -> None:
        if route is Route.LOGIN:
            self._answer_login(rule)
            return
        if rule is not None and self._answer_without_content(rule):
            return
        if route is Route.STOW_RS:
            self._answer_stow(rule)
            return
        if route is Route.QIDO:
            self._answer_qido(path, query, rule)
            return
        if route is Route.WADO_URI:
            wanted = self._select(sop=query.get("objectUID", [""])[0])
            if query.get("requestType", [""])[0] != "WADO" or len(wanted) != 1:
                self._send_text(404, "no such instance")
                return
            self._send_single(wanted[0], rule)
            return
        if route in (Route.WADO_RS_STUDY, Route.WADO_RS_SERIES, Route.WADO_RS_INSTANCE):
            uids = path[len(DICOMWEB_ROOT):].split("/")[2::2]  # studies/{st}/series/{se}/instances/{i}
            wanted = self._select(*uids)
            if not wanted:
                self._send_text(404, "no such study, series or instance")
                return
            self._send_multipart(wanted, rule)
            return
        self._send_text(404, f"nothing at {path}")

    def _has_session(self) -> bool:
        return self.owner._has_session(self.headers.get("Cookie"))

    def _answer_stow(self, rule: FaultRule | None) -> None:
        files = stow_answers.split_body(self.headers.get("Content-Type", ""), self.body)
        k = rule.after_parts if rule is not None else len(files)
        if rule is not None and rule.fault is Fault.TOO_LARGE and len(files) > k:
            self._send_text(413, f"fault server: at most {k} instances per request")
            return
        refusing = rule is not None and rule.fault is Fault.REFUSE
        uids = [stow_answers.sop_instance_uid(data) for data in files]
        if refusing and rule is not None and rule.status == 409:
            answer = stow_answers.answer([], {uid: 0x0111 for uid in uids})
            self._send_bytes(409, json.dumps(answer).encode(), {"Content-Type": "application/dicom+json"})
            return
        code = rule.status if rule is not None else 0
        warned = {uid: code for uid in uids[:k]} if refusing and code >> 12 == 0xB else {}
        refused = {uid: code for uid in uids[:k]} if refusing and not warned else {}
        with self.owner._lock:
            self.owner.stored.extend(data for data, uid in zip(files, uids, strict=True) if uid not in refused)
        answer = stow_answers.answer([uid for uid in uids if uid not in refused], refused, warned)
        body = json.dumps(answer).encode()
        self._send_bytes(202 if refused or warned else 200, body, {"Content-Type": "application/dicom+json"})

    def _select(self, study: str = "", series: str = "", sop: str = "") -> list[ServedInstance]:
        return [
            i for i in self.owner.instances
            if (not study or i.study_uid == study)
            and (not series or i.series_uid == series)
            and (not sop or i.sop_uid == sop)
        ]

    # --- answers without content ----------------------------------------------------------

    def _answer_without_content(self, rule: FaultRule) -> bool:
        """Status, redirect, stall, huge header, body: the faults that ignore what was asked for."""
        fault = rule.fault
        if fault is Fault.STATUS:
            extra = {"Retry-After": rule.retry_after} if rule.retry_after is not None else {}
            self._send_text(rule.status, f"fault server: status {rule.status}", extra)
        elif fault is Fault.REDIRECT:
            target = rule.location + self.path
            self._send_text(307, f"moved to {target}", {"Location": target})
        elif fault is Fault.STALL:
            self.owner.stopping.wait(rule.duration)
            self.close_connection = True
        elif fault is Fault.HUGE_HTTP_HEADER:
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom")
            self.send_header("X-Padding", "a" * rule.size)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.close_connection = True
        elif fault is Fault.BODY:
            self._send_bytes(200, rule.payload, {"Content-Type": rule.content_type})
        elif fault is Fault.HUGE_BODY:
            self._send_huge_json(rule.size, rule.content_type)
        elif fault is Fault.GZIP_BOMB:
            headers = {"Content-Type": rule.content_type, "Content-Encoding": "gzip"}
            self._send_bytes(200, _gzip_bomb(rule.size), headers)
        else:
            return False
        return True

    def _answer_login(self, rule: FaultRule | None) -> None:
        if rule is not None and self._answer_without_content(rule):
            return
        token = self.owner._log_in(self.headers.get("X-Userid"), self.headers.get("X-Password"))
        if token is None:
            self._send_text(401, "login refused")
            return
        self._send_bytes(
            200, b'{"token": "unused"}',
            {"Content-Type": "application/json", "Set-Cookie": f"{SESSION_COOKIE}={token}; Path=/"},
        )

    # --- QIDO-RS ----------------------------------------------------------------------------

    def _answer_qido(self, path: str, query: dict[str, list[str]], rule: FaultRule | None) -> None:
        segments = path[len(DICOMWEB_ROOT):].strip("/").split("/")
        level = segments[-1]  # studies, series or instances
        from_path = dict(zip(segments[0:-1:2], segments[1:-1:2], strict=True))

        def wanted(segment: str, keyword: str) -> set[str] | None:
            """The UIDs asked for at one level, by query or by path; None: any."""
            values = {v for value in query.get(keyword, []) for v in value.split(",") if v}
            if segment in from_path:
                return {from_path[segment]} & values if values else {from_path[segment]}
            return values or None

        studies = wanted("studies", "StudyInstanceUID")
        series = wanted("series", "SeriesInstanceUID")
        sops = wanted("instances", "SOPInstanceUID")
        matches = [
            i for i in self.owner.instances
            if (studies is None or i.study_uid in studies)
            and (series is None or i.series_uid in series)
            and (sops is None or i.sop_uid in sops)
        ]
        results = _qido_results(matches, level)
        offset = int(query.get("offset", ["0"])[0] or 0)
        limit = int(query.get("limit", ["0"])[0] or 0)
        results = results[offset:offset + limit] if limit else results[offset:]
        self._send_bytes(200, json.dumps(results).encode(), {"Content-Type": "application/dicom+json"})

    # --- WADO -------------------------------------------------------------------------------

    def _send_single(self, instance: ServedInstance, rule: FaultRule | None) -> None:
        """One instance as ``application/dicom`` with a Content-Length (WADO-URI)."""
        fault = rule.fault if rule else None
        data = instance.data
        if fault is Fault.NOT_DICOM_PART:
            data = b"This is a text file, not a DICOM instance.\r\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault in (Fault.TRUNCATE, Fault.SHORT_BODY, Fault.RESET, Fault.SLOW_DRIP):
            assert rule is not None
            self._end_badly(rule, data)
            return
        self.wfile.write(data)

    def _send_multipart(self, instances: list[ServedInstance], rule: FaultRule | None) -> None:
        """Instances as multipart/related, ending at connection close like Orthanc's answers."""
        fault = rule.fault if rule else None
        k = rule.after_parts if rule else 0
        boundary = QUOTED_BOUNDARY if fault is Fault.QUOTED_BOUNDARY else BOUNDARY
        parts = [_part(i.data, boundary) for i in instances]
        if fault is Fault.NOT_DICOM_PART and k < len(parts):
            parts[k] = _part(b"This is a text file, not a DICOM instance.\r\n", boundary)
        if fault is Fault.FORM_DATA:
            parts = [
                _part(i.data, boundary, {"Content-Disposition": f'form-data; name="file"; filename="{i.sop_uid}.dcm"'})
                for i in instances
            ]
        if fault is Fault.HUGE_PART_HEADER and k < len(parts):
            parts[k] = _part(instances[k].data, boundary, {"X-Padding": "a" * (rule.size if rule else 0)})
        closing = f"--{boundary}--\r\n".encode()
        status = 200
        if fault in (Fault.PARTIAL, Fault.SHORTFALL):
            parts = parts[:k]
            status = 206 if fault is Fault.PARTIAL else 200
        if fault is Fault.NO_CLOSING_DELIMITER:
            closing = b""
        if fault is Fault.UNCLOSED:
            closing = f"--{boundary}\r\n".encode()
        if fault is Fault.PREAMBLE_EPILOGUE:
            parts.insert(0, b"This preamble is to be ignored.\r\n")
            closing += b"This epilogue is to be ignored too.\r\n"
        body_parts = [*parts, closing]

        content_type: str | None = f'multipart/related; type="application/dicom"; boundary={boundary}'
        if fault is Fault.QUOTED_BOUNDARY:
            content_type = f'multipart/related; type="application/dicom"; boundary="{boundary}"'
        elif fault is Fault.WRONG_BOUNDARY:
            content_type = 'multipart/related; type="application/dicom"; boundary=not-the-boundary-of-this-body'
        elif fault is Fault.MISSING_BOUNDARY:
            content_type = 'multipart/related; type="application/dicom"'
        elif fault is Fault.NO_CONTENT_TYPE:
            content_type = None
        elif fault in (Fault.MULTIPART_MIXED, Fault.FORM_DATA):
            content_type = f"{fault.value}; boundary={boundary}"

        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        if fault is Fault.SHORT_BODY:
            self.send_header("Content-Length", str(sum(len(p) for p in body_parts)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        if rule is not None and fault in (Fault.TRUNCATE, Fault.SHORT_BODY, Fault.RESET, Fault.SLOW_DRIP):
            rest = parts[k] if k < len(parts) else b""
            self.wfile.write(b"".join(parts[:k]))
            self._end_badly(rule, rest)
            return
        for piece in body_parts:
            self.wfile.write(piece)

    def _end_badly(self, rule: FaultRule, rest: bytes) -> None:
        """Send part of ``rest`` (what a whole answer would send next), then close, reset or drip."""
        if rule.fault is Fault.SLOW_DRIP:
            # The delimiter line goes at once: it tells the client that the part before is whole.
            line = rest.find(b"\n") + 1
            self.wfile.write(rest[:line])
            deadline = time.monotonic() + rule.duration
            for position in range(line, len(rest)):
                if time.monotonic() >= deadline or self.owner.stopping.is_set():
                    break
                self.wfile.write(rest[position:position + 1])
                self.owner.stopping.wait(rule.interval)
        else:
            self.wfile.write(rest[: len(rest) // 2])
        if rule.fault is Fault.RESET:
            # Let the client read what was sent, so that exactly k parts arrive before the reset.
            self.owner.stopping.wait(0.2)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
        self.close_connection = True

    # --- plain answers ----------------------------------------------------------------------

    def _send_text(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, text.encode(), {"Content-Type": "text/plain", **(headers or {})})

    def _send_huge_json(self, size: int, content_type: str) -> None:
        row = b'{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}},'
        block = row * (1024 * 1024 // len(row))
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.end_headers()
        self.close_connection = True
        self.wfile.write(b"[")
        sent = 1
        try:
            while sent < size:
                self.wfile.write(block)
                sent += len(block)
            self.wfile.write(row[:-1] + b"]")
        except OSError:
            pass  # the client stopped reading, as it should

    def _send_bytes(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@functools.lru_cache(maxsize=4)
def _gzip_bomb(size: int) -> bytes:
    """A gzip stream of a few hundred KB that inflates to ``size`` bytes: a JSON list of spaces."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * (1024 * 1024)
    out = [packer.compress(b"[")]
    out += [packer.compress(block) for _ in range(size // len(block))]
    return b"".join([*out, packer.compress(b"]"), packer.flush()])


def _part(data: bytes, boundary: str, extra: dict[str, str] | None = None) -> bytes:
    headers = {
        "Content-Type": f"application/dicom; transfer-syntax={TRANSFER_SYNTAX}",
        "Content-Length": str(len(data)),
        "MIME-Version": "1.0",
        **(extra or {}),
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"--{boundary}\r\n{head}\r\n".encode() + data + b"\r\n"


def _route_of(method: str, path: str) -> Route:
    if path == LOGIN_PATH:
        return Route.LOGIN if method == "POST" else Route.UNKNOWN
    if path == WADO_URI_PATH:
        return Route.WADO_URI
    if not path.startswith(DICOMWEB_ROOT + "/"):
        return Route.UNKNOWN
    if method == "POST" and path == f"{DICOMWEB_ROOT}/studies":
        return Route.STOW_RS
    segments = path[len(DICOMWEB_ROOT) + 1:].split("/")
    names = segments[0::2]
    if segments[-1] in ("studies", "series", "instances") and len(segments) % 2 == 1:
        return Route.QIDO if names in (["studies"], ["series"], ["instances"], ["studies", "series"],
                                       ["studies", "instances"], ["studies", "series", "instances"]) else Route.UNKNOWN
    return {
        ("studies",): Route.WADO_RS_STUDY,
        ("studies", "series"): Route.WADO_RS_SERIES,
        ("studies", "series", "instances"): Route.WADO_RS_INSTANCE,
    }.get(tuple(names), Route.UNKNOWN)


_STUDY_KEYWORDS = ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate")
_SERIES_KEYWORDS = ("SeriesInstanceUID", "Modality", "SeriesNumber")
_INSTANCE_KEYWORDS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber")


def _qido_results(matches: list[ServedInstance], level: str) -> list[dict[str, Any]]:
    """DICOM JSON objects for a QIDO-RS answer at ``level`` (studies, series or instances)."""
    keywords = {
        "studies": _STUDY_KEYWORDS,
        "series": _STUDY_KEYWORDS + _SERIES_KEYWORDS,
        "instances": _STUDY_KEYWORDS + _SERIES_KEYWORDS + _INSTANCE_KEYWORDS,
    }[level]
    results: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for instance in matches:
        key = {"studies": instance.study_uid, "series": instance.series_uid}.get(level, instance.sop_uid)
        counts[key] = counts.get(key, 0) + 1
        if key in results:
            continue
        subset = Dataset()
        for keyword in keywords:
            setattr(subset, keyword, instance.dataset.get(keyword))
        results[key] = subset.to_json_dict()
    for key, result in results.items():
        if level == "studies":
            result["00201208"] = {"vr": "IS", "Value": [counts[key]]}  # NumberOfStudyRelatedInstances
        elif level == "series":
            result["00201209"] = {"vr": "IS", "Value": [counts[key]]}  # NumberOfSeriesRelatedInstances
    return list(results.values())
