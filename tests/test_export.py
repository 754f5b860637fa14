"""Batch export against the real Orthanc: report, index, resume, crash safety, Ctrl-C, the folder lock."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas
import pytest

from dicomtrolley.cli import main
from dicomtrolley.core import Query, QueryLevels
from dicomtrolley.exceptions import ExportLockedError, OutputFolderError, TemplateError, WorklistError
from dicomtrolley.export import REPORT_COLUMNS, export
from dicomtrolley.export.report import write_index
from dicomtrolley.export.state import DATABASE_NAME, FolderLock, StateDatabase
from dicomtrolley.profiles import ServerProfile
from dicomtrolley.storage import TEMPORARY_SUFFIX, temporary_name
from dicomtrolley.trolley import Trolley
from tests.support.fault_server import Fault, FaultServer, Route, make_instances
from tests.support.http_server import TrackingHTTPServer
from tests.support.orthanc import OrthancFactory, OrthancServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def trolley_for(server: OrthancServer) -> Trolley:
    return ServerProfile(url=server.dicomweb_url).trolley()


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name not in {"report.csv", "instances.csv",
                                                                          "instances.parquet"}
    }


def test_an_export_writes_every_study_a_report_and_an_index(orthanc: OrthancServer, tmp_path: Path) -> None:
    studies = orthanc.sample.small_studies[:3]
    report = trolley_for(orthanc).export([s.uid for s in studies], tmp_path / "out", progress=False)
    assert report.ok
    assert report.studies_done == 3
    assert report.instances_written == sum(len(s.instances) for s in studies)
    assert report.bytes_written == sum(i.size for s in studies for i in s.instances)
    with (tmp_path / "out" / "report.csv").open(newline="") as file:
        lines = list(csv.DictReader(file))
    assert tuple(lines[0]) == REPORT_COLUMNS == (  # the columns the issue names, in its order
        "row", "query", "study_uid", "status", "instances_expected", "instances_written", "instances_skipped",
        "bytes", "attempts", "error", "started", "finished",
    )
    assert tuple(report.to_dataframe().columns) == REPORT_COLUMNS
    assert [line["status"] for line in lines] == ["done"] * 3
    index = pandas.read_parquet(report.index_path)
    assert len(index) == report.instances_written
    on_disk = {p.name: p for p in (tmp_path / "out").rglob("*") if p.is_file()}
    for _, line in index.iterrows():
        original = orthanc.sample.instance(line["SOPInstanceUID"])
        assert (tmp_path / "out" / line["path"]).read_bytes() == original.path.read_bytes()
        assert line["size"] == original.size
    assert len(on_disk) >= len(index)


def test_a_template_typo_fails_the_export_before_any_study_spends_an_attempt(tmp_path: Path) -> None:
    trolley = ServerProfile(url="http://127.0.0.1:9/dicom-web").trolley()
    with pytest.raises(TemplateError, match="did you mean PatientID"):
        export(trolley, ["1.2.3"], tmp_path / "out", template="{PatientId}/{SOPInstanceUID}.dcm")
    assert not (tmp_path / "out").exists()


def test_an_export_into_a_file_is_refused_before_its_state_is_kept(tmp_path: Path) -> None:
    trolley = ServerProfile(url="http://127.0.0.1:9/dicom-web").trolley()
    (tmp_path / "out").write_bytes(b"")
    with pytest.raises(OutputFolderError, match="is a file, not a folder"):
        export(trolley, ["1.2.3"], tmp_path / "out")


def test_the_index_can_be_csv(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = orthanc.sample.small_studies[0]
    report = export(trolley_for(orthanc), [study.uid], tmp_path, progress=False, index_format="csv")
    index = pandas.read_csv(report.index_path, dtype=str)
    assert set(index["SOPInstanceUID"]) == {i.uid for i in study.instances}
    assert set(index["PatientID"]) == {study.patient_id}


@pytest.mark.parametrize("index_format", ["parquet", "csv"])
def test_the_index_types_numbers_as_integers_and_the_study_date_as_a_date(
    orthanc: OrthancServer, tmp_path: Path, index_format: str
) -> None:
    study = next(s for s in orthanc.sample.small_studies if len(s.instances) >= 2)
    report = export(trolley_for(orthanc), [study.uid], tmp_path, progress=False, index_format=index_format)

    study_date = datetime.strptime(study.study_date, "%Y%m%d").date()
    if index_format == "parquet":
        index = pandas.read_parquet(report.index_path)
        assert set(index["StudyDate"]) == {study_date}  # datetime.date values: a date32 column
    else:
        index = pandas.read_csv(report.index_path, parse_dates=["StudyDate"], date_format="%Y-%m-%d")
        assert {d.date() for d in index["StudyDate"]} == {study_date}
    assert str(index["SeriesNumber"].dtype) == "int64"
    assert str(index["InstanceNumber"].dtype) == "int64"
    by_number = index.sort_values(["SeriesNumber", "InstanceNumber"])
    assert by_number["SOPInstanceUID"].tolist() == [
        i.uid for s in sorted(study.series, key=lambda s: s.number) for i in s.instances
    ]


def test_an_index_value_that_is_no_number_or_date_is_left_empty_and_the_column_keeps_its_type(
    tmp_path: Path,
) -> None:
    good = ("a.dcm", "1", "1.1", "1.1.1", "P", "20200102", "CT", "2", "10", "1.2.840.10008.1.2.1", 100)
    odd = ("b.dcm", "1", "1.1", "1.1.2", "P", "2020-02-31", "CT", "1\\2", "x", "1.2.840.10008.1.2.1", 100)

    index = pandas.read_parquet(write_index([good, odd], tmp_path, "parquet"))

    assert index["SeriesNumber"].tolist()[0] == 2
    assert pandas.isna(index["SeriesNumber"].tolist()[1])
    assert pandas.isna(index["InstanceNumber"].tolist()[1])
    assert index["StudyDate"].tolist()[0] == date(2020, 1, 2)
    assert index["StudyDate"].tolist()[1] is None


def test_a_row_that_matches_nothing_is_reported_not_found(orthanc: OrthancServer, tmp_path: Path) -> None:
    report = export(trolley_for(orthanc), [Query(PatientID="NOBODY")], tmp_path, progress=False)
    assert not report.ok
    assert report.not_found == 1
    assert report.to_dataframe().loc[0, "study_uid"] == ""


def test_a_study_uid_the_server_lacks_is_not_found(orthanc: OrthancServer, tmp_path: Path) -> None:
    report = export(trolley_for(orthanc), ["1.2.3.404"], tmp_path, progress=False)
    assert report.to_dataframe().loc[0, "status"] == "not found"


def test_a_row_that_matches_several_studies_exports_them_all(orthanc: OrthancServer, tmp_path: Path) -> None:
    patient = orthanc.sample.small_studies[0].patient_id
    expected = {s.uid for s in orthanc.sample.studies if s.patient_id == patient}
    assert len(expected) > 1
    frame = export(trolley_for(orthanc), [Query(PatientID=patient)], tmp_path, progress=False).to_dataframe()
    assert set(frame["study_uid"]) == expected
    assert set(frame["row"]) == {1}


def test_a_second_run_costs_no_request_and_new_rows_are_exported(tmp_path: Path) -> None:
    first, second = make_instances(name="resume-a"), make_instances(name="resume-b")
    with FaultServer(first + second) as server:
        trolley = ServerProfile(url=server.dicomweb_url).trolley()
        export(trolley, [Query(PatientID="FAULT-001", StudyInstanceUID=first[0].study_uid)], tmp_path, progress=False)
        server.reset_log()
        again = export(
            trolley, [Query(PatientID="FAULT-001", StudyInstanceUID=first[0].study_uid)], tmp_path, progress=False
        )
        assert server.count() == 0
        assert again.ok
        both = export(trolley, [first[0].study_uid, second[0].study_uid], tmp_path, progress=False)
        assert both.studies_done == 2
        wado = [r.path for r in server.seen if r.route is not Route.QIDO]
        assert wado
        assert all(second[0].study_uid in path for path in wado)  # only the new study


def test_each_new_study_is_one_request_in_a_folder_holding_others(tmp_path: Path) -> None:
    first, second = make_instances(name="one-a"), make_instances(name="one-b")
    with FaultServer(first + second) as server:
        trolley = ServerProfile(url=server.dicomweb_url).trolley()
        report = export(trolley, [first[0].study_uid, second[0].study_uid], tmp_path, studies=1, progress=False)
        assert report.studies_done == 2
        assert server.count(Route.WADO_RS_STUDY) == 2
        assert server.count(Route.WADO_RS_SERIES) == server.count(Route.WADO_RS_INSTANCE) == 0


def test_the_series_of_many_studies_are_searched_with_one_request(
    orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trolley = trolley_for(orthanc)
    searcher = trolley.searcher
    assert searcher is not None
    searches: list[Query] = []
    real = searcher.find_studies

    def spy(query: Query) -> list[Any]:
        searches.append(query)
        return real(query)

    monkeypatch.setattr(searcher, "find_studies", spy)
    studies = orthanc.sample.small_studies[:4]
    report = export(trolley, [s.uid for s in studies], tmp_path, studies=2, progress=False)
    assert report.studies_done == 4
    assert report.instances_written == sum(len(s.instances) for s in studies)
    assert len(searches) == 1
    assert searches[0].StudyInstanceUID == ",".join(s.uid for s in studies)


def test_every_batch_of_studies_is_searched_once_ahead_of_its_downloads(
    orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dicomtrolley.export.prefetch.BATCH", 2)
    trolley = trolley_for(orthanc)
    searcher = trolley.searcher
    assert searcher is not None
    searches: list[Query] = []
    real = searcher.find_studies
    monkeypatch.setattr(searcher, "find_studies", lambda query: searches.append(query) or real(query))
    studies = orthanc.sample.small_studies[:5]
    report = export(trolley, [s.uid for s in studies], tmp_path, studies=2, progress=False)
    assert report.studies_done == 5
    assert [q.StudyInstanceUID.split(",") for q in searches] == [
        [s.uid for s in studies[:2]], [s.uid for s in studies[2:4]], [studies[4].uid]
    ]


def test_a_batch_search_that_breaks_leaves_each_study_to_search_alone(
    orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: object, study_uids: list[str]) -> None:
        raise RuntimeError("a bug in the batch search")

    monkeypatch.setattr("dicomtrolley.export.prefetch.SeriesPrefetcher.prefetch", broken)
    studies = orthanc.sample.small_studies[:3]
    report = trolley_for(orthanc).export([s.uid for s in studies], tmp_path / "out", progress=False)
    assert report.ok
    assert report.instances_written == sum(len(s.instances) for s in studies)
    assert "a bug in the batch search" in caplog.text


def test_a_batch_of_state_changes_is_recorded_whole_or_not_at_all(tmp_path: Path) -> None:
    state = StateDatabase(tmp_path)
    state.add_rows([("a", 1, "StudyInstanceUID=1.2.3"), ("b", 2, "StudyInstanceUID=1.2.4")], refresh=False)
    state.resolve_rows([("a", ["1.2.3"]), ("b", ["1.2.4"])], max_attempts=3)

    def a_turn_cut_short() -> None:
        with state.batch():
            state.start_study("1.2.3")
            raise RuntimeError("the process dies mid-turn")

    with pytest.raises(RuntimeError):
        a_turn_cut_short()
    assert dict(state.studies_to_run(3)) == {"1.2.3": "pending", "1.2.4": "pending"}
    with state.batch():
        state.start_study("1.2.3")
        state.start_study("1.2.4")
    assert dict(state.studies_to_run(3)) == {"1.2.3": "running", "1.2.4": "running"}
    state.close()


def test_the_report_lines_read_back_with_their_numbers_as_numbers(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = orthanc.sample.small_studies[0]
    worklist = [study.uid, Query(PatientID="NOBODY-HERE")]
    report = trolley_for(orthanc).export(worklist, tmp_path / "out", progress=False)
    found, missing = report.lines
    assert found["study_uid"] == study.uid
    assert (found["row"], missing["row"]) == (1, 2)
    assert found["instances_expected"] == found["instances_written"] == len(study.instances)
    assert found["bytes"] == report.bytes_written == sum(i.size for i in study.instances)
    assert (missing["study_uid"], missing["status"], missing["instances_expected"]) == ("", "not found", "")
    assert (report.rows, report.studies_done, report.not_found, report.ok) == (2, 1, 1, False)


def test_refresh_searches_query_rows_again(tmp_path: Path) -> None:
    instances = make_instances(name="refresh")
    with FaultServer(instances) as server:
        trolley = ServerProfile(url=server.dicomweb_url).trolley()
        export(trolley, [Query(PatientID="FAULT-001")], tmp_path, progress=False)
        server.reset_log()
        assert export(trolley, [Query(PatientID="FAULT-001")], tmp_path, progress=False, refresh=True).ok
        assert server.count(Route.QIDO) >= 1
        assert server.count() == server.count(Route.QIDO)  # searched again; the done study is not fetched


def test_outside_the_window_no_study_starts(orthanc: OrthancServer, tmp_path: Path) -> None:
    later = datetime.now() + timedelta(hours=2)
    window = f"{later:%H}:00-{(later + timedelta(hours=1)):%H}:00"
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        export(trolley_for(orthanc), [orthanc.sample.small_studies[0].uid], tmp_path, progress=False, window=window)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        assert db.execute("SELECT status, attempts FROM studies").fetchall() == [("pending", 0)]


def test_a_study_that_fails_on_the_server_does_not_stop_the_others(tmp_path: Path) -> None:
    good, bad = make_instances(name="good"), make_instances(name="bad")
    with FaultServer(good + bad) as server:
        study_path = f"/dicom-web/studies/{bad[0].study_uid}"
        server.add_fault(Fault.STATUS, status=500, route=Route.WADO_RS_STUDY, path=study_path)
        for series_uid in {i.series_uid for i in bad}:
            series_path = f"{study_path}/series/{series_uid}"
            server.add_fault(Fault.STATUS, status=500, route=Route.WADO_RS_SERIES, path=series_path)
        trolley = ServerProfile(url=server.dicomweb_url).trolley()
        uids = [bad[0].study_uid, good[0].study_uid]
        report = export(trolley, uids, tmp_path, progress=False, max_attempts=2, retry_delay=0)
        frame = report.to_dataframe().set_index("study_uid")
        assert frame.loc[good[0].study_uid, "status"] == "done"
        assert frame.loc[bad[0].study_uid, "status"] == "failed"
        assert "500" in frame.loc[bad[0].study_uid, "error"]
        assert frame.loc[bad[0].study_uid, "attempts"] == 2  # a 500 may pass: tried again within the run
        server.clear_faults()
        again = export(trolley, uids, tmp_path, progress=False, max_attempts=2)
        assert again.studies_failed == 1  # out of attempts
        fixed = export(trolley, uids, tmp_path, progress=False, max_attempts=3)
        assert fixed.ok


class CrashingExecutor(Executor):
    """Runs tasks on threads, except that the tasks of one study end as a crashed worker's do."""

    def __init__(self, crash_study: str, error: BaseException) -> None:
        self.crash_study = crash_study
        self.error = error
        self.threads = ThreadPoolExecutor(2)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        task = args[1] if len(args) > 1 else None
        if getattr(task, "study_uid", None) == self.crash_study:
            crashed: Future[Any] = Future()
            crashed.set_exception(self.error)
            return crashed
        return self.threads.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.threads.shutdown(wait, cancel_futures=cancel_futures)


def test_a_study_whose_worker_crashed_is_failed_and_the_others_finish(orthanc: OrthancServer, tmp_path: Path) -> None:
    studies = [s.uid for s in orthanc.sample.small_studies[:3]]
    crash = CrashingExecutor(studies[1], BrokenProcessPool("A child process terminated abruptly"))
    with crash:
        report = trolley_for(orthanc).export(studies, tmp_path, executor=crash, progress=False)
    frame = report.to_dataframe().set_index("study_uid")
    assert list(frame["status"]) == ["done", "failed", "done"]
    assert frame.loc[studies[1], "error"] == "BrokenProcessPool: A child process terminated abruptly"
    assert frame.loc[studies[1], "attempts"] == 1


def test_ctrl_c_raised_by_a_task_still_ends_the_export(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = orthanc.sample.small_studies[0].uid
    with CrashingExecutor(study, KeyboardInterrupt()) as crash, pytest.raises(KeyboardInterrupt):
        trolley_for(orthanc).export([study], tmp_path, executor=crash, progress=False)


def test_a_folder_in_use_is_refused_naming_the_other_process(orthanc: OrthancServer, tmp_path: Path) -> None:
    # flock locks are per open file: a second open in this process is refused like another process.
    with FolderLock(tmp_path), pytest.raises(ExportLockedError, match=f"pid {os.getpid()}"):
        export(trolley_for(orthanc), [orthanc.sample.small_studies[0].uid], tmp_path, progress=False)


def test_a_bad_worklist_stops_before_any_download(orthanc: OrthancServer, tmp_path: Path) -> None:
    worklist = tmp_path / "worklist.csv"
    worklist.write_text(f"StudyInstanceUID,StudyDate\n{orthanc.sample.small_studies[0].uid},\n1.2.3,notadate\n")
    with pytest.raises(WorklistError, match="line 3"):
        export(trolley_for(orthanc), worklist, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_bad_rows_can_be_skipped_and_are_reported(orthanc: OrthancServer, tmp_path: Path) -> None:
    worklist = tmp_path / "worklist.csv"
    worklist.write_text(f"StudyInstanceUID,StudyDate\n{orthanc.sample.small_studies[0].uid},\n1.2.3,notadate\n")
    report = export(trolley_for(orthanc), worklist, tmp_path / "out", progress=False, skip_bad_rows=True)
    assert report.studies_done == 1
    assert report.bad_rows == 1
    assert not report.ok


def test_the_command_line_exports_and_exits_by_outcome(orthanc: OrthancServer, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    worklist = tmp_path / "worklist.csv"
    worklist.write_text("PatientID\tAccessionNumber\n" + "".join(
        f"{s.patient_id}\t{s.accession}\n" for s in orthanc.sample.small_studies[:2]
    ))
    out = tmp_path / "out"
    assert main(["export", orthanc.dicomweb_url, str(worklist), "-o", str(out), "--no-progress"]) == 0
    assert "2 studies done" in capsys.readouterr().out
    worklist.write_text("PatientID\nNOBODY\n")
    assert main(["export", orthanc.dicomweb_url, str(worklist), "-o", str(out), "--no-progress"]) == 1
    worklist.write_text("Patient\nNOBODY\n")
    assert main(["export", orthanc.dicomweb_url, str(worklist), "-o", str(out), "--no-progress"]) == 2


def test_the_command_line_takes_a_named_server(orthanc: OrthancServer, tmp_path: Path) -> None:
    config = tmp_path / "servers.toml"
    config.write_text(f'[servers.local]\nurl = "{orthanc.dicomweb_url}"\ndownloader = "wado-uri"\n')
    worklist = tmp_path / "worklist.csv"
    worklist.write_text(f"StudyInstanceUID\n{orthanc.sample.small_studies[0].uid}\n")
    status = main(["export", "--server", "local", "--config", str(config), str(worklist), "-o", str(tmp_path / "o"),
                   "--no-progress"])
    assert status == 0


def test_c_get_exports_too(orthanc: OrthancServer, tmp_path: Path) -> None:
    profile = ServerProfile(searcher="c-find", downloader="c-get", host="127.0.0.1", port=orthanc.dicom_port,
                            aec=orthanc.aet)
    studies = orthanc.sample.small_studies[:2]
    report = export(profile.trolley(), [Query(AccessionNumber=s.accession) for s in studies], tmp_path,
                    progress=False)
    assert report.studies_done == 2


def test_c_move_exports_one_study_at_a_time(orthanc: OrthancServer, tmp_path: Path) -> None:
    aet, port = orthanc.move_destination
    profile = ServerProfile(searcher="qido-rs", downloader="c-move", url=orthanc.dicomweb_url, host="127.0.0.1",
                            port=orthanc.dicom_port, aec=orthanc.aet, aet=aet, move_port=port)
    studies = orthanc.sample.small_studies[:2]
    report = export(profile.trolley(), [s.uid for s in studies], tmp_path, studies=1, progress=False)
    assert report.studies_done == 2


def test_a_dataframe_is_a_worklist(orthanc: OrthancServer, tmp_path: Path) -> None:
    studies = orthanc.sample.small_studies[:2]
    frame = pandas.DataFrame({"AccessionNumber": [s.accession for s in studies]})
    assert export(trolley_for(orthanc), frame, tmp_path, progress=False).studies_done == 2


def test_the_progress_bar_counts_studies(
    orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export(trolley_for(orthanc), [orthanc.sample.small_studies[0].uid], tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "1/1" in err
    assert "instances" in err


def test_max_rate_paces_the_whole_export(orthanc: OrthancServer, tmp_path: Path) -> None:
    studies = orthanc.sample.small_studies[:3]
    size = sum(i.size for s in studies for i in s.instances)
    started = time.monotonic()
    export(trolley_for(orthanc), [s.uid for s in studies], tmp_path, progress=False, max_rate=size / 2)
    assert time.monotonic() - started > 1.0  # two seconds' worth, less the one-second burst


def test_max_connections_caps_the_connections_of_all_studies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    peak = [0]
    original = TrackingHTTPServer.process_request

    def counting(self: TrackingHTTPServer, request: object, client_address: object) -> None:
        original(self, request, client_address)
        with self._connections_lock:
            peak[0] = max(peak[0], len(self._connections))

    monkeypatch.setattr(TrackingHTTPServer, "process_request", counting)
    instances = [i for n in range(6) for i in make_instances(series_sizes=(4,), name=f"cap-{n}")]
    with FaultServer(instances) as server:
        profile = ServerProfile(url=server.dicomweb_url, downloader="wado-uri", workers=8, max_connections=2)
        uids = list(dict.fromkeys(i.study_uid for i in instances))
        report = export(profile.trolley(), uids, tmp_path, studies=4, progress=False)
    assert report.studies_done == 6
    assert peak[0] <= 2


def test_ctrl_c_in_python_saves_the_state_then_raises_keyboard_interrupt(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    studies = orthanc.sample.small_studies
    size = sum(i.size for s in studies for i in s.instances)
    threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):  # after about 1.5 s of a 4 s export
        export(trolley_for(orthanc), [s.uid for s in studies], tmp_path, progress=False, studies=1,
               max_rate=size / 4)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        statuses = [status for (status,) in db.execute("SELECT status FROM studies")]
    assert "running" not in statuses
    assert "pending" in statuses
    assert (tmp_path / "report.csv").exists()
    assert export(trolley_for(orthanc), [s.uid for s in studies], tmp_path, progress=False).ok


def test_ctrl_c_ends_the_command_while_a_request_waits_on_a_silent_server(tmp_path: Path) -> None:
    instances = make_instances(name="stalled")
    with FaultServer(instances) as server:
        for route in (Route.WADO_RS_STUDY, Route.WADO_RS_SERIES, Route.WADO_RS_INSTANCE):
            server.add_fault(Fault.STALL, route=route, duration=30)
        process = subprocess.Popen(
            [sys.executable, "-m", "dicomtrolley.cli", "export", server.dicomweb_url,
             str(write_worklist(tmp_path, [instances[0].study_uid])), "-o", str(tmp_path / "out"), "--no-progress"],
            cwd=REPO, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while server.count(Route.QIDO) == 0 or server.count() == server.count(Route.QIDO):
            assert time.monotonic() < deadline
            assert process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        assert process.wait(timeout=15) == 130
        assert time.monotonic() - sent < 6  # the grace of 2 s, the report, the exit; not the 30 s stall
    with sqlite3.connect(tmp_path / "out" / DATABASE_NAME) as db:
        assert db.execute("SELECT status, attempts FROM studies").fetchall() == [("pending", 0)]


def write_worklist(folder: Path, uids: list[str]) -> Path:
    path = folder / "worklist.csv"
    path.write_text("StudyInstanceUID\n" + "".join(f"{uid}\n" for uid in uids))
    return path


# ------------------------------------------------------------ crash safety and Ctrl-C (100 studies, a subprocess)


@dataclass(frozen=True)
class HundredStudies:
    """An Orthanc holding 100 small studies, their files by SOPInstanceUID (dots as ``_``), and a worklist of them."""

    server: OrthancServer
    originals: dict[str, bytes]
    worklist: Path

    def export(self, out: Path, *extra: str) -> subprocess.Popen[bytes]:
        """``dicomtrolley export`` of the worklist into ``out``, in a process of its own."""
        return subprocess.Popen(
            [sys.executable, "-m", "dicomtrolley.cli", "export", self.server.dicomweb_url, str(self.worklist),
             "-o", str(out), "--no-progress", "--studies", "2", *extra],
            cwd=REPO, stderr=subprocess.PIPE,
        )

    def export_until(self, out: Path, done: int) -> subprocess.Popen[bytes]:
        """Start a paced export in a process; return it once ``done`` studies are recorded as done."""
        process = self.export(out, "--max-rate", "500KB/s")
        deadline = time.monotonic() + 60
        while studies_done(out) < done:
            assert process.poll() is None, "the export ended before it could be stopped"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return process


@pytest.fixture
def hundred_studies(orthanc_factory: OrthancFactory, tmp_path_factory: pytest.TempPathFactory) -> HundredStudies:
    server = orthanc_factory(load=False)
    folder = tmp_path_factory.mktemp("hundred")
    originals: dict[str, bytes] = {}
    paths, uids = [], []
    for number in range(100):
        instances = make_instances(series_sizes=(3,), pixels=64, name=f"hundred-{number}",
                                   patient_id=f"H{number:03d}")
        uids.append(instances[0].study_uid)
        for instance in instances:
            path = folder / f"{instance.sop_uid}.dcm"
            path.write_bytes(instance.data)
            paths.append(path)
            originals[instance.sop_uid.replace(".", "_")] = instance.data
    server.upload(paths)
    return HundredStudies(server, originals, write_worklist(folder, uids))


def studies_done(out: Path) -> int:
    database = out / DATABASE_NAME
    if not database.exists():
        return 0
    with sqlite3.connect(database) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM studies WHERE status = 'done'").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def test_kill_9_mid_export_then_the_same_command_completes_it(hundred_studies: HundredStudies, tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = hundred_studies.export_until(out, done=20)
    process.kill()
    process.wait()
    assert 20 <= studies_done(out) < 100
    # Whether the kill lands while a file is written is chance (the pacing waits between files):
    # leave what it leaves then, a temporary named for the killed process, in a folder the re-run
    # writes into, so that every run checks that the re-run cleans it up.
    with sqlite3.connect(out / DATABASE_NAME) as db:
        (pending,) = db.execute("SELECT uid FROM studies WHERE status = 'pending' LIMIT 1").fetchone()
    query = Query(StudyInstanceUID=pending, query_level=QueryLevels.SERIES)
    (study,) = trolley_for(hundred_studies.server).find_studies(query)
    folder = out / pending.replace(".", "_") / study.all_series()[0].uid.replace(".", "_")
    folder.mkdir(parents=True)
    killed = temporary_name(folder / "1_2_3").replace(f"-{os.getpid()}.", f"-{process.pid}.")
    (folder / f"{killed}abcdefgh{TEMPORARY_SUFFIX}").write_bytes(b"half an instance")

    rerun = hundred_studies.export(out)
    assert rerun.wait(timeout=120) == 0, rerun.stderr.read() if rerun.stderr else ""
    with sqlite3.connect(out / DATABASE_NAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        attempts = dict(db.execute("SELECT uid, attempts FROM studies").fetchall())
    assert len(attempts) == 100
    assert sum(1 for a in attempts.values() if a > 1) <= 2  # only those in flight at the kill ran twice
    assert files_under(out) == hundred_studies.originals  # every file whole, none half-written under its final name
    assert not list(out.rglob(f"*{TEMPORARY_SUFFIX}"))
    index = pandas.read_parquet(out / "instances.parquet")
    # The killed attempts' files too:
    assert sorted(Path(p).name for p in index["path"]) == sorted(hundred_studies.originals)


def test_ctrl_c_saves_the_state_and_exits_130_then_the_export_resumes(
    hundred_studies: HundredStudies, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    process = hundred_studies.export_until(out, done=10)
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    assert process.wait(timeout=10) == 130
    # The running downloads stop at their next instance (well under 2 s); the rest is writing
    # the report and the index, and the interpreter's exit, on a loaded machine.
    assert time.monotonic() - sent < 5
    with sqlite3.connect(out / DATABASE_NAME) as db:
        statuses = {s for (s,) in db.execute("SELECT status FROM studies")}
    assert "running" not in statuses
    assert (out / "report.csv").exists()
    rerun = hundred_studies.export(out)
    assert rerun.wait(timeout=120) == 0
    assert files_under(out) == hundred_studies.originals
