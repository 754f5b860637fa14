"""Vitrea's protocols measured: a study over RAD-69 to disk, and a MINT answer into the study tree.

    python -m benchmarks.vitrea                      # 5 runs per client, dicomtrolley 4.1.0 included
    python -m benchmarks.vitrea --quick --no-reference

No public Vitrea server can be installed, so both go through the Vitrea-like
server of the test suite (:mod:`tests.support.vitrea_server`) in this process,
in front of the benchmark's Orthanc: the login gateway, then MINT answered from
Orthanc's QIDO-RS and RAD-69 from Orthanc's stored files (read once, before
the clock starts, so the server is as fast for every client). Every client
goes through the same gateway: this package, dicomtrolley 4.1.0, and curl
posting the very SOAP requests this package sends. The data, the Orthanc and
the way each run is measured and checked are the main benchmark's
(:mod:`benchmarks.run`); the tables use its format.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import requests

from benchmarks import data, report
from benchmarks.cases import CLIENT_CURRENT, CLIENT_REFERENCE, Case, Verifier, _env, _slug, empty_trash
from benchmarks.clientlib import file_chunks
from benchmarks.measure import Result, Sample
from benchmarks.reference_env import ensure_reference_env
from benchmarks.run import load, run_case, run_suite, save_qido_answer, suite_options, versions
from benchmarks.verify import VerificationError, files_byte_equal, files_same_instances, reported
from dicomtrolley._header import read_header
from dicomtrolley._multipart import iter_parts
from dicomtrolley.core import InstanceReference
from dicomtrolley.rad69 import ACTION, Rad69
from tests.support.orthanc import OrthancServer
from tests.support.vitrea_gateway import SESSION_COOKIE
from tests.support.vitrea_server import VitreaServer, mint_answer

RAD69 = "RAD-69 study to disk, through the Vitrea-like server"
MINT = "MINT answer into the study tree"
PASSWORD_VARIABLE = "VITREA_PASSWORD"  # noqa: S105 - the name of the variable the clients read

TARGETS = (
    ("RAD-69 study: throughput vs curl posting the same SOAP requests", RAD69, "list", "curl", 0.8),
    ("RAD-69 study: throughput vs dicomtrolley 4.1.0's Rad69 (its faster mode)", RAD69, "list", "reference", 3.0),
)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def save_mint_answer(qido_answer: Path, path: Path) -> Path:
    """The MINT answer the Vitrea-like server gives for the saved instance-level QIDO-RS answer (made once)."""
    if not path.exists() or path.stat().st_mtime < qido_answer.stat().st_mtime:
        rows = json.loads(qido_answer.read_bytes())
        path.write_bytes(mint_answer(rows, "INSTANCE", {}))
    return path


def _soap_requests(ct: data.Collection, rad69_url: str, work: Path) -> list[Path]:
    """The SOAP requests this package sends for the study (one per series), as files for curl to post."""
    downloader = Rad69(requests.Session(), rad69_url)
    per_series: dict[str, list[InstanceReference]] = {}
    for item in ct.items:
        per_series.setdefault(item.series_uid, []).append(
            InstanceReference(item.study_uid, item.series_uid, item.sop_uid)
        )
    paths = []
    for number, instances in enumerate(per_series.values(), start=1):
        path = work / f"rad69-request-{number}.xml"
        path.write_bytes(downloader.request_body(instances))
        paths.append(path)
    return paths


def _curl_config(soap: Sequence[Path], rad69_url: str, cookie: str, out: Path, work: Path) -> Path:
    """One transfer per SOAP request, each with every option it needs (``next`` resets them).

    ``Expect:`` is sent empty: otherwise curl waits for a ``100 Continue`` before each body.
    """
    blocks = []
    for number, body in enumerate(soap, start=1):
        blocks.append(
            f'url = "{rad69_url}"\ndata-binary = "@{body}"\nfail\n'
            f'cookie = "{SESSION_COOKIE}={cookie}"\nheader = "Expect:"\n'
            f'header = "Content-Type: application/soap+xml; charset=utf-8; action=\\"{ACTION}\\""\n'
            f'output = "{out / f"answer-{number}.mtom"}"\n'
        )
    path = work / "curl-rad69.config"
    path.write_text("next\n".join(blocks), encoding="utf-8")
    return path


def mtom_bodies_byte_equal(out: Path, expected: data.Collection) -> str:
    """Every instance of ``expected`` is a part of one of the MTOM answers curl saved, byte for byte."""
    originals = expected.by_sop()
    seen: set[str] = set()
    for body in sorted(out.glob("answer-*.mtom")):
        with body.open("rb") as file:
            first = file.read(200)
        boundary = first.split(b"\r\n", 1)[0].removeprefix(b"--").decode()
        for part in iter_parts(file_chunks(body), boundary):
            with part.body:
                if part.content_type.startswith("application/xop+xml"):
                    continue
                sop = str(read_header(part.body, ["SOPInstanceUID"]).get("SOPInstanceUID"))
                item = originals.get(sop)
                part.body.seek(0)
                if item is None or sop in seen or part.body.read() != item.path.read_bytes():
                    raise VerificationError(f"a part of {body} ({sop}) is not an uploaded instance, or twice")
                seen.add(sop)
    if seen != set(originals):
        raise VerificationError(f"the answers hold {len(seen)} of the {len(originals)} instances")
    return f"{len(seen)} parts, byte-equal"


def _downloaded(expected: data.Collection, *, exact: bool) -> Verifier:
    def check(out: Path, sample: Sample) -> str:
        if "ok" in sample.output:
            reported(sample.output, count=len(expected.items), size=expected.total_bytes)
        return (files_byte_equal if exact else files_same_instances)(out, expected)

    return check


def _counted(count: int) -> Verifier:
    return lambda _out, sample: reported(sample.output, count=count)


def vitrea_cases(
    vitrea: VitreaServer, ct: data.Collection, tree: data.Collection, mint_xml: Path, work: Path,
    reference_python: str | None, cookie: str,
) -> list[Case]:
    """Every row of the two tables."""
    cases: list[Case] = []
    study = ct.study_uids[0]
    instances = work / "ct-instances.json"
    instances.write_text(json.dumps([[i.study_uid, i.series_uid, i.sop_uid] for i in ct.items]), encoding="utf-8")
    login = ("--login", vitrea.login_url, "--user", vitrea.user, "--mint", vitrea.mint_url,
             "--rad69", vitrea.rad69_url, "--study", study)
    password = {PASSWORD_VARIABLE: vitrea.password}

    def add(group: str, client: str, role: str, argv: list[str] | None, size: int, check: Verifier, *,
            kind: str, headline: bool = False, reports_json: bool = True, max_runs: int | None = None,
            out_argv: bool = True) -> None:
        out = work / "out" / _slug(f"{group}-{client}")
        command = (argv or []) + (["--out", str(out)] if out_argv else [])
        if role == "curl":
            command = ["curl", "--silent", "--show-error", "--parallel", "--parallel-max", "4",
                       "--config", str(_curl_config(soap, vitrea.rad69_url, cookie, out, work))]
        env = {**_env(current=role == "current"), **password}
        cases.append(Case(group, client, role, command, size, check, env, reports_json, headline, out, kind,
                          max_runs))

    ours = [sys.executable, str(CLIENT_CURRENT)]
    theirs = [reference_python or "", str(CLIENT_REFERENCE)]
    soap = _soap_requests(ct, vitrea.rad69_url, work)
    size = ct.total_bytes
    add(RAD69, "this package: Trolley(Mint, Rad69).download", "current", [*ours, "rad69", *login],
        size, _downloaded(ct, exact=True), kind="search", headline=True)
    add(RAD69, "this package: Rad69, one request per series, instance list given", "current",
        [*ours, "rad69", *login, "--instances", str(instances)], size, _downloaded(ct, exact=True), kind="list")
    add(RAD69, "this package: Rad69, one request per study, instance list given", "current",
        [*ours, "rad69", *login, "--per-study", "--instances", str(instances)], size,
        _downloaded(ct, exact=True), kind="list")
    add(RAD69, "curl --parallel-max 4, the same SOAP requests, answers to disk", "curl", None, size,
        lambda out, _: mtom_bodies_byte_equal(out, ct), kind="list", reports_json=False, out_argv=False)
    if reference_python:
        add(RAD69, "dicomtrolley 4.1.0: Trolley(Rad69, Mint).download", "reference", [*theirs, "rad69", *login],
            size, _downloaded(ct, exact=False), kind="search", max_runs=2)
        add(RAD69, "dicomtrolley 4.1.0: Rad69.datasets + StorageDir.save, instance list given", "reference",
            [*theirs, "rad69", *login, "--instances", str(instances)], size, _downloaded(ct, exact=False),
            kind="list", max_runs=2)
        add(RAD69, "dicomtrolley 4.1.0: same, use_async=True, max_workers=4", "reference",
            [*theirs, "rad69", *login, "--workers", "4", "--instances", str(instances)], size,
            _downloaded(ct, exact=False), kind="list", max_runs=2)

    search = ("mint", "--mint", vitrea.mint_url, "--patient", data.QIDO_PATIENT_ID, "--canned", str(mint_xml))
    counted = _counted(len(tree.items))
    add(MINT, "this package: Mint.find_studies on the saved answer", "current", [*ours, *search],
        mint_xml.stat().st_size, counted, kind="saved", headline=True, out_argv=False)
    if reference_python:
        add(MINT, "dicomtrolley 4.1.0: Mint.find_studies on the saved answer", "reference", [*theirs, *search],
            mint_xml.stat().st_size, counted, kind="saved", max_runs=2, out_argv=False)
    return cases


def render(results: Sequence[Result], runs: int, descriptions: dict[str, str], found: dict[str, str]) -> str:
    """The tables as Markdown, with the targets of the Vitrea issue judged."""
    host = report.machine()
    out = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: up to {runs} runs per client, "
        f"each a fresh process; {host['cores']} cores, {host['memory']}, {host['cpu']}.",
        "",
        "- **Versions:** " + "; ".join(f"{name} {value}" for name, value in found.items()),
        "",
        "| target | limit | measured | met |",
        "|---|---:|---:|:-:|",
    ]
    for text, group, kind, role, limit in TARGETS:
        head = next((r for r in results if r.group == group and r.kind == kind and r.role == "current"
                     and r.samples and not r.error), None)
        value = report.ratio(results, head, role) if head is not None else None
        measured = "not measured" if value is None else f"{value:.2f}x"
        met = "n/a" if value is None else ("✅" if value >= limit else "❌")
        out.append(f"| {text} | {limit:.2f}x | {measured} | {met} |")
    rss = max((r.peak_rss.high for r in results if r.group == RAD69 and r.role == "current" and r.samples),
              default=None)
    out.append(f"| RAD-69 study: peak memory | 100 MB | {'not measured' if rss is None else f'{rss / 1e6:.0f} MB'}"
               f" | {'n/a' if rss is None else ('✅' if rss <= report.MEMORY_LIMIT else '❌')} |")
    mint_head = next((r for r in results if r.group == MINT and r.headline and r.samples), None)
    wall = mint_head.wall.median if mint_head is not None else None
    out.append(f"| MINT answer into the tree: time (median) | 1.000 s | "
               f"{'not measured' if wall is None else f'{wall:.3f} s'} | "
               f"{'n/a' if wall is None else ('✅' if wall <= 1.0 else '❌')} |")
    for group, description in descriptions.items():
        out += ["", f"### {group}", "", description, "", *report.table(results, group)]
    return "\n".join(out) + "\n"


def benchmark(server: OrthancServer, *, work: Path, sizes: data.Sizes, runs: int, reference: bool) -> tuple[
    list[Result], str
]:
    """Run every Vitrea case against ``server`` (loaded here if need be); return the results and their tables."""
    work.mkdir(parents=True, exist_ok=True)
    data_dir = work / "data"
    ct = data.ct_study(data_dir, sizes)
    tree = data.search_tree(data_dir, sizes)
    load(server, (ct, tree))
    qido = save_qido_answer(server, tree, server.workdir / f"qido-answer-{tree.name}.json")
    mint_xml = save_mint_answer(qido, server.workdir / f"mint-answer-{tree.name}.xml")
    reference_python = str(ensure_reference_env()) if reference else None
    results: list[Result] = []
    with VitreaServer(server.base_url, upstream_auth=server.auth) as vitrea:
        for item in ct.items:  # every client meets a server that has read the files already
            vitrea.stored_file(item.sop_uid)
        with requests.Session() as session:
            login = session.post(vitrea.login_url, headers={
                "X-Userid": vitrea.user, "X-Password": vitrea.password, "X-Realm": "DefaultSystemRealm",
            }, timeout=30)
            login.raise_for_status()
            cookie = login.cookies[SESSION_COOKIE]
        scratch = work / "vitrea"
        scratch.mkdir(exist_ok=True)
        cases = vitrea_cases(vitrea, ct, tree, mint_xml, scratch, reference_python, cookie)
        try:
            for group in dict.fromkeys(c.group for c in cases):
                _say(f"== {group}")
                results += [run_case(case, runs, work) for case in cases if case.group == group]
        finally:
            empty_trash(scratch)  # the runs' outputs, kept until now (see Case.clean)
    descriptions = {
        RAD69: (
            f"The CT study of the main benchmark ({len(ct.items)} instances in {len({i.series_uid for i in ct.items})} "
            f"series, {ct.total_bytes / 1e6:.1f} MB) over RAD-69 through the Vitrea-like login gateway, written to "
            "disk. *search* rows search with MINT first (instance level, as RAD-69 needs the instances); *list* "
            "rows are given the instance UIDs, and curl is given the SOAP requests this package sends (one per "
            "series, four at a time, on a session cookie obtained before the clock starts) and saves the MTOM "
            "answers. MB/s = instance bytes / wall time. 4.1.0 parses and re-encodes every instance."
        ),
        MINT: (
            f"The instance-level MINT answer for {len(tree.items)} instances of one patient "
            f"({mint_xml.stat().st_size / 1e6:.1f} MB of XML, made by the Vitrea-like server from Orthanc's "
            "QIDO-RS answer), given to each client's `Mint.find_studies` in place of the network: parsing and "
            "the study tree. MB/s = XML bytes / wall time."
        ),
    }
    found = versions(server, Path(reference_python) if reference_python else None, work)
    return results, render(results, runs, descriptions, found)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.vitrea``."""
    parser = suite_options("python -m benchmarks.vitrea", __doc__, runs=5, reference_help="skip dicomtrolley 4.1.0",
                           output_help="also write the tables to this Markdown file")
    args = parser.parse_args(argv)

    def suite(server: OrthancServer, work: Path, sizes: data.Sizes, runs: int) -> list[Result]:
        results, tables = benchmark(server, work=work, sizes=sizes, runs=runs, reference=args.reference)
        print(tables)
        if args.output is not None:
            args.output.write_text(tables, encoding="utf-8")
        return results

    return run_suite(args, suite)


if __name__ == "__main__":
    sys.exit(main())
