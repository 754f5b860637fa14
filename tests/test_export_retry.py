"""Retries within a run: which failures are worth another attempt, the backoff, and an export through 20% faults."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import time
from http import HTTPStatus
from pathlib import Path

import pytest

from dicomtrolley.cli import main
from dicomtrolley.exceptions import (
    ConnectionFailedError,
    DeidentificationError,
    DICOMTrolleyAuthError,
    DIMSEError,
    HeaderError,
    MultipartError,
    ServerError,
    StorageError,
    TruncatedBodyError,
)
from dicomtrolley.export import export
from dicomtrolley.export.retry import MAX_RETRY_DELAY, Backoff, RetryQueue, worth_retrying
from dicomtrolley.export.state import DATABASE_NAME
from dicomtrolley.profiles import ServerProfile
from tests.support.fault_server import Fault, FaultServer, Route, ServedInstance, make_instances

REPO = Path(__file__).resolve().parent.parent
RETRIEVES = (Route.WADO_RS_STUDY, Route.WADO_RS_SERIES, Route.WADO_RS_INSTANCE)

# ------------------------------------------------------------ which failures may pass


def http_failure(status: int) -> ServerError:
    """The error of a request the server answered with ``status`` (and its usual reason)."""
    return ServerError("http://pacs/studies/1", status, HTTPStatus(status).phrase)


def failure_id(error: Exception) -> str:
    return f"{type(error).__name__}-{getattr(error, 'status', '')}"


@pytest.mark.parametrize(
    "error",
    [
        *map(http_failure, (500, 503, 429, 408)),
        ConnectionFailedError("Reading the body of http://pacs/studies/1 failed: connection reset"),
        TruncatedBodyError("the multipart body is truncated"),
        DIMSEError("no answer within 30 s, or the association was aborted"),
        DIMSEError("C-GET failed with status 0xA702", status=0xA702),
    ],
    ids=failure_id,
)
def test_a_failure_that_may_pass_is_worth_another_attempt(error: Exception) -> None:
    assert worth_retrying(error)


@pytest.mark.parametrize(
    "error",
    [
        *map(http_failure, (404, 401, 403, 400)),
        DICOMTrolleyAuthError("login refused"),
        StorageError("Could not write /out/1.dcm: No space left on device"),
        DeidentificationError("no key"),
        MultipartError("the multipart Content-Type has no boundary parameter"),
        HeaderError("not a DICOM file"),
        DIMSEError("C-MOVE failed with status 0xA801: move destination unknown", status=0xA801),
        RuntimeError("a bug"),
    ],
    ids=failure_id,
)
def test_a_failure_that_cannot_get_better_is_not_worth_another_attempt(error: Exception) -> None:
    assert not worth_retrying(error)


# ------------------------------------------------------------ the backoff and the queue


def test_the_backoff_doubles_with_each_attempt_within_its_jitter() -> None:
    backoff = Backoff(base=2.0)
    for attempts in range(1, 7):
        middle = 2.0 * 2 ** (attempts - 1)
        delays = [backoff.delay(attempts) for _ in range(50)]
        assert all(0.5 * middle <= d <= min(1.5 * middle, MAX_RETRY_DELAY) for d in delays)
        assert len(set(delays)) > 1  # jittered: studies failed together come back apart


def test_the_backoff_is_capped() -> None:
    assert Backoff(base=10.0, cap=30.0).delay(20) == 30.0
    assert Backoff(base=10.0).delay(20) == MAX_RETRY_DELAY


def test_a_backoff_of_zero_retries_at_once() -> None:
    assert Backoff(base=0.0).delay(5) == 0.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_study_in_the_queue_is_due_only_when_its_wait_is_over() -> None:
    clock = FakeClock()
    queue = RetryQueue(Backoff(base=1.0, cap=0.5), clock)  # below the jitter's least: every wait is 0.5 s
    assert queue.put("1.2.3", attempts=1) == 0.5
    clock.now += 0.4
    assert queue.due() == []
    assert len(queue) == 1
    clock.now += 0.1
    assert queue.due() == ["1.2.3"]
    assert len(queue) == 0
    assert queue.due() == []


def test_the_queue_hands_out_studies_in_the_order_their_waits_end() -> None:
    clock = FakeClock()
    queue = RetryQueue(Backoff(base=1.0, cap=8.0), clock)
    queue.put("late", attempts=5)  # at least 8 s: the cap
    queue.put("early", attempts=1)  # at most 1.5 s
    queue.put("also early", attempts=1)
    clock.now += 1.5
    assert sorted(queue.due()) == ["also early", "early"]
    clock.now += 6.5
    assert queue.due() == ["late"]


# ------------------------------------------------------------ exports through a failing server

RANDOM_FAULTS = [
    (Fault.STATUS, {"status": 503}),
    (Fault.STATUS, {"status": 500}),
    (Fault.TRUNCATE, {}),
    (Fault.RESET, {}),
    (Fault.SLOW_DRIP, {"interval": 0.05, "duration": 0.3}),
]
"""What a flaky archive does: busy, broken, cut mid-body (closed or reset), slow then gone."""


def studies(count: int, prefix: str) -> list[ServedInstance]:
    return [i for n in range(count) for i in make_instances(name=f"{prefix}-{n}", series_sizes=(3, 2))]


def write_worklist(folder: Path, instances: list[ServedInstance]) -> Path:
    path = folder / "worklist.csv"
    path.write_text("StudyInstanceUID\n" + "".join(f"{uid}\n" for uid in dict.fromkeys(i.study_uid for i in instances)))
    return path


def attempts_by_study(out: Path) -> dict[str, tuple[str, int]]:
    """Each study's status and attempts; none while the export has not made its database yet."""
    if not (out / DATABASE_NAME).exists():
        return {}
    with sqlite3.connect(out / DATABASE_NAME) as db:
        try:
            rows = db.execute("SELECT uid, status, attempts FROM studies").fetchall()
        except sqlite3.OperationalError:  # no table yet
            return {}
    return {uid: (status, attempts) for uid, status, attempts in rows}


@pytest.mark.integration
def test_an_export_through_a_server_failing_a_fifth_of_its_retrieves_finishes_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    instances = studies(20, "flaky")
    with FaultServer(instances, seed=26) as server:
        server.add_random_faults(0.2, RANDOM_FAULTS, RETRIEVES)
        worklist = write_worklist(tmp_path, instances)
        started = time.perf_counter()
        with caplog.at_level(logging.INFO, logger="dicomtrolley.export"):
            status = main(["export", server.dicomweb_url, str(worklist), "-o", str(tmp_path / "out"), "--no-progress",
                           "--max-attempts", "6", "--retry-delay", "0.05"])
        elapsed = time.perf_counter() - started
        faulted = sum(1 for request in server.seen if request.fault is not None)
    assert status == 0, capsys.readouterr().err
    attempts = attempts_by_study(tmp_path / "out")
    assert {s for s, _ in attempts.values()} == {"done"}
    used = sorted(a for _, a in attempts.values())
    assert faulted > 0
    assert used[-1] > 1  # the studies the faults failed were tried again
    assert used[-1] <= 6
    assert "the next in" in caplog.text
    print(f"20 studies, {faulted} faulted answers: {sum(used)} attempts (at most {used[-1]}), {elapsed:.2f} s")


def fail_with_500(server: FaultServer, instances: list[ServedInstance]) -> None:
    """Make every retrieve of the study of ``instances`` answer 500: the whole study, each series, each instance."""
    study = server.series_path(instances[0].series_uid).rsplit("/series/", 1)[0]
    series = [server.series_path(uid) for uid in dict.fromkeys(i.series_uid for i in instances)]
    for path in [study, *series, *(server.instance_path(i) for i in instances)]:
        server.add_fault(Fault.STATUS, status=500, path=path)


@pytest.mark.integration
def test_a_study_failing_with_500_uses_all_its_attempts_in_one_run(tmp_path: Path) -> None:
    bad, good = make_instances(name="always-500"), make_instances(name="fine")
    with FaultServer(bad + good) as server:
        fail_with_500(server, bad)
        trolley = ServerProfile(url=server.dicomweb_url).trolley()
        report = export(trolley, [bad[0].study_uid, good[0].study_uid], tmp_path, progress=False,
                        max_attempts=3, retry_delay=0.01)
    frame = report.to_dataframe().set_index("study_uid")
    assert frame.loc[bad[0].study_uid, "status"] == "failed"
    assert frame.loc[bad[0].study_uid, "attempts"] == 3
    assert "500" in frame.loc[bad[0].study_uid, "error"]
    assert frame.loc[good[0].study_uid, "attempts"] == 1


@pytest.mark.integration
def test_a_study_the_server_does_not_have_fails_at_its_first_attempt(tmp_path: Path) -> None:
    instances = make_instances(name="gone")
    with FaultServer(instances) as server:
        for route in RETRIEVES:
            server.add_fault(Fault.STATUS, status=404, route=route)
        trolley = ServerProfile(url=server.dicomweb_url).trolley()
        started = time.perf_counter()
        report = export(trolley, [instances[0].study_uid], tmp_path, progress=False, max_attempts=5, retry_delay=5)
        elapsed = time.perf_counter() - started
    (line,) = report.to_dataframe().itertuples()
    assert (line.status, line.attempts) == ("failed", 1)
    assert "404" in line.error
    assert elapsed < 5  # no backoff was waited for


@pytest.mark.integration
def test_a_study_that_cannot_be_stored_fails_at_its_first_attempt(tmp_path: Path) -> None:
    instances = make_instances(name="collides")
    with FaultServer(instances) as server:
        trolley = ServerProfile(url=server.dicomweb_url).trolley()
        # Every instance of the study on one path: the second collides with the first, every time.
        report = export(trolley, [instances[0].study_uid], tmp_path, progress=False, template="{PatientID}.dcm",
                        max_attempts=5, retry_delay=0)
    (line,) = report.to_dataframe().itertuples()
    assert (line.status, line.attempts) == ("failed", 1)
    assert "StorageCollisionError" in line.error


@pytest.mark.integration
def test_kill_9_while_a_study_waits_to_be_retried_keeps_its_attempts(tmp_path: Path) -> None:
    bad, good = make_instances(name="waits"), make_instances(name="passes")
    with FaultServer(bad + good) as server:
        fail_with_500(server, bad)
        worklist = write_worklist(tmp_path, bad + good)
        out = tmp_path / "out"
        command = [sys.executable, "-m", "dicomtrolley.cli", "export", server.dicomweb_url, str(worklist), "-o",
                   str(out), "--no-progress", "--max-attempts", "4"]
        process = subprocess.Popen([*command, "--retry-delay", "60"], cwd=REPO, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        waiting = {bad[0].study_uid: ("failed", 1), good[0].study_uid: ("done", 1)}
        while attempts_by_study(out) != waiting:
            assert process.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.kill()
        process.wait()
        time.sleep(0.3)
        assert attempts_by_study(out) == waiting  # the attempt was recorded before the wait began

        server.clear_faults()
        rerun = subprocess.run([*command, "--retry-delay", "0"], cwd=REPO, capture_output=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert attempts_by_study(out) == {bad[0].study_uid: ("done", 2), good[0].study_uid: ("done", 1)}
