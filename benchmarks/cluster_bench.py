"""Cluster benchmark: a worklist export over a slow link, on 1, 2 and 4 Dask worker processes and a thread pool.

    .venv/bin/python -m benchmarks.cluster_bench [--studies 200] [--runs 3] [--delay 0.04]

A WAN is what makes one machine too slow: every request waits for the far end.
Here a latency proxy (``tests.support.latency_proxy``, a process of its own)
adds ``--delay`` seconds to every request on its way to the local Orthanc, and
the same worklist of small studies (10 instances each) is exported:

- in one process, the studies on a thread pool (``export(..., studies=4)``);
- on a local Dask cluster of 1, 2 and 4 single-threaded worker processes
  (``export_on_dask``'s way: two studies in flight per worker).

Each configuration runs ``--runs`` times, in turns, into a fresh folder; the
time is the export's alone (a cluster is started, and its workers have
imported the package, before the clock starts: that is a cost per job, not per
study, and is shown apart). Every run's files are counted. CPU is what this
process (the driver, and the thread pool's tasks) and the worker processes
spent; the scheduler runs in this process too. Orthanc and the proxy are not counted.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.export_bench import INSTANCES_PER_STUDY, WORK, _instances_stored, generate
from benchmarks.markdown import markdown_table
from dicomtrolley.export import export
from dicomtrolley.export.cluster import check_shared_folder, dask_client
from dicomtrolley.profiles import ServerProfile
from tests.support.orthanc import free_ports, running_orthanc

logger = logging.getLogger("benchmarks.cluster")

WORKER_COUNTS = (1, 2, 4)
THREAD_POOL_STUDIES = 4


def _count_files(out: Path) -> int:
    return sum(1 for p in out.rglob("*") if p.is_file() and len(p.relative_to(out).parts) > 1
               and not p.name.startswith("."))


def _timed_export(
    run: Callable[[Path], object], out: Path, expected: int, worker_cpu: Callable[[], float] = lambda: 0.0
) -> tuple[float, float]:
    """Wall seconds of one export, and the CPU seconds it took in this process and the workers."""
    started, cpu = time.perf_counter(), time.process_time() + worker_cpu()
    run(out)
    elapsed, cpu = time.perf_counter() - started, time.process_time() + worker_cpu() - cpu
    files = _count_files(out)
    if files != expected:
        raise SystemExit(f"{out}: {files} files, expected {expected}")
    shutil.rmtree(out)
    return elapsed, cpu


def _start_proxy(target_port: int, delay: float) -> tuple[subprocess.Popen[str], str]:
    (port,) = free_ports(1)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.latency_proxy", "--target", f"127.0.0.1:{target_port}",
         "--port", str(port), "--delay", str(delay)],
        stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.04, help="seconds the proxy adds to each request")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the proxy and Orthanc on the way out
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    data, uids = generate(args.studies)
    expected = len(uids) * INSTANCES_PER_STUDY
    scratch = WORK / "cluster-runs"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    server_dir = WORK / f"orthanc-{args.studies}"
    server_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, list[tuple[float, float]]] = {}
    load = os.getloadavg()[0]
    startup: dict[int, list[float]] = {n: [] for n in WORKER_COUNTS}
    with running_orthanc(server_dir, HttpCompressionEnabled=False) as server:
        if _instances_stored(server.base_url) < expected:
            logger.info("uploading %d instances", expected)
            server.upload(sorted(data.glob("*.dcm")))
        proxy, proxy_url = _start_proxy(server.http_port, args.delay)
        try:
            profile = ServerProfile(url=f"{proxy_url}/dicom-web")
            thread_pool = f"thread pool, one process, {THREAD_POOL_STUDIES} studies in flight"
            for run in range(args.runs):
                out = scratch / f"threads-{run}"
                seconds.setdefault(thread_pool, []).append(_timed_export(
                    lambda o: export(profile, uids, o, studies=THREAD_POOL_STUDIES, progress=False), out, expected))
                logger.info("%s, run %d: %.1f s", thread_pool, run + 1, seconds[thread_pool][-1][0])
                for workers in WORKER_COUNTS:
                    name = f"Dask, {workers} worker process{'es' if workers > 1 else ''}, {2 * workers} in flight"
                    started = time.perf_counter()
                    with dask_client(f"local:{workers}", dashboard_address=None) as client:
                        client.wait_for_workers(workers)
                        out = scratch / f"dask-{workers}-{run}"
                        check_shared_folder(client, out)  # also imports the package on every worker
                        startup[workers].append(time.perf_counter() - started)
                        executor = client.get_executor(pure=False)
                        seconds.setdefault(name, []).append(_timed_export(
                            lambda o, ex=executor, n=workers: export(profile, uids, o, executor=ex, studies=2 * n,
                                                                     progress=False),
                            out, expected, lambda c=client: sum(c.run(time.process_time).values())))
                    logger.info("%s, run %d: %.1f s", name, run + 1, seconds[name][-1][0])
        finally:
            proxy.terminate()
            proxy.wait(timeout=10)

    one = statistics.median(w for w, _ in seconds[next(k for k in seconds if k.startswith("Dask, 1 "))])
    rows = []
    for name, values in seconds.items():
        walls = [w for w, _ in values]
        wall = statistics.median(walls)
        cpu = statistics.median(c for _, c in values) / len(uids) * 1000
        workers = int(name.split(", ")[1].split()[0]) if name.startswith("Dask") else None
        start = f"{statistics.median(startup[workers]):.1f}" if workers else ""
        rows.append([name, f"{wall:.1f} ({min(walls):.1f}-{max(walls):.1f})", f"{len(uids) / wall:.1f}",
                     f"{one / wall:.2f}x", f"{cpu:.0f}", start])
    header = ["executor", "seconds (range)", "studies/s", "vs. 1 Dask worker", "CPU ms per study", "cluster start (s)"]
    print("\n".join([
        f"Worklist of {len(uids)} studies x {INSTANCES_PER_STUDY} instances through a proxy adding "
        f"{args.delay * 1000:.0f} ms to every request ({args.runs} runs each, medians and range; the export's time, "
        f"cluster start apart; load average {load:.1f} at the start on {os.cpu_count()} cores):",
        "",
        *markdown_table(header, rows),
    ]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
