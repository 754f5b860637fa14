"""dicomtrolley probe: whether a server needs credentials, whether the session's worked, and its rate limits.

Against the real Orthanc, directly, behind the quirk server (bearer tokens that
expire, 429s with Retry-After) and with its own Basic authentication switched on.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from dicomtrolley.auth import BearerAuth, BearerToken
from dicomtrolley.cli import main
from dicomtrolley.probe import Finding, ProbeReport, probe
from dicomtrolley.probe_access import challenge_of
from dicomtrolley.profiles import load_profile
from tests.support.cloud_tokens import CloudTokenEndpoints, TokenIssuer
from tests.support.orthanc import OrthancServer
from tests.support.quirk_server import QuirkServer

pytestmark = pytest.mark.integration


def row(report: ProbeReport, name: str) -> Finding:
    return next(f for f in report.findings if f.name == name)


def bearer_session(source: Callable[[], BearerToken | str]) -> requests.Session:
    session = requests.Session()
    session.auth = BearerAuth(source)
    return session


@pytest.fixture
def plain(orthanc: OrthancServer) -> Iterator[QuirkServer]:
    with QuirkServer(orthanc.base_url) as quirks:
        yield quirks


def test_orthanc_as_it_is_needs_no_credentials_and_never_asks_to_slow_down(plain: QuirkServer) -> None:
    report = probe(requests.Session(), f"{plain.url}/dicom-web")
    assert (row(report, "Authentication").supported, row(report, "Authentication").detail) == (
        True, "not required: answered without credentials")
    assert (row(report, "Rate limiting").supported, row(report, "Rate limiting").detail) == (
        None, f"no 429 or 503 in {len(plain.seen)} answers")
    assert report.notes() == []


def test_a_bearer_token_requirement_is_named_with_the_lifetime_its_source_gave(orthanc: OrthancServer) -> None:
    issuer = TokenIssuer(lifetime=600)

    def tokens() -> BearerToken:
        return BearerToken(*issuer.issue("test"))

    with QuirkServer(orthanc.base_url, issuer=issuer) as locked:
        report = probe(bearer_session(tokens), f"{locked.url}/dicom-web")
    auth = row(report, "Authentication")
    assert auth.supported is True
    assert auth.detail.startswith("required (Bearer); a Bearer token from tokens accepted; a token lived 600 s; "
                                  "1 token(s) asked for during the probe")
    assert report.supports("WADO-RS metadata") is True
    assert all(token not in json.dumps(report.to_dict()) + report.to_table() for token in issuer.tokens())


def test_tokens_of_unknown_lifetime_are_reported_by_the_401s_replayed_after_a_renewal(orthanc: OrthancServer) -> None:
    issuer = TokenIssuer(lifetime=600, max_uses=8)  # each token refused after eight requests, unannounced
    with QuirkServer(orthanc.base_url, issuer=issuer) as locked:
        report = probe(bearer_session(lambda: issuer.issue("test")[0]), f"{locked.url}/dicom-web")
        refused = locked.statuses().count(401)
    assert report.access is not None
    assert refused - 1 == report.access.replayed >= 2  # one 401 is the search sent without credentials
    assert report.access.tokens_asked == report.access.replayed + 1
    detail = row(report, "Authentication").detail
    assert "token lifetime not given by its source" in detail
    assert f"{report.access.replayed} request(s) answered 401 and sent again with renewed credentials" in detail
    assert report.supports("WADO-RS metadata") is True


def test_a_server_that_needs_credentials_none_were_given_for_says_so_and_exits_one(
    orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with QuirkServer(orthanc.base_url, issuer=TokenIssuer(lifetime=60)) as locked:
        assert main(["probe", f"{locked.url}/dicom-web", "--json"]) == 1
    access = json.loads(capsys.readouterr().out)["access"]
    assert (access["required"], access["challenge"], access["credentials"], access["accepted"]) == (
        True, "Bearer", None, None)


def test_a_token_source_that_fails_exits_three_naming_the_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "http://127.0.0.1:9/dicom-web", "--token-command", "false"]) == 3
    assert "probe step 'QIDO-RS studies': the token command 'false' exited with status 1" in capsys.readouterr().err


def test_basic_credentials_are_named_as_the_scheme_orthanc_asks_for(
    orthanc_factory: Callable[..., OrthancServer],
) -> None:
    server = orthanc_factory(AuthenticationEnabled=True, RegisteredUsers={"alice": "basic-Pa55"})
    session = requests.Session()
    session.auth = ("alice", "basic-Pa55")
    report = probe(session, server.dicomweb_url)
    auth = row(report, "Authentication")
    assert (auth.supported, auth.detail.split("; ")[:2]) == (True, ["required (Basic)", "Basic credentials accepted"])
    assert "basic-Pa55" not in report.to_table()


def test_wrong_basic_credentials_are_reported_refused(orthanc_factory: Callable[..., OrthancServer]) -> None:
    server = orthanc_factory(AuthenticationEnabled=True, RegisteredUsers={"alice": "basic-Pa55"})
    session = requests.Session()
    session.auth = ("alice", "wrong")
    auth = row(probe(session, server.dicomweb_url), "Authentication")
    assert (auth.supported, auth.detail.split("; ")[1]) == (False, "Basic credentials refused")


def test_429s_with_retry_after_are_reported_as_waited_out(orthanc: OrthancServer) -> None:
    with QuirkServer(orthanc.base_url, throttle_every=9, retry_after=1) as busy:
        report = probe(requests.Session(), f"{busy.url}/dicom-web")
        throttled = busy.statuses().count(429)
    limits = row(report, "Rate limiting")
    assert throttled >= 2
    assert (limits.supported, limits.detail) == (
        True, f"rate-limited: 429 x{throttled} (Retry-After: 1); each request succeeded after waiting it out")
    assert report.supports("QIDO-RS studies") is True
    assert limits.detail in report.to_table().splitlines()[-1]


def test_429s_that_outlast_the_retries_are_reported_as_not_got_past(orthanc: OrthancServer) -> None:
    with QuirkServer(orthanc.base_url, throttle_every=1, retry_after=0) as closed:
        report = probe(requests.Session(), f"{closed.url}/dicom-web")
    assert report.access is not None
    limits = row(report, "Rate limiting")
    assert limits.supported is False
    assert limits.detail.endswith(f"; {len(report.access.throttles) // 2} still refused after retrying")


@pytest.fixture
def token_command(orthanc: OrthancServer, tmp_path: Path) -> Iterator[tuple[QuirkServer, TokenIssuer, str]]:
    """The quirk server taking tokens from a managed-identity endpoint, and a command that prints one."""
    issuer = TokenIssuer(lifetime=600, max_uses=10)
    with CloudTokenEndpoints(issuer) as endpoints, QuirkServer(orthanc.base_url, issuer=issuer) as locked:
        azure = endpoints.azure_environment()
        script = tmp_path / "token.py"
        script.write_text(
            "import json, urllib.request\n"
            f"request = urllib.request.Request({azure['IDENTITY_ENDPOINT'] + '?resource=x'!r},\n"
            f"    headers={{'X-IDENTITY-HEADER': {azure['IDENTITY_HEADER']!r}}})\n"
            "print(json.load(urllib.request.urlopen(request))['access_token'])\n",
            encoding="utf-8",
        )
        yield locked, issuer, f"{sys.executable} {script}"


def test_the_command_reports_and_saves_the_bearer_requirement_but_never_a_token(
    token_command: tuple[QuirkServer, TokenIssuer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked, issuer, command = token_command
    config = tmp_path / "servers.toml"
    assert main(["probe", f"{locked.url}/dicom-web", "--token-command", command, "--json",
                 "--save", "cloud", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    access = json.loads(out)["access"]
    assert (access["required"], access["challenge"], access["credentials"], access["accepted"]) == (
        True, "Bearer", "a Bearer token from TokenCommand", True)
    assert access["token_lifetime"] is None
    assert access["replayed"] >= 1
    saved = config.read_text(encoding="utf-8")
    assert "# needs Bearer authentication\n" in saved
    assert load_profile("cloud", config).auth == "token-command"
    assert issuer.tokens()
    assert all(token not in out + saved for token in issuer.tokens())


def test_azure_credentials_tell_the_probe_how_long_their_tokens_live(
    orthanc: OrthancServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    issuer = TokenIssuer(lifetime=600)
    with CloudTokenEndpoints(issuer) as endpoints, QuirkServer(orthanc.base_url, issuer=issuer) as locked:
        for name, value in endpoints.azure_environment().items():
            monkeypatch.setenv(name, value)
        assert main(["probe", f"{locked.url}/dicom-web", "--auth", "azure", "--json"]) == 0
    access = json.loads(capsys.readouterr().out)["access"]
    assert (access["credentials"], access["accepted"], access["tokens_asked"]) == (
        "a Bearer token from AzureCredentials", True, 1)
    assert 590 <= access["token_lifetime"] <= 600


def test_a_saved_profile_notes_the_rate_limit(
    orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "servers.toml"
    with QuirkServer(orthanc.base_url, throttle_every=12, retry_after=1) as busy:
        assert main(["probe", f"{busy.url}/dicom-web", "--save", "busy", "--config", str(config)]) == 0
    assert "# rate-limited: 429 x" in config.read_text(encoding="utf-8")
    assert "rate-limited: 429 x" in capsys.readouterr().out


def test_the_schemes_of_a_challenge_are_named_and_its_parameters_left_out() -> None:
    answer = requests.Response()
    answer.headers["WWW-Authenticate"] = 'Basic realm="a, b", Bearer error="invalid_token", scope="x y"'
    assert challenge_of(answer) == "Basic, Bearer"
    assert challenge_of(requests.Response()) == ""
