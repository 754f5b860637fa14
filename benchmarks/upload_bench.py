"""Upload benchmark: the 500-instance CT study sent to an empty Orthanc, every client side by side in one run.

    .venv/bin/python -m benchmarks.upload_bench [--runs 3] [--quick] [--no-reference]

Clients, each run in a fresh process under GNU time (wall time and peak memory
of the process), in turns within each round, the destination emptied before each:

- ``StowRS(session, url).send(folder)`` (this package: bodies of at most 1 MB
  or 8 instances, 4 in parallel);
- the same batches with requests-toolbelt's ``MultipartEncoder`` as the body
  (the streaming encoder we did not choose; the figures say why);
- curl posting prebuilt bodies, one per series (4) and one per file (500),
  ``--parallel --parallel-max 4`` (the ceiling of STOW-RS on this server);
- dicomweb-client's ``store_instances``, one call per series (its documented use), and one call
  for the whole study (one request, every dataset in memory);
- ``DICOMCStore(host, port).send(folder)`` and DCMTK's ``storescu`` (one association,
  ``TCP_NODELAY=1``) sending the same files.

After each run the destination must hold the 500 instances. Wall seconds are
the clients' own timing of the send (Python) or the whole process (curl,
storescu); MB/s = file bytes / wall seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import data
from benchmarks.measure import ClientFailedError, Sample, run_process
from benchmarks.reference_env import ensure_reference_env
from tests.support.orthanc import OrthancServer, running_orthanc

logger = logging.getLogger("benchmarks.upload")

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "benchmarks"
WORK = HERE / ".work"
BOUNDARY = "dicomtrolley-upload-benchmark-3c9e1f07a4b2"
DCMTK_STORESCU = "/usr/bin/storescu"
"""DCMTK's, by path: pynetdicom installs a ``storescu`` of its own into the virtual environment."""
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@dataclass
class Row:
    """All runs of one client."""

    client: str
    kind: str
    samples: list[Sample] = field(default_factory=list)

    def median(self, figure: Callable[[Sample], float]) -> float:
        return statistics.median(figure(s) for s in self.samples)

    @property
    def wall(self) -> float:
        """The median wall seconds."""
        return self.median(lambda s: s.wall)


def write_bodies(folder: Path, groups: list[list[Path]]) -> list[Path]:
    """One prebuilt multipart/related body per group of files (not timed)."""
    folder.mkdir(parents=True, exist_ok=True)
    bodies = []
    for number, files in enumerate(groups):
        path = folder / f"body-{number:04d}.bin"
        with path.open("wb") as out:
            for index, file in enumerate(files):
                content = file.read_bytes()
                out.write(b"\r\n" if index else b"")
                out.write(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n"
                          f"Content-Length: {len(content)}\r\n\r\n".encode())
                out.write(content)
            out.write(f"\r\n--{BOUNDARY}--\r\n".encode())
        bodies.append(path)
    return bodies


def curl_config(path: Path, url: str, bodies: list[Path]) -> Path:
    """A curl config posting each body to ``url`` (``next`` separates the transfers)."""
    escaped = CONTENT_TYPE.replace('"', '\\"')
    entries = [f'url = "{url}"\ndata-binary = "@{body}"\nheader = "Content-Type: {escaped}"\noutput = "/dev/null"\n'
               f'silent\nfail\n' for body in bodies]
    path.write_text("next\n".join(entries))
    return path


def instance_count(server: OrthancServer) -> int:
    with server.session() as session:
        return int(session.get(f"{server.base_url}/statistics", timeout=30).json()["CountInstances"])


def run_all(runs: int, sizes: data.Sizes, reference: bool, work: Path = WORK) -> tuple[list[Row], int, int]:
    """Every client ``runs`` times in turns; returns the rows, the file count and the bytes."""
    ct = data.ct_study(work / "data", sizes)
    folder = ct.directory
    scratch = work / "upload"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    files = sorted(item.path for item in ct.items)
    series = [sorted(p for p in files if p.parent == parent) for parent in sorted({p.parent for p in files})]
    per_series = write_bodies(scratch / "bodies-series", series)
    per_file = write_bodies(scratch / "bodies-file", [[p] for p in files])
    python = str(REPO / ".venv" / "bin" / "python")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TCP_NODELAY": "1"}
    reference_python = str(ensure_reference_env()) if reference else ""
    reference_env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with running_orthanc(scratch / "orthanc", stop_timeout=1.0) as server:
        stow_url = f"{server.dicomweb_url}/studies"
        clients: list[tuple[str, str, list[str], dict[str, str], bool]] = [
            ("dicomtrolley StowRS.send (4 workers)", "stow", [python, str(HERE / "client_upload.py"), "stow-rs",
             "--dicomweb", server.dicomweb_url, "--folder", str(folder)], env, True),
            ("dicomtrolley StowRS.send, one instance per body", "stow", [python, str(HERE / "client_upload.py"),
             "stow-rs", "--batch-instances", "1", "--dicomweb", server.dicomweb_url, "--folder", str(folder)], env,
             True),
            ("same batches, requests-toolbelt MultipartEncoder", "stow", [python, str(HERE / "client_upload.py"),
             "stow-rs-toolbelt", "--dicomweb", server.dicomweb_url, "--folder", str(folder)], env, True),
            ("curl, one prebuilt body per series, --parallel-max 4", "curl", ["curl", "--parallel", "--parallel-max",
             "4", "-K", str(curl_config(scratch / "series.curl", stow_url, per_series))], env, False),
            ("curl, one prebuilt body per file, --parallel-max 4", "curl", ["curl", "--parallel", "--parallel-max",
             "4", "-K", str(curl_config(scratch / "file.curl", stow_url, per_file))], env, False),
            ("dicomtrolley DICOMCStore.send (2 associations)", "cstore", [python, str(HERE / "client_upload.py"),
             "c-store", "--host", "127.0.0.1", "--port", str(server.dicom_port), "--aec", server.aet,
             "--folder", str(folder)], env, True),
            ("dcmtk storescu (one association)", "storescu", [DCMTK_STORESCU, "-aec", server.aet,
             "127.0.0.1", str(server.dicom_port), *map(str, files)], env, False),
        ]
        if reference:
            reference_stow = [reference_python, str(HERE / "client_reference_stow.py"), "--dicomweb",
                              server.dicomweb_url, "--folder", str(folder)]
            clients[4:4] = [
                ("dicomweb-client store_instances, per series", "dicomweb-client", reference_stow, reference_env,
                 True),
                ("dicomweb-client store_instances, whole study in one call", "dicomweb-client-study",
                 [*reference_stow, "--whole-study"], reference_env, True),
            ]
        rows = {name: Row(name, kind) for name, kind, *_ in clients}
        for round_number in range(1, runs + 1):
            for name, _kind, argv, environment, reports_json in clients:
                server.clear()
                sample = run_process(argv, cwd=HERE, env=environment, reports_json=reports_json, scratch=scratch)
                arrived = instance_count(server)
                if arrived != len(files):
                    raise ClientFailedError(f"{name}: {arrived} of {len(files)} instances arrived")
                rows[name].samples.append(sample)
                logger.info("round %d %s: %.2f s, %.0f MB", round_number, name, sample.wall, sample.peak_rss / 1e6)
    return list(rows.values()), len(files), sum(p.stat().st_size for p in files)


def table(rows: list[Row], count: int, size: int) -> str:
    """The Markdown table: medians (min-max) and the ratios the issue's targets name."""
    best_curl = min((r for r in rows if r.kind == "curl"), key=lambda r: r.median(lambda s: s.wall))
    by_kind = {r.kind: r for r in rows}
    lines = [
        f"{count} instances, {size / 1e6:.1f} MB; medians over {len(rows[0].samples)} runs (min-max).",
        "",
        "| client | MB/s | wall s | peak RSS MB | CPU s | vs fastest curl | vs dicomweb-client | "
        "vs dicomweb-client, one call | vs storescu |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        walls = [s.wall for s in row.samples]
        wall = row.median(lambda s: s.wall)

        def ratio(other: Row | None, wall: float = wall) -> str:
            return f"{other.wall / wall:.2f}x" if other is not None else "-"

        stow_like = row.kind in ("stow", "curl", "dicomweb-client", "dicomweb-client-study")
        lines.append(
            f"| {row.client} | {size / wall / 1e6:.0f} ({size / max(walls) / 1e6:.0f}-{size / min(walls) / 1e6:.0f}) "
            f"| {wall:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {row.median(lambda s: s.peak_rss) / 1e6:.0f} "
            f"| {row.median(lambda s: s.cpu):.2f} | {ratio(best_curl) if stow_like else '-'} "
            f"| {ratio(by_kind.get('dicomweb-client')) if stow_like else '-'} "
            f"| {ratio(by_kind.get('dicomweb-client-study')) if stow_like else '-'} "
            f"| {ratio(by_kind.get('storescu')) if not stow_like else '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table (and write it beside the data as upload.md)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upload_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny data: every client runs, in seconds")
    parser.add_argument("--no-reference", action="store_true", help="without dicomweb-client (no extra environment)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sizes = data.Sizes.quick() if args.quick else data.Sizes()
    rows, count, size = run_all(args.runs, sizes, not args.no_reference)
    text = table(rows, count, size)
    (WORK / "upload" / "upload.md").write_text(text + "\n")
    raw = {r.client: [{"wall": s.wall, "cpu": s.cpu, "peak_rss": s.peak_rss} for s in r.samples] for r in rows}
    (WORK / "upload" / "upload.json").write_text(json.dumps(raw, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
