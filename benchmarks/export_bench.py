"""Batch export benchmark: a worklist of small studies on the local Orthanc, side by side in one run.

    .venv/bin/python -m benchmarks.export_bench [--studies 1000] [--runs 3] [--big-rows 5000]

Clients, each run in a fresh process under GNU time (wall time and peak memory
of the process, interpreter start included for all alike), in turns:

- ``dicomtrolley export URL worklist.csv -o DIR`` (this package, 4 studies in flight);
- dicomtrolley 4.1.0, ``find_study`` + ``download`` per row (``export_reference_loop.py``);
- curl, one WADO-RS study request per row, 4 in parallel, bodies to files (the ceiling).

Then the bookkeeping alone: the export driven by a trolley that writes no
bytes but reports ten files per study, so what is measured is the state
database, the report, the index and the scheduling, per study; and its peak
memory for ``--studies`` and ``--big-rows`` rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from benchmarks.markdown import markdown_table
from benchmarks.measure import GNU_TIME, run_process
from benchmarks.reference_env import ensure_reference_env
from tests.support.fault_server import make_instances
from tests.support.orthanc import running_orthanc

logger = logging.getLogger("benchmarks.export")

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work" / "export"
INSTANCES_PER_STUDY = 10
ACCEPT_IN_CURL_CONFIG = r'multipart/related; type=\"application/dicom\"; transfer-syntax=*'
"""The WADO-RS Accept header, its quotes escaped for a curl config file."""


def generate(
    count: int,
    *,
    folder: Path | None = None,
    instances: Callable[[int], int] = lambda _number: INSTANCES_PER_STUDY,
    pixels: Callable[[int], int] = lambda _number: 32,
    name: str = "export-bench",
    patient: str = "B",
) -> tuple[Path, list[str]]:
    """``count`` studies of small CT instances (``instances(number)`` each, 10 by default, of
    ``pixels(number)`` rows and columns, 32 by default), cached in ``folder`` (``WORK/data-<count>``
    by default); the folder and their StudyInstanceUIDs."""
    folder = folder or WORK / f"data-{count}"
    manifest = folder / "studies.json"
    if manifest.is_file():
        return folder, json.loads(manifest.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    uids = []
    for number in range(count):
        made = make_instances(series_sizes=(instances(number),), pixels=pixels(number), name=f"{name}-{number}",
                              patient_id=f"{patient}{number:05d}")
        uids.append(made[0].study_uid)
        for instance in made:
            (folder / f"{instance.sop_uid}.dcm").write_bytes(instance.data)
    manifest.write_text(json.dumps(uids))
    return folder, uids


def _instances_stored(base_url: str) -> int:
    return int(requests.get(f"{base_url}/statistics", timeout=10).json()["CountInstances"])


def bookkeeping_probe(rows: int, out: Path) -> dict[str, float]:
    """Run the export over ``rows`` UIDs with a trolley that writes nothing; time per study, in ms."""
    from dicomtrolley.core import InstanceReference
    from dicomtrolley.export import export
    from dicomtrolley.storage import SavedInstance
    from dicomtrolley.trolley import DownloadSummary

    class Bookkeeping:
        def find_studies(self, query: Any) -> list[Any]:
            return []

        def download(self, objects: Any, output_dir: Any = None, **options: Any) -> DownloadSummary:
            on_saved = options["on_saved"]
            for number in range(INSTANCES_PER_STUDY):
                reference = InstanceReference(objects, f"{objects}.1", f"{objects}.1.{number}")
                attributes = {"PatientID": "P", "StudyDate": "20240101", "Modality": "CT", "SeriesNumber": 1,
                              "InstanceNumber": number}
                relative = f"{objects}/{number}.dcm"
                path = Path(output_dir) / relative
                on_saved(SavedInstance(reference, path, 2600, "1.2.840.10008.1.2.1", attributes, relative))
            summary = DownloadSummary(written=INSTANCES_PER_STUDY, bytes_written=26000, expected=INSTANCES_PER_STUDY)
            summary.transfer_syntaxes = Counter({"1.2.840.10008.1.2.1": INSTANCES_PER_STUDY})
            return summary

    uids = [f"1.2.3.{number}" for number in range(rows)]
    started = time.perf_counter()
    report = export(Bookkeeping(), uids, out, progress=False)
    elapsed = time.perf_counter() - started
    assert report.studies_done == rows, report
    return {"rows": rows, "seconds": elapsed, "ms_per_study": elapsed / rows * 1000}


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big-rows", type=int, default=5000, help="rows for the memory check of the bookkeeping")
    parser.add_argument("--probe", nargs=2, metavar=("ROWS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(bookkeeping_probe(int(args.probe[0]), Path(args.probe[1]))))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not Path(GNU_TIME).is_file():
        raise SystemExit(f"{GNU_TIME} is missing: apt-get install time")
    data, uids = generate(args.studies)
    reference_python = ensure_reference_env()
    # Every run writes into a folder of its own, and all are removed at the end: ext4 makes a new
    # file slow for minutes where many were just deleted (its recently-deleted inode check), so
    # removing one run's 10,000 files would charge the next client for them.
    shutil.rmtree(WORK / "runs", ignore_errors=True)
    scratch = WORK / "runs" / f"{os.getpid()}-{int(time.time())}"
    scratch.mkdir(parents=True)
    worklist = scratch / "worklist.csv"
    worklist.write_text("StudyInstanceUID\n" + "".join(f"{uid}\n" for uid in uids))
    expected_files = len(uids) * INSTANCES_PER_STUDY
    server_dir = WORK / f"orthanc-{args.studies}"
    server_dir.mkdir(parents=True, exist_ok=True)
    with running_orthanc(server_dir, HttpCompressionEnabled=False) as server:
        if _instances_stored(server.base_url) < expected_files:
            logger.info("uploading %d instances", expected_files)
            server.upload(sorted(data.glob("*.dcm")))
        url = server.dicomweb_url
        curl_config = scratch / "curl.cfg"

        def curl_argv(out: Path) -> list[str]:
            out.mkdir(parents=True, exist_ok=True)
            # One header line for all: a header option in a curl config adds to every request after it.
            curl_config.write_text(f'header = "Accept: {ACCEPT_IN_CURL_CONFIG}"\n' + "".join(
                f'url = "{url}/studies/{uid}"\noutput = "{out}/{uid}"\n' for uid in uids
            ))
            return ["curl", "-sS", "--fail", "--parallel", "--parallel-max", "4", "--config", str(curl_config)]

        clients = {
            "dicomtrolley export (4 in flight)": lambda out: [
                sys.executable, "-m", "dicomtrolley.cli", "export", url, str(worklist), "-o", str(out),
                "--no-progress", "--studies", "4"],
            "dicomtrolley 4.1.0 loop (find_study + download)": lambda out: [
                str(reference_python), str(REPO / "benchmarks" / "export_reference_loop.py"), url, str(worklist),
                str(out)],
            "curl ceiling (1 WADO-RS request per row, 4 parallel)": curl_argv,
        }
        # Warm Orthanc's caches once.
        subprocess.run(curl_argv(scratch / "warm"), check=True)
        results: dict[str, list[tuple[float, int]]] = {name: [] for name in clients}
        for run in range(args.runs):
            for name, make in clients.items():
                out = scratch / f"out-{run}-{len(results[name])}-{abs(hash(name)) % 1000}"
                subprocess.run(["sync"], check=True)
                sample = run_process(make(out), cwd=REPO, reports_json=False, scratch=scratch, timeout=3600)
                files = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")
                         and p.suffix not in (".csv", ".parquet")]
                wanted = len(uids) if name.startswith("curl") else expected_files
                if len(files) != wanted:
                    raise SystemExit(f"{name}: {len(files)} files, expected {wanted}")
                results[name].append((sample.wall, sample.peak_rss))
                logger.info("%s run %d: %.1f s, %.0f MB", name, run + 1, sample.wall, sample.peak_rss / 1e6)

    probes = {}
    for rows in (args.studies, args.big_rows):
        out = scratch / f"probe-{rows}"
        runs = []
        for _ in range(args.runs):
            shutil.rmtree(out, ignore_errors=True)
            sample = run_process([sys.executable, "-m", "benchmarks.export_bench", "--probe", str(rows), str(out)],
                                 cwd=REPO, reports_json=False, scratch=scratch, timeout=3600)
            runs.append((json.loads(sample.stdout.splitlines()[-1])["ms_per_study"], sample.peak_rss))
        probes[rows] = runs
    shutil.rmtree(scratch)

    ours = _median([w for w, _ in results["dicomtrolley export (4 in flight)"]])
    table = []
    for name, samples in results.items():
        wall = _median([w for w, _ in samples])
        peak = _median([float(p) for _, p in samples])
        ratio = "" if name.startswith("dicomtrolley export") else f"{wall / ours:.2f}x as fast"
        table.append([name, f"{wall:.1f}", f"{len(uids) / wall:.0f}", f"{peak / 1e6:.0f} MB", ratio])
    bookkeeping = [
        [f"{rows} rows", f"{_median([m for m, _ in runs]):.2f}", f"{_median([float(p) for _, p in runs]) / 1e6:.0f} MB"]
        for rows, runs in probes.items()
    ]
    print("\n".join([
        f"Worklist of {len(uids)} studies x {INSTANCES_PER_STUDY} instances ({args.runs} runs each, medians; "
        "wall time of the whole process):",
        "",
        *markdown_table(["client", "seconds", "studies/s", "peak memory", "export is"], table),
        "",
        *markdown_table(["bookkeeping only (no bytes moved)", "ms per study", "peak memory"], bookkeeping),
    ]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
