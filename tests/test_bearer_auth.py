"""BearerAuth: a token from a provider on every request, renewed before expiry and after a 401.

Against the real Orthanc behind a server that accepts only tokens a local
issuer handed out and that have not expired; Google's and Azure's credential
objects are the real library code, talking to local stand-ins of their token
endpoints.
"""

from __future__ import annotations

import logging
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from dicomtrolley import QidoRS, Trolley, WadoRS
from dicomtrolley.auth import AzureCredentials, BearerAuth, BearerToken, GoogleCredentials, TokenCommand
from dicomtrolley.exceptions import DICOMTrolleyAuthError, DICOMTrolleyError
from dicomtrolley.profiles import ServerProfile
from tests.support.cloud_tokens import CloudTokenEndpoints, TokenIssuer
from tests.support.orthanc import OrthancServer
from tests.support.quirk_server import QuirkServer

pytestmark = pytest.mark.integration


class CountingProvider:
    """Tokens from the issuer, counting how often it was asked; lifetime as the issuer says, or unknown."""

    def __init__(self, issuer: TokenIssuer, *, tell_expiry: bool = True) -> None:
        self.issuer = issuer
        self.tell_expiry = tell_expiry
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> BearerToken:
        with self._lock:
            self.calls += 1
        token, expires = self.issuer.issue("test")
        return BearerToken(token, expires if self.tell_expiry else None)


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(lifetime=60)


@pytest.fixture
def server(orthanc: OrthancServer, issuer: TokenIssuer) -> Iterator[QuirkServer]:
    with QuirkServer(orthanc.base_url, issuer=issuer) as quirks:
        yield quirks


def studies_url(server: QuirkServer) -> str:
    return f"{server.url}/dicom-web/studies"


def session_with(auth: BearerAuth) -> requests.Session:
    session = requests.Session()
    session.auth = auth
    return session


def test_the_provider_is_asked_once_and_its_token_reused(server: QuirkServer, issuer: TokenIssuer) -> None:
    provider = CountingProvider(issuer)
    session = session_with(BearerAuth(provider))
    for _ in range(3):
        assert session.get(studies_url(server), timeout=10).status_code == 200
    assert provider.calls == 1
    assert server.statuses() == [200, 200, 200]


def test_a_token_near_its_expiry_is_renewed_before_the_request_goes_out(
    server: QuirkServer, issuer: TokenIssuer
) -> None:
    issuer.lifetime = 1.0
    provider = CountingProvider(issuer)
    session = session_with(BearerAuth(provider))
    session.get(studies_url(server), timeout=10)
    time.sleep(0.8)  # past three quarters of the token's life
    assert session.get(studies_url(server), timeout=10).status_code == 200
    assert provider.calls == 2
    assert 401 not in server.statuses()


def test_a_token_refused_with_401_is_renewed_once_and_the_request_sent_again(
    server: QuirkServer, issuer: TokenIssuer
) -> None:
    issuer.lifetime = 0.5
    provider = CountingProvider(issuer, tell_expiry=False)  # the server expires it unannounced
    session = session_with(BearerAuth(provider))
    session.get(studies_url(server), timeout=10)
    time.sleep(0.6)
    response = session.get(studies_url(server), timeout=10)
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert provider.calls == 2


def test_concurrent_401s_renew_the_token_once_and_every_request_succeeds(
    server: QuirkServer, issuer: TokenIssuer
) -> None:
    issuer.lifetime = 0.5
    provider = CountingProvider(issuer, tell_expiry=False)
    session = session_with(BearerAuth(provider))
    session.get(studies_url(server), timeout=10)
    time.sleep(0.6)
    server.hold_refusals(4)
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: session.get(studies_url(server), timeout=10).status_code, range(4)))
    assert statuses == [200] * 4
    assert provider.calls == 2
    assert server.statuses().count(401) == 4


def test_a_token_refused_right_after_renewal_raises_without_showing_the_token(server: QuirkServer) -> None:
    session = session_with(BearerAuth(lambda: BearerToken("not-issued-by-the-server-7f3a")))
    with pytest.raises(DICOMTrolleyAuthError, match="401") as caught:
        session.get(studies_url(server), timeout=10)
    assert "not-issued" not in str(caught.value)
    assert server.statuses() == [401, 401]


def test_a_failing_provider_is_an_auth_error_and_no_request_goes_out(server: QuirkServer) -> None:
    session = session_with(BearerAuth(TokenCommand(f"{sys.executable} -c 'import sys; sys.exit(3)'")))
    with pytest.raises(DICOMTrolleyAuthError, match="exited with status 3"):
        session.get(studies_url(server), timeout=10)
    assert server.seen == []


def test_a_token_command_prints_the_token_on_its_first_line(server: QuirkServer, issuer: TokenIssuer) -> None:
    token, _ = issuer.issue("command")
    command = TokenCommand(f"{sys.executable} -c 'print(\"{token}\"); print(\"ignored\")'")
    assert command().value == token
    assert session_with(BearerAuth(command)).get(studies_url(server), timeout=10).status_code == 200


def test_the_token_never_appears_in_logs_reprs_or_pickles(
    server: QuirkServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = tmp_path / "print_token.py"
    script.write_text('print("fixed-token-3c9e")\n', encoding="utf-8")
    provider = TokenCommand(f"{sys.executable} {script}")
    auth = BearerAuth(provider)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DICOMTrolleyAuthError) as caught:
        session_with(auth).get(studies_url(server), timeout=10)
    shown = [caplog.text, repr(auth), str(caught.value), repr(BearerToken("fixed-token-3c9e", 1.0))]
    assert all("fixed-token-3c9e" not in text for text in shown)
    assert b"fixed-token-3c9e" not in pickle.dumps(auth)
    with pytest.raises(TypeError, match="never leaves"):
        pickle.dumps(BearerToken("fixed-token-3c9e"))


def test_an_unpickled_auth_asks_its_own_provider_for_a_token(server: QuirkServer, issuer: TokenIssuer) -> None:
    token, _ = issuer.issue("command")
    auth = BearerAuth(TokenCommand(f"{sys.executable} -c 'print(\"{token}\")'"))
    session_with(auth).get(studies_url(server), timeout=10)
    copy = pickle.loads(pickle.dumps(auth))  # noqa: S301 - our own bytes
    assert copy._token is None
    assert session_with(copy).get(studies_url(server), timeout=10).status_code == 200


def test_a_google_credentials_object_is_refreshed_by_google_auth(server: QuirkServer, issuer: TokenIssuer) -> None:
    from google.oauth2.credentials import Credentials

    with CloudTokenEndpoints(issuer) as endpoints:
        credentials = Credentials(
            token=None, refresh_token="refresh-me", token_uri=endpoints.oauth_token_uri,
            client_id="client", client_secret="client-secret",
        )
        auth = BearerAuth(credentials)
        assert session_with(auth).get(studies_url(server), timeout=10).status_code == 200
    assert isinstance(auth.provider, GoogleCredentials)
    assert issuer.count("oauth") == 1
    with pytest.raises(TypeError, match="private key"):
        pickle.dumps(auth)


def test_an_azure_credential_object_gives_tokens_for_the_dicom_scope(
    server: QuirkServer, issuer: TokenIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import ManagedIdentityCredential

    with CloudTokenEndpoints(issuer) as endpoints:
        for name, value in endpoints.azure_environment().items():
            monkeypatch.setenv(name, value)
        auth = BearerAuth(ManagedIdentityCredential())
        assert session_with(auth).get(studies_url(server), timeout=10).status_code == 200
    assert isinstance(auth.provider, AzureCredentials)
    assert issuer.count("azure") == 1


def test_anything_else_is_refused_as_a_token_source() -> None:
    with pytest.raises(TypeError, match="not str"):
        BearerAuth("a-token-given-as-text")


@pytest.mark.parametrize(
    ("auth", "provider"),
    [("google", GoogleCredentials), ("azure", AzureCredentials), ("token-command", TokenCommand)],
)
def test_a_profile_with_cloud_auth_builds_a_bearer_auth_and_describes_it_again(
    auth: str, provider: type[object]
) -> None:
    command = {"token_command": "gcloud auth print-access-token"} if auth == "token-command" else {}
    profile = ServerProfile(url="http://127.0.0.1:9/dicom-web", auth=auth, **command)  # type: ignore[arg-type]
    trolley = profile.trolley()
    session_auth = trolley.searcher.http.session.auth  # type: ignore[union-attr]
    assert isinstance(session_auth, BearerAuth)
    assert isinstance(session_auth.provider, provider)
    described = ServerProfile.from_trolley(trolley)
    assert (described.auth, described.token_command) == (profile.auth, profile.token_command)


def test_a_profile_cannot_describe_a_provider_only_this_process_has() -> None:
    session = session_with(BearerAuth(lambda: "x"))
    url = "http://127.0.0.1:9/dicom-web"
    with pytest.raises(DICOMTrolleyError, match="cannot describe the bearer tokens"):
        ServerProfile.from_trolley(Trolley(QidoRS(session, url), WadoRS(session, url)))


def test_a_token_command_profile_needs_its_command() -> None:
    with pytest.raises(ValueError, match="token-command"):
        ServerProfile(url="http://127.0.0.1:9/dicom-web", auth="token-command")


def test_an_azure_token_refused_before_its_expiry_is_replaced_not_served_again_from_the_cache(
    server: QuirkServer, issuer: TokenIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer.lifetime, issuer.max_uses = 3600, 2  # azure-identity caches an hour-long token
    with CloudTokenEndpoints(issuer) as endpoints:
        for name, value in endpoints.azure_environment().items():
            monkeypatch.setenv(name, value)
        session = session_with(BearerAuth(AzureCredentials()))
        statuses = [session.get(studies_url(server), timeout=10).status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert issuer.count("azure") == 3
