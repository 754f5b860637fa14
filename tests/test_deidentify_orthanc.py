"""Pseudonymised downloads from the real Orthanc, of studies full of identifying values."""

from __future__ import annotations

import csv
import multiprocessing
import pickle
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

import pydicom
import pytest
import requests

from dicomtrolley import storage
from dicomtrolley.cli import main
from dicomtrolley.deidentify import Deidentifier, DeidentifyOptions
from dicomtrolley.dimse_retrieve import DICOMCGet
from dicomtrolley.exceptions import DeidentificationError, DownloadError, StorageCollisionError
from dicomtrolley.export import ExportReport
from dicomtrolley.export.state import DATABASE_NAME, LOCK_NAME
from dicomtrolley.export.tasks import StudyTask
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.trolley import DownloadSummary, Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI
from tests.support.command_line import pseudonymising_download, usage_error
from tests.support.identifying_data import (
    HILDEGUND,
    IDENTIFYING_VALUES,
    KENJIRO,
    KEPT_PRIVATE_TAG,
    KEPT_PRIVATE_VALUE,
    STUDIES,
    IdentifyingData,
)
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.integration

KEY = "a test key of thirty-two bytes!!"
OTHER_KEY = "another key, also long enough..."
STUDY_UIDS = [study.uid for study in STUDIES]


def trolley(server: OrthancServer, *, uri: bool = False) -> Trolley:
    session = requests.Session()
    downloader = WadoURI(session, server.wado_url) if uri else WadoRS(session, server.dicomweb_url)
    return Trolley(QidoRS(session, server.dicomweb_url), downloader)


def download(server: OrthancServer, out: Path, key: str = KEY, **options: object) -> DownloadSummary:
    deidentifier = Deidentifier(DeidentifyOptions.model_validate(options), key=key)
    return trolley(server).download(STUDY_UIDS, out, progress=False, deidentify=deidentifier)


def files(out: Path) -> dict[Path, bytes]:
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def datasets(out: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(out / path) for path in files(out)]


def spellings(value: str) -> set[bytes]:
    """A value as it can sit in a file: UTF-8, Latin-1, and with the name separator as a space."""
    variants = {value, value.replace("^", " "), value.replace("^", ", ")}
    encoded = {v.encode("utf-8") for v in variants}
    encoded |= {v.encode("latin-1") for v in variants if v.isascii() or all(ord(c) < 256 for c in v)}
    return {e.lower() for e in encoded}


def export_pseudonymised(server: OrthancServer, out: Path, **options: Any) -> ExportReport:
    deidentifier = Deidentifier(DeidentifyOptions(mapping=out.parent / "mapping.csv"), key=KEY)
    return trolley(server).export(
        STUDY_UIDS, out, progress=False, index_format="csv", deidentify=deidentifier, **options
    )


def pseudonymise_by(way: str, server: OrthancServer, out: Path) -> tuple[bool, int]:
    """The identifying studies pseudonymised into ``out`` by a ``"download"`` or an ``"export"``.

    Returns whether all went well and how many instances were written.
    """
    if way == "download":
        summary = download(server, out)
        return summary.ok, summary.written
    report = export_pseudonymised(server, out)
    return report.ok, report.instances_written


@pytest.mark.parametrize("way", ["download", "export"])
def test_no_original_identifying_value_is_anywhere_in_the_output(
    way: str, identifying_orthanc: OrthancServer, identifying: IdentifyingData, tmp_path: Path
) -> None:
    assert pseudonymise_by(way, identifying_orthanc, tmp_path / "out") == (True, identifying.image_count)
    assert files(tmp_path / "out")
    assert identifying_values_in(tmp_path / "out", identifying) == []


def identifying_values_in(folder: Path, identifying: IdentifyingData) -> list[tuple[str, Path]]:
    """Every original identifying value found in a file, or a file's path, below ``folder``, with where."""
    found: list[tuple[str, Path]] = []
    for path, data in files(folder).items():
        searchable = data.lower() + str(path).lower().encode("utf-8")
        for value in (*IDENTIFYING_VALUES, *identifying.all_uids):
            if any(spelling in searchable for spelling in spellings(value)):
                found.append((value, path))
    return found


def test_nothing_identifying_is_written_even_to_temporary_files(
    identifying_orthanc: OrthancServer, identifying: IdentifyingData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[bytes] = []
    original = storage._write_atomically

    def spy(body: IO[bytes], target: str, *, make_folder: bool) -> None:
        body.seek(0)
        written.append(body.read())  # what the temporary file beside target receives
        original(body, target, make_folder=make_folder)

    monkeypatch.setattr(storage, "_write_atomically", spy)
    download(identifying_orthanc, tmp_path / "out")  # files are written here; worker processes only pseudonymise
    assert len(written) == identifying.image_count
    for data in written:
        for value in (*IDENTIFYING_VALUES, *identifying.all_uids):
            assert not any(spelling in data.lower() for spelling in spellings(value)), value


def test_the_search_for_identifying_values_finds_them_in_a_plain_download(
    identifying_orthanc: OrthancServer, identifying: IdentifyingData, tmp_path: Path
) -> None:
    trolley(identifying_orthanc).download(STUDY_UIDS, tmp_path, progress=False)
    everything = b"".join(files(tmp_path).values()).lower()
    values = (*IDENTIFYING_VALUES, *identifying.all_uids)
    unseen = [value for value in values if not any(s in everything for s in spellings(value))]
    assert unseen == []


def test_files_stay_valid_dicom_with_the_original_pixels(
    identifying_orthanc: OrthancServer, identifying: IdentifyingData, tmp_path: Path
) -> None:
    download(identifying_orthanc, tmp_path / "out")
    deidentifier = Deidentifier(key=KEY)
    written = {ds.SOPInstanceUID: ds for ds in datasets(tmp_path / "out")}
    originals = [p for p in identifying.paths if "-image-" in p.name]
    for path in originals:
        original = pydicom.dcmread(path)
        expected = pydicom.dcmread(path)
        deidentifier.deidentify(expected)
        output = written[expected.SOPInstanceUID]
        assert output.PixelData == original.PixelData
        assert (output.pixel_array == original.pixel_array).all()
        assert output.file_meta.MediaStorageSOPInstanceUID == output.SOPInstanceUID != original.SOPInstanceUID
        assert output.PatientIdentityRemoved == "YES"


def test_the_same_key_gives_the_same_files_and_another_key_other_pseudonyms(
    identifying_orthanc: OrthancServer, tmp_path: Path
) -> None:
    download(identifying_orthanc, tmp_path / "first")
    download(identifying_orthanc, tmp_path / "second")
    download(identifying_orthanc, tmp_path / "other", key=OTHER_KEY)
    assert files(tmp_path / "first") == files(tmp_path / "second")

    def identifiers(out: Path) -> set[str]:
        return {value for ds in datasets(out) for value in (ds.PatientID, ds.StudyInstanceUID, ds.SOPInstanceUID)}

    assert not identifiers(tmp_path / "first") & identifiers(tmp_path / "other")


def test_worker_processes_and_the_downloading_thread_write_the_same_bytes(
    identifying_orthanc: OrthancServer, tmp_path: Path
) -> None:
    download(identifying_orthanc, tmp_path / "processes", processes=2)
    download(identifying_orthanc, tmp_path / "thread", processes=0)
    assert files(tmp_path / "processes") == files(tmp_path / "thread")


def test_a_c_get_download_is_pseudonymised_the_same_way(identifying_orthanc: OrthancServer, tmp_path: Path) -> None:
    download(identifying_orthanc, tmp_path / "wado-rs")
    cget = DICOMCGet("127.0.0.1", identifying_orthanc.dicom_port, aec=identifying_orthanc.aet)
    trolley = Trolley(QidoRS(requests.Session(), identifying_orthanc.dicomweb_url), cget)
    summary = trolley.download(STUDY_UIDS, tmp_path / "c-get", progress=False, deidentify=Deidentifier(key=KEY))
    assert summary.ok
    assert len(summary.quarantined) == 3
    assert files(tmp_path / "c-get").keys() == files(tmp_path / "wado-rs").keys()
    for path in files(tmp_path / "c-get"):
        by_cget, by_wado = (pydicom.dcmread(tmp_path / kind / path) for kind in ("c-get", "wado-rs"))
        assert by_cget.PatientID == by_wado.PatientID
        assert by_cget.PixelData == by_wado.PixelData


def test_each_patients_dates_move_back_by_one_number_of_days(
    identifying_orthanc: OrthancServer, tmp_path: Path
) -> None:
    mapping = tmp_path / "mapping.csv"
    download(identifying_orthanc, tmp_path / "out", max_date_shift_days=400, mapping=mapping)
    with mapping.open(encoding="utf-8", newline="") as file:
        original_of = {row["PseudonymousStudyInstanceUID"]: row["StudyInstanceUID"] for row in csv.DictReader(file)}
    shifts: dict[str, set[int]] = {}
    for ds in datasets(tmp_path / "out"):
        study = next(s for s in STUDIES if s.uid == original_of[ds.StudyInstanceUID])
        shift = (_day(study.date) - _day(ds.StudyDate)).days
        assert 1 <= shift <= 400
        assert ds.PatientBirthDate in (None, "")  # Table E.1-1: Z, under every option; the age stays
        assert ds.SeriesDate == ds.ContentDate == ds.InstanceCreationDate == ds.StudyDate
        assert ds.AcquisitionDateTime == f"{ds.StudyDate}101530.000000"
        assert ds.StudyTime == "101530"  # whole days: times keep their value
        shifts.setdefault(study.patient.patient_id, set()).add(shift)
    assert all(len(days) == 1 for days in shifts.values())  # one shift per patient, so intervals stay
    assert shifts[HILDEGUND.patient_id] != shifts[KENJIRO.patient_id]


def test_mapping_table_names_every_study_and_matches_the_files(
    identifying_orthanc: OrthancServer, tmp_path: Path
) -> None:
    mapping = tmp_path / "secure" / "mapping.csv"
    download(identifying_orthanc, tmp_path / "out", mapping=mapping)
    with mapping.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    assert {row["StudyInstanceUID"] for row in rows} == set(STUDY_UIDS)
    assert {row["PatientID"] for row in rows} == {HILDEGUND.patient_id, KENJIRO.patient_id}
    assert {row["AccessionNumber"] for row in rows} == {s.accession for s in STUDIES}
    by_pseudonym = {row["PseudonymousStudyInstanceUID"]: row for row in rows}
    for ds in datasets(tmp_path / "out"):
        row = by_pseudonym[ds.StudyInstanceUID]
        assert row["PseudonymousPatientID"] == ds.PatientID
        assert row["PseudonymousAccessionNumber"] == ds.AccessionNumber
        original = next(s for s in STUDIES if s.uid == row["StudyInstanceUID"])
        assert (_day(original.date) - _day(ds.StudyDate)).days == int(row["DateShiftDays"])
    download(identifying_orthanc, tmp_path / "again", mapping=mapping)
    assert len(mapping.read_text(encoding="utf-8").splitlines()) == 1 + len(STUDIES)  # no duplicate rows


def test_a_mapping_table_inside_the_output_folder_is_refused_before_downloading(
    identifying_orthanc: OrthancServer, tmp_path: Path
) -> None:
    with pytest.raises(DeidentificationError, match="inside the output folder"):
        download(identifying_orthanc, tmp_path / "out", mapping=tmp_path / "out" / "mapping.csv")
    assert not (tmp_path / "out").exists()
    download(identifying_orthanc, tmp_path / "out", mapping=tmp_path / "out" / "mapping.csv", mapping_in_output=True)
    assert (tmp_path / "out" / "mapping.csv").is_file()


def test_burned_in_secondary_capture_and_ultrasound_are_quarantined_not_written(
    identifying_orthanc: OrthancServer, identifying: IdentifyingData, tmp_path: Path
) -> None:
    summary = download(identifying_orthanc, tmp_path / "out")
    assert summary.ok
    assert {q.reference.instance_uid for q in summary.quarantined} == set(identifying.quarantined_uids)
    reasons = {identifying.quarantined_uids[q.reference.instance_uid]: q.reason for q in summary.quarantined}
    assert reasons["burned-in"] == "BurnedInAnnotation is YES"
    assert "Secondary Capture" in reasons["secondary-capture"]
    assert "Ultrasound" in reasons["ultrasound"]
    assert {ds.Modality for ds in datasets(tmp_path / "out")} == {"CT"}
    assert "3 quarantined" in str(summary)


def test_quarantine_can_be_lifted(
    identifying_orthanc: OrthancServer, identifying: IdentifyingData, tmp_path: Path
) -> None:
    summary = download(identifying_orthanc, tmp_path / "out", allow_burned_in=True, quarantine_sop_classes=[])
    assert not summary.quarantined
    assert summary.written == len(identifying.paths)


def test_private_attributes_are_removed_except_the_kept_ones(
    identifying_orthanc: OrthancServer, tmp_path: Path
) -> None:
    download(identifying_orthanc, tmp_path / "plain")
    download(identifying_orthanc, tmp_path / "kept", keep_private_tags=[KEPT_PRIVATE_TAG])
    assert not any(element.tag.is_private for ds in datasets(tmp_path / "plain") for element in ds.iterall())
    for ds in datasets(tmp_path / "kept"):
        assert ds.private_block(0x0013, KEPT_PRIVATE_TAG.split(",")[1])[0x10].value == KEPT_PRIVATE_VALUE
        assert not any(element.tag.group == 0x0011 for element in ds)


def test_the_path_template_sees_pseudonymised_values(identifying_orthanc: OrthancServer, tmp_path: Path) -> None:
    deidentifier = Deidentifier(key=KEY)
    summary = trolley(identifying_orthanc).download(
        STUDY_UIDS, tmp_path, progress=False, deidentify=deidentifier,
        template="{PatientID}/{StudyDate}_{AccessionNumber}/{SOPInstanceUID}.dcm",
    )
    assert summary.ok
    for ds in datasets(tmp_path):
        assert (tmp_path / ds.PatientID / f"{ds.StudyDate}_{ds.AccessionNumber}" / f"{ds.SOPInstanceUID}.dcm").is_file()


def test_an_instance_that_cannot_be_written_is_a_failure_of_its_target(
    identifying_orthanc: OrthancServer, tmp_path: Path
) -> None:
    summary = trolley(identifying_orthanc).download(
        STUDY_UIDS, tmp_path, template="{PatientID}.dcm", on_error="collect", progress=False,
        deidentify=Deidentifier(key=KEY),
    )
    assert not summary.ok
    assert summary.written == 2  # one file per patient; the others collide with it
    assert summary.failures
    assert all(isinstance(f.error, StorageCollisionError) for f in summary.failures)
    with pytest.raises(DownloadError):
        trolley(identifying_orthanc).download(
            STUDY_UIDS, tmp_path / "raise", template="{PatientID}.dcm", progress=False,
            deidentify=Deidentifier(key=KEY),
        )


def test_a_second_run_finds_the_pseudonymised_files_and_fetches_nothing(
    identifying_orthanc: OrthancServer, identifying: IdentifyingData, tmp_path: Path
) -> None:
    uri = trolley(identifying_orthanc, uri=True)
    first = uri.download(STUDY_UIDS, tmp_path, progress=False, deidentify=Deidentifier(key=KEY))
    again = uri.download(STUDY_UIDS, tmp_path, progress=False, deidentify=Deidentifier(key=KEY))
    images = identifying.image_count
    assert first.written == images
    assert again.written == 0
    assert again.skipped == images
    assert again.ok


def run_command_line(server: OrthancServer, tmp_path: Path, config: str, *options: str) -> int:
    """``dicomtrolley download`` of every identifying study into ``tmp_path/out``, with this config file."""
    return pseudonymising_download(server.dicomweb_url, STUDY_UIDS, tmp_path, config, *options)


def test_command_line_pseudonymises_writes_the_mapping_and_counts_the_quarantined(
    identifying_orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DICOMTROLLEY_DEID_KEY", KEY)
    status = run_command_line(
        identifying_orthanc, tmp_path, "max_date_shift_days = 30\n", "--mapping", str(tmp_path / "map.csv")
    )
    assert status == 0
    assert "3 instances quarantined" in capsys.readouterr().err
    assert len((tmp_path / "map.csv").read_text(encoding="utf-8").splitlines()) == 1 + len(STUDIES)
    for ds in datasets(tmp_path / "out"):
        assert ds.PatientID not in (HILDEGUND.patient_id, KENJIRO.patient_id)


def test_command_line_without_a_key_stops_before_downloading(
    identifying_orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("DICOMTROLLEY_DEID_KEY", raising=False)
    monkeypatch.setattr("dicomtrolley.deidentify._keyring_key", lambda: None)
    assert run_command_line(identifying_orthanc, tmp_path, "") == 3
    assert "No pseudonymisation key" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_command_line_names_a_wrong_option(
    identifying_orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DICOMTROLLEY_DEID_KEY", KEY)
    assert run_command_line(identifying_orthanc, tmp_path, "max_date_shift = 30\n") == 3
    assert "max_date_shift: unknown option" in capsys.readouterr().err


def test_command_line_refuses_a_mapping_without_deidentify_as_a_usage_error(
    identifying_orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = identifying_orthanc.dicomweb_url
    err = usage_error(["download", url, STUDY_UIDS[0], "-o", str(tmp_path), "--mapping", "map.csv"], capsys)
    assert "--mapping needs --deidentify" in err


def _day(text: str) -> date:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


# ---------------------------------------------------------------- pseudonymised exports


def test_a_pseudonymised_exports_report_state_and_mapping_lie_beside_its_output_folder(
    identifying_orthanc: OrthancServer, identifying: IdentifyingData, tmp_path: Path
) -> None:
    report = export_pseudonymised(identifying_orthanc, tmp_path / "out")
    # They hold the worklist's identifying values: the report, the state database, the mapping.
    assert report.report_path == tmp_path / "out.state" / "report.csv"
    assert (tmp_path / "out.state" / DATABASE_NAME).is_file()
    assert identifying_values_in(tmp_path / "out.state", identifying)
    assert {p.name for p in (tmp_path / "out").iterdir() if p.is_file()} == {"instances.csv", LOCK_NAME}


def test_a_pseudonymised_exports_index_names_the_pseudonymised_files(
    identifying_orthanc: OrthancServer, tmp_path: Path
) -> None:
    template = "{PatientID}/{StudyDate}/{SOPInstanceUID}.dcm"
    report = export_pseudonymised(identifying_orthanc, tmp_path / "out", template=template)
    assert report.index_path is not None
    with report.index_path.open(newline="", encoding="utf-8") as file:
        index = list(csv.DictReader(file))
    assert len(index) == report.instances_written
    for row in index:
        ds = pydicom.dcmread(tmp_path / "out" / row["path"])
        iso_date = datetime.strptime(ds.StudyDate, "%Y%m%d").date().isoformat()  # the index's form: pandas reads it
        assert (row["StudyInstanceUID"], row["SOPInstanceUID"], row["PatientID"], row["StudyDate"]) == (
            ds.StudyInstanceUID, ds.SOPInstanceUID, ds.PatientID, iso_date
        )
        assert row["path"] == f"{ds.PatientID}/{ds.StudyDate}/{ds.SOPInstanceUID}.dcm"


def test_a_pseudonymised_export_counts_the_quarantined_in_its_report(
    identifying_orthanc: OrthancServer, identifying: IdentifyingData, tmp_path: Path
) -> None:
    report = export_pseudonymised(identifying_orthanc, tmp_path / "out")
    assert report.ok  # held back is not failed
    assert report.instances_quarantined == len(identifying.quarantined_uids)
    assert f"{len(identifying.quarantined_uids)} quarantined" in str(report)
    assert report.report_path is not None
    with report.report_path.open(newline="", encoding="utf-8") as file:
        assert sum(int(line["instances_quarantined"]) for line in csv.DictReader(file)) == 3


def test_a_pseudonymised_export_resumes_after_a_crash_and_indexes_the_files_it_finds(
    identifying_orthanc: OrthancServer, identifying: IdentifyingData, tmp_path: Path
) -> None:
    first = export_pseudonymised(identifying_orthanc, tmp_path / "out")
    images = identifying.image_count
    # As if the process died mid-study: every study still running, nothing indexed yet.
    with sqlite3.connect(tmp_path / "out.state" / DATABASE_NAME) as db:
        db.execute("UPDATE studies SET status = 'running'")
        db.execute("DELETE FROM instances")
    again = export_pseudonymised(identifying_orthanc, tmp_path / "out")
    assert again.ok
    assert again.instances_written == 0
    assert sum(int(line["instances_skipped"]) for line in again.lines) == images
    assert first.index_path is not None
    assert again.index_path == first.index_path
    with first.index_path.open(newline="", encoding="utf-8") as file:
        assert len(list(csv.DictReader(file))) == images
    assert identifying_values_in(tmp_path / "out", identifying) == []


def test_a_state_folder_inside_a_pseudonymised_exports_output_folder_is_refused(
    identifying_orthanc: OrthancServer, tmp_path: Path
) -> None:
    with pytest.raises(DeidentificationError, match="inside the output folder"):
        export_pseudonymised(identifying_orthanc, tmp_path / "out", state_dir=tmp_path / "out" / "state")
    assert not (tmp_path / "out").exists()


def test_tasks_shipped_to_other_processes_load_the_key_there_and_write_the_same_files(
    identifying_orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export_pseudonymised(identifying_orthanc, tmp_path / "threads")
    monkeypatch.setenv("DICOMTROLLEY_DEID_KEY", KEY)  # the workers' own key; their tasks carry none
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as executor:
        report = export_pseudonymised(identifying_orthanc, tmp_path / "processes", executor=executor)
    assert report.ok
    shipped = files(tmp_path / "processes")
    assert {p: d for p, d in files(tmp_path / "threads").items() if p.suffix == ".dcm"} == {
        p: d for p, d in shipped.items() if p.suffix == ".dcm"
    }


def test_a_shipped_study_task_holds_no_key() -> None:
    options = DeidentifyOptions()
    task = StudyTask("1.2.3", "/out", deidentify=Deidentifier(options, key=KEY).options)
    assert KEY.encode() not in pickle.dumps(task)


def test_command_line_exports_pseudonymised_with_the_state_beside_the_mapping(
    identifying_orthanc: OrthancServer, identifying: IdentifyingData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DICOMTROLLEY_DEID_KEY", KEY)
    (tmp_path / "deid.toml").write_text("", encoding="utf-8")
    (tmp_path / "private").mkdir()
    worklist = tmp_path / "private" / "worklist.csv"
    worklist.write_text("StudyInstanceUID\n" + "".join(f"{uid}\n" for uid in STUDY_UIDS), encoding="utf-8")
    status = main(["export", identifying_orthanc.dicomweb_url, str(worklist), "-o", str(tmp_path / "out"),
                   "--no-progress",
                   "--index-format", "csv", "--deidentify", str(tmp_path / "deid.toml"),
                   "--mapping", str(tmp_path / "private" / "mapping.csv")])
    assert status == 0
    captured = capsys.readouterr()
    assert "3 instances quarantined" in captured.err
    assert f"report: {tmp_path / 'private' / 'out.state' / 'report.csv'}" in captured.out
    assert identifying_values_in(tmp_path / "out", identifying) == []


def test_a_pseudonymised_export_refuses_a_mapping_table_inside_its_output_folder(
    identifying_orthanc: OrthancServer, tmp_path: Path
) -> None:
    deidentifier = Deidentifier(DeidentifyOptions(mapping=tmp_path / "out" / "mapping.csv"), key=KEY)
    with pytest.raises(DeidentificationError, match="inside the output folder"):
        trolley(identifying_orthanc).export(STUDY_UIDS, tmp_path / "out", progress=False, deidentify=deidentifier)
    assert not (tmp_path / "out").exists()
