"""The audit's throughput on the pseudonymised 500-instance CT study, and what hiding ``__main__`` costs the workers.

    .venv/bin/python -m benchmarks.audit_bench [--runs 3] [--quick]

1. The CT study of the benchmark data (263 MB) is pseudonymised into
   ``benchmarks/.work/audit/out`` through the pseudonymising storage, which
   records the originals' identifying values in ``out.state`` beside it.
2. :func:`dicomtrolley.audit.audit` searches that output ``--runs`` times
   (warm page cache); the median MB/s is printed, without and with a check
   that reads every file's header (what wiring the table's check costs).
3. The pseudonymisation of the study's headers, ``--runs`` times, with and
   without recording the originals' values (what the audit costs the download).
4. A pool of two worker processes is started ``--runs`` times with the fork
   server as ``multiprocessing`` gives it and as :mod:`dicomtrolley._processes`
   gives it (``__main__`` hidden), and the median time until both answered.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from unittest import mock

from pydicom.dataset import Dataset

from benchmarks import data
from dicomtrolley import deidentify
from dicomtrolley._header import pixel_data_span
from dicomtrolley._originals import VALUES_NAME
from dicomtrolley._processes import process_context
from dicomtrolley.audit import audit
from dicomtrolley.core import InstancePart
from dicomtrolley.deidentify import Deidentifier, DeidentifyOptions
from dicomtrolley.storage import StorageDir

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work" / "audit"
KEY = "the audit benchmark's key, 32 b!"


def pseudonymised(collection: data.Collection, out: Path) -> Path:
    """``collection`` pseudonymised into ``out`` (made again when its recorded values are missing)."""
    if (out.parent / f"{out.name}.state" / VALUES_NAME).is_file() and out.is_dir():
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.parent / f"{out.name}.state", ignore_errors=True)
    storage = Deidentifier(DeidentifyOptions(processes=0), key=KEY).storage(StorageDir(out))
    for item in collection.items:
        body = item.path.read_bytes()
        storage.save(InstancePart(io.BytesIO(body), len(body), "application/dicom", None, None, {}))
    return out


def _reads_header(dataset: Dataset) -> Iterable[object]:
    return []


def audit_speed(out: Path, runs: int) -> dict[str, float]:
    """Median MB/s of ``runs`` audits of ``out``, without and with a check of every header."""
    figures: dict[str, float] = {}
    for label, checks in (("values", ()), ("values + header check", (_reads_header,))):
        speeds = []
        for _ in range(runs):
            result = audit(out, checks=checks)  # type: ignore[arg-type]
            assert result.ok, result
            speeds.append(result.bytes / 1e6 / result.seconds)
        figures[label] = statistics.median(speeds)
        figures["MB"] = result.bytes / 1e6
    return figures


def recording_cost(collection: data.Collection, runs: int) -> tuple[float, float]:
    """Median CPU milliseconds to pseudonymise one instance's header (decode, change, encode):
    recording the originals' values, and not."""
    deidentifier = Deidentifier(DeidentifyOptions(processes=0), key=KEY)
    heads = []
    for item in collection.items:
        body = item.path.read_bytes()
        span = pixel_data_span(body)
        heads.append(body[:span[0]] if span else body)

    def per_instance() -> float:  # CPU time: steadier than the wall clock on a shared machine
        started = time.process_time()
        for head in heads:
            deidentify._pseudonymise(deidentifier, head)
        return (time.process_time() - started) / len(heads) * 1e3

    recording = statistics.median(per_instance() for _ in range(runs))
    with mock.patch.object(deidentify, "snapshot", return_value={}), \
            mock.patch.object(deidentify, "replaced", return_value=[]):
        without = statistics.median(per_instance() for _ in range(runs))
    return recording, without


def pool_start(context: BaseContext, runs: int) -> float:
    """Median seconds from creating a pool of two workers until both have answered."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            for answer in [pool.submit(os.getpid) for _ in range(2)]:  # by reference: no __main__ needed
                answer.result()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the smoke test's small study")
    args = parser.parse_args(argv)
    sizes = data.Sizes.quick() if args.quick else data.Sizes()
    collection = data.ct_study(REPO / "benchmarks" / ".work" / "data", sizes)
    out = pseudonymised(collection, WORK / ("quick" if args.quick else "out"))
    speeds = audit_speed(out, args.runs)
    print(f"audit of {speeds.pop('MB'):.0f} MB, median of {args.runs}:")
    for label, speed in speeds.items():
        print(f"  {label}: {speed:.0f} MB/s")
    recording, without = recording_cost(collection, args.runs)
    print(f"pseudonymising a header, median of {args.runs}: {recording:.2f} ms CPU recording the originals' values, "
          f"{without:.2f} ms without")
    get_context("forkserver").Process  # noqa: B018 - the fork server's module, loaded before timing
    plain, hidden = get_context("forkserver"), process_context("forkserver")
    pool_start(hidden, 1)  # the fork server starts once per process: not counted
    print(f"pool of 2 started, median of {args.runs}: forkserver {pool_start(plain, args.runs) * 1e3:.0f} ms, "
          f"__main__ hidden {pool_start(hidden, args.runs) * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
