"""The benchmark command: data, server, every client, the table in ``docs/performance.md``.

    bash benchmarks/run.sh                 # the full run (about 5 minutes on 2 cores)
    bash benchmarks/run.sh --runs 5        # more runs per client
    bash benchmarks/run.sh --quick --no-reference --output /tmp/perf.md   # tiny data, this package and curl

Steps: generate the data (cached in ``benchmarks/.work/data``); start an
Orthanc whose storage is kept in ``benchmarks/.work`` so a second run need not
upload again; upload what it lacks; save the search tree's QIDO-RS answer;
make the reference environment; fetch each study once to warm the caches;
then run every client ``--runs`` times, each run in a fresh process, and
check its output after every run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

import requests

import dicomtrolley
from benchmarks import data, report
from benchmarks.cases import (
    BIG,
    CGET,
    CLIENT_REFERENCE,
    MULTIPART,
    REPO,
    TREE,
    WADO_RS,
    WADO_URI,
    Case,
    Context,
    all_cases,
    empty_trash,
)
from benchmarks.measure import ClientFailedError, Result, run_process
from benchmarks.reference_env import ensure_reference_env
from benchmarks.verify import VerificationError
from tests.support.orthanc import OrthancServer, running_orthanc

logger = logging.getLogger("benchmarks")

WORK = REPO / "benchmarks" / ".work"
DOCS = REPO / "docs" / "performance.md"
SERVER_CONFIG = {"HttpCompressionEnabled": False}
"""Orthanc's default (true) gzips WADO-URI answers for clients that accept gzip, as requests-based
clients do unless told otherwise; that is a server setting, not a property of a client, so it is off."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup


def _loaded(server: OrthancServer, collection: data.Collection) -> bool:
    """True when Orthanc holds every instance of every study of ``collection``."""
    per_study: dict[str, int] = {}
    for item in collection.items:
        per_study[item.study_uid] = per_study.get(item.study_uid, 0) + 1
    with server.session() as session:
        for uid, count in per_study.items():
            found = session.post(f"{server.base_url}/tools/lookup", data=uid, timeout=30).json()
            studies = [f for f in found if f.get("Type") == "Study"]
            if not studies:
                return False
            stats = session.get(f"{server.base_url}/studies/{studies[0]['ID']}/statistics", timeout=30).json()
            if int(stats.get("CountInstances", 0)) != count:
                return False
    return True


def load(server: OrthancServer, collections: Sequence[data.Collection]) -> None:
    """Upload each collection Orthanc does not fully hold yet (several threads at once)."""
    for collection in collections:
        if _loaded(server, collection):
            continue
        started = time.perf_counter()
        server.upload(item.path for item in collection.items)
        seconds = time.perf_counter() - started
        _say(f"uploaded {collection.name}: {len(collection.items)} files, "
             f"{collection.total_bytes / 1e6:.0f} MB in {seconds:.1f} s")


def save_qido_answer(server: OrthancServer, tree: data.Collection, path: Path) -> Path:
    """Save the server's instance-level QIDO-RS answer for the search tree's patient (once)."""
    try:
        if len(json.loads(path.read_bytes())) == len(tree.items):
            return path
    except (OSError, ValueError):
        pass
    response = requests.get(
        f"{server.dicomweb_url}/instances",
        params={"PatientID": data.QIDO_PATIENT_ID},
        headers={"Accept": "application/dicom+json", "Accept-Encoding": "identity"},
        timeout=300,
    )
    response.raise_for_status()
    if len(response.json()) != len(tree.items):
        raise RuntimeError(f"QIDO-RS found {len(response.json())} instances, expected {len(tree.items)}")
    path.write_bytes(response.content)
    return path


def warm_up(server: OrthancServer, collections: Sequence[data.Collection]) -> None:
    """Fetch each study once, unmeasured, so every client meets the same warm caches."""
    for collection in collections:
        for uid in collection.study_uids:
            with requests.get(
                f"{server.dicomweb_url}/studies/{uid}", stream=True, timeout=300,
                headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
                         "Accept-Encoding": "identity"},
            ) as response:
                response.raise_for_status()
                for _ in response.iter_content(1 << 20):
                    pass


def versions(server: OrthancServer, reference_python: Path | None, work: Path) -> dict[str, str]:
    """What ran: Python, Orthanc and its plugin, this package, the reference packages, pynetdicom, dcmtk, curl."""
    found = {"Python": platform.python_version()}
    with server.session() as session:
        found["Orthanc"] = session.get(f"{server.base_url}/system", timeout=10).json().get("Version", "?")
        plugin = session.get(f"{server.base_url}/plugins/dicom-web", timeout=10)
        if plugin.ok:
            found["Orthanc DICOMweb plugin"] = plugin.json().get("Version", "?")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    found["this package"] = f"{dicomtrolley.__version__} (commit {commit or '?'})"
    found["pydicom"] = version("pydicom")
    found["requests"] = version("requests")
    found["pynetdicom"] = version("pynetdicom")
    if reference_python is not None:
        sample = run_process([str(reference_python), str(CLIENT_REFERENCE), "versions"], cwd=work)
        out = sample.output
        found["dicomtrolley (reference)"] = out["dicomtrolley"]
        found["dicomweb-client"] = out["dicomweb-client"]
        found["reference environment"] = f"Python {out['python']}, pydicom {out['pydicom']}, requests {out['requests']}"
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=False).stdout.split()
    found["curl"] = curl[1] if len(curl) > 1 else "?"
    getscu = subprocess.run(["getscu", "--version"], capture_output=True, text=True, check=False).stdout.split()
    found["dcmtk getscu"] = getscu[2] if len(getscu) > 2 else "?"
    return found


def descriptions(ctx: Context, sizes: data.Sizes) -> dict[str, str]:
    """What each table measures, with the data's real sizes."""
    ct, big = ctx.ct, ctx.big
    body_sizes = ", ".join(sorted({f"{b.size / 2**20:.0f} MiB" for b in ctx.bodies}, key=lambda s: float(s.split()[0])))
    return {
        WADO_RS: (
            f"A CT study of {len(ct.items)} instances ({sizes.ct_pixels}x{sizes.ct_pixels}, 16-bit) in "
            f"{sizes.ct_series} series, {ct.total_bytes / 1e6:.1f} MB, downloaded to disk. "
            "MB/s = instance bytes / wall time. The Trolley rows include the QIDO-RS search that tells the "
            "trolley what to expect (ours: the series and their instance counts; 4.1.0's: every instance); "
            "dicomweb-client and curl are given the study UID only."
        ),
        WADO_URI: (
            f"The same {len(ct.items)} instances, one WADO-URI request each. curl gets the URL list; the "
            "Trolley rows search for the instances first (QIDO-RS), and so does 4.1.0's threaded mode, whose "
            "search is timed with it. 4.1.0 sends `contentType=application%2Fdicom`, which Orthanc 1.10 answers "
            "with 400; its rows run with a session that writes the `/` unescaped (the `/` shim), else it could "
            "not download at all."
        ),
        CGET: (
            f"The same {len(ct.items)} instances over DIMSE: one C-GET of the study (Study Root, STUDY level) "
            "from Orthanc's DICOM port, every instance written to a file as it arrives. The first row searches "
            "with QIDO-RS first, as a Trolley with a searcher does. pynetdicom is its documented recipe (CT "
            "Image Storage in the SCP role, `event.encoded_dataset()` written to a file, its defaults "
            "otherwise); getscu is dcmtk's, run with `TCP_NODELAY=1` as Orthanc is. Each file's dataset after "
            "the file meta is compared byte for byte with the uploaded one (each client writes file meta of "
            "its own). MB/s = uploaded instance bytes / wall time."
        ),
        BIG: (
            f"One instance of {sizes.big_rows}x{sizes.big_columns} 16-bit pixels "
            f"({big.total_bytes / 1e6:.1f} MB, {big.total_bytes / 2**20:.0f} MiB), the only instance of its study."
        ),
        TREE: (
            f"{len(ctx.tree.items)} instances ({sizes.qido_studies} studies x {sizes.qido_series} series x "
            f"{sizes.qido_instances}) of one patient. Orthanc's instance-level QIDO-RS answer is saved once "
            f"({ctx.qido_answer.stat().st_size / 1e6:.1f} MB of JSON) and given to each client. *Parse* rows get "
            "the decoded JSON and time the function that builds the tree; *saved answer* rows run "
            "`find_studies` in-process with the saved body in place of the network (JSON decoding included); "
            "*live* rows ask Orthanc. MB/s here = JSON bytes / wall time."
        ),
        MULTIPART: (
            f"`iter_parts` on multipart/related bodies of {body_sizes} made of the CT study's instances "
            "(Orthanc's framing), fed 1 MiB chunks read from a file; each part is closed as it arrives. "
            "requests-toolbelt needs the whole body in memory (read before the clock starts). "
            "MB/s = body bytes / wall time."
        ),
    }


# ---------------------------------------------------------------- running


def run_case(case: Case, runs: int, work: Path) -> Result:
    """Run one client ``runs`` times, checking its output after each run; stop at the first failure."""
    result = Result(case.group, case.client, case.payload_bytes, role=case.role, headline=case.headline,
                    kind=case.kind)
    checks: list[str] = []
    runs = min(runs, case.max_runs or runs)
    for run in range(1, runs + 1):
        case.prepare()
        try:
            sample = run_process(case.argv, cwd=case.out, env=case.env, reports_json=case.reports_json,
                                 scratch=work)
            checks.append(case.verify(case.out, sample))
        except (ClientFailedError, VerificationError) as error:
            result.error = f"run {run}: {error}"
            _say(f"  FAILED {case.client}: {result.error}")
            break
        finally:
            case.clean()
        result.samples.append(sample)
        rate = case.payload_bytes / sample.wall / 1e6 if sample.wall else 0.0
        _say(f"  {case.client}: run {run}/{runs}: {sample.wall:.3f} s, {rate:.0f} MB/s, "
             f"peak {sample.peak_rss / 1e6:.0f} MB, CPU {sample.cpu:.2f} s")
    result.verified = checks[-1] if checks and len(set(checks)) == 1 else "; ".join(dict.fromkeys(checks))
    return result


def benchmark(
    server: OrthancServer,
    *,
    work: Path,
    sizes: data.Sizes,
    runs: int,
    reference: bool,
    output: Path | None,
    only: Sequence[str] = (),
) -> list[Result]:
    """Load ``server``, run every case, write the table to ``output``; return the results.

    Parameters
    ----------
    server
        A running Orthanc (its storage may already hold the data from an earlier run).
    work
        Data cache, outputs and scratch files.
    sizes
        How large the data is.
    runs
        Runs per client.
    reference
        Also run dicomtrolley 4.1.0 and dicomweb-client (installs their environment).
    output
        The Markdown file whose generated section is replaced; None writes nothing.
    only
        Run only the groups whose names contain one of these words (case-insensitive).
    """
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data_dir = work / "data"
    ct = data.ct_study(data_dir, sizes)
    big = data.big_instance(data_dir, sizes)
    tree = data.search_tree(data_dir, sizes)
    bodies = [data.multipart_body(data_dir / "multipart", size, ct, sized=sized)
              for sized in (True, False) for size in sizes.multipart_bodies]
    _say(f"data ready in {time.perf_counter() - started:.1f} s")

    load(server, (ct, big, tree))
    answer = save_qido_answer(server, tree, server.workdir / f"qido-answer-{tree.name}.json")
    reference_python = ensure_reference_env() if reference else None
    warm_up(server, (ct, big))
    _say(f"server loaded and warm, {time.perf_counter() - started:.1f} s since start")

    ctx = Context(work, server.dicomweb_url, server.wado_url, ct, big, tree, answer, bodies, sys.executable,
                  str(reference_python) if reference_python else None, "127.0.0.1", server.dicom_port, server.aet)
    cases = [c for c in all_cases(ctx) if not only or any(w.lower() in c.group.lower() for w in only)]
    load_before = os.getloadavg()[0]
    results = []
    for group in dict.fromkeys(c.group for c in cases):
        _say(f"== {group}")
        results += [run_case(case, runs, work) for case in cases if case.group == group]

    notes = [
        f"Load average (1 min) {load_before:.1f} before the clients ran, {os.getloadavg()[0]:.1f} after: "
        "anything else running on the machine (another test suite, say) shows in the figures.",
        "Orthanc runs with `HttpCompressionEnabled: false`: with its default (true) it gzips WADO-URI answers "
        "for clients that accept gzip, which requests-based clients do unless told otherwise (this package "
        "asks for `identity`); that would slow dicomtrolley 4.1.0 several times over.",
        "Wall and CPU times of Python clients are their own timing of the task, worker processes included "
        "(interpreter start and imports "
        "excluded); curl's and getscu's are those of their whole process. Peak RSS is the whole process's, as "
        "GNU time reports it. Each cell: median (min-max); ratios compare medians, against the fastest row of "
        "that client (4.1.0, curl, pynetdicom, getscu) and of the same kind in the table.",
        "Between runs each output is written back (`sync`) and dropped from the page cache, and kept on disk "
        "until the benchmark ends: the disk here is ext4 without a journal, which skips inodes freed in the "
        "last minutes when it creates files, so deleting 500 files before a run would make that run's 500 "
        "file creations cost several times the CPU (curl writes one file).",
    ]
    all_versions = versions(server, reference_python, work)
    section = report.render(results, runs=runs, descriptions={
        g: d for g, d in descriptions(ctx, sizes).items() if any(r.group == g for r in results)
    }, versions=all_versions, notes=notes)
    if output is not None:
        report.write_section(output, section)
        _say(f"wrote {output}")
    print(section)
    _say(f"benchmark finished in {time.perf_counter() - started:.0f} s")
    return results


def suite_options(prog: str, doc: str, *, runs: int, output_help: str, reference_help: str) -> argparse.ArgumentParser:
    """The options of a suite of cases over the benchmark Orthanc: data size, runs, the clients, where things go.

    ``doc`` is the suite's module docstring (its first line describes the command); ``runs`` the default
    number of runs per client without ``--quick`` (one with it).
    """
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data and one run: checks that every case works")
    parser.add_argument("--no-reference", dest="reference", action="store_false", help=reference_help)
    parser.add_argument("--runs", type=int, help=f"runs per client (default {runs}; 1 with --quick)")
    parser.add_argument("--work", type=Path, default=WORK, help="data cache and scratch (default benchmarks/.work)")
    parser.add_argument("--output", type=Path, help=output_help)
    parser.set_defaults(default_runs=runs)
    return parser


def run_suite(args: argparse.Namespace, suite: Callable[[OrthancServer, Path, data.Sizes, int], list[Result]]) -> int:
    """Run ``suite(server, work, sizes, runs)`` as the options of :func:`suite_options` say; 1 if a case failed.

    The Orthanc (one per data size, its storage kept in the work folder between runs) is started for the
    suite and stopped after it; the outputs the cases left are thrown away at the end.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sizes = data.Sizes.quick() if args.quick else data.Sizes()
    runs = args.runs or (1 if args.quick else args.default_runs)
    key = hashlib.sha1(repr(sizes).encode(), usedforsecurity=False).hexdigest()[:8]
    work = args.work.resolve()
    try:
        with running_orthanc(work / f"orthanc-{key}", **SERVER_CONFIG) as server:
            results = suite(server, work, sizes, runs)
    finally:
        empty_trash(work)
    failed = [r for r in results if r.error]
    for result in failed:
        _say(f"FAILED: {result.group} / {result.client}: {result.error}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.run`` (``bash benchmarks/run.sh``)."""
    parser = suite_options(
        "bash benchmarks/run.sh", __doc__, runs=3, reference_help="skip dicomtrolley 4.1.0 and dicomweb-client "
        "(no environment to install)", output_help="Markdown file to write the table into "
        "(default docs/performance.md; none with --quick)",
    )
    parser.add_argument("--only", action="append", default=[], help="run only groups whose name contains this")
    args = parser.parse_args(argv)
    output = args.output or (None if args.quick else DOCS)
    return run_suite(args, lambda server, work, sizes, runs: benchmark(
        server, work=work, sizes=sizes, runs=runs, reference=args.reference, output=output, only=args.only
    ))


if __name__ == "__main__":
    sys.exit(main())
