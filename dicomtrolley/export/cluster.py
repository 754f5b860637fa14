"""Running an export on a Dask distributed cluster: connecting, checking the workers, exporting.

The export itself needs nothing from Dask: it ships one task per study to any
:class:`concurrent.futures.Executor`, and ``Client.get_executor()`` is one.
What a cluster adds is here: :func:`dask_client` connects to a running
scheduler (``tcp://scheduler:8786``) or starts a local cluster of worker
processes (``local:4``, or ``local`` for one per core);
:func:`check_shared_folder` makes sure every worker writes into the same
output folder the driver reads, and :func:`check_worker_secrets` that every
worker has the server's password, before a single study is fetched;
:func:`export_on_dask` does all of it and runs the export
(``dicomtrolley export ... --dask ADDRESS`` on the command line).

Needs the ``cluster`` extra: ``pip install "dicomtrolley[cluster]"``.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicomtrolley._version import __version__
from dicomtrolley.exceptions import DICOMTrolleyAuthError, DICOMTrolleyError, SharedFolderError
from dicomtrolley.export.options import ExportOptions
from dicomtrolley.export.remote import ProfileTrolley
from dicomtrolley.export.report import ExportReport
from dicomtrolley.export.runner import run_export
from dicomtrolley.export.worklist import WorklistSource, read_checked
from dicomtrolley.profiles import PASSWORD_VARIABLE, SECRET_AUTHS, TOKEN_VARIABLE, ServerProfile
from dicomtrolley.storage import check_output_folder
from dicomtrolley.trolley import Trolley

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

PROBE_PREFIX = ".dicomtrolley-probe-"
"""Probe files in the output folder start with this; they are removed after the check."""

_ADDRESS = re.compile(r"^(?:(?:tcp|tls|ws|wss|ucx)://)?[\w.\-\[\]:]+:\d+$")


@dataclass(frozen=True)
class DaskSpec:
    """Where an export's tasks run: a running scheduler, or a local cluster started for the export.

    Parse it from the command line's ``--dask`` value with :meth:`parse`.

    Parameters
    ----------
    address
        A scheduler's address, e.g. ``tcp://scheduler:8786``; ``None`` for a local cluster.
    local_workers
        How many worker processes a local cluster starts (``None`` with an address).
    """

    address: str | None = None
    local_workers: int | None = None

    def __post_init__(self) -> None:
        if (self.address is None) == (self.local_workers is None):
            raise ValueError("give either a scheduler address or a number of local workers")
        if self.local_workers is not None and self.local_workers < 1:
            raise ValueError(f"a local cluster needs at least one worker, not {self.local_workers}")

    @classmethod
    def parse(cls, text: str) -> DaskSpec:
        """``tcp://host:8786`` (or ``host:8786``, ``tls://...``), ``local:N``, or ``local`` (one worker per core).

        Raises
        ------
        DICOMTrolleyError
            The text is neither a scheduler address nor ``local[:N]``.
        """
        value = text.strip()
        if value == "local":
            return cls(local_workers=os.cpu_count() or 1)
        if value.startswith("local:"):
            count = value.removeprefix("local:")
            if not count.isdigit() or int(count) < 1:
                raise DICOMTrolleyError(f"--dask {text!r}: local:N needs a number of workers of at least 1")
            return cls(local_workers=int(count))
        if not _ADDRESS.match(value):
            raise DICOMTrolleyError(
                f"--dask {text!r} is neither a scheduler address (tcp://host:8786) nor local[:N]"
            )
        return cls(address=value)

    def __str__(self) -> str:
        return self.address or f"a local cluster of {self.local_workers} worker processes"


@contextmanager
def dask_client(
    spec: DaskSpec | str,
    *,
    dashboard_address: str | None = ":8787",
    worker_env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Iterator[Client]:
    """A Dask client for ``spec``; a local cluster it started is shut down on exit.

    A local cluster runs one thread in each worker process: a study task keeps
    its own pool of requests, so processes, not threads, are what spreads the
    work (and the CPU of parsing and writing) over the cores.

    Parameters
    ----------
    spec
        A :class:`DaskSpec`, or the text of one (``tcp://scheduler:8786``, ``local:4``).
    dashboard_address
        Where a local cluster serves its dashboard (``":0"``: any free port;
        ``None``: no dashboard). Unused with a scheduler address: the
        scheduler has its own.
    worker_env
        Environment variables for the worker processes of a local cluster
        (set when each process starts; they travel in no task). Unused with a
        scheduler address: remote workers have their own environment.
    timeout
        Seconds to wait for a scheduler to answer.

    Raises
    ------
    DICOMTrolleyError
        The scheduler cannot be reached, or Dask is not installed.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise DICOMTrolleyError('Running on a Dask cluster needs: pip install "dicomtrolley[cluster]"') from None

    if isinstance(spec, str):
        spec = DaskSpec.parse(spec)
    if spec.address is not None:
        try:
            client = Client(spec.address, timeout=timeout)  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError) as error:
            raise DICOMTrolleyError(f"Cannot reach the Dask scheduler at {spec.address}: {error}") from None
        with client:
            yield client
        return
    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=spec.local_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=dashboard_address,
        env=dict(worker_env or {}),
    ) as cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
        yield client


def dashboard_link(client: Client) -> str | None:
    """The address of the cluster's dashboard (the scheduler's web page), or ``None`` when it has none."""
    link = client.dashboard_link
    return link if isinstance(link, str) and link else None


def check_shared_folder(client: Client, folder: str | os.PathLike[str]) -> None:
    """Make sure every worker of ``client`` reads and writes the same ``folder`` as this process.

    This process writes a probe file into the folder; every worker must read
    it back under the same path, write one of its own and read that back; then
    this process must see each worker's file. All probe files are removed
    afterwards. A folder on a disk local to each machine fails the first step
    on every other machine, a read-only mount the second.

    The check also compares the workers' dicomtrolley version with this one's.

    Raises
    ------
    SharedFolderError
        A worker cannot see or write the folder, or this process cannot see
        what a worker wrote; the message names the workers and their hosts.
    DICOMTrolleyError
        The cluster has no workers, or a worker runs another dicomtrolley version.
    """
    path = Path(folder).resolve()
    path.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    mine = path / f"{PROBE_PREFIX}{token}"
    mine.write_text(token, encoding="utf-8")
    answers: dict[str, Any] = {}
    try:
        answers = client.run(_probe_on_worker, str(path), token, on_error="return")
        if not answers:
            raise DICOMTrolleyError("The Dask cluster has no workers; start some with `dask worker SCHEDULER`")
        problems = [_problem(worker, answer, path) for worker, answer in sorted(answers.items())]
        failed = [p for p in problems if p]
        if failed:
            raise SharedFolderError(
                f"The output folder {path} is not shared with every Dask worker:\n  "
                + "\n  ".join(failed)
                + "\nPut it on a file system every worker mounts under the same path (NFS, SMB, a cluster file system)."
            )
        versions = {w: a["version"] for w, a in answers.items() if a["version"] != __version__}
        if versions:
            raise DICOMTrolleyError(
                f"Dask workers run other dicomtrolley versions than this one ({__version__}): {versions}"
            )
    finally:
        mine.unlink(missing_ok=True)
        if answers:
            client.run(_remove_probes, str(path), token, on_error="ignore")
    logger.info("All %d Dask workers share the output folder %s", len(answers), path)


def _problem(worker: str, answer: Any, path: Path) -> str:
    """What is wrong with one worker's probe answer, or an empty string."""
    if isinstance(answer, BaseException):
        return f"{worker}: the probe failed: {type(answer).__name__}: {answer}"
    if answer["error"]:
        return f"{worker} on {answer['host']}: {answer['error']}"
    seen = path / answer["written"]
    try:
        if seen.read_text(encoding="utf-8") == answer["written"]:
            return ""
    except FileNotFoundError:
        pass
    return f"{worker} on {answer['host']}: wrote {seen}, but this process does not see it"


def _remove_probes(folder: str, token: str) -> None:
    """Run on each worker: remove the probe files of one check, as this worker sees the folder."""
    for probe in Path(folder).glob(f"{PROBE_PREFIX}{token}-*"):
        probe.unlink(missing_ok=True)


def _probe_on_worker(folder: str, token: str) -> dict[str, str]:
    """Run on each worker: read the driver's probe file, write and read one of our own."""
    path = Path(folder)
    answer = {"host": socket.gethostname(), "version": __version__, "written": "", "error": ""}
    try:
        found = (path / f"{PROBE_PREFIX}{token}").read_text(encoding="utf-8")
    except OSError as error:
        answer["error"] = f"does not see the probe file written there: {type(error).__name__}: {error}"
        return answer
    if found != token:
        answer["error"] = "sees another file under the probe file's name"
        return answer
    name = f"{PROBE_PREFIX}{token}-{uuid.uuid4().hex}"
    try:
        (path / name).write_text(name, encoding="utf-8")
        if (path / name).read_text(encoding="utf-8") != name:
            answer["error"] = f"wrote {path / name} but read back something else"
            return answer
    except OSError as error:
        answer["error"] = f"cannot write into the folder: {type(error).__name__}: {error}"
        return answer
    answer["written"] = name
    return answer


def check_worker_secrets(client: Client, profile: ServerProfile) -> None:
    """Make sure every worker finds the password (or token) ``profile`` logs in with, without asking for it.

    Each worker looks it up as it would for a task (environment, secrets file,
    keyring) and answers only whether it found one: the secret itself never
    leaves the worker. A profile that needs no login passes at once.

    Raises
    ------
    DICOMTrolleyAuthError
        Workers without one; the message names them and says where to put it.
    """
    if profile.auth == "none":
        return
    answers = client.run(_secret_problem, profile, on_error="return")
    failed = sorted(f"{worker}: {answer}" for worker, answer in answers.items() if answer)
    if failed:
        raise DICOMTrolleyAuthError(
            "Dask workers cannot log in to the server:\n  " + "\n  ".join(failed)
            + "\nEvery worker needs the password (or its cloud credentials) in its own environment: see "
            "'Running on a cluster' in the docs."
        )


def _secret_problem(profile: ServerProfile) -> str:
    """Run on each worker: why it has no secret for ``profile``, or an empty string."""
    try:
        profile.check_credentials()
    except DICOMTrolleyError as error:
        return f"{socket.gethostname()}: {error}"
    return ""


def export_on_dask(
    trolley: Trolley | ServerProfile,
    worklist: WorklistSource,
    output_dir: str | os.PathLike[str],
    dask: DaskSpec | str,
    *,
    options: ExportOptions | None = None,
    announce: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export a worklist on a Dask cluster: one task per study, run on the workers.

    Connects to the scheduler (or starts a local cluster), checks that every
    worker shares ``output_dir`` and has the password, then runs the export
    of :func:`~dicomtrolley.export.export` with the cluster's executor. Tasks
    carry the server's profile, not ``trolley`` or its password; each worker
    builds its own trolley and logs in itself. A local cluster's workers get
    the password this process has (asked for at a prompt if need be) in their
    environment when they start.

    Parameters
    ----------
    trolley
        The server: a Trolley (built by hand or from a profile) or a :class:`~dicomtrolley.profiles.ServerProfile`.
    worklist, output_dir
        As for :func:`~dicomtrolley.export.export`.
    dask
        ``tcp://scheduler:8786``, ``local:N`` or ``local`` (see :class:`DaskSpec`).
    options
        How the export runs (:class:`~dicomtrolley.export.ExportOptions`, the defaults if ``None``),
        but on the cluster's executor; unless ``options.studies`` says otherwise, two studies are
        in flight per worker thread, so that no worker waits for the driver between studies.
    announce
        Called with a line naming the cluster and its dashboard, once connected
        (the command line prints it); the line is logged either way.

    Raises
    ------
    ValueError
        ``options`` names an executor: the cluster is the executor here.
    WorklistError, OutputFolderError
        The worklist or the output folder is refused, before the cluster is started or connected to.
    SharedFolderError, DICOMTrolleyAuthError
        The workers do not share ``output_dir``, or lack the password; nothing was downloaded.
    """
    options = options or ExportOptions()
    if options.executor is not None:
        raise ValueError("export_on_dask runs the export on the cluster's executor: leave options.executor unset")
    spec = DaskSpec.parse(dask) if isinstance(dask, str) else dask
    rows = read_checked(worklist, skip_bad_rows=options.skip_bad_rows)  # before a cluster is started for nothing
    check_output_folder(output_dir)
    profile = trolley if isinstance(trolley, ServerProfile) else ServerProfile.from_trolley(trolley)
    worker_env: dict[str, str] = {}
    if spec.local_workers is not None and profile.auth in SECRET_AUTHS:
        worker_env[TOKEN_VARIABLE if profile.auth == "bearer" else PASSWORD_VARIABLE] = profile.secret()
    with dask_client(spec, worker_env=worker_env) as client:
        threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        line = f"Dask: {spec}, {threads} worker threads; dashboard: {dashboard_link(client) or 'none'}"
        logger.info(line)
        if announce is not None:
            announce(line)
        check_shared_folder(client, output_dir)
        check_worker_secrets(client, profile)
        executor = client.get_executor(pure=False)  # type: ignore[no-untyped-call]
        on_cluster = replace(options, executor=executor, studies=options.studies or max(2 * threads, 1))
        return run_export(ProfileTrolley(profile), rows, Path(output_dir), on_cluster)
