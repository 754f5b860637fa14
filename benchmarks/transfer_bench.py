"""Transfer benchmark: studies Orthanc -> Orthanc, against downloading them alone and uploading them alone.

    .venv/bin/python -m benchmarks.transfer_bench [--studies 100] [--small 50] [--runs 3]

In one run, two Orthancs (a source loaded with ``--studies`` generated studies of
8 to 46 instances in one series, 8 to 130 KB each, and an empty destination), and these clients,
each in a fresh process under GNU time, in turns within each round:

- download alone: ``dicomtrolley export SRC worklist.csv -o DIR`` (4 studies in flight);
- upload alone: ``dicomtrolley upload DEST DIR`` of the folder a download wrote;
- transfer: ``dicomtrolley export SRC worklist.csv --to DEST --state-dir DIR``, the
  same worklist, and the same with the first ``--small`` studies (for the memory:
  its peak should not grow with the number of studies).

Each upload and transfer goes to a new, empty destination Orthanc, which must hold
every instance after it. The figure that counts is transfer / (download + upload): at
most 0.7 when the two overlap.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from benchmarks.export_bench import generate
from benchmarks.measure import ClientFailedError, run_process
from benchmarks.upload_bench import Row, instance_count
from tests.support.orthanc import OrthancServer, running_orthanc

logger = logging.getLogger("benchmarks.transfer")

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work" / "transfer"
PIXELS = (64, 128, 256)
"""Rows and columns of the studies' images, in turn: files of about 9, 34 and 132 KB."""


def study_instances(number: int) -> int:
    """Instances of study ``number``: 8 to 46."""
    return 8 + number % 25 + number * 7 % 15


def study_pixels(number: int) -> int:
    """Rows and columns of the images of study ``number``."""
    return PIXELS[number % len(PIXELS)]


def server_cpu(*servers: OrthancServer) -> float:
    """User + system CPU seconds the servers' processes have used so far (from /proc)."""
    total = 0
    for server in servers:
        assert server.process is not None
        fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15 of stat(5)
    return total / os.sysconf("SC_CLK_TCK")


DOWNLOAD = "download alone (export -o DIR)"
UPLOAD = "upload alone (upload DEST DIR)"
TRANSFER = "transfer (export --to)"


def run_all(studies: int, small: int, runs: int, work: Path = WORK) -> tuple[list[Row], int, int]:
    """Every client ``runs`` times in turns; the rows, and the instances and bytes of the whole worklist."""
    data, uids = generate(studies, folder=work / f"data-{studies}", instances=study_instances, pixels=study_pixels,
                          name="transfer-bench", patient="T")
    files = sorted(data.glob("*.dcm"))
    shutil.rmtree(work / "runs", ignore_errors=True)  # see export_bench: every run writes into a new folder
    scratch = work / "runs" / f"{os.getpid()}-{int(time.time())}"
    scratch.mkdir(parents=True)
    worklists = {}
    for count in (studies, small):
        worklists[count] = scratch / f"worklist-{count}.csv"
        worklists[count].write_text("StudyInstanceUID\n" + "".join(f"{uid}\n" for uid in uids[:count]))
    python = str(REPO / ".venv" / "bin" / "python")
    cli = [python, "-m", "dicomtrolley.cli"]
    small_name = f"transfer of the first {small} studies (memory)"
    rows = {name: Row(name, "transfer") for name in (DOWNLOAD, UPLOAD, TRANSFER, small_name)}
    with running_orthanc(work / f"source-{studies}", HttpCompressionEnabled=False) as source:
        if instance_count(source) < len(files):
            logger.info("loading %d instances into the source", len(files))
            source.upload(files)
        wanted = {studies: len(files), small: sum(study_instances(n) for n in range(small))}
        downloaded: list[Path] = []

        def download(out: Path, _: str) -> list[str]:
            downloaded.append(out)
            return [*cli, "export", source.dicomweb_url, str(worklists[studies]), "-o", str(out), "--no-progress"]

        def upload(out: Path, url: str) -> list[str]:
            return [*cli, "upload", url, str(downloaded[-1]), "--no-progress"]

        def transfer(count: int) -> Callable[[Path, str], list[str]]:
            return lambda out, url: [*cli, "export", source.dicomweb_url, str(worklists[count]), "--to", url,
                                     "--state-dir", str(out), "--no-progress"]

        clients: list[tuple[str, Callable[[Path, str], list[str]], int]] = [
            (DOWNLOAD, download, 0),
            (UPLOAD, upload, studies),
            (TRANSFER, transfer(studies), studies),
            (small_name, transfer(small), small),
        ]
        for round_number in range(1, runs + 1):
            for name, argv, arrives in clients:
                out = scratch / f"out-{round_number}-{len(rows[name].samples)}-{abs(hash(name)) % 1000}"
                # Every upload and transfer goes to a new, empty Orthanc: one emptied by deleting
                # what it held took instances in more slowly (a transfer 5.0 s fresh, 6.7-7.2 s after).
                with running_orthanc(out.with_suffix(".destination"), HttpCompressionEnabled=False,
                                     stop_timeout=1.0) as destination:
                    servers = server_cpu(source, destination)
                    sample = run_process(argv(out, destination.dicomweb_url), cwd=REPO, reports_json=False,
                                         scratch=scratch, timeout=3600)
                    sample = replace(sample, output={"servers_cpu": server_cpu(source, destination) - servers})
                    # A download writes study/series/instance files, and its report beside them.
                    got = instance_count(destination) if arrives else sum(
                        1 for p in out.glob("*/*/*") if p.is_file())
                if got != wanted[arrives or studies]:
                    raise ClientFailedError(f"{name}: {got} of {wanted[arrives or studies]} instances arrived")
                rows[name].samples.append(sample)
                logger.info("round %d %s: %.2f s, %.0f MB", round_number, name, sample.wall, sample.peak_rss / 1e6)
    shutil.rmtree(scratch, ignore_errors=True)
    return list(rows.values()), len(files), sum(p.stat().st_size for p in files)


def table(rows: list[Row], count: int, size: int, studies: int) -> str:
    """The Markdown table (medians, min-max) and the ratio the target names, from the medians and round by round."""
    by_name = {row.client: row for row in rows}
    lines = [
        f"{studies} studies, {count} instances, {size / 1e6:.1f} MB; medians over {len(rows[0].samples)} rounds "
        "(min-max).",
        "",
        "| client | wall s | MB/s | peak RSS MB | CPU s | both Orthancs' CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        walls = [s.wall for s in row.samples]
        lines.append(f"| {row.client} | {row.wall:.2f} ({min(walls):.2f}-{max(walls):.2f}) "
                     f"| {size / row.wall / 1e6:.1f} | {row.median(lambda s: s.peak_rss) / 1e6:.0f} "
                     f"| {row.median(lambda s: s.cpu):.2f} | {row.median(lambda s: s.output['servers_cpu']):.2f} |")
    down, up, both = by_name[DOWNLOAD], by_name[UPLOAD], by_name[TRANSFER]
    rounds = [t.wall / (d.wall + u.wall) for d, u, t in zip(down.samples, up.samples, both.samples, strict=True)]
    lines += ["", f"transfer / (download + upload), from the medians: {both.wall / (down.wall + up.wall):.2f}x; "
              f"round by round: {', '.join(f'{r:.2f}x' for r in rounds)} (target <= 0.7x)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table (and write it beside the data as transfer.md)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transfer_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--small", type=int, default=50, help="studies of the second transfer (peak memory)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows, count, size = run_all(args.studies, args.small, args.runs)
    text = table(rows, count, size, args.studies)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "transfer.md").write_text(text + "\n")
    raw = {r.client: [{"wall": s.wall, "cpu": s.cpu, "peak_rss": s.peak_rss, **s.output} for s in r.samples]
           for r in rows}
    (WORK / "transfer.json").write_text(json.dumps(raw, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
