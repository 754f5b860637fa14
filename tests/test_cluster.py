"""Running an export on a Dask cluster: the same result as on one machine, lost workers, passwords, the folder.

The clusters here are real ``distributed`` clusters of worker processes on this
machine, so every task and probe crosses a process boundary, pickled, as it
does between machines. The one cluster of this module holds the password of
the password-protected Orthanc in its workers' environment, and only there.
"""

from __future__ import annotations

import base64
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from distributed import Client
from distributed.protocol import pickle as dask_pickle

from dicomtrolley.cli import main
from dicomtrolley.exceptions import (
    DICOMTrolleyAuthError,
    DICOMTrolleyError,
    OutputFolderError,
    SharedFolderError,
    WorklistError,
)
from dicomtrolley.export import ExportReport, export
from dicomtrolley.export.cluster import (
    PROBE_PREFIX,
    DaskSpec,
    check_shared_folder,
    check_worker_secrets,
    dashboard_link,
    dask_client,
    export_on_dask,
)
from dicomtrolley.profiles import PASSWORD_VARIABLE, ServerProfile
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from tests.support.dask_cluster import local_cluster, worker_pids, worker_without_folder
from tests.support.latency_proxy import LatencyProxy
from tests.support.orthanc import OrthancFactory, OrthancServer, free_ports

USER = "alice"
PASSWORD = "w0rker-0nly-Pa55"
_BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (PASSWORD, _BASIC)
"""The password, and the form it takes in a basic auth header: neither may travel or be logged."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Client]:
    """Two worker processes whose environment, unlike this process's, holds the password."""
    with local_cluster(2, env={PASSWORD_VARIABLE: PASSWORD}) as client:
        yield client


def dicom_files(folder: Path) -> dict[str, bytes]:
    """Every instance file an export wrote, by path below the folder (not its state, report or index)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and len(p.relative_to(folder).parts) > 1 and not p.name.startswith(".")
    }


class RecordingExecutor(Executor):
    """Passes every task on to another executor, keeping it as Dask pickles it to send it to a worker."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.pickled: list[bytes] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.pickled.append(dask_pickle.dumps((fn, args, kwargs)))
        return self.inner.submit(fn, *args, **kwargs)


# ------------------------------------------------------------ --dask


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("tcp://scheduler:8786", DaskSpec(address="tcp://scheduler:8786")),
        ("tls://10.0.0.5:8786", DaskSpec(address="tls://10.0.0.5:8786")),
        ("scheduler.example:8786", DaskSpec(address="scheduler.example:8786")),
        ("local:3", DaskSpec(local_workers=3)),
    ],
)
def test_dask_option_names_a_scheduler_or_a_local_cluster(text: str, spec: DaskSpec) -> None:
    assert DaskSpec.parse(text) == spec


def test_dask_local_without_a_number_starts_one_worker_per_core() -> None:
    assert DaskSpec.parse("local") == DaskSpec(local_workers=os.cpu_count())


@pytest.mark.parametrize("text", ["local:0", "local:x", "scheduler", "http//scheduler:8786", ""])
def test_a_dask_option_that_is_neither_is_refused_with_its_text(text: str) -> None:
    with pytest.raises(DICOMTrolleyError, match="--dask"):
        DaskSpec.parse(text)


def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    (port,) = free_ports(1)
    with pytest.raises(DICOMTrolleyError, match=f"Cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"), \
            dask_client(f"tcp://127.0.0.1:{port}", timeout=1):
        pass


def test_without_dask_installed_the_error_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # what an import of a missing package finds
    with pytest.raises(DICOMTrolleyError, match=re.escape('pip install "dicomtrolley[cluster]"')), \
            dask_client("local:1"):
        pass


def test_a_client_of_a_running_scheduler_reaches_its_workers_and_dashboard(cluster: Client) -> None:
    with dask_client(cluster.scheduler.address) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        assert dashboard_link(client) == dashboard_link(cluster)
    link = dashboard_link(cluster)
    assert link is not None
    assert link.startswith("http://127.0.0.1:")


# ------------------------------------------------------------ the shared folder


def test_a_folder_every_worker_shares_passes_and_keeps_no_probe_file(cluster: Client, tmp_path: Path) -> None:
    out = tmp_path / "out"

    check_shared_folder(cluster, out)

    assert out.is_dir()
    assert list(out.iterdir()) == []


def test_a_folder_one_worker_does_not_see_is_refused_naming_that_worker(cluster: Client, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with worker_without_folder(cluster, out), pytest.raises(SharedFolderError) as raised:
        check_shared_folder(cluster, out)

    message = str(raised.value)
    assert f"The output folder {out} is not shared with every Dask worker" in message
    assert "does not see the probe file" in message
    assert message.count("\n  ") == 1  # the one isolated worker, not the two that share it
    assert not [p for p in out.iterdir() if p.name.startswith(PROBE_PREFIX)]


# ------------------------------------------------------------ the export on a cluster


def one_machine_export(orthanc: OrthancServer, uids: list[str], out: Path) -> ExportReport:
    session = requests.Session()
    trolley = Trolley(QidoRS(session, orthanc.dicomweb_url), WadoRS(session, orthanc.dicomweb_url))
    return trolley.export(uids, out, progress=False)


@pytest.mark.integration
def test_an_export_on_a_cluster_equals_the_export_on_one_machine(
    cluster: Client, orthanc: OrthancServer, tmp_path: Path
) -> None:
    uids = [study.uid for study in orthanc.sample.small_studies]
    expected = one_machine_export(orthanc, uids, tmp_path / "here")
    session = requests.Session()
    trolley = Trolley(QidoRS(session, orthanc.dicomweb_url), WadoRS(session, orthanc.dicomweb_url))

    report = trolley.export(uids, tmp_path / "cluster", executor=cluster.get_executor(), studies=4, progress=False)

    assert report.ok
    assert (report.studies_done, report.instances_written) == (len(uids), expected.instances_written)
    assert dicom_files(tmp_path / "cluster") == dicom_files(tmp_path / "here")
    columns = ["study_uid", "status", "instances_expected", "instances_written", "bytes"]
    assert report.to_dataframe()[columns].sort_values("study_uid").reset_index(drop=True).equals(
        expected.to_dataframe()[columns].sort_values("study_uid").reset_index(drop=True)
    )


@pytest.mark.integration
def test_a_worker_killed_mid_study_still_gives_a_complete_export(
    cluster: Client, orthanc: OrthancServer, tmp_path: Path
) -> None:
    study = orthanc.sample.large_study
    # One request per instance, two at a time, each 20 ms late: the study takes seconds, time to kill its worker.
    with LatencyProxy("127.0.0.1", orthanc.http_port, delay=0.02) as proxy:
        profile = ServerProfile(url=f"{proxy.url}/dicom-web", downloader="wado-uri", workers=2)
        out = tmp_path / "out"
        outcome: dict[str, Any] = {}
        driver = threading.Thread(
            target=lambda: outcome.update(report=export(profile, [study.uid], out, executor=cluster.get_executor(),
                                                        progress=False)),
        )
        driver.start()
        killed = kill_the_busy_worker_once_files_exist(cluster, out, at_least=30)
        driver.join(timeout=240)

    assert not driver.is_alive()
    report: ExportReport = outcome["report"]
    line = report.to_dataframe().iloc[0]
    assert report.ok, line["error"]
    assert (line["status"], line["instances_expected"]) == ("done", len(study.instances))
    assert line["instances_skipped"] >= killed  # the second attempt resumed at instance level
    assert line["instances_written"] + line["instances_skipped"] == len(study.instances)
    originals = {i.uid.replace(".", "_"): i.path.read_bytes() for i in study.instances}
    written = {Path(path).name: data for path, data in dicom_files(out).items()}
    assert written == originals
    cluster.wait_for_workers(2, timeout=60)  # the nanny restarted the killed one


def kill_the_busy_worker_once_files_exist(client: Client, folder: Path, at_least: int) -> int:
    """SIGKILL the one worker busy with a task once ``at_least`` instance files exist; return how many did."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = dicom_files(folder) if folder.is_dir() else {}
        if len(done) >= at_least:
            busy = [worker for worker, keys in client.processing().items() if keys]
            assert len(busy) == 1, busy
            os.kill(worker_pids(client)[busy[0]], signal.SIGKILL)
            return len(done)
        time.sleep(0.02)
    raise AssertionError(f"the study never reached {at_least} files in {folder}")


@pytest.mark.integration
def test_a_process_pool_runs_the_export_of_a_hand_built_trolley_too(orthanc: OrthancServer, tmp_path: Path) -> None:
    uids = [study.uid for study in orthanc.sample.small_studies[:3]]
    session = requests.Session()
    trolley = Trolley(QidoRS(session, orthanc.dicomweb_url), WadoRS(session, orthanc.dicomweb_url))

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        report = trolley.export(uids, tmp_path / "out", executor=pool, progress=False)

    assert report.ok
    assert report.studies_done == len(uids)


# ------------------------------------------------------------ the password stays on the workers


@pytest.fixture
def protected_orthanc(orthanc_factory: OrthancFactory) -> OrthancServer:
    return orthanc_factory(AuthenticationEnabled=True, RegisteredUsers={USER: PASSWORD})


@pytest.fixture
def worker_logs(cluster: Client, tmp_path: Path) -> Iterator[Path]:
    """Everything the workers log at DEBUG, dicomtrolley's and every library's, into one file."""
    path = tmp_path / "worker.log"
    cluster.run(_log_everything_to, str(path))
    yield path
    cluster.run(_stop_logging_to, str(path))


def _log_everything_to(path: str) -> None:
    handler = logging.FileHandler(path)
    handler.set_name(path)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


def _stop_logging_to(path: str) -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == path]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.WARNING)


def assert_secret_free(*texts: bytes | str) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        for secret in SECRETS:
            assert secret.encode() not in data


@pytest.mark.integration
def test_a_password_only_the_workers_have_is_used_and_never_travels_or_is_logged(
    cluster: Client, protected_orthanc: OrthancServer, tmp_path: Path, worker_logs: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    monkeypatch.setattr("sys.stdin", None)  # no prompt here either
    caplog.set_level(logging.DEBUG)
    profile = ServerProfile(url=protected_orthanc.dicomweb_url, auth="basic", user=USER)
    uids = [study.uid for study in protected_orthanc.sample.studies]
    executor = RecordingExecutor(cluster.get_executor())

    report = export(profile, uids, tmp_path / "out", executor=executor, progress=False)

    assert report.ok
    assert report.studies_done == len(uids)
    assert len(executor.pickled) == len(uids)
    assert_secret_free(*executor.pickled)
    assert_secret_free(worker_logs.read_text(), caplog.text, *map(str, cluster.get_worker_logs().values()))
    assert "urllib3.connectionpool DEBUG" in worker_logs.read_text()  # the workers did log their requests


@pytest.mark.integration
def test_a_hand_built_trolley_ships_as_its_profile_without_the_password(
    cluster: Client, protected_orthanc: OrthancServer, tmp_path: Path
) -> None:
    session = requests.Session()
    session.auth = (USER, PASSWORD)
    url = protected_orthanc.dicomweb_url
    trolley = Trolley(QidoRS(session, url), WadoRS(session, url))
    uids = [study.uid for study in protected_orthanc.sample.studies]
    executor = RecordingExecutor(cluster.get_executor())

    report = trolley.export(uids, tmp_path / "out", executor=executor, progress=False)

    assert report.ok
    assert_secret_free(*executor.pickled)
    shipped = dask_pickle.loads(executor.pickled[0])[1][0].profile
    assert (shipped.url, shipped.auth, shipped.user) == (url, "basic", USER)


def test_workers_without_the_password_are_named_before_anything_is_fetched(cluster: Client) -> None:
    profile = ServerProfile(url="http://127.0.0.1:9/dicom-web", auth="bearer")  # the workers have no token

    with pytest.raises(DICOMTrolleyAuthError, match="Dask workers cannot log in") as raised:
        check_worker_secrets(cluster, profile)

    assert str(raised.value).count("\n  tcp://") == 2  # one line per worker


def test_workers_with_the_password_pass_the_check_without_sending_it(cluster: Client) -> None:
    check_worker_secrets(cluster, ServerProfile(url="http://127.0.0.1:9/dicom-web", auth="basic", user=USER))


# ------------------------------------------------------------ the command line


def worklist_file(tmp_path: Path, uids: list[str]) -> Path:
    path = tmp_path / "worklist.csv"
    path.write_text("StudyInstanceUID\n" + "".join(f"{uid}\n" for uid in uids), encoding="utf-8")
    return path


@pytest.mark.integration
def test_export_command_runs_on_a_scheduler_with_the_password_on_the_workers(
    cluster: Client, protected_orthanc: OrthancServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    monkeypatch.setattr("sys.stdin", None)
    uids = [study.uid for study in protected_orthanc.sample.studies]
    out = tmp_path / "out"

    status = main([
        "export", protected_orthanc.dicomweb_url, str(worklist_file(tmp_path, uids)), "-o", str(out),
        "--user", USER, "--dask", cluster.scheduler.address, "--no-progress",
    ])

    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert f"dashboard: {dashboard_link(cluster)}" in captured.err
    assert f"{len(uids)} studies done" in captured.out
    assert len(dicom_files(out)) == sum(len(study.instances) for study in protected_orthanc.sample.studies)


@pytest.mark.integration
def test_export_command_starts_a_local_cluster_for_the_export(
    orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uids = [study.uid for study in orthanc.sample.small_studies[:2]]

    status = main([
        "export", orthanc.dicomweb_url, str(worklist_file(tmp_path, uids)), "-o", str(tmp_path / "out"),
        "--dask", "local:1", "--no-progress",
    ])

    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "Dask: a local cluster of 1 worker processes, 1 worker threads; dashboard: http://" in captured.err
    assert "2 studies done" in captured.out


NO_SCHEDULER = "tcp://127.0.0.1:9"
"""A scheduler address nothing answers at: reaching for it would fail with a connection error, not these."""


def test_a_worklist_with_an_unknown_column_is_refused_before_any_cluster_is_reached(tmp_path: Path) -> None:
    worklist = tmp_path / "worklist.csv"
    worklist.write_text("StudyInstanceUID,Colour\n1.2.3,red\n")
    with pytest.raises(WorklistError, match="unknown column"):
        export_on_dask(ServerProfile(url="http://127.0.0.1:9/dicom-web"), worklist, tmp_path / "out", NO_SCHEDULER)


def test_an_output_folder_that_cannot_be_made_is_refused_before_any_cluster_is_reached(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputFolderError):
        export_on_dask(ServerProfile(url="http://127.0.0.1:9/dicom-web"), ["1.2.3"], blocker / "out", NO_SCHEDULER)
