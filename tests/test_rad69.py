"""RAD-69: downloads through the Vitrea-like vitrea, from the real Orthanc's stored files.

Each integration test logs in through the Vitrea gateway and downloads with
``Trolley(Mint(...), Rad69(...))``; every file written is compared byte for
byte with the copy Orthanc stores. The server's switches produce the error
shapes seen in practice (missing documents, Failure, SOAP Fault, parts out of
order, a cut stream, an HTML page).
"""

from __future__ import annotations

import threading
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from dicomtrolley.auth import create_session
from dicomtrolley.cli import PASSWORD_VARIABLE, main
from dicomtrolley.core import InstancePart, InstanceReference, SeriesReference, StudyReference
from dicomtrolley.exceptions import (
    DICOMTrolleyError,
    DownloadError,
    MalformedResponseError,
    Rad69ServerError,
    XDSMissingDocumentError,
)
from dicomtrolley.mint import Mint
from dicomtrolley.profiles import ServerProfile
from dicomtrolley.progress import Progress
from dicomtrolley.rad69 import DEFAULT_TRANSFER_SYNTAXES, Rad69, read_envelope
from dicomtrolley.storage import TEMPORARY_SUFFIX
from dicomtrolley.trolley import Trolley
from tests.support.orthanc import OrthancServer
from tests.support.sample_data import SampleStudy
from tests.support.vitrea_server import VitreaServer

pytestmark = pytest.mark.integration



@pytest.fixture
def session(vitrea: VitreaServer) -> Iterator[requests.Session]:
    with create_session(vitrea.login_url, vitrea.user, vitrea.password) as logged_in:
        yield logged_in


def trolley(vitrea: VitreaServer, session: requests.Session, *, workers: int = 4,
            request_per_series: bool = True) -> Trolley:
    rad69 = Rad69(session, vitrea.rad69_url, workers=workers, request_per_series=request_per_series)
    return Trolley(Mint(session, vitrea.mint_url), rad69)


def study_of(orthanc: OrthancServer, patient_id: str = "PAT002") -> SampleStudy:
    assert orthanc.sample is not None
    return orthanc.sample.studies_of_patient(patient_id)[0]


def stored_copy(orthanc: OrthancServer, sop_uid: str) -> bytes:
    """The file Orthanc keeps for an instance, fetched over its own REST API."""
    with orthanc.session() as rest:
        [found] = rest.post(f"{orthanc.base_url}/tools/lookup", data=sop_uid, timeout=30).json()
        return rest.get(f"{orthanc.base_url}/instances/{found['ID']}/file", timeout=30).content


def file_of(out: Path, study: str, series: str, instance: str) -> Path:
    return out / study.replace(".", "_") / series.replace(".", "_") / instance.replace(".", "_")


def assert_written_as_stored(
    orthanc: OrthancServer, out: Path, study: SampleStudy, skip: frozenset[str] = frozenset()
) -> None:
    for series in study.series:
        for instance in series.instances:
            path = file_of(out, study.uid, series.uid, instance.uid)
            if instance.uid in skip:
                assert not path.exists()
            else:
                assert path.read_bytes() == stored_copy(orthanc, instance.uid)
    assert not list(out.rglob(f"*{TEMPORARY_SUFFIX}"))


# --- downloading -------------------------------------------------------------------------------


def test_study_downloads_byte_for_byte_with_one_request_per_series(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session, tmp_path: Path
) -> None:
    study = study_of(orthanc)
    before = len(vitrea.retrieves)
    summary = trolley(vitrea, session).download(study.uid, tmp_path, progress=False)
    assert summary.ok
    assert summary.written == summary.expected == len(study.instances)
    assert_written_as_stored(orthanc, tmp_path, study)
    requests_sent = vitrea.retrieves[before:]
    assert sorted(map(sorted, requests_sent)) == sorted(sorted(i.uid for i in s.instances) for s in study.series)


def test_one_request_per_study_when_asked(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session, tmp_path: Path
) -> None:
    study = study_of(orthanc)
    before = len(vitrea.retrieves)
    summary = trolley(vitrea, session, request_per_series=False).download(study.uid, tmp_path, progress=False)
    assert summary.ok
    assert len(vitrea.retrieves[before:]) == 1
    assert_written_as_stored(orthanc, tmp_path, study)


def test_series_download_fetches_that_series_only(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session, tmp_path: Path
) -> None:
    study = study_of(orthanc)
    series = study.series[1]
    summary = trolley(vitrea, session).download(SeriesReference(study.uid, series.uid), tmp_path, progress=False)
    assert summary.ok
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        i.uid.replace(".", "_") for i in series.instances
    )


def test_second_run_sends_no_retrieve(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session, tmp_path: Path
) -> None:
    study = study_of(orthanc)
    trolley(vitrea, session).download(study.uid, tmp_path, progress=False)
    before = len(vitrea.retrieves)
    summary = trolley(vitrea, session).download(study.uid, tmp_path, progress=False)
    assert summary.skipped == len(study.instances)
    assert vitrea.retrieves[before:] == []


def test_datasets_equal_the_stored_files(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session
) -> None:
    study = study_of(orthanc, "PAT003")
    received = list(trolley(vitrea, session).fetch_all_datasets(study.uid))
    assert sorted(ds.SOPInstanceUID for ds in received) == sorted(i.uid for i in study.instances)
    for dataset in received:
        original = next(i for i in study.instances if i.uid == dataset.SOPInstanceUID)
        assert dataset == pydicom.dcmread(original.path)


def test_large_study_arrives_whole(orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session,
                                   tmp_path: Path) -> None:
    assert orthanc.sample is not None
    study = orthanc.sample.large_study
    summary = trolley(vitrea, session).download(study.uid, tmp_path, progress=False)
    assert summary.ok
    assert summary.bytes_written == study.size
    series = study.series[0]
    for instance in series.instances[::50]:
        assert file_of(tmp_path, study.uid, series.uid, instance.uid).read_bytes() == stored_copy(orthanc, instance.uid)


def test_one_request_is_read_and_written_on_the_calling_thread(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session
) -> None:
    """A 300-instance answer starts no thread: the socket's buffer reads ahead, not a second reader."""
    assert orthanc.sample is not None
    study = orthanc.sample.large_study
    instances = [InstanceReference(study.uid, s.uid, i.uid) for s in study.series for i in s.instances]
    threads_seen: set[str] = set()

    def sink(part: InstancePart) -> None:
        threads_seen.update(t.name for t in threading.enumerate() if t.name.startswith("dicomtrolley"))
        threads_seen.add(threading.current_thread().name)

    rad69 = Rad69(session, vitrea.rad69_url, request_per_series=False)
    assert rad69.fetch(instances, sink) == []
    assert threads_seen == {threading.current_thread().name}


def test_a_busy_server_is_asked_again_with_the_same_request(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session, tmp_path: Path
) -> None:
    study = study_of(orthanc, "PAT003")
    vitrea.switches.unavailable = 2
    before = len(vitrea.retrieves)
    summary = trolley(vitrea, session, workers=1).download(study.uid, tmp_path, progress=False)
    assert summary.ok
    assert vitrea.switches.unavailable == 0
    assert len(vitrea.retrieves[before:]) == len(study.series)  # the refused tries never reached the retrieve
    assert_written_as_stored(orthanc, tmp_path, study)


def test_parts_out_of_order_are_matched_by_content_id(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session, tmp_path: Path
) -> None:
    vitrea.switches.parts_out_of_order = True
    study = study_of(orthanc)
    summary = trolley(vitrea, session).download(study.uid, tmp_path, progress=False)
    assert summary.ok
    assert_written_as_stored(orthanc, tmp_path, study)


def test_parts_waiting_for_a_late_envelope_wait_on_disk_not_in_memory(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session
) -> None:
    assert orthanc.sample is not None
    study = orthanc.sample.large_study
    instances = study.instances[:100]  # 52 MB of one series, all of it sent before the envelope
    references = [InstanceReference(study.uid, study.series[0].uid, i.uid) for i in instances]
    for reference in references:
        vitrea.stored_file(reference.instance_uid)  # the server's own copies, read before measuring
    vitrea.switches.parts_out_of_order = True
    sizes: list[int] = []
    tracemalloc.start()
    try:
        failures = Rad69(session, vitrea.rad69_url).fetch(references, lambda part: sizes.append(part.size))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert failures == []
    assert sum(sizes) == sum(i.size for i in instances)
    assert peak < 32e6  # the spill threshold (16 MB) and change; all of it held would be 52 MB and more


def test_a_session_that_expires_mid_download_logs_in_once_and_goes_on(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session, tmp_path: Path
) -> None:
    study = study_of(orthanc, "PAT001")
    assert vitrea.gateway is not None
    gateway = vitrea.gateway
    expired: list[int] = []

    def expire_once(update: Progress) -> None:
        if not expired:
            expired.append(update.instances)
            gateway.expire_sessions()

    downloads = trolley(vitrea, session, workers=1)
    downloads.find_study_by_id(study.uid)  # logged in before the download starts
    logins = gateway.login_count
    summary = downloads.download(study.uid, tmp_path, progress=expire_once)
    assert summary.ok
    assert expired
    assert gateway.login_count == logins + 1
    refused = [r for r in gateway.seen if r.path == "/rids" and r.status == 401]
    assert refused  # a retrieve was refused, resent with its body after the login, and answered
    assert_written_as_stored(orthanc, tmp_path, study)


# --- what the server reports missing -------------------------------------------------------------


def test_partial_success_keeps_what_arrived_and_names_each_missing_document(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session, tmp_path: Path
) -> None:
    study = study_of(orthanc)
    missing = {study.series[0].instances[0].uid, study.series[1].instances[1].uid}
    vitrea.switches.missing_documents = set(missing)
    summary = trolley(vitrea, session).download(study.uid, tmp_path, on_error="collect", progress=False)
    assert summary.written == len(study.instances) - 2
    failed = {f.target: f.error for f in summary.failures}
    assert {t.instance_uid for t in failed if isinstance(t, InstanceReference)} == missing
    for error in failed.values():
        assert isinstance(error, XDSMissingDocumentError)
        assert error.codes == ("XDSMissingDocument",)
    assert {m.instance_uid for m in summary.missing} == missing
    assert_written_as_stored(orthanc, tmp_path, study, skip=frozenset(missing))


def test_partial_success_raises_at_the_end_by_default(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session, tmp_path: Path
) -> None:
    study = study_of(orthanc)
    vitrea.switches.missing_documents = {study.series[0].instances[0].uid}
    with pytest.raises(DownloadError, match="XDSMissingDocument") as raised:
        trolley(vitrea, session).download(study.uid, tmp_path, progress=False)
    assert raised.value.summary.written == len(study.instances) - 1  # type: ignore[attr-defined]


def test_a_whole_series_missing_fails_that_series_and_the_others_arrive(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session, tmp_path: Path
) -> None:
    study = study_of(orthanc)
    lost = study.series[0]
    vitrea.switches.missing_documents = {i.uid for i in lost.instances}
    summary = trolley(vitrea, session).download(study.uid, tmp_path, on_error="collect", progress=False)
    [failure] = summary.failures
    assert failure.target == SeriesReference(study.uid, lost.uid)
    assert isinstance(failure.error, XDSMissingDocumentError)
    assert summary.written == len(study.instances) - len(lost.instances)
    assert_written_as_stored(orthanc, tmp_path, study, skip=frozenset(i.uid for i in lost.instances))


def test_a_document_neither_sent_nor_reported_is_a_failure_of_its_own(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session
) -> None:
    study = study_of(orthanc)
    series = study.series[0]
    references = [InstanceReference(study.uid, series.uid, i.uid) for i in series.instances]
    vitrea.switches.dropped_documents = {references[0].instance_uid}
    arrived: list[str] = []
    failures = Rad69(session, vitrea.rad69_url).fetch(
        references, lambda part: arrived.append(part.reference.instance_uid)  # type: ignore[union-attr]
    )
    [failure] = failures
    assert failure.target == references[0]
    assert isinstance(failure.error, MalformedResponseError)
    assert "neither sent document" in str(failure.error)
    assert sorted(arrived) == sorted(r.instance_uid for r in references[1:])


# --- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "status", "code"), [("plain", 200, "XDSRepositoryError"), ("fault", 500, "soap:Receiver")]
)
def test_failure_and_soap_fault_raise_naming_the_codes(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session, tmp_path: Path,
    failure: str, status: int, code: str,
) -> None:
    vitrea.switches.failure = failure
    study = study_of(orthanc)
    summary = trolley(vitrea, session).download(study.uid, tmp_path, on_error="collect", progress=False)
    assert len(summary.failures) == len(study.series)
    for one in summary.failures:
        assert type(one.error) is Rad69ServerError
        assert one.error.codes == (code,)
        assert one.error.status == status
        assert vitrea.rad69_url in str(one.error)
        assert code in str(one.error)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_a_cut_stream_is_recovered_and_every_file_is_whole(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session, tmp_path: Path
) -> None:
    study = study_of(orthanc)
    vitrea.switches.cut_after_parts = 2
    vitrea.switches.cuts = 1
    before = len(vitrea.retrieves)
    summary = trolley(vitrea, session, workers=1).download(study.uid, tmp_path, progress=False)
    assert summary.ok
    assert summary.written == len(study.instances)
    assert len(vitrea.retrieves[before:]) == len(study.series) + 1  # the cut one, asked again for what it lacked
    assert_written_as_stored(orthanc, tmp_path, study)


def test_an_html_page_with_status_200_is_malformed_and_named(
    orthanc: OrthancServer, vitrea: VitreaServer, session: requests.Session, tmp_path: Path
) -> None:
    study = study_of(orthanc)
    references = [InstanceReference(study.uid, study.series[0].uid, i.uid) for i in study.series[0].instances]
    vitrea.switches.html_page = True
    failures = Rad69(session, vitrea.rad69_url).fetch(references, lambda part: None)
    [failure] = failures
    assert isinstance(failure.error, MalformedResponseError)
    message = str(failure.error)
    assert vitrea.rad69_url in message
    assert "status 200" in message
    assert "<!DOCTYPE html>" in message


def test_studies_and_series_must_be_resolved_to_instances_first(
    vitrea: VitreaServer, session: requests.Session
) -> None:
    with pytest.raises(DICOMTrolleyError, match="resolved to its instances"):
        Rad69(session, vitrea.rad69_url).fetch([StudyReference("1.2.3")], lambda part: None)


# --- the request ---------------------------------------------------------------------------------------


def test_the_request_is_a_soap_envelope_grouped_by_study_and_series() -> None:
    downloader = Rad69(requests.Session(), "http://vitrea/rids", transfer_syntaxes=["1.2.840.10008.1.2.1"])
    body = downloader.request_body([
        InstanceReference("1.1", "1.1.1", "1.1.1.1"),
        InstanceReference("1.1", "1.1.1", "1.1.1.2"),
        InstanceReference("1.1", "1.1.2", "1.1.2.1"),
    ])
    envelope = ET.fromstring(body)  # noqa: S314 - our own output
    soap, xdsi, xds = "http://www.w3.org/2003/05/soap-envelope", "urn:ihe:rad:xdsi-b:2009", "urn:ihe:iti:xds-b:2007"
    action = envelope.find(f"{{{soap}}}Header/{{http://www.w3.org/2005/08/addressing}}Action")
    assert action is not None
    assert action.text == "urn:ihe:rad:2009:RetrieveImagingDocumentSet"
    request = envelope.find(f"{{{soap}}}Body/{{{xdsi}}}RetrieveImagingDocumentSetRequest")
    assert request is not None
    [study] = request.findall(f"{{{xdsi}}}StudyRequest")
    assert study.get("studyInstanceUID") == "1.1"
    series = {
        s.get("seriesInstanceUID"): [d.findtext(f"{{{xds}}}DocumentUniqueId") for d in s]
        for s in study.findall(f"{{{xdsi}}}SeriesRequest")
    }
    assert series == {"1.1.1": ["1.1.1.1", "1.1.1.2"], "1.1.2": ["1.1.2.1"]}
    assert [t.text for t in request.iter(f"{{{xdsi}}}TransferSyntaxUID")] == ["1.2.840.10008.1.2.1"]


def test_default_transfer_syntaxes_are_lossless_uncompressed_first() -> None:
    assert DEFAULT_TRANSFER_SYNTAXES[:2] == ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    assert not {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.91"} & set(DEFAULT_TRANSFER_SYNTAXES)


def test_an_envelope_with_a_dtd_is_refused() -> None:
    with pytest.raises(MalformedResponseError, match="DTD"):
        read_envelope(b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', "http://vitrea/rids", 200)


# --- the command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize("with_url", [True, False], ids=["with-dicomweb-url", "without-dicomweb-url"])
def test_command_line_searches_with_mint_and_downloads_with_rad69_with_or_without_a_dicomweb_url(
    with_url: bool, orthanc: OrthancServer, vitrea: VitreaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    study = study_of(orthanc, "PAT003")
    monkeypatch.setenv(PASSWORD_VARIABLE, vitrea.password)
    url = [vitrea.url] if with_url else []  # MINT and RAD-69 have URLs of their own
    login = ["--login-url", vitrea.login_url, "--user", vitrea.user,
             "--searcher", "mint", "--mint-url", vitrea.mint_url]
    assert main(["search", *url, *login, "--PatientID", "PAT003"]) == 0
    assert study.uid in capsys.readouterr().out
    status = main(["download", *url, study.uid, "-o", str(tmp_path), "--no-progress", *login,
                   "--downloader", "rad69", "--rad69-url", vitrea.rad69_url])
    assert status == 0
    assert_written_as_stored(orthanc, tmp_path, study)


def test_a_server_profile_searches_with_mint_and_downloads_with_rad69(
    orthanc: OrthancServer, vitrea: VitreaServer, tmp_path: Path
) -> None:
    study = study_of(orthanc, "PAT003")
    profile = ServerProfile(
        name="vitrea", searcher="mint", downloader="rad69", mint_url=vitrea.mint_url, rad69_url=vitrea.rad69_url,
        auth="vitrea", user=vitrea.user, login_url=vitrea.login_url,
    )
    summary = profile.trolley(secret=vitrea.password).download(study.uid, tmp_path, progress=False)
    assert summary.ok
    assert_written_as_stored(orthanc, tmp_path, study)
