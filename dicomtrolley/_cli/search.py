"""``dicomtrolley search``: find studies, series or instances and print one row each."""

from __future__ import annotations

import argparse
import json
import sys

from dicomtrolley._cli import search_output
from dicomtrolley._cli.exits import EXIT_OK, UsageError
from dicomtrolley._cli.options import day, positive_int, searcher_options, server_command
from dicomtrolley._cli.server import positionals, profile
from dicomtrolley.core import Query, QueryLevels

SEARCH_KEYWORDS = (
    "PatientID", "PatientName", "AccessionNumber", "StudyInstanceUID", "ModalitiesInStudy", "StudyDescription",
)
"""The query attributes ``dicomtrolley search`` takes as options (``--PatientID VALUE``)."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``search`` subcommand and its options."""
    search = server_command(
        sub, "search", help="find studies, series or instances and print them",
        usage="dicomtrolley search (URL | --server NAME) [options]",
    )
    searcher_options(search)
    for keyword in SEARCH_KEYWORDS:
        search.add_argument(f"--{keyword}", dest=keyword, default="", metavar="VALUE")
    search.add_argument("--from", dest="min_study_date", type=day, help="earliest StudyDate, YYYYMMDD or YYYY-MM-DD")
    search.add_argument("--to", dest="max_study_date", type=day, help="latest StudyDate, YYYYMMDD or YYYY-MM-DD")
    search.add_argument("--level", type=str.lower, choices=[lvl.value.lower() for lvl in QueryLevels], default="study",
                        help="one row per study (default), series or instance")
    search.add_argument("--limit", type=positive_int, help="at most this many results")
    shown = search.add_mutually_exclusive_group()
    shown.add_argument("--format", dest="output_format", choices=search_output.FORMATS, default="table",
                       help="table (default), or for scripts: csv, tsv, jsonl, json (columns named by DICOM keyword)")
    shown.add_argument("--json", action="store_true", help="print the studies as DICOM JSON instead")


def check(args: argparse.Namespace) -> None:
    """What argparse cannot check alone: dates in order, one server."""
    if args.min_study_date and args.max_study_date and args.min_study_date > args.max_study_date:
        raise UsageError(f"argument --from: {args.min_study_date} is after --to {args.max_study_date}")
    words = positionals(args)
    if words and args.server and "://" in words[0]:
        raise UsageError("argument --server: give a URL or --server NAME, not both")
    if words and args.url is None and not args.server:
        raise UsageError(f"argument url: {words[0]!r} is not a URL (http://host/dicom-web)")
    if words:
        raise UsageError(f"unrecognized arguments: {' '.join(words)}")
    args.profile = profile(args, download=False)


def run(args: argparse.Namespace) -> int:
    """Search, and print one row per object at the level asked for."""
    level = QueryLevels(args.level)
    values = {keyword: getattr(args, keyword) for keyword in SEARCH_KEYWORDS}
    query = Query(
        **values,
        min_study_date=args.min_study_date,
        max_study_date=args.max_study_date,
        query_level=level,
        limit=args.limit,
    )
    studies = args.profile.trolley(download=False).find_studies(query)
    if args.json:
        print(json.dumps([s.to_dict() for s in studies], indent=1))
        return EXIT_OK
    found = search_output.rows(studies, level)
    text = search_output.render(found, level, args.output_format)
    if text:
        print(text)
    hint = None if found else search_output.wildcard_hint(values)
    if hint:
        print(f"dicomtrolley: {hint}", file=sys.stderr)
    return EXIT_OK
