"""This package's side of the benchmark: one task per run, timed, reported as JSON.

Run by :mod:`benchmarks.run` in a fresh process per run::

    python benchmarks/client_current.py wado-rs --dicomweb URL --study UID --out DIR [--no-search]
    python benchmarks/client_current.py c-get --host H --port P --aec AE --study UID --out DIR [--dicomweb URL]

Each subcommand does what a user of the package would write, and nothing else.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import requests
from clientlib import CannedAnswer, file_chunks, load_json, mint_arguments, rad69_arguments, report

from dicomtrolley._multipart import iter_parts
from dicomtrolley._tree import tree_from_json
from dicomtrolley.auth import create_session
from dicomtrolley.core import InstanceReference, Query, QueryLevels, Study
from dicomtrolley.deidentify import Deidentifier
from dicomtrolley.dimse_retrieve import DICOMCGet
from dicomtrolley.mint import Mint
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.rad69 import Rad69
from dicomtrolley.trolley import DownloadSummary, Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI


def _written(summary: DownloadSummary) -> dict[str, Any]:
    return {"count": summary.written, "bytes": summary.bytes_written, "ok": summary.ok}


def _instances(studies: list[Study]) -> dict[str, Any]:
    return {"count": sum(len(study.all_instances()) for study in studies), "studies": len(studies)}


BENCHMARK_KEY = "benchmark key, not a secret: 32 b"
"""The pseudonymisation key of ``--deidentify`` runs (a real one comes from $DICOMTROLLEY_DEID_KEY)."""


def wado_rs(args: argparse.Namespace) -> None:
    """A study to disk over WADO-RS: ``Trolley(QidoRS, WadoRS).download(uid, dir)``.

    With ``--deidentify`` every instance is pseudonymised on the way to disk
    (``download(..., deidentify=Deidentifier(...))``, default options).
    """
    session = requests.Session()
    searcher = QidoRS(session, args.dicomweb) if args.search else None
    trolley = Trolley(searcher, WadoRS(session, args.dicomweb))
    deidentifier = Deidentifier(key=BENCHMARK_KEY) if args.deidentify else None
    report(lambda: trolley.download(args.study, args.out, progress=False, deidentify=deidentifier), _written)


def wado_uri(args: argparse.Namespace) -> None:
    """A study to disk over WADO-URI with ``--workers`` requests in flight.

    With a searcher (the user path) the trolley first asks QIDO-RS which
    instances the study holds; with ``--instances FILE`` the references are
    given, as curl is given its URL list.
    """
    session = requests.Session()
    downloader = WadoURI(session, args.wado, workers=args.workers)
    if args.instances:
        targets: Any = [InstanceReference(*row) for row in load_json(args.instances)]
        trolley = Trolley(downloader=downloader)
    else:
        targets = args.study
        trolley = Trolley(QidoRS(session, args.dicomweb), downloader)
    report(lambda: trolley.download(targets, args.out, progress=False), _written)


def c_get(args: argparse.Namespace) -> None:
    """A study to disk over C-GET: ``Trolley(QidoRS, DICOMCGet).download(uid, dir)``.

    Without ``--dicomweb`` there is no searcher: ``Trolley(downloader=DICOMCGet(...))``
    retrieves the study by its UID alone.
    """
    searcher = QidoRS(requests.Session(), args.dicomweb) if args.dicomweb else None
    trolley = Trolley(searcher, DICOMCGet(args.host, args.port, args.aet, args.aec))
    report(lambda: trolley.download(args.study, args.out, progress=False), _written)


def tree(args: argparse.Namespace) -> None:
    """``tree_from_json`` on the decoded answer: the parse step alone, as QidoRS calls it."""
    rows = load_json(args.json)
    report(lambda: tree_from_json(rows, QueryLevels.INSTANCE, source=args.json), _instances)


def qido(args: argparse.Namespace) -> None:
    """An instance-level ``find_studies`` for one patient, live or on the saved answer.

    With ``--materialize`` every instance's ``data`` (a pydicom Dataset, built
    lazily by this package) is built too, inside the timing.
    """
    session = requests.Session()
    if args.canned:
        session.mount(args.dicomweb, CannedAnswer(Path(args.canned).read_bytes()))
    searcher = QidoRS(session, args.dicomweb)
    query = Query(PatientID=args.patient, query_level=QueryLevels.INSTANCE)

    def work() -> list[Study]:
        studies = searcher.find_studies(query)
        if args.materialize:
            for study in studies:
                for instance in study.all_instances():
                    _ = instance.data
        return studies

    report(work, _instances)


def rad69(args: argparse.Namespace) -> None:
    """A study to disk over RAD-69 behind the Vitrea login: ``Trolley(Mint, Rad69).download(uid, dir)``.

    With ``--instances FILE`` the references are given and no search is made,
    as curl is given its SOAP requests. The password comes from ``$VITREA_PASSWORD``.
    """
    session = create_session(args.login, args.user, os.environ["VITREA_PASSWORD"])
    downloader = Rad69(session, args.rad69, request_per_series=not args.per_study, workers=args.workers)
    if args.instances:
        targets: Any = [InstanceReference(*row) for row in load_json(args.instances)]
        trolley = Trolley(downloader=downloader)
    else:
        targets = args.study
        trolley = Trolley(Mint(session, args.mint), downloader)
    report(lambda: trolley.download(targets, args.out, progress=False), _written)


def mint(args: argparse.Namespace) -> None:
    """An instance-level MINT ``find_studies`` for one patient on the saved answer (XML parsing included)."""
    session = requests.Session()
    session.mount(args.mint, CannedAnswer(Path(args.canned).read_bytes()))
    searcher = Mint(session, args.mint)
    query = Query(PatientID=args.patient, query_level=QueryLevels.INSTANCE)
    report(lambda: searcher.find_studies(query), _instances)


def multipart(args: argparse.Namespace) -> None:
    """The streaming multipart parser alone, fed 1 MB chunks of a body on disk."""

    def work() -> tuple[int, int]:
        count = size = 0
        for part in iter_parts(file_chunks(args.body), args.boundary):
            count += 1
            size += part.size
            part.close()
        return count, size

    report(work, lambda result: {"count": result[0], "bytes": result[1]})


def toolbelt(args: argparse.Namespace) -> None:
    """requests-toolbelt's MultipartDecoder on the same body, held in memory as it requires."""
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    body = Path(args.body).read_bytes()

    def work() -> tuple[int, int]:
        parts = MultipartDecoder(body, args.content_type).parts
        return len(parts), sum(len(part.content) for part in parts)

    report(work, lambda result: {"count": result[0], "bytes": result[1]})


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one task."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    command = commands.add_parser("wado-rs")
    command.add_argument("--dicomweb", required=True)
    command.add_argument("--study", required=True)
    command.add_argument("--out", required=True)
    command.add_argument("--no-search", dest="search", action="store_false")
    command.add_argument("--deidentify", action="store_true", help="pseudonymise on the way to disk")
    command.set_defaults(run=wado_rs)

    command = commands.add_parser("wado-uri")
    command.add_argument("--dicomweb", required=True)
    command.add_argument("--wado", required=True)
    command.add_argument("--study", required=True)
    command.add_argument("--out", required=True)
    command.add_argument("--workers", type=int, default=8)
    command.add_argument("--instances", help="JSON list of [study, series, instance] UIDs: skip the search")
    command.set_defaults(run=wado_uri)

    command = commands.add_parser("c-get")
    command.add_argument("--dicomweb", help="search with QIDO-RS here first (default: no searcher)")
    command.add_argument("--host", required=True)
    command.add_argument("--port", type=int, required=True)
    command.add_argument("--aet", default="DICOMTROLLEY")
    command.add_argument("--aec", required=True)
    command.add_argument("--study", required=True)
    command.add_argument("--out", required=True)
    command.set_defaults(run=c_get)

    command = commands.add_parser("tree")
    command.add_argument("--json", required=True)
    command.set_defaults(run=tree)

    command = commands.add_parser("qido")
    command.add_argument("--dicomweb", required=True)
    command.add_argument("--patient", required=True)
    command.add_argument("--canned", help="answer every request with this saved body instead of the server's")
    command.add_argument("--materialize", action="store_true", help="also build every instance's Dataset")
    command.set_defaults(run=qido)

    command = commands.add_parser("rad69")
    rad69_arguments(command)
    command.add_argument("--per-study", action="store_true", help="one request per study, not per series")
    command.add_argument("--workers", type=int, default=4, help="requests in flight at once")
    command.set_defaults(run=rad69)

    command = commands.add_parser("mint")
    mint_arguments(command)
    command.set_defaults(run=mint)

    command = commands.add_parser("multipart")
    command.add_argument("--body", required=True)
    command.add_argument("--boundary", required=True)
    command.set_defaults(run=multipart)

    command = commands.add_parser("toolbelt")
    command.add_argument("--body", required=True)
    command.add_argument("--content-type", required=True)
    command.set_defaults(run=toolbelt)

    args = parser.parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
