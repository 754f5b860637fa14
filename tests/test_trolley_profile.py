"""A hand-built Trolley can be described by a secret-free profile, and a worker finds its own password.

A batch export on a cluster ships profiles, never trolleys: these tests show
that a Trolley built by hand reads back into the profile that builds its like,
that the password stays behind, and where a worker looks for it instead.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import requests

from dicomtrolley.auth import create_session
from dicomtrolley.dicom_qr import DICOMQR
from dicomtrolley.dimse_retrieve import DICOMCGet, DICOMCMove
from dicomtrolley.exceptions import DICOMTrolleyAuthError, DICOMTrolleyError
from dicomtrolley.mint import Mint
from dicomtrolley.profiles import PASSWORD_VARIABLE, ServerProfile
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.rad69 import Rad69
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI
from tests.support.fakes import FakeSearcher

URL = "https://pacs.example/dicom-web"
SECRET = "s3cret-Pa55"


def dicomweb_trolley(session: requests.Session) -> Trolley:
    return Trolley(QidoRS(session, URL), WadoRS(session, URL + "/", workers=6))


def test_a_dicomweb_trolley_reads_back_into_its_profile() -> None:
    profile = ServerProfile.from_trolley(dicomweb_trolley(requests.Session()))

    assert (profile.searcher, profile.downloader, profile.url) == ("qido-rs", "wado-rs", URL)
    assert (profile.auth, profile.workers, profile.verify) == ("none", 6, True)


def test_the_profile_of_a_trolley_builds_a_trolley_for_the_same_server() -> None:
    rebuilt = ServerProfile.from_trolley(dicomweb_trolley(requests.Session())).trolley()

    assert isinstance(rebuilt.searcher, QidoRS)
    assert isinstance(rebuilt.downloader, WadoRS)
    assert (rebuilt.searcher.url, rebuilt.downloader.url, rebuilt.downloader.workers) == (URL, URL, 6)


def test_a_vitrea_login_is_described_without_its_password() -> None:
    session = create_session("https://pacs.example/login", "me", SECRET, realm="Radiology")

    profile = ServerProfile.from_trolley(dicomweb_trolley(session), name="pacs")

    assert (profile.auth, profile.user, profile.login_url, profile.realm) == (
        "vitrea", "me", "https://pacs.example/login", "Radiology",
    )
    assert SECRET.encode() not in pickle.dumps(profile)
    assert SECRET not in profile.model_dump_json()


def test_basic_auth_and_a_ca_file_are_described() -> None:
    session = requests.Session()
    session.auth = ("me", SECRET)
    session.verify = "/etc/ssl/hospital.pem"

    profile = ServerProfile.from_trolley(dicomweb_trolley(session))

    assert (profile.auth, profile.user, profile.ca_file, profile.verify) == (
        "basic", "me", Path("/etc/ssl/hospital.pem"), True,
    )
    assert SECRET.encode() not in pickle.dumps(profile)


def test_wado_uri_keeps_its_own_endpoint() -> None:
    session = requests.Session()
    trolley = Trolley(QidoRS(session, URL), WadoURI(session, "https://pacs.example/wado-uri"))

    profile = ServerProfile.from_trolley(trolley)

    assert (profile.downloader, profile.wado_uri_url) == ("wado-uri", "https://pacs.example/wado-uri")


def test_a_dimse_trolley_reads_back_into_its_profile() -> None:
    trolley = Trolley(
        DICOMQR("pacs.example", 104, "ME", "PACS", dimse_timeout=60, network_timeout=60),
        DICOMCMove("pacs.example", 104, "ME", "PACS", destination_port=11113, dimse_timeout=60, network_timeout=60),
    )

    profile = ServerProfile.from_trolley(trolley)

    assert (profile.searcher, profile.downloader, profile.host, profile.port) == (
        "c-find", "c-move", "pacs.example", 104,
    )
    assert (profile.aet, profile.aec, profile.move_port, profile.read_timeout) == ("ME", "PACS", 11113, 60)


def test_a_searcher_and_downloader_on_different_servers_are_refused() -> None:
    trolley = Trolley(
        DICOMQR("pacs.example", 104, "ME", "PACS", dimse_timeout=60, network_timeout=60),
        DICOMCGet("other.example", 104, "ME", "PACS", dimse_timeout=60, network_timeout=60),
    )
    with pytest.raises(DICOMTrolleyError, match="differ in host"):
        ServerProfile.from_trolley(trolley)


def test_a_transfer_syntax_a_profile_cannot_carry_is_refused_not_dropped() -> None:
    session = requests.Session()
    trolley = Trolley(QidoRS(session, URL), WadoRS(session, URL, transfer_syntax="1.2.840.10008.1.2.1"))
    with pytest.raises(DICOMTrolleyError, match="transfer syntax"):
        ServerProfile.from_trolley(trolley)


def test_a_login_a_profile_cannot_describe_is_refused() -> None:
    session = requests.Session()
    session.auth = lambda request: request
    with pytest.raises(DICOMTrolleyError, match="login"):
        ServerProfile.from_trolley(dicomweb_trolley(session))


def test_a_trolley_without_a_downloader_cannot_be_described() -> None:
    with pytest.raises(DICOMTrolleyError, match="searcher and a downloader"):
        ServerProfile.from_trolley(Trolley(QidoRS(requests.Session(), URL)))


def test_a_trolley_built_from_a_profile_gives_that_profile_back_as_it_is() -> None:
    profile = ServerProfile(name="pacs", url=URL, max_connections=3, workers=2)

    assert ServerProfile.from_trolley(profile.trolley()) is profile


def test_a_mint_and_rad69_trolley_reads_back_into_its_profile() -> None:
    session = create_session("https://vitrea.example/login", "me", SECRET, realm="Radiology")
    trolley = Trolley(Mint(session, "https://vitrea.example/mint"), Rad69(session, "https://vitrea.example/rids"))

    profile = ServerProfile.from_trolley(trolley)

    assert (profile.searcher, profile.mint_url) == ("mint", "https://vitrea.example/mint")
    assert (profile.downloader, profile.rad69_url, profile.auth) == ("rad69", "https://vitrea.example/rids", "vitrea")


def test_a_rad69_setting_a_profile_cannot_carry_is_refused_not_dropped() -> None:
    session = requests.Session()
    trolley = Trolley(Mint(session, URL), Rad69(session, URL, request_per_series=False))

    with pytest.raises(DICOMTrolleyError, match="only the default RAD-69 settings"):
        ServerProfile.from_trolley(trolley)


def test_a_searcher_of_another_kind_is_refused_by_name() -> None:
    with pytest.raises(DICOMTrolleyError, match="cannot describe the searcher FakeSearcher"):
        ServerProfile.from_trolley(Trolley(FakeSearcher(), WadoRS(requests.Session(), URL)))


# ------------------------------------------------------------ where a worker finds the password


def test_the_password_can_come_from_a_secrets_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    monkeypatch.setenv(f"{PASSWORD_VARIABLE}_FILE", str(secret_file))

    assert ServerProfile(url=URL, auth="basic", user="me").secret() == SECRET


def test_an_unreadable_secrets_file_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    monkeypatch.setenv(f"{PASSWORD_VARIABLE}_FILE", str(tmp_path / "missing"))

    with pytest.raises(DICOMTrolleyAuthError, match=f"\\${PASSWORD_VARIABLE}_FILE names {tmp_path / 'missing'}"):
        ServerProfile(url=URL, auth="basic", user="me").secret()
