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
from clientlib import (
    Commands,
    canned_argument,
    canned_session,
    dimse_arguments,
    file_chunks,
    load_json,
    mint_arguments,
    rad69_arguments,
    report,
    study_counts,
)

from dicomtrolley._multipart import iter_parts
from dicomtrolley._tree import tree_from_json
from dicomtrolley.auth import create_session
from dicomtrolley.core import InstanceReference, Query, QueryLevels, Study
from dicomtrolley.deidentify import Deidentifier
from dicomtrolley.dimse_retrieve import DICOMCGet
from dicomtrolley.mint import Mint
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.rad69 import Rad69
from dicomtrolley.roles import Downloader, Searcher
from dicomtrolley.trolley import DownloadSummary, Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI


def _written(summary: DownloadSummary) -> dict[str, Any]:
    return {"count": summary.written, "bytes": summary.bytes_written, "ok": summary.ok}


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


def _download_searched_or_listed(args: argparse.Namespace, searcher: Searcher, downloader: Downloader) -> None:
    """``--study`` to disk as the searcher finds it, or the instances of ``--instances FILE`` without a search."""
    if args.instances:
        targets: Any = [InstanceReference(*row) for row in load_json(args.instances)]
        trolley = Trolley(downloader=downloader)
    else:
        targets = args.study
        trolley = Trolley(searcher, downloader)
    report(lambda: trolley.download(targets, args.out, progress=False), _written)


def wado_uri(args: argparse.Namespace) -> None:
    """A study to disk over WADO-URI with ``--workers`` requests in flight.

    With a searcher (the user path) the trolley first asks QIDO-RS which
    instances the study holds; with ``--instances FILE`` the references are
    given, as curl is given its URL list.
    """
    session = requests.Session()
    downloader = WadoURI(session, args.wado, workers=args.workers)
    _download_searched_or_listed(args, QidoRS(session, args.dicomweb), downloader)


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
    report(lambda: tree_from_json(rows, QueryLevels.INSTANCE, source=args.json), study_counts)


def qido(args: argparse.Namespace) -> None:
    """An instance-level ``find_studies`` for one patient, live or on the saved answer.

    With ``--materialize`` every instance's ``data`` (a pydicom Dataset, built
    lazily by this package) is built too, inside the timing.
    """
    searcher = QidoRS(canned_session(args.dicomweb, args.canned), args.dicomweb)
    query = Query(PatientID=args.patient, query_level=QueryLevels.INSTANCE)

    def work() -> list[Study]:
        studies = searcher.find_studies(query)
        if args.materialize:
            for study in studies:
                for instance in study.all_instances():
                    _ = instance.data
        return studies

    report(work, study_counts)


def rad69(args: argparse.Namespace) -> None:
    """A study to disk over RAD-69 behind the Vitrea login: ``Trolley(Mint, Rad69).download(uid, dir)``.

    With ``--instances FILE`` the references are given and no search is made,
    as curl is given its SOAP requests. The password comes from ``$VITREA_PASSWORD``.
    """
    session = create_session(args.login, args.user, os.environ["VITREA_PASSWORD"])
    downloader = Rad69(session, args.rad69, request_per_series=not args.per_study, workers=args.workers)
    _download_searched_or_listed(args, Mint(session, args.mint), downloader)


def mint(args: argparse.Namespace) -> None:
    """An instance-level MINT ``find_studies`` for one patient on the saved answer (XML parsing included)."""
    searcher = Mint(canned_session(args.mint, args.canned), args.mint)
    query = Query(PatientID=args.patient, query_level=QueryLevels.INSTANCE)
    report(lambda: searcher.find_studies(query), study_counts)


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
    commands = Commands(__doc__)

    command = commands.add("wado-rs", wado_rs, "--dicomweb", "--study", "--out")
    command.add_argument("--no-search", dest="search", action="store_false")
    command.add_argument("--deidentify", action="store_true", help="pseudonymise on the way to disk")

    command = commands.add("wado-uri", wado_uri, "--dicomweb", "--wado", "--study", "--out")
    command.add_argument("--workers", type=int, default=8)
    command.add_argument("--instances", help="JSON list of [study, series, instance] UIDs: skip the search")

    command = commands.add("c-get", c_get)
    command.add_argument("--dicomweb", help="search with QIDO-RS here first (default: no searcher)")
    dimse_arguments(command, aet="DICOMTROLLEY")

    commands.add("tree", tree, "--json")

    command = commands.add("qido", qido, "--dicomweb", "--patient")
    canned_argument(command)
    command.add_argument("--materialize", action="store_true", help="also build every instance's Dataset")

    command = commands.add("rad69", rad69)
    rad69_arguments(command)
    command.add_argument("--per-study", action="store_true", help="one request per study, not per series")
    command.add_argument("--workers", type=int, default=4, help="requests in flight at once")

    mint_arguments(commands.add("mint", mint))
    commands.add("multipart", multipart, "--body", "--boundary")
    commands.add("toolbelt", toolbelt, "--body", "--content-type")
    return commands.main(argv)


if __name__ == "__main__":
    sys.exit(main())
