"""Server profiles: validation, the servers file, secrets kept out, and trolleys built from them."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import keyring
import pytest

from dicomtrolley.core import Query
from dicomtrolley.exceptions import DICOMTrolleyAuthError, DICOMTrolleyError
from dicomtrolley.profiles import (
    DOWNLOADERS,
    PASSWORD_VARIABLE,
    TOKEN_VARIABLE,
    ServerProfile,
    default_config_path,
    load_profile,
    load_profiles,
)
from tests.support.fakes import MemoryKeyring
from tests.support.orthanc import OrthancFactory, OrthancServer


@pytest.fixture
def memory_keyring() -> Any:
    previous = keyring.get_keyring()
    backend = MemoryKeyring({})
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def no_secret_sources(monkeypatch: pytest.MonkeyPatch, memory_keyring: MemoryKeyring) -> None:
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    monkeypatch.setattr("sys.stdin", None)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "servers.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_dicomweb_profile_needs_a_url() -> None:
    with pytest.raises(ValueError, match="need url"):
        ServerProfile(searcher="qido-rs", downloader="wado-rs")


def test_a_dimse_profile_needs_host_and_port() -> None:
    with pytest.raises(ValueError, match="need host, port"):
        ServerProfile(searcher="c-find", downloader="c-get")


def test_an_unknown_protocol_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="'wado-rs'"):
        ServerProfile(url="http://x/dicom-web", downloader="carrier-pigeon")


def test_basic_auth_needs_a_user() -> None:
    with pytest.raises(ValueError, match="needs a user"):
        ServerProfile(url="http://x/dicom-web", auth="basic")


def test_wado_uri_defaults_to_wado_beside_the_dicomweb_root() -> None:
    profile = ServerProfile(url="http://pacs:8042/dicom-web/", downloader="wado-uri")
    assert profile.wado_uri_endpoint == "http://pacs:8042/wado"


def test_a_profile_pickles_and_holds_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, "hunter2")
    profile = ServerProfile(name="pacs", url="http://x/dicom-web", auth="basic", user="me")
    profile.trolley()
    data = pickle.dumps(profile)
    assert b"hunter2" not in data
    assert pickle.loads(data) == profile  # noqa: S301 - our own bytes


def test_servers_file_gives_named_profiles(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[servers.pacs]
url = "https://pacs.example/dicom-web"
auth = "basic"
user = "me"
ca_file = "/etc/ssl/ca.pem"
workers = 8

[servers.archive]
host = "archive.example"
port = 104
aec = "ARCHIVE"
searcher = "c-find"
downloader = "c-move"
move_port = 11112
""",
    )
    profiles = load_profiles(path)
    assert set(profiles) == {"pacs", "archive"}
    assert profiles["pacs"].name == "pacs"
    assert profiles["pacs"].ca_file == Path("/etc/ssl/ca.pem")
    assert profiles["archive"].port == 104
    assert profiles["archive"].move_port == 11112
    assert load_profile("archive", path).aec == "ARCHIVE"


def test_a_password_in_the_servers_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[servers.pacs]\nurl = "http://x"\nauth = "basic"\nuser = "me"\npassword = "p"\n')
    with pytest.raises(DICOMTrolleyError, match="secrets are never stored"):
        load_profiles(path)


def test_an_invalid_server_is_named_with_its_problem(tmp_path: Path) -> None:
    path = write(tmp_path, '[servers.pacs]\nurl = "http://x"\nport = "not a port"\n')
    with pytest.raises(DICOMTrolleyError, match=r"servers\.pacs: port"):
        load_profiles(path)


def test_an_unknown_server_name_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, '[servers.pacs]\nurl = "http://x"\n')
    with pytest.raises(DICOMTrolleyError, match=r"No server 'other'.*known: pacs"):
        load_profile("other", path)


def test_the_config_path_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DICOMTROLLEY_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_path() == tmp_path / "dicomtrolley" / "servers.toml"
    monkeypatch.setenv("DICOMTROLLEY_CONFIG", str(tmp_path / "mine.toml"))
    assert default_config_path() == tmp_path / "mine.toml"


def test_the_password_comes_from_the_environment_first(
    monkeypatch: pytest.MonkeyPatch, memory_keyring: MemoryKeyring
) -> None:
    memory_keyring.set_password("dicomtrolley", "pacs:me", "from-keyring")
    monkeypatch.setenv(PASSWORD_VARIABLE, "from-env")
    profile = ServerProfile(name="pacs", url="http://x", auth="basic", user="me")
    assert profile.secret() == "from-env"


def test_the_password_comes_from_the_keyring_without_the_environment(
    no_secret_sources: None, memory_keyring: MemoryKeyring
) -> None:
    memory_keyring.set_password("dicomtrolley", "pacs:me", "from-keyring")
    profile = ServerProfile(name="pacs", url="http://x", auth="basic", user="me")
    assert profile.secret() == "from-keyring"


def test_no_password_anywhere_says_where_to_put_one(no_secret_sources: None) -> None:
    profile = ServerProfile(name="pacs", url="http://x", auth="basic", user="me")
    with pytest.raises(DICOMTrolleyAuthError, match=f"\\${PASSWORD_VARIABLE}"):
        profile.trolley()


def test_a_bearer_token_goes_into_the_authorization_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, "tok")
    session = ServerProfile(url="http://x", auth="bearer").session()
    assert session.headers["Authorization"] == "Bearer tok"


def test_a_ca_file_is_what_tls_is_checked_against() -> None:
    assert ServerProfile(url="http://x", ca_file=Path("/ca.pem")).session().verify == "/ca.pem"
    assert ServerProfile(url="http://x", verify=False).session().verify is False


def test_every_downloader_kind_builds() -> None:
    for kind in DOWNLOADERS:
        profile = ServerProfile(
            url="http://x/dicom-web", host="h", port=104, move_port=11112, rad69_url="http://x/rids", downloader=kind
        )
        assert profile.trolley().downloader is not None


@pytest.mark.integration
def test_a_dicomweb_profile_finds_and_downloads(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = orthanc.sample.small_studies[0]
    trolley = ServerProfile(url=orthanc.dicomweb_url).trolley()
    summary = trolley.download(study.uid, tmp_path, progress=False)
    assert summary.written == len(study.instances)


@pytest.mark.integration
def test_a_dimse_profile_finds_and_downloads(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = orthanc.sample.small_studies[0]
    profile = ServerProfile(
        searcher="c-find", downloader="c-get", host="127.0.0.1", port=orthanc.dicom_port, aec=orthanc.aet
    )
    trolley = profile.trolley()
    assert trolley.find_study(Query(StudyInstanceUID=study.uid)).uid == study.uid
    assert trolley.download(study.uid, tmp_path, progress=False).written == len(study.instances)


@pytest.mark.integration
def test_a_basic_auth_profile_logs_in_with_the_password_from_the_environment(
    orthanc_factory: OrthancFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = orthanc_factory(AuthenticationEnabled=True, RegisteredUsers={"alice": "s3cret"})
    monkeypatch.setenv(PASSWORD_VARIABLE, "s3cret")
    trolley = ServerProfile(url=server.dicomweb_url, auth="basic", user="alice").trolley()
    assert len(trolley.find_studies(Query())) == len(server.sample.studies)
