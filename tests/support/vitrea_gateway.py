"""A Vitrea-like login gateway in front of a real server, for testing session logins.

Vitrea Connection refuses every request without a valid session cookie (401),
hands out that cookie on a POST to its login URL with the credentials in
``X-Userid``/``X-Password``/``X-Realm`` headers, and checks only the cookie
afterwards. :class:`VitreaGateway` behaves the same way in front of an
upstream HTTP server (an Orthanc in the tests) and proxies every accepted
request to it, streaming the answer through. It also lets a test make the
hard cases happen on purpose: expire every session, refuse a path even with a
valid session, make a login slow, or hold refusals until several requests
have been refused together. It records what it received, so a test can check
which headers reached which path.

Usage::

    with VitreaGateway(orthanc.base_url, login_delay=0.3) as gateway:
        session = create_session(gateway.login_url, gateway.user, gateway.password)
        session.get(f"{gateway.url}/dicom-web/studies", timeout=10)
        gateway.expire_sessions()
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from tests.support.http_server import TrackingHTTPServer

SESSION_COOKIE = "VITREA_SESSION"
LOGIN_PATH = "/login"

# Headers that describe one hop, not the message: never forwarded either way.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Request headers that belong to the gateway, not to the upstream.
_NOT_FORWARDED = _HOP_BY_HOP | {"host", "cookie", "content-length", "x-userid", "x-password", "x-realm"}
_COPY_CHUNK = 64 * 1024


@dataclass(frozen=True)
class SeenRequest:
    """One request as the gateway received it, and how it answered.

    Attributes
    ----------
    method, path
        The request line; ``path`` without the query string.
    headers
        Every header received, names in lower case.
    session
        The value of the session cookie the request carried, if any.
    status
        The status the gateway answered (for proxied requests: the upstream's).
    """

    method: str
    path: str
    headers: dict[str, str]
    session: str | None
    status: int


class VitreaGateway:
    """A threaded HTTP server on 127.0.0.1 that logs users in and proxies to ``upstream``.

    Parameters
    ----------
    upstream
        Base URL of the server behind the gateway, e.g. Orthanc's ``base_url``.
    user, password, realm
        The only credentials the login accepts.
    login_delay
        Seconds each login takes, so that concurrent requests really overlap it.
    upstream_auth
        ``(user, password)`` for HTTP basic auth to the upstream, if it needs it.
    """

    def __init__(
        self,
        upstream: str,
        *,
        user: str = "vitrea-user",
        password: str = "Pa55-w0rd-9f3c1e",  # noqa: S107 - a test credential
        realm: str = "DefaultSystemRealm",
        login_delay: float = 0.0,
        upstream_auth: tuple[str, str] | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the upstream must be an http:// URL, not {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.upstream_prefix = parts.path.rstrip("/")
        self.user = user
        self.password = password
        self.realm = realm
        self.login_delay = login_delay
        self._upstream_authorization = (
            "Basic " + base64.b64encode(":".join(upstream_auth).encode()).decode() if upstream_auth else None
        )
        self._lock = threading.Lock()
        self._sessions: set[str] = set()
        self._issued: list[str] = []
        self._login_attempts = 0
        self._seen: list[SeenRequest] = []
        self._refused_paths: set[str] = set()
        self._refusal_barrier: threading.Barrier | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- what tests read -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``; paths below it are proxied to the upstream."""
        if self._server is None:
            raise RuntimeError("the gateway is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def login_url(self) -> str:
        """Where to POST the login."""
        return self.url + LOGIN_PATH

    @property
    def login_count(self) -> int:
        """Logins that succeeded."""
        with self._lock:
            return len(self._issued)

    @property
    def login_attempts(self) -> int:
        """Logins tried, refused ones included."""
        with self._lock:
            return self._login_attempts

    @property
    def issued_sessions(self) -> list[str]:
        """Every session cookie value handed out, oldest first."""
        with self._lock:
            return list(self._issued)

    @property
    def seen(self) -> list[SeenRequest]:
        """Every request received, in the order they were answered."""
        with self._lock:
            return list(self._seen)

    def seen_on(self, path: str) -> list[SeenRequest]:
        """The requests received for one path."""
        return [request for request in self.seen if request.path == path]

    # --- what tests change ---------------------------------------------------------------

    def expire_sessions(self) -> None:
        """Forget every session, as the server does when sessions time out."""
        with self._lock:
            self._sessions.clear()

    def refuse(self, path: str) -> None:
        """Answer 401 for ``path`` even with a valid session (a resource the user may not see)."""
        with self._lock:
            self._refused_paths.add(path)

    def hold_refusals(self, count: int, timeout: float = 10.0) -> None:
        """Hold the next ``count`` "no valid session" 401s until all of them are waiting.

        Makes ``count`` concurrent requests certain to have been sent (with
        the old cookie) before any of them hears it was refused.
        """
        with self._lock:
            self._refusal_barrier = threading.Barrier(count, timeout=timeout)

    # --- running -------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on a free loopback port and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("the gateway is already running")
        self._server = _Server(("127.0.0.1", 0), self._handler_class(), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="vitrea-gateway", daemon=True
        )
        self._thread.start()

    def _handler_class(self) -> type[_Handler]:
        """How a connection is answered: a gateway in front of another server gives its own subclass."""
        return _Handler

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> VitreaGateway:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- called by the request handler ---------------------------------------------------

    def _log_in(self, user: str | None, password: str | None, realm: str | None) -> tuple[int, str | None]:
        """Check credentials; return the status to answer and the new session, if any."""
        with self._lock:
            self._login_attempts += 1
        if self.login_delay:
            time.sleep(self.login_delay)
        if realm != self.realm:
            return 403, None
        if user != self.user or password != self.password:
            return 401, None
        session = secrets.token_urlsafe(24)
        with self._lock:
            self._sessions.add(session)
            self._issued.append(session)
        return 200, session

    def _admits(self, session: str | None, path: str) -> tuple[bool, bool]:
        """Whether a request may pass, and whether its session was valid."""
        with self._lock:
            valid = session is not None and session in self._sessions
            return valid and path not in self._refused_paths, valid

    def _wait_for_other_refusals(self) -> None:
        with self._lock:
            barrier = self._refusal_barrier
        if barrier is None:
            return
        # A broken barrier (timeout) lets the refusal go: the test then fails
        # on its own assertions instead of hanging.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        with self._lock:
            if self._refusal_barrier is barrier:
                self._refusal_barrier = None  # held once; later refusals go at once

    def _record(self, request: SeenRequest) -> None:
        with self._lock:
            self._seen.append(request)


class _Server(TrackingHTTPServer):
    """The HTTP server, knowing its gateway and its open connections."""

    def __init__(self, address: tuple[str, int], handler: type[_Handler], gateway: VitreaGateway) -> None:
        super().__init__(address, handler)
        self.gateway = gateway


class _Handler(BaseHTTPRequestHandler):
    """One connection: HTTP/1.1 with keep-alive, like the real gateway."""

    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds an idle keep-alive connection is kept
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read the gateway's records instead."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _handle(self) -> None:
        gateway = self.server.gateway
        path = self.path.split("?", 1)[0]
        session = self._session_cookie()
        body = self._read_body()
        if body is None and "Transfer-Encoding" in self.headers:
            self.close_connection = True
            self._answer(411, "chunked request bodies are not supported")
        elif path == LOGIN_PATH:
            if self.command == "POST":
                self._answer_login(gateway)
            else:
                self._answer(405, "POST only")
        else:
            admitted, valid = gateway._admits(session, path)
            if admitted:
                self._proxy(gateway, body)
            elif valid:
                self._answer(401, "this user may not see this resource")
            else:
                gateway._wait_for_other_refusals()
                self._answer(401, "no valid session; log in first")

    def _start_answer(self, status: int, reason: str | None = None) -> None:
        """Record the request, then send the status line.

        Recorded first, so the record is there by the time the client has the answer.
        """
        self.server.gateway._record(
            SeenRequest(
                method=self.command,
                path=self.path.split("?", 1)[0],
                headers={name.lower(): value for name, value in self.headers.items()},
                session=self._session_cookie(),
                status=status,
            )
        )
        self.send_response(status, reason)

    def _session_cookie(self) -> str | None:
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(self.headers.get("Cookie", ""))
        except CookieError:
            return None
        morsel = cookies.get(SESSION_COOKIE)
        return morsel.value if morsel is not None else None

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        return None if length is None else self.rfile.read(int(length))

    def _answer_login(self, gateway: VitreaGateway) -> None:
        status, session = gateway._log_in(
            self.headers.get("X-Userid"), self.headers.get("X-Password"), self.headers.get("X-Realm")
        )
        if session is None:
            self._answer(status, "unknown realm" if status == 403 else "invalid user name or password")
            return
        body = json.dumps({"token": secrets.token_hex(16)}).encode()
        self._start_answer(200)
        self.send_header("Set-Cookie", f"{SESSION_COOKIE}={session}; Path=/; HttpOnly")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self, status: int, text: str) -> None:
        body = text.encode()
        self._start_answer(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _proxy(self, gateway: VitreaGateway, body: bytes | None) -> None:
        """Send the request on to the upstream; stream its answer back."""
        headers = {name: value for name, value in self.headers.items() if name.lower() not in _NOT_FORWARDED}
        if gateway._upstream_authorization:
            headers["Authorization"] = gateway._upstream_authorization
        upstream = http.client.HTTPConnection(gateway.upstream_host, gateway.upstream_port, timeout=60)
        try:
            upstream.request(self.command, gateway.upstream_prefix + self.path, body=body, headers=headers)
            answer = upstream.getresponse()
        except (OSError, http.client.HTTPException) as error:
            upstream.close()
            self._answer(502, f"upstream failed: {type(error).__name__}")
            return
        try:
            self._start_answer(answer.status, answer.reason)
            for name, value in answer.getheaders():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            length = answer.getheader("Content-Length")
            chunked = length is None and self.command != "HEAD" and answer.status not in (204, 304)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            elif length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            self._copy(answer, chunked)
        except (OSError, http.client.HTTPException):
            # The client or the upstream went away mid-answer; drop this connection.
            self.close_connection = True
        finally:
            upstream.close()

    def _copy(self, answer: http.client.HTTPResponse, chunked: bool) -> None:
        while chunk := answer.read(_COPY_CHUNK):
            if chunked:
                self.wfile.write(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")
            else:
                self.wfile.write(chunk)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
