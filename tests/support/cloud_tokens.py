"""Local stand-ins for the token endpoints of Google's and Azure's credential libraries.

The real ``google-auth`` and ``azure-identity`` code asks these, so the tests
run that code unchanged:

- the GCE metadata server, which Application Default Credentials find through
  ``GCE_METADATA_HOST`` (tokens) and ``GCE_METADATA_IP`` (the "am I on GCE?" ping);
- an App Service managed-identity endpoint, which ``DefaultAzureCredential``
  finds through ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER``.

Both hand out tokens from one :class:`TokenIssuer` that lives ``lifetime``
seconds, so a server in front of Orthanc (:mod:`tests.support.quirk_server`)
can refuse expired tokens, and a test can count how many were asked for.

Usage::

    issuer = TokenIssuer(lifetime=3)
    with CloudTokenEndpoints(issuer) as endpoints:
        env = {**os.environ, **endpoints.google_environment(tmp_path), **endpoints.azure_environment()}
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.http_server import TrackingHTTPServer

IDENTITY_SECRET = "identity-header-secret-4d2c"
SERVICE_ACCOUNT = "trolley@test-project.iam.gserviceaccount.com"


class TokenIssuer:
    """Tokens that expire ``lifetime`` seconds after they are issued, and a record of them.

    Parameters
    ----------
    lifetime
        Seconds a token is valid; what the endpoints advertise too.
    max_uses
        Requests a token is good for, then refused as expired (unannounced): makes
        a token expire during a download however fast the machine is.
    """

    def __init__(self, lifetime: float, max_uses: int | None = None) -> None:
        self.lifetime = lifetime
        self.max_uses = max_uses
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}
        self._uses: dict[str, int] = {}
        self.issued: list[tuple[str, str]] = []
        """``(who asked, token)`` in the order issued: ``"google"`` or ``"azure"``."""

    def issue(self, asker: str) -> tuple[str, float]:
        """A new token and its expiry (seconds since the epoch)."""
        token = f"{asker}-{secrets.token_urlsafe(24)}"
        expires = time.time() + self.lifetime
        with self._lock:
            self._expiry[token] = expires
            self.issued.append((asker, token))
        return token, expires

    def valid(self, token: str) -> bool:
        """Whether ``token`` was issued here and has not expired (by time or by use); counts a use."""
        with self._lock:
            expires = self._expiry.get(token)
            uses = self._uses[token] = self._uses.get(token, 0) + 1
        worn = self.max_uses is not None and uses > self.max_uses
        return expires is not None and time.time() < expires and not worn

    def count(self, asker: str) -> int:
        """Tokens issued to ``asker``."""
        with self._lock:
            return sum(1 for who, _ in self.issued if who == asker)

    def tokens(self) -> list[str]:
        """Every token issued."""
        with self._lock:
            return [token for _, token in self.issued]


class CloudTokenEndpoints:
    """One loopback HTTP server answering as the GCE metadata server and an Azure managed-identity endpoint."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        if self._server is None:
            raise RuntimeError("the endpoints are not running")
        return f"127.0.0.1:{self._server.server_address[1]}"

    def google_environment(self, home: Path) -> dict[str, str]:
        """Variables that lead ADC to the metadata server here (and to no gcloud login in ``home``)."""
        return {
            "GCE_METADATA_HOST": self.address,
            "GCE_METADATA_IP": self.address,
            "CLOUDSDK_CONFIG": str(home / "gcloud"),
            "GOOGLE_APPLICATION_CREDENTIALS": "",
        }

    @property
    def oauth_token_uri(self) -> str:
        """An OAuth 2.0 token endpoint, for ``google.oauth2.credentials.Credentials(token_uri=...)``."""
        return f"http://{self.address}/oauth2/token"

    def azure_environment(self) -> dict[str, str]:
        """Variables that lead DefaultAzureCredential to the managed-identity endpoint here."""
        return {"IDENTITY_ENDPOINT": f"http://{self.address}/msi/token", "IDENTITY_HEADER": IDENTITY_SECRET}

    def start(self) -> CloudTokenEndpoints:
        """Listen on a free loopback port."""
        self._server = _Server(("127.0.0.1", 0), _Handler, self.issuer)
        self._thread = self._server.serve_in_background("cloud-token-endpoints")
        return self

    def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None and self._thread is not None:
            self._server.stop_serving(self._thread)
        self._server = None

    def __enter__(self) -> CloudTokenEndpoints:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


class _Server(TrackingHTTPServer):
    def __init__(self, address: tuple[str, int], handler: type[_Handler], issuer: TokenIssuer) -> None:
        super().__init__(address, handler)
        self.issuer = issuer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/msi/token":
            self._azure(parse_qs(parts.query))
        elif parts.path.startswith("/computeMetadata/v1/") or parts.path == "/":
            self._google(parts.path)
        else:
            self._send(404, "text/plain", b"not here")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if urlsplit(self.path).path != "/oauth2/token":
            self._send(404, "text/plain", b"not here")
            return
        token, _ = self.server.issuer.issue("oauth")
        answer = {"access_token": token, "expires_in": int(self.server.issuer.lifetime), "token_type": "Bearer"}
        self._send(200, "application/json", json.dumps(answer).encode())

    def _google(self, path: str) -> None:
        if self.headers.get("Metadata-Flavor") != "Google":
            self._send(403, "text/plain", b"Missing Metadata-Flavor:Google header")
            return
        if path == "/":
            self._send(200, "application/text", b"")
        elif path == "/computeMetadata/v1/project/project-id":
            self._send(200, "application/text", b"test-project")
        elif path.endswith("/token"):
            token, _ = self.server.issuer.issue("google")
            answer = {"access_token": token, "expires_in": int(self.server.issuer.lifetime), "token_type": "Bearer"}
            self._send(200, "application/json", json.dumps(answer).encode())
        elif path.startswith("/computeMetadata/v1/instance/service-accounts/"):
            info = {"email": SERVICE_ACCOUNT, "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                    "aliases": ["default"]}
            self._send(200, "application/json", json.dumps(info).encode())
        else:
            self._send(404, "text/plain", b"no such metadata")

    def _azure(self, query: dict[str, list[str]]) -> None:
        if self.headers.get("X-IDENTITY-HEADER") != IDENTITY_SECRET:
            self._send(401, "application/json", b'{"error": "bad identity header"}')
            return
        token, expires = self.server.issuer.issue("azure")
        answer = {
            "access_token": token, "expires_on": str(int(expires)), "resource": query.get("resource", [""])[0],
            "token_type": "Bearer",
        }
        self._send(200, "application/json", json.dumps(answer).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        if self.path == "/" or self.path.startswith("/computeMetadata/"):
            self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
