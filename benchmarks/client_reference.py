"""The other Python clients' side of the benchmark: dicomtrolley 4.1.0 and dicomweb-client.

Run by :mod:`benchmarks.run` with the interpreter of ``benchmarks/.venv-reference``,
where ``dicomtrolley`` is version 4.1.0 from PyPI; it imports nothing from this
repository except ``clientlib.py`` beside it. Each subcommand does what that
package's documentation tells a user to write.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import requests
from clientlib import (
    Commands,
    canned_argument,
    canned_session,
    load_json,
    mint_arguments,
    rad69_arguments,
    report,
    study_counts,
)


def _files(out: str) -> dict[str, Any]:
    files = [p for p in Path(out).rglob("*") if p.is_file()]
    return {"count": len(files), "bytes": sum(p.stat().st_size for p in files)}


def _trolley(session: requests.Session, args: argparse.Namespace, downloader: Any) -> Any:
    from dicomtrolley.qido_rs import QidoRS
    from dicomtrolley.storage import StorageDir
    from dicomtrolley.trolley import Trolley

    return Trolley(downloader=downloader, searcher=QidoRS(session, args.dicomweb), storage=StorageDir(args.out))


def wado_rs(args: argparse.Namespace) -> None:
    """4.1.0: ``Trolley(WadoRS, QidoRS, StorageDir).download([StudyReference], dir)``."""
    from dicomtrolley.core import StudyReference
    from dicomtrolley.wado_rs import WadoRS

    session = requests.Session()
    trolley = _trolley(session, args, WadoRS(session, args.dicomweb))
    report(lambda: trolley.download([StudyReference(study_uid=args.study)], args.out), lambda _: _files(args.out))


class SlashKeepingSession(requests.Session):
    """A session that writes ``/`` in query strings as ``/``, not ``%2F``.

    4.1.0's WadoURI passes ``contentType=application/dicom`` as a requests
    parameter, which requests escapes to ``application%2Fdicom``; Orthanc 1.10
    does not decode it and answers 400. Without this shim 4.1.0's WadoURI
    cannot download from Orthanc at all.
    """

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        """Prepare as usual, then undo the escaping of ``/``."""
        prepared = super().prepare_request(request)
        prepared.url = (prepared.url or "").replace("%2F", "/")
        return prepared


def wado_uri(args: argparse.Namespace) -> None:
    """4.1.0 WadoURI: sequential through the Trolley, or its threaded mode on instance references.

    The threaded mode (``use_async=True``) fails on a study reference, so it is
    given the instance references that the trolley's searcher finds; that
    search is timed too. Both send through :class:`SlashKeepingSession`.
    """
    from dicomtrolley.core import DICOMObjectLevels, StudyReference
    from dicomtrolley.wado_uri import WadoURI

    session = SlashKeepingSession()
    study = StudyReference(study_uid=args.study)
    if not args.workers:
        trolley = _trolley(session, args, WadoURI(session, args.wado))
        report(lambda: trolley.download([study], args.out), lambda _: _files(args.out))
        return
    downloader = WadoURI(session, args.wado, use_async=True, max_workers=args.workers)
    trolley = _trolley(session, args, downloader)

    def work() -> None:
        references = trolley.obtain_references([study], max_level=DICOMObjectLevels.INSTANCE)
        for dataset in downloader.datasets(references):
            trolley.storage.save(dataset, args.out)

    report(work, lambda _: _files(args.out))


def dicomweb_client(args: argparse.Namespace) -> None:
    """dicomweb-client: ``iter_study`` and ``save_as`` for each dataset."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(args.dicomweb)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def work() -> None:
        for dataset in client.iter_study(args.study):
            dataset.save_as(out / f"{dataset.SOPInstanceUID}.dcm")

    report(work, lambda _: _files(args.out))


def tree(args: argparse.Namespace) -> None:
    """4.1.0: ``QidoRS.parse_qido_response`` on the decoded answer (the parse step alone)."""
    from dicomtrolley.qido_rs import QidoRS

    rows = load_json(args.json)
    report(lambda: QidoRS.parse_qido_response(rows), study_counts)


def qido(args: argparse.Namespace) -> None:
    """4.1.0: an instance-level ``find_studies`` for one patient, live or on the saved answer."""
    from dicomtrolley.core import Query, QueryLevels
    from dicomtrolley.qido_rs import QidoRS

    searcher = QidoRS(canned_session(args.dicomweb, args.canned), args.dicomweb)
    query = Query(PatientID=args.patient, query_level=QueryLevels.INSTANCE)
    report(lambda: searcher.find_studies(query), study_counts)


def rad69(args: argparse.Namespace) -> None:
    """4.1.0 Rad69 behind its Vitrea login: ``Trolley(Rad69, Mint, StorageDir).download``, or with
    ``--instances`` its ``datasets`` on the given references, each saved by its ``StorageDir``.
    ``--workers N`` uses its threaded mode (``use_async=True, max_workers=N``)."""
    from dicomtrolley.auth import create_session
    from dicomtrolley.core import InstanceReference, StudyReference
    from dicomtrolley.mint import Mint
    from dicomtrolley.rad69 import Rad69
    from dicomtrolley.storage import StorageDir
    from dicomtrolley.trolley import Trolley

    session = create_session(args.login, args.user, os.environ["VITREA_PASSWORD"])
    options = {"use_async": True, "max_workers": args.workers} if args.workers else {}
    downloader = Rad69(session, args.rad69, **options)
    storage = StorageDir(args.out)
    if args.instances:
        references = [
            InstanceReference(study_uid=study, series_uid=series, instance_uid=instance)
            for study, series, instance in load_json(args.instances)
        ]

        def work() -> None:
            for dataset in downloader.datasets(references):
                storage.save(dataset, args.out)

        report(work, lambda _: _files(args.out))
        return
    trolley = Trolley(downloader=downloader, searcher=Mint(session, args.mint), storage=storage)
    report(lambda: trolley.download([StudyReference(study_uid=args.study)], args.out), lambda _: _files(args.out))


def mint(args: argparse.Namespace) -> None:
    """4.1.0: an instance-level MINT ``find_studies`` for one patient on the saved answer."""
    from dicomtrolley.core import Query, QueryLevels
    from dicomtrolley.mint import Mint

    searcher = Mint(canned_session(args.mint, args.canned), args.mint)
    query = Query(PatientID=args.patient, query_level=QueryLevels.INSTANCE)
    report(lambda: searcher.find_studies(query), study_counts)


def versions(_: argparse.Namespace) -> None:
    """The versions of the packages in this environment, as JSON."""
    names = ("dicomtrolley", "dicomweb-client", "pydicom", "requests")
    report(lambda: None, lambda _: {name: version(name) for name in names} | {"python": sys.version.split()[0]})


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one task."""
    commands = Commands(__doc__)
    commands.add("wado-rs", wado_rs, "--dicomweb", "--study", "--out")
    commands.add("dicomweb-client", dicomweb_client, "--dicomweb", "--study", "--out")
    command = commands.add("wado-uri", wado_uri, "--dicomweb", "--wado", "--study", "--out")
    command.add_argument("--workers", type=int, default=0, help="use_async=True with this many workers")
    commands.add("tree", tree, "--json")
    canned_argument(commands.add("qido", qido, "--dicomweb", "--patient"))
    command = commands.add("rad69", rad69)
    rad69_arguments(command)
    command.add_argument("--workers", type=int, default=0, help="use_async=True with this many workers")
    mint_arguments(commands.add("mint", mint))
    commands.add("versions", versions)
    return commands.main(argv)


if __name__ == "__main__":
    sys.exit(main())
