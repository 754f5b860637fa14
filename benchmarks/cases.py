"""What is measured: every client on every task, with the command that runs it and the check of its output.

Each :class:`Case` is one row of the table. Its command runs in a fresh
process per run (see :mod:`benchmarks.measure`); its check runs after every
run, so a fast client that skipped work cannot win.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import verify
from benchmarks.clientlib import file_chunks
from benchmarks.data import QIDO_PATIENT_ID, Body, Collection
from benchmarks.measure import Sample

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TRASH = ".trash"
"""Where :meth:`Case.clean` moves run outputs, beside them."""
CLIENT_CURRENT = HERE / "client_current.py"
CLIENT_REFERENCE = HERE / "client_reference.py"
CLIENT_PYNETDICOM = HERE / "client_pynetdicom.py"
WADO_RS_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'

WADO_RS = "WADO-RS study to disk"
WADO_URI = "WADO-URI study to disk, 8 connections"
BIG = "One large instance over WADO-RS"
TREE = "QIDO-RS answer into the study tree"
MULTIPART = "Multipart parser alone"
CGET = "C-GET study to disk"
PSEUDONYMISED = "this package: download(..., deidentify=Deidentifier(...)), pseudonymised on the way"


@dataclass
class Context:
    """Where the server answers, what it holds, and which programs to run."""

    work: Path
    dicomweb_url: str
    wado_url: str
    ct: Collection
    big: Collection
    tree: Collection
    qido_answer: Path
    """The saved instance-level QIDO-RS answer for the search tree's patient."""
    bodies: Sequence[Body]
    python: str
    """The interpreter for this package's client."""
    reference_python: str | None
    """The interpreter of the reference environment; None skips those clients."""
    dicom_host: str
    dicom_port: int
    dicom_aet: str
    """Where the server's DIMSE service listens, and its AE title."""


Verifier = Callable[[Path, Sample], str]


@dataclass
class Case:
    """One client doing one task: a row of the table."""

    group: str
    client: str
    role: str
    """``current``, ``reference`` (dicomtrolley 4.1.0), ``curl``, ``pynetdicom``, ``getscu`` or ``other``."""
    argv: list[str]
    payload_bytes: int
    verify: Verifier
    env: dict[str, str] = field(default_factory=dict)
    reports_json: bool = True
    headline: bool = False
    out: Path = Path()
    """Where the client writes; emptied before every run."""
    kind: str = ""
    """Rows of one group with the same kind are compared with each other (ratios)."""
    max_runs: int | None = None
    """Fewer runs for a row that takes many seconds each and is not what a target is judged on."""
    reads: Path | None = None
    """A file the client reads; read once before each run so that it comes from memory, not disk."""

    def prepare(self) -> None:
        """Start a run with an empty output folder and its input in the page cache."""
        self.clean()
        self.out.mkdir(parents=True)
        if self.reads is not None:
            for _ in file_chunks(self.reads):
                pass

    def clean(self) -> None:
        """Move a run's output aside, written to disk and out of memory; :func:`empty_trash` deletes it at the end.

        Each run should find the machine as the first run did. Deleting the
        output would not do: the disk here is ext4 without a journal, which
        skips inodes freed in the last minutes when it creates files, so right
        after 500 deletions, creating 500 files costs several times the CPU
        (curl, which writes one file, would not notice). Keeping the output
        as it is would not do either: its pages would wait to be written back
        while the next run writes, and then fill the memory, so that later runs
        pay for reclaiming them. So the output is written back (``sync``) and
        its pages dropped from the page cache.
        """
        if not self.out.exists():
            return
        trash = self.out.parent / TRASH
        trash.mkdir(exist_ok=True)
        kept = trash / f"{self.out.name}-{time.time_ns()}"
        self.out.rename(kept)
        os.sync()
        for path in kept.rglob("*"):
            if path.is_file():
                with path.open("rb") as file:
                    os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def empty_trash(work: Path) -> None:
    """Delete the outputs that runs left in the trash."""
    shutil.rmtree(work / "out" / TRASH, ignore_errors=True)


def _env(*, current: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    if current:
        env["PYTHONPATH"] = str(REPO)
    return env


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _curl_uri_config(ctx: Context, out: Path) -> Path:
    """A curl config file: one WADO-URI url and output per instance."""
    lines = []
    for item in ctx.ct.items:
        url = (
            f"{ctx.wado_url}?requestType=WADO&studyUID={item.study_uid}&seriesUID={item.series_uid}"
            f"&objectUID={item.sop_uid}&contentType=application/dicom"
        )
        lines.append(f'url = "{url}"\noutput = "{out / (item.sop_uid + ".dcm")}"\n')
    path = ctx.work / "curl-wado-uri.config"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _instance_list(ctx: Context) -> Path:
    path = ctx.work / "ct-instances.json"
    path.write_text(json.dumps([[i.study_uid, i.series_uid, i.sop_uid] for i in ctx.ct.items]), encoding="utf-8")
    return path


def _connections(sample: Sample) -> int:
    """New connections curl opened, from its ``%{num_connects}`` write-out lines."""
    return sum(int(line) for line in sample.stdout.split() if line.isdigit())


def all_cases(ctx: Context) -> list[Case]:
    """Every row of the benchmark, in table order."""
    cases: list[Case] = []
    with_ref = ctx.reference_python is not None

    def add(
        group: str, client: str, role: str, argv: Callable[[Path], list[str]], size: int, check: Verifier,
        *, headline: bool = False, reports_json: bool = True, kind: str = "", max_runs: int | None = None,
        reads: Path | None = None, extra_env: dict[str, str] | None = None,
    ) -> None:
        out = ctx.work / "out" / _slug(f"{group}-{client}")
        command = argv(out)
        env = {**_env(current=command[0] == ctx.python), **(extra_env or {})}
        cases.append(
            Case(group, client, role, command, size, check, env, reports_json, headline, out, kind, max_runs, reads)
        )

    def ours(*args: str) -> list[str]:
        return [ctx.python, str(CLIENT_CURRENT), *args]

    def theirs(*args: str) -> list[str]:
        assert ctx.reference_python is not None
        return [ctx.reference_python, str(CLIENT_REFERENCE), *args]

    study = ctx.ct.study_uids[0]
    web = ("--dicomweb", ctx.dicomweb_url)
    uri = (*web, "--wado", ctx.wado_url)

    def curl_rs(group: str, uid: str, expected: Collection) -> None:
        add(group, "curl, one WADO-RS request, raw body to disk", "curl", lambda out: [
            "curl", "--silent", "--show-error", "--fail", "--header", f"Accept: {WADO_RS_ACCEPT}",
            "--header", "Accept-Encoding: identity", "--dump-header", str(out / "headers.txt"),
            "--output", str(out / "body.multipart"), f"{ctx.dicomweb_url}/studies/{uid}",
        ], expected.total_bytes, _curl_body(expected), reports_json=False)

    def to_disk(
        group: str, client: str, role: str, command: str, *args: str, expected: Collection = ctx.ct,
        headline: bool = False,
    ) -> None:
        """A Python client's ``command`` downloading the study of ``expected`` into the case's folder.

        This package's files must be byte-equal to the originals; the others' (which re-encode) the same instances.
        """
        run = ours if role == "current" else theirs
        uid = expected.study_uids[0]
        add(group, client, role, lambda out: run(command, *args, "--study", uid, "--out", str(out)),
            expected.total_bytes, _downloaded(expected, exact=role == "current"), headline=headline)

    # -- WADO-RS: the CT study
    group, size = WADO_RS, ctx.ct.total_bytes
    to_disk(group, "this package: Trolley(QidoRS, WadoRS).download", "current", "wado-rs", *web, headline=True)
    add(group, PSEUDONYMISED, "current",
        lambda out: ours("wado-rs", *web, "--study", study, "--out", str(out), "--deidentify"),
        size, _pseudonymised(ctx.ct))
    to_disk(group, "this package: Trolley(downloader=WadoRS), no search", "current", "wado-rs", *web, "--no-search")
    if with_ref:
        to_disk(group, "dicomtrolley 4.1.0: Trolley(WadoRS, QidoRS).download", "reference", "wado-rs", *web)
        to_disk(group, "dicomweb-client: iter_study + save_as", "other", "dicomweb-client", *web)
    curl_rs(group, study, ctx.ct)

    # -- WADO-URI: the same study, one request per instance, 8 at a time
    group = WADO_URI
    to_disk(group, "this package: Trolley(QidoRS, WadoURI(workers=8)).download", "current", "wado-uri", *uri,
            headline=True)
    to_disk(group, "this package: WadoURI(workers=8), instance list given", "current", "wado-uri", *uri,
            "--instances", str(_instance_list(ctx)))
    if with_ref:
        to_disk(group, "dicomtrolley 4.1.0: Trolley(WadoURI, QidoRS).download (sequential, `/` shim)", "reference",
                "wado-uri", *uri)
        to_disk(group, "dicomtrolley 4.1.0: WadoURI(use_async=True, max_workers=8, `/` shim)", "reference",
                "wado-uri", *uri, "--workers", "8")
    add(group, "curl --parallel --parallel-max 8 (keep-alive)", "curl", lambda out: [
        "curl", "--silent", "--show-error", "--fail", "--parallel", "--parallel-max", "8",
        "--header", "Accept-Encoding: identity", "--write-out", "%{num_connects}\\n",
        "--config", str(_curl_uri_config(ctx, out)),
    ], size, _curl_uri_check(ctx.ct), reports_json=False)

    # -- C-GET: the same study over DIMSE
    group = CGET
    dimse = ("--host", ctx.dicom_host, "--port", str(ctx.dicom_port), "--aec", ctx.dicom_aet)
    add(group, "this package: Trolley(QidoRS, DICOMCGet).download", "current",
        lambda out: ours("c-get", *web, *dimse, "--study", study, "--out", str(out)),
        size, _received(ctx.ct), headline=True)
    add(group, "this package: Trolley(downloader=DICOMCGet), no search", "current",
        lambda out: ours("c-get", *dimse, "--study", study, "--out", str(out)),
        size, _received(ctx.ct))
    add(group, "pynetdicom: send_c_get, encoded_dataset() to a file", "pynetdicom",
        lambda out: [ctx.python, str(CLIENT_PYNETDICOM), *dimse, "--study", study, "--out", str(out)],
        size, _received(ctx.ct))
    add(group, "dcmtk getscu", "getscu", lambda out: [
        "getscu", "-aet", "GETSCU", "-aec", ctx.dicom_aet, "-S", "-k", "QueryRetrieveLevel=STUDY",
        "-k", f"StudyInstanceUID={study}", "--output-directory", str(out), ctx.dicom_host, str(ctx.dicom_port),
    ], size, _received(ctx.ct), reports_json=False, extra_env={"TCP_NODELAY": "1"})

    # -- one large instance
    group = BIG
    to_disk(group, "this package: Trolley(QidoRS, WadoRS).download", "current", "wado-rs", *web, expected=ctx.big,
            headline=True)
    if with_ref:
        to_disk(group, "dicomtrolley 4.1.0: Trolley(WadoRS, QidoRS).download", "reference", "wado-rs", *web,
                expected=ctx.big)
    curl_rs(group, ctx.big.study_uids[0], ctx.big)

    # -- the search tree
    group, size = TREE, ctx.qido_answer.stat().st_size
    counted = _counted(len(ctx.tree.items))
    saved = ("--json", str(ctx.qido_answer))
    search = (*web, "--patient", QIDO_PATIENT_ID)
    canned = (*search, "--canned", str(ctx.qido_answer))
    add(group, "this package: tree_from_json (decoded JSON in)", "current",
        lambda _: ours("tree", *saved), size, counted, headline=True, kind="parse")
    if with_ref:
        add(group, "dicomtrolley 4.1.0: QidoRS.parse_qido_response (decoded JSON in)", "reference",
            lambda _: theirs("tree", *saved), size, counted, kind="parse")
    add(group, "this package: QidoRS.find_studies on the saved answer", "current",
        lambda _: ours("qido", *canned), size, counted, kind="saved")
    add(group, "this package: same, and every instance's .data built", "current",
        lambda _: ours("qido", *canned, "--materialize"), size, counted, kind="saved", max_runs=1)
    if with_ref:
        add(group, "dicomtrolley 4.1.0: QidoRS.find_studies on the saved answer", "reference",
            lambda _: theirs("qido", *canned), size, counted, kind="saved", max_runs=1)
    add(group, "this package: QidoRS.find_studies, live from Orthanc", "current",
        lambda _: ours("qido", *search), size, counted, kind="live", max_runs=1)
    if with_ref:
        add(group, "dicomtrolley 4.1.0: QidoRS.find_studies, live from Orthanc", "reference",
            lambda _: theirs("qido", *search), size, counted, kind="live", max_runs=1)

    # -- the multipart parser alone
    group = MULTIPART
    largest = _largest(ctx.bodies)
    for body in ctx.bodies:
        framing = "Content-Length per part" if body.sized else "no Content-Length (scanned)"
        add(group, f"this package: iter_parts, {body.size / 2**20:.0f} MiB, {framing}", "current",
            lambda _, body=body: ours("multipart", "--body", str(body.path), "--boundary", body.boundary),
            body.size, _parsed(body), headline=body is largest, reads=body.path)
    smallest = min((b for b in ctx.bodies if b.sized), key=lambda b: b.size)
    add(group, f"requests-toolbelt MultipartDecoder, {smallest.size / 2**20:.0f} MiB, body in memory", "other",
        lambda _: ours("toolbelt", "--body", str(smallest.path), "--content-type", smallest.content_type),
        smallest.size, _parsed(smallest), reads=smallest.path)
    return cases


def _downloaded(expected: Collection, *, exact: bool) -> Verifier:
    def check(out: Path, sample: Sample) -> str:
        if "ok" in sample.output:  # this package's summary
            verify.reported(sample.output, count=len(expected.items), size=expected.total_bytes)
        return (verify.files_byte_equal if exact else verify.files_same_instances)(out, expected)

    return check


def _pseudonymised(expected: Collection) -> Verifier:
    def check(out: Path, sample: Sample) -> str:
        verify.reported(sample.output, count=len(expected.items))
        return verify.files_pseudonymised(out, expected)

    return check


def _received(expected: Collection) -> Verifier:
    """A DIMSE client's check: its own count (when it reports one) and every dataset, byte for byte."""

    def check(out: Path, sample: Sample) -> str:
        if "count" in sample.output:
            verify.reported(sample.output, count=len(expected.items))
        return verify.files_dataset_byte_equal(out, expected)

    return check


def _curl_body(expected: Collection) -> Verifier:
    def check(out: Path, _sample: Sample) -> str:
        boundary = verify.boundary_from_headers(out / "headers.txt")
        return verify.multipart_body_byte_equal(out / "body.multipart", boundary, expected)

    return check


def _counted(count: int) -> Verifier:
    def check(_out: Path, sample: Sample) -> str:
        return verify.reported(sample.output, count=count)

    return check


def _largest(bodies: Sequence[Body]) -> Body:
    return max((b for b in bodies if b.sized), key=lambda b: b.size)


def _parsed(body: Body) -> Verifier:
    def check(_out: Path, sample: Sample) -> str:
        return verify.reported(sample.output, count=body.parts, size=body.part_bytes)

    return check


def _curl_uri_check(expected: Collection) -> Verifier:
    def check(out: Path, sample: Sample) -> str:
        text = verify.files_byte_equal(out, expected)
        return f"{text}; {_connections(sample)} connections"

    return check
