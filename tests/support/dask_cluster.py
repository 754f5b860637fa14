"""Real Dask clusters for the tests: worker processes on this machine, one of them unable to see a folder.

:func:`local_cluster` starts a ``distributed.LocalCluster`` of worker
processes (never threads: a task must cross a process boundary, pickled, as
it does on a real cluster). :func:`worker_without_folder` adds a worker that
runs in a mount namespace of its own with an empty tmpfs over one folder, so
it sees another folder under the same path: the situation of a worker on a
machine that does not share the output folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from distributed import Client, LocalCluster

START_TIMEOUT = 60.0


@contextmanager
def local_cluster(workers: int = 2, *, env: Mapping[str, str] | None = None) -> Iterator[Client]:
    """A client of a fresh local cluster of ``workers`` single-threaded worker processes.

    ``env`` is set in the worker processes' environment only (not in this process).
    """
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        env=dict(env or {}),
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers, timeout=START_TIMEOUT)
        yield client


def worker_pids(client: Client) -> dict[str, int]:
    """The process id of each worker, by worker address."""
    return client.run(os.getpid)


def can_isolate_mounts() -> bool:
    """True when this process may make a mount namespace (root, ``unshare`` installed)."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None


@contextmanager
def worker_without_folder(client: Client, folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One more worker for ``client``'s scheduler that sees an empty tmpfs at ``folder``.

    The worker joins before this returns and is stopped on exit.
    """
    folder.mkdir(parents=True, exist_ok=True)
    before = len(client.scheduler_info()["workers"])
    script = (
        f'mount -t tmpfs dicomtrolley-test "{folder}" && exec "{sys.executable}" -m distributed.cli.dask_worker '
        f'"{client.scheduler.address}" --nworkers 1 --nthreads 1 --no-dashboard --name isolated'
    )
    process = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while len(client.scheduler_info()["workers"]) <= before:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the isolated worker did not join (exit status {process.returncode})")
            time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
