"""This package's side of the upload benchmark: one send per run, timed, reported as JSON.

Run by :mod:`benchmarks.upload_bench` in a fresh process per run::

    python benchmarks/client_upload.py stow-rs --dicomweb URL --folder DIR [--workers N]
    python benchmarks/client_upload.py stow-rs-toolbelt --dicomweb URL --folder DIR [--workers N]
    python benchmarks/client_upload.py c-store --host H --port P --aec AE --folder DIR [--workers N]

``stow-rs`` and ``c-store`` do what a user of the package writes;
``stow-rs-toolbelt`` sends the same batches with requests-toolbelt's
streaming ``MultipartEncoder`` as the body, to compare it with ours.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from clientlib import report

from dicomtrolley.dimse_store import DICOMCStore
from dicomtrolley.sending import SendItem, SendSummary, collect
from dicomtrolley.stow_rs import DEFAULT_BATCH_INSTANCES, StowRS


def _sent(summary: SendSummary) -> dict[str, Any]:
    return {"count": summary.sent, "bytes": summary.bytes_sent, "ok": summary.ok}


def stow_rs(args: argparse.Namespace) -> None:
    """``StowRS(session, url).send(folder)``."""
    sender = StowRS(requests.Session(), args.dicomweb, workers=args.workers, batch_instances=args.batch_instances)
    report(lambda: sender.send(args.folder), _sent)


def stow_rs_toolbelt(args: argparse.Namespace) -> None:
    """The same batches and workers, each body a requests-toolbelt ``MultipartEncoder`` reading the files."""
    from requests_toolbelt.multipart.encoder import MultipartEncoder

    sender = StowRS(requests.Session(), args.dicomweb, workers=args.workers, batch_instances=args.batch_instances)
    session = requests.Session()

    def post(batch: list[SendItem]) -> int:
        files = [item.open() for item in batch]
        try:
            fields = [(f"file{n}", (None, file, "application/dicom")) for n, file in enumerate(files)]
            encoder = MultipartEncoder(fields)
            content_type = f'multipart/related; type="application/dicom"; boundary={encoder.boundary_value}'
            headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
            response = session.post(f"{args.dicomweb}/studies", data=encoder, headers=headers, timeout=300)
            response.raise_for_status()
            return sum(item.size for item in batch)
        finally:
            for file in files:
                file.close()

    def work() -> int:
        batches = list(sender.batches(collect(args.folder).items))
        with ThreadPoolExecutor(args.workers) as pool:
            return sum(pool.map(post, batches))

    report(work, lambda sent: {"bytes": sent, "ok": True})


def c_store(args: argparse.Namespace) -> None:
    """``DICOMCStore(host, port, called_aet=AE).send(folder)``."""
    options = {"workers": args.workers} if args.workers else {}
    sender = DICOMCStore(args.host, args.port, called_aet=args.aec, **options)
    report(lambda: sender.send(args.folder), _sent)


def main(argv: list[str] | None = None) -> None:
    """Parse the subcommand and run it once."""
    parser = argparse.ArgumentParser(prog="client_upload")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("stow-rs", "stow-rs-toolbelt"):
        command = commands.add_parser(name)
        command.add_argument("--dicomweb", required=True)
        command.add_argument("--workers", type=int, default=4)
        command.add_argument("--batch-instances", type=int, default=DEFAULT_BATCH_INSTANCES)
    store = commands.add_parser("c-store")
    store.add_argument("--host", required=True)
    store.add_argument("--port", type=int, required=True)
    store.add_argument("--aec", required=True)
    store.add_argument("--workers", type=int, default=0)
    for command in commands.choices.values():
        command.add_argument("--folder", type=Path, required=True)
    args = parser.parse_args(argv)
    {"stow-rs": stow_rs, "stow-rs-toolbelt": stow_rs_toolbelt, "c-store": c_store}[args.command](args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
