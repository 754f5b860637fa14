"""DIMSE association reuse: an export of small studies over C-GET, associations reused or one per operation.

    .venv/bin/python -m benchmarks.association_bench [--studies 200] [--runs 3] [--in-flight 4] [--delay 0]

The same export, side by side in one run, in turns, each run in a fresh
process: a worklist of ``--studies`` StudyInstanceUIDs, each study of 1 to 3
small CT instances, searched with C-FIND and downloaded with C-GET from a
local Orthanc into a folder (``export(..., studies=--in-flight)``):

- **reused**: the package as it is; every study's C-FINDs and C-GET take an
  association from the peer's pool;
- **one per operation**: the same with ``associations.keep = 0``, so each
  C-FIND and each C-GET opens and releases its own association, as before
  the pool (three per study: the worklist row's search, the SOP classes of
  the study, the C-GET).

Each run prints the export's wall time (interpreter start and imports
excluded), its CPU time and how many associations it opened. ``--delay``
puts a :class:`~tests.support.latency_proxy.LatencyProxy` in front of
Orthanc's DICOM port that holds everything the client sends that many
seconds: an archive across a network rather than on loopback, where
opening an association costs round trips.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks import export_bench
from tests.support.latency_proxy import LatencyProxy
from tests.support.orthanc import running_orthanc

logger = logging.getLogger("benchmarks.associations")

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work" / "associations"
MODES = {"reused": "associations reused", "fresh": "one association per operation"}


def generate(count: int) -> tuple[Path, list[str]]:
    """``count`` studies of 1, 2 or 3 small CT instances in turn, cached; their folder and StudyInstanceUIDs."""
    return export_bench.generate(count, folder=WORK / f"data-{count}", instances=lambda number: 1 + number % 3,
                                 name="association-bench", patient="A")


def export_once(mode: str, port: int, aec: str, worklist: Path, out: Path, in_flight: int) -> dict[str, Any]:
    """Run the export in this process; its seconds, associations opened and files written."""
    from dicomtrolley.dicom_qr import DICOMQR
    from dicomtrolley.dimse_retrieve import DICOMCGet
    from dicomtrolley.export import export
    from dicomtrolley.trolley import Trolley

    searcher = DICOMQR("127.0.0.1", port, aec=aec)
    downloader = DICOMCGet("127.0.0.1", port, aec=aec)
    pool = downloader.associations  # the searcher's too: same server, same settings
    if mode == "fresh":
        pool.keep = 0
    started, cpu = time.perf_counter(), time.process_time()
    report = export(Trolley(searcher, downloader), worklist, out, studies=in_flight, progress=False)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    downloader.close()
    files = sum(1 for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")
                and p.suffix not in (".csv", ".parquet", ".json", ".db"))
    return {"seconds": seconds, "cpu": cpu, "associations": pool.opened, "files": files, "studies": report.studies_done}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=4, help="studies exported at once")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to each request (0: loopback)")
    parser.add_argument("--child", nargs=5, metavar=("MODE", "PORT", "AEC", "WORKLIST", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, port, aec, worklist, out = args.child
        print(json.dumps(export_once(mode, int(port), aec, Path(worklist), Path(out), args.in_flight)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(run(args.studies, args.runs, args.in_flight, args.delay))
    return 0


def run(studies: int, runs: int, in_flight: int, delay: float) -> str:
    """Generate and load the data, run both modes ``runs`` times in turns; the markdown table."""
    data, uids = generate(studies)
    expected = sum(1 + number % 3 for number in range(studies))
    scratch = WORK / "runs"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    worklist = scratch / "worklist.csv"
    worklist.write_text("StudyInstanceUID\n" + "".join(f"{uid}\n" for uid in uids))
    server_dir = WORK / f"orthanc-{studies}"
    server_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with running_orthanc(server_dir) as server, ExitStack() as stack:
        with server.session() as session:
            stored = int(session.get(f"{server.base_url}/statistics", timeout=10).json()["CountInstances"])
        if stored < expected:
            logger.info("uploading %d instances", expected)
            server.upload(sorted(data.glob("*.dcm")))
        port = server.dicom_port
        if delay:
            port = stack.enter_context(LatencyProxy("127.0.0.1", server.dicom_port, delay=delay)).port
        for turn in range(runs + 1):  # the first turn warms Orthanc's caches and is not counted
            for mode in MODES:
                out = scratch / f"{mode}-{turn}"
                child = [sys.executable, "-m", "benchmarks.association_bench", "--in-flight", str(in_flight),
                         "--child", mode, str(port), server.aet, str(worklist), str(out)]
                answer = subprocess.run(child, cwd=REPO, check=True, capture_output=True, text=True, timeout=3600)
                result = json.loads(answer.stdout.splitlines()[-1])
                if result["files"] != expected or result["studies"] != studies:
                    raise SystemExit(f"{mode}: {result}, expected {expected} files of {studies} studies")
                shutil.rmtree(out)
                logger.info("%s turn %d: %.2f s (%.2f s CPU), %d associations", mode, turn, result["seconds"],
                            result["cpu"], result["associations"])
                if turn:
                    results[mode].append(result)
    shutil.rmtree(scratch)
    return table(results, studies, expected, in_flight, delay)


def table(
    results: dict[str, list[dict[str, Any]]], studies: int, instances: int, in_flight: int, delay: float
) -> str:
    """The figures as markdown: medians per mode, and the ratio of each run's pair."""
    runs = len(results["reused"])
    where = f"{delay * 1000:g} ms added to each request" if delay else "loopback"
    lines = [
        f"Export of {studies} studies ({instances} instances, 1-3 each) over C-FIND + C-GET, {in_flight} in "
        f"flight, {where}, {runs} runs each in turns (medians; the export's wall time, interpreter start "
        "excluded):",
        "",
        "| associations | seconds | CPU seconds | studies/s | associations opened |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, label in MODES.items():
        seconds = statistics.median(r["seconds"] for r in results[mode])
        cpu = statistics.median(r["cpu"] for r in results[mode])
        opened = statistics.median(r["associations"] for r in results[mode])
        lines.append(f"| {label} | {seconds:.2f} | {cpu:.2f} | {studies / seconds:.0f} | {opened:.0f} |")
    ratios = [f["seconds"] / r["seconds"] for f, r in zip(results["fresh"], results["reused"], strict=True)]
    lines += ["", "Reused is " + ", ".join(f"{ratio:.2f}x" for ratio in ratios)
              + " as fast as one association per operation (each run's pair)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
