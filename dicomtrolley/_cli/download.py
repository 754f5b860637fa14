"""``dicomtrolley download``: studies, or series of one study, into a folder.

The output folder is made and tried before the first request, so a folder that
cannot be written costs no download. Each failure is printed once, with its
reason; an instance the search listed and no failure covers is printed as missing.
"""

from __future__ import annotations

import argparse
import sys

from dicomtrolley._cli.exits import EXIT_ERROR, EXIT_FAILURES, EXIT_OK, UsageError
from dicomtrolley._cli.options import SOURCE_URL_HELP, fetch_options, server_command
from dicomtrolley._cli.server import check_deidentify_options, deidentifier, positionals, profile
from dicomtrolley._planning import covers
from dicomtrolley.core import Reference, SeriesReference, StudyReference
from dicomtrolley.exceptions import ConnectionFailedError, DownloadError
from dicomtrolley.results import DownloadSummary
from dicomtrolley.storage import check_output_folder


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``download`` subcommand and its options."""
    download = server_command(
        sub, "download", help="download studies (or series of one study) to a folder",
        usage="dicomtrolley download (URL | --server NAME) STUDY_UID [...] [--series SERIES_UID ...] -o DIR [options]",
        url_help=SOURCE_URL_HELP,
    )
    download.add_argument("study_uids", nargs="+", metavar="STUDY_UID")
    download.add_argument("--series", action="append", metavar="SERIES_UID",
                          help="only this series of the study (repeat for several)")
    download.add_argument("--on-error", choices=["raise", "collect"], default="collect",
                          help="stop at the first failure, or go on and report all (default)")
    fetch_options(
        download, output_help="output folder (made if missing, with its parents)", workers_help="parallel requests",
        state_help="with --deidentify: record the originals' identifying values here for the audit "
                   "(default: {pseudonymised})",
    )


def check(args: argparse.Namespace) -> None:
    """The positionals sorted into URL and studies, ``--series`` with one study, and the server complete."""
    args.study_uids = positionals(args, *args.study_uids)
    if not args.study_uids:
        raise UsageError("give a study: dicomtrolley download (URL | --server NAME) STUDY_UID [...] -o DIR")
    if args.series and len(args.study_uids) != 1:
        raise UsageError(f"argument --series: give the one study the series belong to, not {len(args.study_uids)}")
    args.profile = profile(args, download=True)
    check_deidentify_options(args)


def targets(args: argparse.Namespace) -> list[Reference]:
    """The studies on the command line, or the series of ``--series`` in its one study."""
    if args.series:
        return [SeriesReference(args.study_uids[0], uid) for uid in args.series]
    return [StudyReference(uid) for uid in args.study_uids]


def run(args: argparse.Namespace) -> int:
    """Download, print the summary and each failure once; the exit status says how it went."""
    deidentify = deidentifier(args)  # a missing key: no folder made
    check_output_folder(args.output)
    trolley = args.profile.trolley()
    try:
        summary = trolley.download(
            targets(args), args.output, template=args.template, on_error=args.on_error,
            progress=False if args.no_progress else None, deidentify=deidentify,
        )
    except DownloadError as error:
        print(f"dicomtrolley: {error}", file=sys.stderr)
        if isinstance(error.summary, DownloadSummary):
            print(error.summary, file=sys.stderr)
            return EXIT_ERROR if unreachable(error.summary) else EXIT_FAILURES
        return EXIT_FAILURES
    print(summary)
    for line in problems(summary):
        print(line, file=sys.stderr)
    if summary.quarantined:
        print(f"{len(summary.quarantined)} instances quarantined (not written: their pixels may show identities)",
              file=sys.stderr)
    if unreachable(summary):
        return EXIT_ERROR
    return EXIT_OK if summary.ok else EXIT_FAILURES


def problems(summary: DownloadSummary) -> list[str]:
    """One line per failure, with its reason, then one per missing instance that no failure accounts for."""
    lines = [f"failed: {failure}" for failure in summary.failures]
    lines += [
        f"missing: {missing} (listed by the search, not sent by the server)"
        for missing in summary.missing
        if not any(covers(failure.target, missing) for failure in summary.failures)
    ]
    return lines


def unreachable(summary: DownloadSummary) -> bool:
    """Nothing was written or found on disk, and every failure was a connection that could not be made."""
    return (
        not summary.written and not summary.skipped and bool(summary.failures)
        and all(isinstance(f.error, ConnectionFailedError) for f in summary.failures)
    )
