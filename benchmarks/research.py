"""The research benchmark: metadata to a DataFrame beside dicomtrolley 4.1.0, streaming memory, the search cache.

    python -m benchmarks.research               # 500-instance CT study, 5 runs per client
    python -m benchmarks.research --quick       # tiny data, one run: checks that every case works

Rows (each run in a fresh process, the clients alternating run by run):

- metadata of the CT study to a typed DataFrame, this package, against
  4.1.0's ``WadoRSMetaData.datasets`` turned into dicts of the same keywords
  (no DataFrame: 4.1.0's environment has no pandas), live from Orthanc and
  from the saved ``/metadata`` answer (the client's own work alone);
- metadata rows of a 20,000-instance ``/metadata`` answer (the CT study's
  instances repeated, served over a loopback socket), without pandas: peak memory;
- the search cache: a first series-level search with and without it, and
  the cached repeat and narrower searches.

The server is the download benchmark's Orthanc with its storage cache
(:data:`SERVER_CONFIG`) large enough to hold the CT study: Orthanc builds
``/metadata`` from the stored files, and its default 128 MB cache can never
hold a 263 MB study, so every request read every file again. The study's
``/metadata`` is fetched once before any client runs (the saved answer), so
both clients meet the same warm server.

The table goes to standard output and ``benchmarks/.work/research.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import requests

from benchmarks import data
from benchmarks.cases import _env
from benchmarks.measure import Sample, run_process
from benchmarks.reference_env import ensure_reference_env
from benchmarks.run import SERVER_CONFIG as DOWNLOAD_SERVER_CONFIG
from benchmarks.run import WORK, load
from tests.support.http_server import TrackingHTTPServer
from tests.support.orthanc import OrthancServer, running_orthanc

HERE = Path(__file__).resolve().parent
OURS = HERE / "client_research.py"
THEIRS = HERE / "client_reference_metadata.py"
STREAM_INSTANCES = 20_000
SERVER_CONFIG = {**DOWNLOAD_SERVER_CONFIG, "MaximumStorageCacheSize": 1024}
"""Orthanc 1.10's storage cache (MB of recently read files, default 128) holds the whole CT study, for both
clients alike: without it, one ``/metadata`` of the study took Orthanc 0.37 s here, with it 0.20 s."""


def save_metadata(dicomweb: str, study_uid: str, path: Path) -> Path:
    """The study's ``/metadata`` answer, saved once."""
    response = requests.get(f"{dicomweb}/studies/{study_uid}/metadata", timeout=300,
                            headers={"Accept": "application/dicom+json", "Accept-Encoding": "identity"})
    response.raise_for_status()
    path.write_bytes(response.content)
    return path


def large_answer(saved: Path, path: Path, count: int) -> Path:
    """A ``/metadata`` answer of ``count`` instances: the saved ones repeated with SOP Instance UIDs of their own."""
    instances = json.loads(saved.read_bytes())
    with path.open("w", encoding="utf-8") as out:
        out.write("[")
        for number in range(count):
            instance = dict(instances[number % len(instances)])
            instance["00080018"] = {"vr": "UI", "Value": [f"1.2.826.0.1.3680043.8.498.9.{number}"]}
            out.write(("," if number else "") + json.dumps(instance))
        out.write("]")
    return path


def serve_file(path: Path) -> TrackingHTTPServer:
    """A loopback server answering every GET with ``path`` as DICOM JSON, 64 KiB per write."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            with path.open("rb") as body:
                while chunk := body.read(65536):
                    self.wfile.write(chunk)

        def log_message(self, *args: Any) -> None:
            pass

    server = TrackingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _median(samples: list[Sample], pick: Callable[[Sample], float]) -> float:
    return statistics.median(pick(s) for s in samples)


def benchmark(server: OrthancServer, *, work: Path, sizes: data.Sizes, runs: int, reference: Path | None) -> str:
    """Run every row ``runs`` times against ``server`` (4.1.0's rows only with a ``reference`` Python); the table."""
    work.mkdir(parents=True, exist_ok=True)
    ct = data.ct_study(work / "data", sizes)
    study = ct.study_uids[0]
    stream_count = STREAM_INSTANCES if sizes.ct_instances >= data.Sizes().ct_instances else 200
    load(server, (ct,))
    saved = save_metadata(server.dicomweb_url, study, work / f"metadata-{ct.name}.json")
    big = large_answer(saved, work / f"metadata-{stream_count}.json", stream_count)
    ours_env, theirs_env = _env(current=True), _env(current=False)

    def ours(*argv: str) -> Sample:
        return run_process([sys.executable, str(OURS), *argv], cwd=work, env=ours_env)

    def theirs(*argv: str) -> Sample:
        assert reference is not None
        return run_process([str(reference), str(THEIRS), *argv], cwd=work, env=theirs_env)

    streamer = serve_file(big)
    try:
        stream_url = f"http://127.0.0.1:{streamer.server_address[1]}/dicom-web"
        live = ("--dicomweb", server.dicomweb_url, "--study", study)
        canned = (*live, "--canned", str(saved))
        streamed = ("--dicomweb", stream_url, "--study", study)
        cases: list[tuple[str, Callable[[], Sample] | None]] = [
            ("live: this package, typed DataFrame", lambda: ours("metadata-df", *live)),
            ("live: 4.1.0 WadoRSMetaData, dicts", lambda: theirs("metadata-rows", *live)),
            ("saved answer: this package, typed DataFrame", lambda: ours("metadata-df", *canned)),
            ("saved answer: 4.1.0 WadoRSMetaData, dicts", lambda: theirs("metadata-rows", *canned)),
            (f"{stream_count} instances streamed: this package, rows", lambda: ours("metadata-stream", *streamed)),
            (f"{stream_count} instances: 4.1.0 WadoRSMetaData, dicts", lambda: theirs("metadata-rows", *streamed)),
        ]
        rows: dict[str, list[Sample]] = {name: [] for name, _ in cases}
        for round_number in range(runs):
            for number, (name, run) in enumerate(cases):
                if number % 2 == 1 and (reference is None or (number == 5 and round_number > 0)):
                    continue  # 4.1.0 on 20,000 instances takes minutes: its memory is what the row shows, once
                rows[name].append(run())
        cache = ours("cache", "--dicomweb", server.dicomweb_url, "--patient", "BENCH-CT",
                     "--repeat", str(max(3, 2 * runs + 1)))
    finally:
        streamer.shutdown()
        streamer.close_connections()
        streamer.server_close()
    return _table(rows, cache, runs, len(ct.items), stream_count)


def _table(rows: dict[str, list[Sample]], cache: Sample, runs: int, instances: int, stream_count: int) -> str:
    lines = [
        f"Metadata of the CT study ({instances} instances) and of a {stream_count}-instance answer; "
        f"median of {runs} runs (4.1.0 on the large answer: one), each a fresh process, clients alternating; "
        f"Orthanc's storage cache ({SERVER_CONFIG['MaximumStorageCacheSize']} MB) holds the study, warm for both.",
        "",
        "| task | seconds | CPU s | peak RSS MB | instances | vs 4.1.0 |",
        "|---|---|---|---|---|---|",
    ]
    names = list(rows)
    for index, name in enumerate(names):
        samples = rows[name]
        if not samples:
            continue
        seconds = _median(samples, lambda s: s.wall)
        ratio = ""
        if index % 2 == 0 and rows[names[index + 1]]:
            ratio = f"{_median(rows[names[index + 1]], lambda s: s.wall) / seconds:.1f}x faster"
        lines.append(
            f"| {name} | {seconds:.3f} | {_median(samples, lambda s: s.cpu):.3f} | "
            f"{_median(samples, lambda s: s.peak_rss) / 1e6:.0f} | {samples[0].output['count']} | {ratio} |"
        )
    figures = cache.output
    lines += [
        "",
        "| search cache (series-level search of one patient, live) | median |",
        "|---|---|",
        f"| first search, no cache | {figures['uncached_first_ms']:.2f} ms |",
        f"| first search through CachedSearcher | {figures['cached_first_ms']:.2f} ms |",
        f"| repeated search, from the cache | {figures['repeat_us']:.1f} µs |",
        f"| narrower search (find_study_by_id of a study found), from the cache | {figures['narrower_us']:.1f} µs |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.research``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data and one run: checks that every case works")
    parser.add_argument("--runs", type=int, default=0)
    parser.add_argument("--no-reference", dest="reference", action="store_false")
    args = parser.parse_args(argv)
    sizes = data.Sizes.quick() if args.quick else data.Sizes()
    runs = args.runs or (1 if args.quick else 5)
    reference = ensure_reference_env() if args.reference else None
    key = hashlib.sha1(repr(sizes).encode(), usedforsecurity=False).hexdigest()[:8]
    with running_orthanc(WORK / f"orthanc-{key}", **SERVER_CONFIG) as server:
        table = benchmark(server, work=WORK, sizes=sizes, runs=runs, reference=reference)
    (WORK / "research.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
