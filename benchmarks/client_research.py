"""This package's side of the research benchmark: metadata to a DataFrame, streamed metadata, the search cache.

Run by :mod:`benchmarks.research` in a fresh process per run; prints one JSON
line (see ``clientlib.report``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import requests
from clientlib import KEYWORDS, Commands, canned_argument, canned_session, report


def _trolley(args: argparse.Namespace, *, search: bool = True) -> Any:
    """A trolley as a notebook has one: QIDO-RS and WADO-RS; WADO-RS alone where no server can be searched."""
    from dicomtrolley.qido_rs import QidoRS
    from dicomtrolley.trolley import Trolley
    from dicomtrolley.wado_rs import WadoRS

    session = canned_session(args.dicomweb, args.canned, streamed=True)
    search = search and not args.canned  # a saved answer is all the server there is
    return Trolley(QidoRS(session, args.dicomweb) if search else None, WadoRS(session, args.dicomweb))


def metadata_df(args: argparse.Namespace) -> None:
    """``trolley.metadata(study).to_dataframe(KEYWORDS)``: a typed DataFrame, one row per instance.

    pandas is imported before the clock starts, as in a notebook that has used it already.
    """
    import pandas  # noqa: F401 - imported untimed

    trolley = _trolley(args)
    report(lambda: trolley.metadata(args.study).to_dataframe(list(KEYWORDS)), lambda frame: {"count": len(frame)})


def metadata_stream(args: argparse.Namespace) -> None:
    """``trolley.metadata(study).rows(KEYWORDS)`` consumed one by one, pandas never imported.

    The server here serves one ``/metadata`` answer and nothing else, so the trolley has no searcher.
    """
    trolley = _trolley(args, search=False)

    def work() -> int:
        return sum(1 for _ in trolley.metadata(args.study).rows(list(KEYWORDS)))

    report(work, lambda count: {"count": count, "pandas_imported": "pandas" in sys.modules})


def cache(args: argparse.Namespace) -> None:
    """First searches with and without the cache, alternated; then the cached repeat and narrower searches."""
    from dicomtrolley.caching import CachedSearcher
    from dicomtrolley.core import Query, QueryLevels
    from dicomtrolley.qido_rs import QidoRS

    session = requests.Session()
    query = Query(PatientID=args.patient, query_level=QueryLevels.SERIES)
    plain, first = [], []
    for _ in range(args.repeat):
        started = time.perf_counter()
        QidoRS(session, args.dicomweb).find_studies(query)
        plain.append(time.perf_counter() - started)
        searcher = CachedSearcher(QidoRS(session, args.dicomweb))
        started = time.perf_counter()
        studies = searcher.find_studies(query)
        first.append(time.perf_counter() - started)
    repeat, narrower = [], []
    for _ in range(1000):
        started = time.perf_counter()
        searcher.find_studies(Query(PatientID=args.patient, query_level=QueryLevels.SERIES))
        repeat.append(time.perf_counter() - started)
        started = time.perf_counter()
        searcher.find_study_by_id(studies[0].uid, QueryLevels.SERIES)
        narrower.append(time.perf_counter() - started)
    assert searcher.misses == 1, searcher.misses

    def result() -> dict[str, float]:
        return {
            "uncached_first_ms": statistics.median(plain) * 1e3,
            "cached_first_ms": statistics.median(first) * 1e3,
            "repeat_us": statistics.median(repeat) * 1e6,
            "narrower_us": statistics.median(narrower) * 1e6,
        }

    report(result, lambda figures: figures)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one task."""
    commands = Commands(__doc__)
    canned_argument(commands.add("metadata-df", metadata_df, "--dicomweb", "--study"))
    canned_argument(commands.add("metadata-stream", metadata_stream, "--dicomweb", "--study"))
    commands.add("cache", cache, "--dicomweb", "--patient").add_argument("--repeat", type=int, default=7)
    return commands.main(argv)


if __name__ == "__main__":
    sys.exit(main())
