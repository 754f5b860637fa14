"""dicomtrolley probe: what a DICOMweb server supports, asked read-only, and a profile that uses it.

Against the real Orthanc, directly and behind the quirk server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dicomtrolley.cli import main
from dicomtrolley.probe import Finding, ProbeReport, probe, save_profile
from dicomtrolley.profiles import ServerProfile, load_profile, load_profiles
from dicomtrolley.wado_rs import AS_STORED_FORMS, EXPLICIT_SYNTAXES
from tests.support.orthanc import OrthancServer
from tests.support.quirk_server import QuirkServer

pytestmark = pytest.mark.integration


@pytest.fixture
def plain(orthanc: OrthancServer) -> Iterator[QuirkServer]:
    with QuirkServer(orthanc.base_url) as quirks:
        yield quirks


@pytest.fixture
def picky(orthanc: OrthancServer) -> Iterator[QuirkServer]:
    with QuirkServer(orthanc.base_url, refuse_any_syntax=True) as quirks:
        yield quirks


def test_orthanc_searches_pages_and_retrieves_as_stored(plain: QuirkServer) -> None:
    report = probe(requests.Session(), f"{plain.url}/dicom-web")
    for name in ("QIDO-RS studies", "QIDO-RS series", "QIDO-RS instances", "QIDO-RS limit/offset",
                 "WADO-RS metadata", "WADO-RS rendered", "WADO-URI retrieve"):
        assert report.supports(name) is True, name
    assert report.supports("WADO-RS Accept transfer-syntax=*") is True
    assert report.accept == AS_STORED_FORMS[0]


def test_the_probe_only_reads(plain: QuirkServer) -> None:
    probe(requests.Session(), f"{plain.url}/dicom-web")
    assert {request.method for request in plain.seen} <= {"GET", "OPTIONS"}
    assert any(request.method == "OPTIONS" for request in plain.seen)


def test_a_refused_accept_form_is_reported_and_the_one_served_named(picky: QuirkServer) -> None:
    report = probe(requests.Session(), f"{picky.url}/dicom-web")
    refused = next(f for f in report.findings if f.name == "WADO-RS Accept transfer-syntax=*")
    assert (refused.supported, refused.detail.split()[0]) == (False, "406")
    assert report.accept == AS_STORED_FORMS[1]
    assert "retrieve with Accept: " in report.to_table()


def test_a_server_that_ignores_offset_is_reported(orthanc: OrthancServer) -> None:
    with QuirkServer(orthanc.base_url, qido_cap=3, ignore_offset=True) as capped:
        report = probe(requests.Session(), f"{capped.url}/dicom-web")
    paging = next(f for f in report.findings if f.name == "QIDO-RS limit/offset")
    assert paging.supported is False
    assert "offset is ignored" in paging.detail


def test_save_writes_what_was_learned_and_a_later_download_starts_with_it(
    orthanc: OrthancServer, picky: QuirkServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "servers.toml"
    assert main(["probe", f"{picky.url}/dicom-web", "--save", "azure-like", "--config", str(config)]) == 0
    assert "WADO-RS Accept" in capsys.readouterr().out
    assert load_profile("azure-like", config).accept == AS_STORED_FORMS[1]
    before = len(picky.seen)
    study = orthanc.sample.small_studies[0]
    assert main(["download", "--server", "azure-like", "--config", str(config), study.uid,
                 "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    assert 406 not in [request.status for request in picky.seen[before:]]


def test_json_lists_every_finding(plain: QuirkServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", f"{plain.url}/dicom-web", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert {"name": "QIDO-RS studies", "supported": True, "detail": "1 result(s)"} in answer["findings"]


def test_an_unreachable_server_exits_three_naming_the_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "http://127.0.0.1:9/dicom-web"]) == 3
    assert "probe step 'QIDO-RS studies'" in capsys.readouterr().err


def test_a_refused_first_search_exits_one_with_the_table(orthanc: OrthancServer,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.cloud_tokens import TokenIssuer

    with QuirkServer(orthanc.base_url, issuer=TokenIssuer(lifetime=60)) as locked:
        assert main(["probe", f"{locked.url}/dicom-web"]) == 1
    assert "401" in capsys.readouterr().out


def test_saving_replaces_its_table_and_keeps_the_others(tmp_path: Path) -> None:
    config = tmp_path / "servers.toml"
    config.write_text('# my servers\n[servers.other]\nurl = "http://a/dicom-web"\n\n[servers.new]\nurl = "x"\n')
    save_profile(ServerProfile(url="http://b/dicom-web", accept=AS_STORED_FORMS[2], verify=False), "new", config)
    profiles = load_profiles(config)
    assert profiles["other"].url == "http://a/dicom-web"
    assert (profiles["new"].url, profiles["new"].accept, profiles["new"].verify) == (
        "http://b/dicom-web", AS_STORED_FORMS[2], False,
    )
    assert config.read_text().startswith("# my servers\n")


def test_a_dimse_server_is_probed_with_echo_one_match_per_level_and_one_retrieve(
    orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aet, move_port = orthanc.move_destination
    config = tmp_path / "servers.toml"
    config.write_text(
        f'[servers.dimse]\nsearcher = "c-find"\ndownloader = "c-get"\nhost = "127.0.0.1"\n'
        f'port = {orthanc.dicom_port}\naec = "{orthanc.aet}"\naet = "{aet}"\nmove_port = {move_port}\n'
    )
    assert main(["probe", "--server", "dimse", "--config", str(config), "--json"]) == 0
    findings = {f["name"]: f for f in json.loads(capsys.readouterr().out)["findings"]}
    assert [findings[name]["supported"] for name in ("C-ECHO", "C-FIND STUDY", "C-FIND SERIES", "C-FIND IMAGE",
                                                     "C-GET", "C-MOVE")] == [True] * 6
    assert "PatientID" in findings["C-FIND STUDY"]["detail"]


def test_each_common_transfer_syntax_is_asked_for_and_named(plain: QuirkServer) -> None:
    report = probe(requests.Session(), f"{plain.url}/dicom-web")
    syntaxes = {f.name.split("=")[1]: f for f in report.findings if f.name.startswith("WADO-RS transfer-syntax=")}
    assert set(syntaxes) == {"1.2.840.10008.1.2", *EXPLICIT_SYNTAXES}
    explicit = syntaxes["1.2.840.10008.1.2.1"]
    assert explicit.supported is True
    assert explicit.detail.startswith("Explicit VR Little Endian: multipart/related")


@pytest.fixture
def strict_scp() -> Iterator[int]:
    """A DIMSE server that rejects every association not called ``STRICT``; its port."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="STRICT")
    ae.require_called_aet = True
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", 0), block=False)
    yield int(server.server_address[1])
    server.shutdown()


def test_a_rejected_dimse_association_is_reported_per_step_and_exits_one(
    strict_scp: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "servers.toml"
    config.write_text(f'[servers.strict]\nsearcher = "c-find"\ndownloader = "c-get"\nhost = "127.0.0.1"\n'
                      f'port = {strict_scp}\naec = "WRONG"\n')
    assert main(["probe", "--server", "strict", "--config", str(config), "--json"]) == 1
    findings = {f["name"]: f for f in json.loads(capsys.readouterr().out)["findings"]}
    for step in ("C-ECHO", "C-FIND STUDY"):
        assert findings[step]["supported"] is False
        assert "rejected the association" in findings[step]["detail"]


def test_a_dimse_address_alone_is_probed_over_dimse(orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--host", "127.0.0.1", "--port", str(orthanc.dicom_port), "--called-aet", orthanc.aet,
                 "--json"]) == 0
    findings = {f["name"]: f["supported"] for f in json.loads(capsys.readouterr().out)["findings"]}
    assert (findings["C-ECHO"], findings["C-FIND STUDY"], findings["C-GET"]) == (True, True, True)


def finding_named(report: ProbeReport, name: str) -> Finding:
    return next(f for f in report.findings if f.name == name)


def test_fuzzy_matching_a_server_only_accepts_is_reported_as_literal_matching(plain: QuirkServer) -> None:
    fuzzy = finding_named(probe(requests.Session(), f"{plain.url}/dicom-web"), "QIDO-RS fuzzy matching")
    assert (fuzzy.supported, fuzzy.detail.endswith("literal matching only")) == (False, True)


def test_fuzzy_matching_a_server_applies_is_reported_without_naming_the_patient(orthanc: OrthancServer) -> None:
    with QuirkServer(orthanc.base_url, fuzzy_names=True) as fuzzy_server:
        fuzzy = finding_named(probe(requests.Session(), f"{fuzzy_server.url}/dicom-web"), "QIDO-RS fuzzy matching")
    assert fuzzy.supported is True
    words = {word.lower() for study in orthanc.sample.studies for word in study.patient_name.split("^")}
    assert not [word for word in words if word in fuzzy.detail.lower()]
