"""dicomtrolley 4.1.0's way to export a worklist: ``find_study`` + ``download`` per row, one after another.

Run with the interpreter of ``benchmarks/.venv-reference`` (see
:mod:`benchmarks.reference_env`); imports nothing from this repository.

    python export_reference_loop.py DICOMWEB_URL WORKLIST.csv OUTPUT_DIR
"""

from __future__ import annotations

import csv
import sys

import requests

from dicomtrolley.core import Query
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS


def main(url: str, worklist: str, out: str) -> None:
    """Export each row's study; raise on the first failure, as a plain loop would."""
    session = requests.Session()
    trolley = Trolley(downloader=WadoRS(session, url), searcher=QidoRS(session, url))
    with open(worklist, newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            study = trolley.find_study(Query(StudyInstanceUID=row["StudyInstanceUID"]))
            trolley.download(study, out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
