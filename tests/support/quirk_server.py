"""A DICOMweb server in front of the real Orthanc with the refusals real archives make.

Each quirk is switched on by a constructor argument, so a test names the one it means:

- ``issuer``: every request needs ``Authorization: Bearer <token>`` with a
  token the :class:`~tests.support.cloud_tokens.TokenIssuer` issued and that
  has not expired; otherwise 401 with ``WWW-Authenticate: Bearer``;
- ``refuse_any_syntax``: a retrieve whose Accept asks for
  ``transfer-syntax=*`` is refused with 406 (as Azure's DICOM service does);
- ``qido_cap``: a QIDO-RS answer stops at this many results, with the
  standard's ``Warning`` header when ``cap_warning`` is set, silently otherwise;
  with ``ignore_offset`` it cannot be paged past either (every page is the first);
- ``throttle_every``: every n-th request is answered 429 with ``Retry-After``;
- ``fuzzy_names``: a QIDO-RS search with ``fuzzymatching=true`` matches its
  PatientName as a word anywhere in the name, in any case (as Google's and
  Azure's fuzzy matching do), by asking the upstream for ``*word*``.

Everything else is proxied to the upstream, and every request is recorded with
the status it got (:attr:`VitreaGateway.seen <tests.support.vitrea_gateway.VitreaGateway.seen>`).
"""

from __future__ import annotations

import http.client
import json
import threading

from tests.support.cloud_tokens import TokenIssuer
from tests.support.vitrea_gateway import VitreaGateway, _Handler

CAP_WARNING = (
    '299 dicomtrolley-tests: "The number of results exceeded the maximum supported by the server. '
    'Additional results can be requested."'
)
"""The Warning header PS3.18 8.3.4.4 gives for a QIDO-RS answer cut at the server's maximum."""

QIDO_LEVELS = ("/studies", "/series", "/instances")


class QuirkServer(VitreaGateway):
    """A proxy to ``upstream`` (Orthanc's root URL) with the quirks asked for.

    Parameters
    ----------
    upstream
        The server behind, e.g. ``orthanc.base_url``; its DICOMweb root is
        ``<url>/dicom-web`` here too.
    issuer
        Require bearer tokens from this issuer.
    refuse_any_syntax
        Answer 406 to an Accept header with ``transfer-syntax=*``.
    qido_cap
        At most this many QIDO-RS results per answer.
    cap_warning
        Say so in a Warning header when an answer was cut.
    ignore_offset
        Answer every QIDO-RS page from the first result, whatever its ``offset``.
    throttle_every
        Answer every n-th request 429.
    retry_after
        The Retry-After of a 429, in seconds.
    fuzzy_names
        Match PatientName fuzzily when asked to.
    """

    def __init__(
        self,
        upstream: str,
        *,
        issuer: TokenIssuer | None = None,
        refuse_any_syntax: bool = False,
        qido_cap: int | None = None,
        cap_warning: bool = False,
        ignore_offset: bool = False,
        throttle_every: int | None = None,
        retry_after: int = 1,
        fuzzy_names: bool = False,
    ) -> None:
        super().__init__(upstream)
        self.issuer = issuer
        self.refuse_any_syntax = refuse_any_syntax
        self.qido_cap = qido_cap
        self.cap_warning = cap_warning
        self.ignore_offset = ignore_offset
        self.throttle_every = throttle_every
        self.retry_after = retry_after
        self.fuzzy_names = fuzzy_names
        self._counter = 0
        self._counter_lock = threading.Lock()

    def statuses(self) -> list[int]:
        """The status of every request answered, in order."""
        return [request.status for request in self.seen]

    def _handler_class(self) -> type[_Handler]:
        return _QuirkHandler

    def _throttled(self) -> bool:
        if not self.throttle_every:
            return False
        with self._counter_lock:
            self._counter += 1
            return self._counter % self.throttle_every == 0


class _QuirkHandler(_Handler):
    def do_OPTIONS(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        quirks = self.server.gateway
        assert isinstance(quirks, QuirkServer)
        path = self.path.split("?", 1)[0]
        if quirks.fuzzy_names:
            self.path = _fuzzy(self.path)
        body = self._read_body()
        bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if quirks.issuer is not None and not quirks.issuer.valid(bearer):
            quirks._wait_for_other_refusals()
            self._refuse(401, "the token is missing, unknown or expired",
                         {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        elif quirks._throttled():
            self._refuse(429, "too many requests", {"Retry-After": str(quirks.retry_after)})
        elif quirks.refuse_any_syntax and "transfer-syntax=*" in self.headers.get("Accept", "").replace(" ", ""):
            self._refuse(406, "transfer-syntax=* is not supported; name the syntaxes you accept", {})
        elif quirks.qido_cap is not None and self.command == "GET" and path.endswith(QIDO_LEVELS):
            self._capped(quirks, quirks.qido_cap)
        else:
            self._proxy(quirks, body)

    def _refuse(self, status: int, text: str, headers: dict[str, str]) -> None:
        self._reply(status, "text/plain; charset=utf-8", text.encode(), headers)

    def _reply(self, status: int, content_type: str, body: bytes, headers: dict[str, str]) -> None:
        self._start_answer(status)
        for name, value in {"Content-Type": content_type, "Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _capped(self, quirks: QuirkServer, cap: int) -> None:
        """Ask the upstream, and answer at most ``cap`` of its results."""
        path, _, query = self.path.partition("?")
        if quirks.ignore_offset:
            query = "&".join(pair for pair in query.split("&") if not pair.startswith("offset="))
        upstream = http.client.HTTPConnection(quirks.upstream_host, quirks.upstream_port, timeout=60)
        try:
            target = f"{quirks.upstream_prefix}{path}?{query}" if query else quirks.upstream_prefix + path
            upstream.request("GET", target, headers={"Accept": "application/dicom+json"})
            answer = upstream.getresponse()
            status, raw = answer.status, answer.read()
        finally:
            upstream.close()
        if status != 200:
            self._reply(status, "application/dicom+json", raw, {})
            return
        results = json.loads(raw or b"[]")
        headers = {"Warning": CAP_WARNING} if quirks.cap_warning and len(results) > cap else {}
        self._reply(200, "application/dicom+json", json.dumps(results[:cap]).encode(), headers)


def _fuzzy(target: str) -> str:
    """``target`` with ``PatientName=word`` as ``PatientName=*word*`` when it asks for fuzzy matching."""
    path, _, query = target.partition("?")
    pairs = query.split("&")
    if "fuzzymatching=true" not in pairs:
        return target
    fuzzy = [f"PatientName=*{pair.partition('=')[2]}*" if pair.startswith("PatientName=") else pair for pair in pairs]
    return f"{path}?{'&'.join(fuzzy)}"
