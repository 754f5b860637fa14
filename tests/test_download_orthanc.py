"""Downloads from the real Orthanc: WADO-RS and WADO-URI, every level, byte-exact files."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import requests

from dicomtrolley.core import Downloader, InstancePart, InstanceReference, SeriesReference, StudyReference
from dicomtrolley.exceptions import DownloadError, StorageCollisionError
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.storage import StorageDir
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI
from tests.support.orthanc import OrthancServer
from tests.support.sample_data import SampleData, SampleInstance, SampleStudy

pytestmark = pytest.mark.integration

DownloaderFactory = Callable[[requests.Session, OrthancServer], Downloader]
DOWNLOADERS: dict[str, DownloaderFactory] = {
    "wado-rs": lambda session, server: WadoRS(session, server.dicomweb_url),
    "wado-uri": lambda session, server: WadoURI(session, server.wado_url),
}


def make_trolley(server: OrthancServer, kind: str, session: requests.Session | None = None) -> Trolley:
    session = session or requests.Session()
    return Trolley(QidoRS(session, server.dicomweb_url), DOWNLOADERS[kind](session, server))


def sample(server: OrthancServer) -> SampleData:
    assert server.sample is not None
    return server.sample


def small_study(server: OrthancServer, patient_id: str = "PAT002") -> SampleStudy:
    return next(s for s in sample(server).small_studies if s.patient_id == patient_id)


def expected_file(out: Path, study: SampleStudy, series_uid: str, instance: SampleInstance) -> Path:
    return out / study.uid.replace(".", "_") / series_uid.replace(".", "_") / instance.uid.replace(".", "_")


def written_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


@pytest.mark.parametrize("kind", DOWNLOADERS)
def test_study_download_writes_every_instance_byte_for_byte(kind: str, orthanc: OrthancServer, tmp_path: Path) -> None:
    study = small_study(orthanc)
    summary = make_trolley(orthanc, kind).download(study.uid, tmp_path, progress=False)
    assert summary.ok
    assert summary.written == len(study.instances) == summary.expected
    for series in study.series:
        for instance in series.instances:
            assert expected_file(tmp_path, study, series.uid, instance).read_bytes() == instance.path.read_bytes()
    assert len(written_files(tmp_path)) == len(study.instances)


@pytest.mark.parametrize("kind", DOWNLOADERS)
def test_series_download_writes_that_series_only(kind: str, orthanc: OrthancServer, tmp_path: Path) -> None:
    study = small_study(orthanc)
    series = study.series[1]
    summary = make_trolley(orthanc, kind).download(SeriesReference(study.uid, series.uid), tmp_path, progress=False)
    assert summary.written == len(series.instances)
    assert {p.name for p in written_files(tmp_path)} == {i.uid.replace(".", "_") for i in series.instances}


@pytest.mark.parametrize("kind", DOWNLOADERS)
def test_instance_download_writes_that_instance_only(kind: str, orthanc: OrthancServer, tmp_path: Path) -> None:
    study = small_study(orthanc)
    series = study.series[0]
    instance = series.instances[-1]
    reference = InstanceReference(study.uid, series.uid, instance.uid)
    summary = make_trolley(orthanc, kind).download(reference, tmp_path, progress=False)
    assert summary.written == 1
    assert written_files(tmp_path) == [expected_file(tmp_path, study, series.uid, instance)]
    assert written_files(tmp_path)[0].read_bytes() == instance.path.read_bytes()


@pytest.mark.parametrize("kind", DOWNLOADERS)
def test_datasets_equal_the_uploaded_originals(kind: str, orthanc: OrthancServer) -> None:
    study = small_study(orthanc, "PAT001")
    originals = {i.uid: pydicom.dcmread(i.path) for i in study.instances}
    received = list(make_trolley(orthanc, kind).fetch_all_datasets(study.uid))
    assert len(received) == len(originals)
    for dataset in received:
        assert dataset == originals[dataset.SOPInstanceUID]


def test_wado_rs_downloads_a_study_uid_without_a_searcher(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = small_study(orthanc)
    summary = Trolley(downloader=WadoRS(requests.Session(), orthanc.dicomweb_url)).download(
        study.uid, tmp_path, progress=False
    )
    assert summary.written == len(study.instances)
    assert summary.expected is None


def test_large_study_streams_to_disk_byte_for_byte(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = sample(orthanc).large_study
    summary = make_trolley(orthanc, "wado-rs").download(study.uid, tmp_path, progress=False)
    assert summary.written == len(study.instances) == 300
    assert summary.bytes_written == study.size
    series = study.series[0]
    for instance in series.instances[::37]:
        assert expected_file(tmp_path, study, series.uid, instance).read_bytes() == instance.path.read_bytes()


def test_a_wado_rs_answer_is_read_and_written_on_the_calling_thread(orthanc: OrthancServer) -> None:
    """A 300-instance answer starts no thread: the socket's buffer reads ahead, not a second reader."""
    study = sample(orthanc).large_study
    threads_seen: set[str] = set()

    def sink(part: InstancePart) -> None:
        threads_seen.update(t.name for t in threading.enumerate() if t.name.startswith("dicomtrolley"))
        threads_seen.add(threading.current_thread().name)
        part.body.read()

    assert WadoRS(requests.Session(), orthanc.dicomweb_url).fetch([StudyReference(study.uid)], sink) == []
    assert threads_seen == {threading.current_thread().name}


def test_study_into_an_empty_folder_is_searched_at_series_level_only(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = small_study(orthanc)
    session = requests.Session()
    searches: list[str] = []
    session.hooks["response"].append(
        lambda r, *a, **k: searches.append(r.url) if "dicom+json" in r.headers.get("Content-Type", "") else None
    )
    summary = make_trolley(orthanc, "wado-rs", session).download(study.uid, tmp_path, progress=False)
    assert summary.ok
    assert summary.expected == summary.written == len(study.instances)
    # One series-level search (paged: QidoRS asks once more past a possibly capped page), no instance search.
    assert {url.split("?")[0] for url in searches} == {f"{orthanc.dicomweb_url}/studies/{study.uid}/series"}


def test_second_run_makes_no_payload_request(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = small_study(orthanc)
    make_trolley(orthanc, "wado-rs").download(study.uid, tmp_path, progress=False)
    session = requests.Session()
    payload_requests: list[str] = []
    session.hooks["response"].append(
        lambda r, *a, **k: payload_requests.append(r.url) if "application/dicom" in r.headers.get("Content-Type", "")
        and "dicom+json" not in r.headers.get("Content-Type", "") else None
    )
    summary = make_trolley(orthanc, "wado-rs", session).download(study.uid, tmp_path, progress=False)
    assert payload_requests == []
    assert summary.skipped == len(study.instances)
    assert summary.written == 0


def test_payload_requests_ask_for_identity_encoding_and_get_it(orthanc_factory: Callable[..., OrthancServer],
                                                               tmp_path: Path) -> None:
    server = orthanc_factory(HttpCompressionEnabled=True)
    study = small_study(server)
    session = requests.Session()
    encodings: list[tuple[str, str]] = []
    session.hooks["response"].append(
        lambda r, *a, **k: encodings.append((r.request.headers.get("Accept-Encoding", ""),
                                             r.headers.get("Content-Encoding", "")))
        if "multipart/related" in r.headers.get("Content-Type", "") else None
    )
    summary = make_trolley(server, "wado-rs", session).download(study.uid, tmp_path, progress=False)
    assert summary.ok
    assert encodings
    assert set(encodings) == {("identity", "")}


def test_template_lays_out_files_and_keeps_non_ascii_names(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = small_study(orthanc, "PAT003")
    summary = make_trolley(orthanc, "wado-rs").download(
        study.uid,
        tmp_path,
        template="{PatientName}/{StudyDate}/{SeriesNumber:03d}_{Modality}/{InstanceNumber:05d}.dcm",
        progress=False,
    )
    assert summary.written == len(study.instances)
    patient_folder = tmp_path / study.patient_name
    assert patient_folder.is_dir()
    series = study.series[0]
    first = series.instances[0]
    path = patient_folder / study.study_date / f"{series.number:03d}_{series.modality}" / f"{first.number:05d}.dcm"
    assert path.read_bytes() == first.path.read_bytes()


def test_second_run_with_a_template_skips_what_is_there(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = small_study(orthanc, "PAT003")
    template = "{PatientID}/{SeriesNumber:03d}/{InstanceNumber:05d}.dcm"
    make_trolley(orthanc, "wado-rs").download(study.uid, tmp_path, template=template, progress=False)
    again = make_trolley(orthanc, "wado-rs").download(study.uid, tmp_path, template=template, progress=False)
    assert again.written == 0
    assert again.skipped == len(study.instances)


def test_template_collision_is_reported_not_overwritten(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = small_study(orthanc)
    summary = make_trolley(orthanc, "wado-uri").download(
        study.uid, tmp_path, template="{PatientID}/{SeriesNumber}.dcm", on_error="collect", progress=False
    )
    assert summary.failures
    assert all(isinstance(f.error, StorageCollisionError) for f in summary.failures)
    assert summary.written == len(study.series)
    assert len(written_files(tmp_path)) == len(study.series)


def test_unknown_study_raises_download_error(orthanc: OrthancServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="no instances"):
        make_trolley(orthanc, "wado-rs").download("1.2.3.4.5.6.7.8.9.0", tmp_path, progress=False)


def test_wado_rs_in_a_named_transfer_syntax_is_checked_and_reported(orthanc: OrthancServer, tmp_path: Path) -> None:
    session = requests.Session()
    explicit_little = "1.2.840.10008.1.2.1"
    trolley = Trolley(QidoRS(session, orthanc.dicomweb_url),
                      WadoRS(session, orthanc.dicomweb_url, transfer_syntax=explicit_little))
    study = small_study(orthanc)
    summary = trolley.download(study.uid, tmp_path, progress=False)
    assert summary.transfer_syntaxes == {explicit_little: len(study.instances)}


def test_storage_dir_given_to_the_trolley_is_used(orthanc: OrthancServer, tmp_path: Path) -> None:
    session = requests.Session()
    storage = StorageDir(tmp_path, template="{SOPInstanceUID}.dcm")
    trolley = Trolley(QidoRS(session, orthanc.dicomweb_url), WadoRS(session, orthanc.dicomweb_url), storage=storage)
    study = small_study(orthanc)
    trolley.download(StudyReference(study.uid), progress=False)
    assert {p.name for p in written_files(tmp_path)} == {f"{i.uid}.dcm" for i in study.instances}
