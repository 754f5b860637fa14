"""Exports whose destination is another archive: Orthanc to Orthanc over STOW-RS, checked with QIDO-RS."""

from __future__ import annotations

import csv
import io
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import requests
from pydicom import dcmread

from dicomtrolley.cli import main
from dicomtrolley.deidentify import Deidentifier
from dicomtrolley.destination import Destination
from dicomtrolley.dicom_qr import DICOMQR
from dicomtrolley.dimse_store import DICOMCStore
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.export.runner import ON_THIS_PROCESS_ONLY
from dicomtrolley.export.state import DATABASE_NAME
from dicomtrolley.profiles import ServerProfile
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.sending import InstanceSender, SendItem, Tally
from dicomtrolley.stow_rs import StowRS
from dicomtrolley.trolley import Trolley
from tests.support.command_line import usage_error
from tests.support.fault_server import Fault, FaultServer, Route, make_instances
from tests.support.orthanc import OrthancFactory, OrthancServer, stored_files
from tests.support.sample_data import SampleStudy

pytestmark = pytest.mark.integration

KEY = "a test key of thirty-two bytes!!"
REPO = Path(__file__).resolve().parent.parent


def trolley_for(server: OrthancServer) -> Trolley:
    return ServerProfile(url=server.dicomweb_url).trolley()


class CountingStowRS(StowRS):
    """STOW-RS that counts the instances it was asked to send."""

    asked = 0

    def send_items(self, items: Sequence[SendItem], tally: Tally) -> None:
        CountingStowRS.asked += len(items)
        super().send_items(items, tally)


class Forgetful(InstanceSender):
    """An archive that answers "stored" to everything and keeps nothing."""

    def send_items(self, items: Sequence[SendItem], tally: Tally) -> None:
        for item in items:
            tally.delivered(item)


@pytest.fixture
def archive(orthanc_factory: OrthancFactory) -> OrthancServer:
    return orthanc_factory(load=False)


@pytest.fixture
def studies(orthanc: OrthancServer) -> list[SampleStudy]:
    return orthanc.sample.small_studies[:3]


def test_an_export_to_an_archive_stores_every_instance_of_every_study(
    orthanc: OrthancServer, archive: OrthancServer, studies: list[SampleStudy], tmp_path: Path
) -> None:
    sender = StowRS(requests.Session(), archive.dicomweb_url)
    report = trolley_for(orthanc).export([s.uid for s in studies], sender, state_dir=tmp_path, progress=False)
    assert report.ok
    assert report.studies_done == 3
    arrived = stored_files(archive)
    assert set(arrived) == {i.uid for s in studies for i in s.instances}
    one = studies[0].instances[0]
    assert arrived[one.uid] == one.path.read_bytes()


def test_an_export_over_c_store_checked_with_c_find_stores_every_instance(
    orthanc: OrthancServer, archive: OrthancServer, studies: list[SampleStudy], tmp_path: Path
) -> None:
    destination = Destination(
        DICOMCStore("127.0.0.1", archive.dicom_port, called_aet=archive.aet),
        DICOMQR("127.0.0.1", archive.dicom_port, aec=archive.aet),
    )
    report = trolley_for(orthanc).export([s.uid for s in studies], destination, state_dir=tmp_path, progress=False)
    assert report.ok
    assert report.studies_done == 3
    assert set(stored_files(archive)) == {i.uid for s in studies for i in s.instances}


def test_a_rerun_sends_nothing_and_a_fresh_state_asks_the_archive(
    orthanc: OrthancServer, archive: OrthancServer, studies: list[SampleStudy], tmp_path: Path
) -> None:
    uids = [s.uid for s in studies]
    sender = CountingStowRS(requests.Session(), archive.dicomweb_url)
    trolley_for(orthanc).export(uids, sender, state_dir=tmp_path / "first", progress=False)
    CountingStowRS.asked = 0
    again = trolley_for(orthanc).export(uids, sender, state_dir=tmp_path / "first", progress=False)
    fresh = trolley_for(orthanc).export(uids, sender, state_dir=tmp_path / "fresh", progress=False)
    assert CountingStowRS.asked == 0
    assert again.ok
    assert fresh.ok
    assert fresh.studies_done == 3  # every study verified at the archive, none sent again


def test_an_archive_that_answers_stored_but_keeps_nothing_fails_the_study(
    orthanc: OrthancServer, archive: OrthancServer, studies: list[SampleStudy], tmp_path: Path
) -> None:
    destination = Destination(Forgetful(), QidoRS(requests.Session(), archive.dicomweb_url))
    report = trolley_for(orthanc).export([studies[0].uid], destination, state_dir=tmp_path, progress=False)
    assert not report.ok
    assert report.studies_failed == 1
    with (tmp_path / "report.csv").open(newline="") as file:
        (row,) = csv.DictReader(file)
    assert f"holds 0 of the study's {len(studies[0].instances)} instances" in row["error"]


def test_an_instance_the_archive_refuses_fails_the_study_with_the_archive_reason(
    orthanc: OrthancServer, studies: list[SampleStudy], tmp_path: Path
) -> None:
    with FaultServer([]) as archive:
        archive.add_fault(Fault.REFUSE, route=Route.STOW_RS, after_parts=1, status=0xA700, times=1)
        report = trolley_for(orthanc).export(
            [studies[0].uid], StowRS(requests.Session(), archive.dicomweb_url), state_dir=tmp_path, progress=False,
            max_attempts=1,
        )
    assert report.studies_failed == 1
    with (tmp_path / "report.csv").open(newline="") as file:
        (row,) = csv.DictReader(file)
    assert "did not store" in row["error"]
    assert "0xA700" in row["error"]


def test_an_export_to_an_archive_without_a_state_folder_is_refused_before_any_request(
    orthanc: OrthancServer, studies: list[SampleStudy]
) -> None:
    sender = CountingStowRS(requests.Session(), "http://127.0.0.1:9/dicom-web")  # discard port: nothing listens
    with pytest.raises(DICOMTrolleyError, match="state_dir"):
        trolley_for(orthanc).export([studies[0].uid], sender, progress=False)


def test_a_pseudonymised_transfer_leaves_no_original_identifier_at_the_archive(
    orthanc: OrthancServer, archive: OrthancServer, studies: list[SampleStudy], tmp_path: Path
) -> None:
    sender = StowRS(requests.Session(), archive.dicomweb_url)
    report = trolley_for(orthanc).export(
        [s.uid for s in studies], sender, state_dir=tmp_path, progress=False, deidentify=Deidentifier(key=KEY)
    )
    assert report.ok
    arrived = [dcmread(io.BytesIO(data), stop_before_pixels=True) for data in stored_files(archive).values()]
    assert len(arrived) == sum(len(s.instances) for s in studies)
    originals = {s.patient_id for s in studies} | {s.patient_name for s in studies} | {s.uid for s in studies}
    held = {str(ds.PatientID) for ds in arrived} | {str(ds.PatientName) for ds in arrived} | {
        str(ds.StudyInstanceUID) for ds in arrived}
    assert not originals & held


def test_the_command_line_exports_a_worklist_to_an_archive(
    orthanc: OrthancServer, archive: OrthancServer, studies: list[SampleStudy], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    worklist = tmp_path / "worklist.csv"
    worklist.write_text("StudyInstanceUID\n" + "".join(f"{s.uid}\n" for s in studies[:2]))
    code = main(["export", orthanc.dicomweb_url, str(worklist), "--to", archive.dicomweb_url,
                 "--state-dir", str(tmp_path / "state"), "--no-progress"])
    assert code == 0
    assert set(stored_files(archive)) == {i.uid for s in studies[:2] for i in s.instances}
    assert "2 studies done" in capsys.readouterr().out


def test_the_command_line_sends_to_a_server_of_the_servers_file_with_its_sender_and_searcher(
    orthanc: OrthancServer, archive: OrthancServer, studies: list[SampleStudy], tmp_path: Path
) -> None:
    config = tmp_path / "servers.toml"
    config.write_text(
        f'[servers.source]\nurl = "{orthanc.dicomweb_url}"\n\n'
        f'[servers.research]\nsender = "c-store"\nhost = "127.0.0.1"\nport = {archive.dicom_port}\n'
        f'aec = "{archive.aet}"\nsearcher = "c-find"\ndownloader = "c-get"\n'
    )
    worklist = tmp_path / "worklist.csv"
    worklist.write_text(f"StudyInstanceUID\n{studies[0].uid}\n")
    code = main(["export", "--server", "source", "--config", str(config), str(worklist), "--to-server", "research",
                 "--state-dir", str(tmp_path / "state"), "--no-progress"])
    assert code == 0
    assert set(stored_files(archive)) == {i.uid for i in studies[0].instances}


def test_a_sender_without_a_known_searcher_is_refused_before_any_request(
    orthanc: OrthancServer, studies: list[SampleStudy], tmp_path: Path
) -> None:
    sender = DICOMCStore("127.0.0.1", 9)
    with pytest.raises(DICOMTrolleyError, match="Destination"):
        trolley_for(orthanc).export([studies[0].uid], sender, state_dir=tmp_path, progress=False)


def test_the_command_line_exits_1_when_the_archive_answers_stored_but_holds_nothing(
    orthanc: OrthancServer, studies: list[SampleStudy], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    worklist = tmp_path / "worklist.csv"
    worklist.write_text(f"StudyInstanceUID\n{studies[0].uid}\n")
    with FaultServer([]) as archive:  # answers 200 to STOW-RS, and its searches find nothing
        code = main(["export", orthanc.dicomweb_url, str(worklist), "--to", archive.dicomweb_url,
                     "--state-dir", str(tmp_path / "state"), "--no-progress"])
        assert len(archive.stored) == len(studies[0].instances)
    assert code == 1
    assert "1 failed" in capsys.readouterr().out


@pytest.mark.parametrize(("options", "message"), [
    ([], "--state-dir"),
    (["--state-dir", "state", "--dask", "local:1"],
     f"--to runs on this machine's threads, not on --dask: {ON_THIS_PROCESS_ONLY}"),
], ids=["without a state folder", "on a Dask cluster"])
def test_the_command_line_refuses_an_archive_export_it_cannot_run_naming_why(
    orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    worklist = tmp_path / "worklist.csv"
    worklist.write_text("StudyInstanceUID\n1.2.3\n")
    arguments = ["export", orthanc.dicomweb_url, str(worklist), "--to", "http://127.0.0.1:9/dicom-web", *options]
    assert message in usage_error(arguments, capsys)


@pytest.fixture
def twenty_studies(
    orthanc_factory: OrthancFactory, tmp_path_factory: pytest.TempPathFactory
) -> tuple[OrthancServer, set[str], Path]:
    """An Orthanc holding 20 small studies, their SOPInstanceUIDs, and a worklist of them."""
    server = orthanc_factory(load=False)
    folder = tmp_path_factory.mktemp("twenty")
    paths, uids, sops = [], [], set()
    for number in range(20):
        instances = make_instances(series_sizes=(3,), pixels=64, name=f"twenty-{number}", patient_id=f"T{number:03d}")
        uids.append(instances[0].study_uid)
        for instance in instances:
            path = folder / f"{instance.sop_uid}.dcm"
            path.write_bytes(instance.data)
            paths.append(path)
            sops.add(instance.sop_uid)
    server.upload(paths)
    worklist = folder / "worklist.csv"
    worklist.write_text("StudyInstanceUID\n" + "".join(f"{uid}\n" for uid in uids))
    return server, sops, worklist


def studies_done(state: Path) -> int:
    if not (state / DATABASE_NAME).exists():
        return 0
    with sqlite3.connect(state / DATABASE_NAME) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM studies WHERE status = 'done'").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def start_transfer(source: OrthancServer, worklist: Path, archive: OrthancServer, state: Path,
                   *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dicomtrolley.cli", "export", source.dicomweb_url, str(worklist),
         "--to", archive.dicomweb_url, "--state-dir", str(state), "--no-progress", "--studies", "2", *extra],
        cwd=REPO, stderr=subprocess.PIPE,
    )


def test_kill_9_mid_transfer_then_the_same_command_completes_it(
    twenty_studies: tuple[OrthancServer, set[str], Path], archive: OrthancServer, tmp_path: Path
) -> None:
    source, sops, worklist = twenty_studies
    state = tmp_path / "state"
    process = start_transfer(source, worklist, archive, state, "--max-rate", "100KB/s")
    deadline = time.monotonic() + 60
    while studies_done(state) < 5:
        assert process.poll() is None, "the transfer ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert 5 <= studies_done(state) < 20
    rerun = start_transfer(source, worklist, archive, state)
    assert rerun.wait(timeout=120) == 0, rerun.stderr.read() if rerun.stderr else ""
    assert studies_done(state) == 20
    with sqlite3.connect(state / DATABASE_NAME) as db:
        attempts = dict(db.execute("SELECT uid, attempts FROM studies").fetchall())
    assert sum(1 for a in attempts.values() if a > 1) <= 2  # only those in flight at the kill ran twice
    assert set(stored_files(archive)) == sops
