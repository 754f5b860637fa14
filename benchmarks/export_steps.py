"""Where the batch export's CPU goes: the same small studies fetched by ever more of the export, step by step.

    .venv/bin/python -m benchmarks.export_steps [--studies 1000] [--step 250] [--runs 2]

Every step runs in this one process against the export benchmark's Orthanc
(the same 10-instance studies, see ``export_bench``), each on studies of its
own, and prints the wall time and the CPU time (user and system) per study:

1. a ``requests`` GET of the study, its body read and dropped;
2. ``WadoRS.fetch`` into a sink that keeps nothing (adds the multipart parser and the downloader);
3. ``Trolley.download`` per study, the series counts searched 50 studies at a time as the export does
   (adds the plan, the files, the completeness check);
4. ``trolley.export`` with one study in flight (adds the state database, report, index and driver thread);
5. ``trolley.export`` with four in flight (the default).

Interpreter start and imports are not counted. The figures are the
breakdown in docs/performance.md; the targets are measured by ``export_bench``.
"""

from __future__ import annotations

import argparse
import resource
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import requests

from benchmarks.export_bench import INSTANCES_PER_STUDY, WORK, _instances_stored, generate
from dicomtrolley.core import InstancePart, StudyReference
from dicomtrolley.export.prefetch import BATCH, SeriesPrefetcher
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from tests.support.orthanc import running_orthanc

Step = Callable[[Sequence[str], Path], None]


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def steps(url: str) -> dict[str, Step]:
    """The steps, each a function of (study UIDs, a fresh output folder)."""
    session = requests.Session()
    searcher, wado = QidoRS(session, url), WadoRS(session, url)
    trolley = Trolley(searcher, wado)

    def get(uids: Sequence[str], out: Path) -> None:
        for uid in uids:
            with session.get(f"{url}/studies/{uid}", headers={"Accept": wado.accept}, stream=True) as r:
                for _ in r.raw.stream(1 << 20):
                    pass

    def fetch(uids: Sequence[str], out: Path) -> None:
        def drop(part: InstancePart) -> None:
            part.close()

        for uid in uids:
            wado.fetch([StudyReference(uid)], drop)

    def download(uids: Sequence[str], out: Path) -> None:
        prefetcher = SeriesPrefetcher(searcher)
        counted = Trolley(prefetcher, wado)
        for number, uid in enumerate(uids):
            if number % BATCH == 0:
                prefetcher.prefetch(uids[number:number + BATCH])
            counted.download(StudyReference(uid), out)

    def export(studies: int) -> Step:
        def run(uids: Sequence[str], out: Path) -> None:
            trolley.export(list(uids), out, progress=False, studies=studies)

        return run

    return {
        "requests GET, body dropped": get,
        "+ multipart and downloader": fetch,
        "+ files, counts searched": download,
        "export, 1 in flight": export(1),
        "export, 4 in flight": export(4),
    }


def measure(url: str, uids: Sequence[str], *, step: int, runs: int, scratch: Path) -> dict[str, tuple[float, ...]]:
    """Each step's (wall, user, system) milliseconds per study, of its last run; every run on other studies."""
    table = steps(url)
    figures: dict[str, tuple[float, ...]] = {}
    for run in range(runs):
        for number, (name, fetch) in enumerate(table.items()):
            start = ((run * len(table) + number) * step) % max(1, len(uids) - step + 1)
            chosen = uids[start:start + step]
            (user, system), began = _cpu(), time.perf_counter()
            fetch(chosen, scratch / f"{run}-{number}")
            wall = time.perf_counter() - began
            user_after, system_after = _cpu()
            per = 1000 / len(chosen)
            figures[name] = (wall * per, (user_after - user) * per, (system_after - system) * per)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run every step ``--runs`` times and print a markdown table of the last round's figures per study."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000, help="the export benchmark's data set to use")
    parser.add_argument("--step", type=int, default=250, help="studies per step")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    data, uids = generate(args.studies)
    scratch = WORK / "steps" / uuid.uuid4().hex  # left in place: see export_bench on ext4 and deleted files
    server_dir = WORK / f"orthanc-{args.studies}"
    server_dir.mkdir(parents=True, exist_ok=True)
    with running_orthanc(server_dir, HttpCompressionEnabled=False) as server:
        if _instances_stored(server.base_url) < len(uids) * INSTANCES_PER_STUDY:
            server.upload(sorted(data.glob("*.dcm")))
        figures = measure(server.dicomweb_url, uids, step=args.step, runs=args.runs, scratch=scratch)
    print("| step | wall ms/study | user | system | CPU ms/study |\n|---|---:|---:|---:|---:|")
    for name, (wall, user, system) in figures.items():
        print(f"| {name} | {wall:.2f} | {user:.2f} | {system:.2f} | {user + system:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
