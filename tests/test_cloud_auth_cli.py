"""The dicomtrolley command with cloud credentials: tokens that expire during a download and an export.

The command runs in a process of its own, as a user runs it, with the real
``google-auth`` and ``azure-identity`` finding their token endpoints through
the environment (``GCE_METADATA_HOST``, ``IDENTITY_ENDPOINT``): local stand-ins
that hand out tokens living two seconds, checked by a server in front of Orthanc.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cloud_tokens import CloudTokenEndpoints, TokenIssuer
from tests.support.orthanc import OrthancServer
from tests.support.quirk_server import QuirkServer

pytestmark = pytest.mark.integration

LIFETIME = 1.5
"""Seconds a token lives (announced): about a third of the download of the large study (300 requests)."""

TEMPLATE = "{StudyInstanceUID}/{SOPInstanceUID}.dcm"


MAX_USES = 60
"""Requests a token is good for: 300 instances, one request each, need at least five tokens."""


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(lifetime=LIFETIME, max_uses=MAX_USES)


@pytest.fixture
def endpoints(issuer: TokenIssuer) -> Iterator[CloudTokenEndpoints]:
    with CloudTokenEndpoints(issuer) as running:
        yield running


@pytest.fixture
def server(orthanc: OrthancServer, issuer: TokenIssuer) -> Iterator[QuirkServer]:
    with QuirkServer(orthanc.base_url, issuer=issuer) as quirks:
        yield quirks


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GCE_", "IDENTITY_", "AZURE_", "MSI_"))}
    return subprocess.run(
        [sys.executable, "-m", "dicomtrolley.cli", "-vv", *args],
        env={**clean, **env}, capture_output=True, text=True, timeout=240, check=False,
    )


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.dcm") if p.is_file()]


def renewals_logged(log: str, source: str) -> int:
    """Tokens renewed, as the log says: each new token after the first is logged with the reason it was asked for."""
    got = log.count(f"got a bearer token from {source}")
    reasons = log.count("answered 401; renewing the credential") + log.count("the bearer token is about to expire")
    assert reasons == got - 1, "a token was renewed without the log saying why"
    return reasons


def assert_no_token_shown(issuer: TokenIssuer, *texts: str) -> None:
    for token in issuer.tokens():
        assert all(token not in text for text in texts), "a token was shown"


def test_download_with_google_credentials_renews_tokens_that_expire_midway(
    orthanc: OrthancServer, server: QuirkServer, endpoints: CloudTokenEndpoints, issuer: TokenIssuer, tmp_path: Path
) -> None:
    study = orthanc.sample.large_study
    done = run_cli(
        ["download", f"{server.url}/dicom-web", study.uid, "-o", str(tmp_path / "out"), "--auth", "google",
         "--no-progress", "--workers", "2", "--downloader", "wado-uri", "--template", TEMPLATE],
        endpoints.google_environment(tmp_path),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(files_in(tmp_path / "out")) == len(study.instances)
    assert issuer.count("google") >= 2
    assert renewals_logged(done.stderr, "GoogleCredentials") >= 1
    assert_no_token_shown(issuer, done.stdout, done.stderr)


def test_export_with_azure_credentials_renews_tokens_and_keeps_them_out_of_its_files(
    orthanc: OrthancServer, server: QuirkServer, endpoints: CloudTokenEndpoints, issuer: TokenIssuer, tmp_path: Path
) -> None:
    studies = [orthanc.sample.large_study, *orthanc.sample.small_studies[:4]]
    worklist = tmp_path / "worklist.csv"
    worklist.write_text("StudyInstanceUID\n" + "".join(f"{s.uid}\n" for s in studies), encoding="utf-8")
    out = tmp_path / "out"
    done = run_cli(
        ["export", f"{server.url}/dicom-web", str(worklist), "-o", str(out), "--auth", "azure", "--no-progress",
         "--studies", "2", "--downloader", "wado-uri", "--template", TEMPLATE],
        endpoints.azure_environment(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(files_in(out)) == sum(len(s.instances) for s in studies)
    assert issuer.count("azure") >= 2
    assert renewals_logged(done.stderr, "AzureCredentials") >= 1
    kept = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".dcm")
    assert_no_token_shown(issuer, done.stdout, done.stderr, kept.decode("latin-1"))


def test_download_with_a_token_command_asks_it_again_after_a_401(
    orthanc: OrthancServer, server: QuirkServer, endpoints: CloudTokenEndpoints, issuer: TokenIssuer, tmp_path: Path
) -> None:
    script = tmp_path / "token.py"
    script.write_text(
        "import json, urllib.request\n"
        f"request = urllib.request.Request('{endpoints.azure_environment()['IDENTITY_ENDPOINT']}?resource=x',\n"
        f"    headers={{'X-IDENTITY-HEADER': '{endpoints.azure_environment()['IDENTITY_HEADER']}'}})\n"
        "print(json.load(urllib.request.urlopen(request))['access_token'])\n",
        encoding="utf-8",
    )
    study = orthanc.sample.large_study
    done = run_cli(
        ["download", f"{server.url}/dicom-web", study.uid, "-o", str(tmp_path / "out"), "--no-progress",
         "--token-command", f"{sys.executable} {script}", "--workers", "2", "--downloader", "wado-uri",
         "--template", TEMPLATE],
        {},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(files_in(tmp_path / "out")) == len(study.instances)
    assert issuer.count("azure") >= 2  # the command's lifetime is unknown: renewed after a 401
    assert 401 in server.statuses()
    assert renewals_logged(done.stderr, "TokenCommand") >= 1
    assert "answered 401; renewing the credential and sending it again" in done.stderr
    assert_no_token_shown(issuer, done.stdout, done.stderr)
