"""``dicomtrolley export``: every study of a worklist into a folder, or to another archive; run again to continue."""

from __future__ import annotations

import argparse
import os
import sys
import threading

from dicomtrolley._cli.audit import print_audit
from dicomtrolley._cli.exits import EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, UsageError
from dicomtrolley._cli.options import (
    SOURCE_URL_HELP,
    fetch_options,
    http_url,
    positive_int,
    seconds,
    server_command,
)
from dicomtrolley._cli.server import check_deidentify_options, deidentifier, positionals, profile
from dicomtrolley.destination import Destination
from dicomtrolley.export import ExportOptions, SharedTrolley
from dicomtrolley.export.cluster import export_on_dask
from dicomtrolley.export.politeness import TimeWindow, parse_rate
from dicomtrolley.export.runner import ON_THIS_PROCESS_ONLY, run_export
from dicomtrolley.profiles import ServerProfile, load_profile


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``export`` subcommand and its options."""
    job = server_command(
        sub, "export", help="export every study of a worklist; run again to continue",
        usage="dicomtrolley export (URL | --server NAME) WORKLIST "
              "(-o DIR | --to URL --state-dir DIR | --to-server NAME --state-dir DIR) [options]",
        url_help=SOURCE_URL_HELP,
    )
    job.add_argument("worklist", nargs="?", help="CSV file: StudyInstanceUID, AccessionNumber, PatientID, ...")
    job.add_argument("--to", metavar="URL", type=http_url,
                     help="send the studies to this archive instead (STOW-RS; checked with QIDO-RS at the same URL)")
    job.add_argument("--to-server", metavar="NAME",
                     help="send the studies to this server of the servers file instead (its sender and searcher)")
    fetch_options(
        job, output_help="output folder (state, report.csv, index; made if missing)", output_required=False,
        workers_help="parallel requests per study",
        state_help="state database and report.csv here (default: the output folder; with --deidentify "
                   "{pseudonymised})",
    )
    job.add_argument("--max-connections", type=positive_int, help="at most this many HTTP connections at once")
    job.add_argument("--studies", type=positive_int,
                     help="studies in flight (default: 4; with --dask: two per worker thread)")
    job.add_argument("--dask", metavar="ADDRESS",
                     help="run the studies on a Dask cluster: tcp://scheduler:8786, or local:N to start N worker "
                          "processes here (local: one per core); workers need the password in their environment")
    job.add_argument("--max-attempts", type=positive_int, default=3,
                     help="attempts per study, across runs; a failure that may pass is retried within the run")
    job.add_argument("--retry-delay", type=seconds, default=5.0, metavar="SECONDS",
                     help="wait before a failed study's next attempt, doubled each time (default: %(default)s)")
    job.add_argument("--refresh", action="store_true", help="search rows resolved by an earlier run again")
    job.add_argument("--skip-bad-rows", action="store_true", help="report unreadable rows and go on")
    job.add_argument("--max-rate", type=parse_rate, help="bytes per second for the whole job, e.g. 50MB/s")
    job.add_argument("--window", type=TimeWindow.parse, help="start studies only in this window, e.g. 19:00-07:00")
    job.add_argument("--index-format", choices=["auto", "csv", "parquet"], default="auto",
                     help="instances.parquet (with pyarrow) or instances.csv (default: %(default)s)")


def check(args: argparse.Namespace) -> None:
    """The positionals sorted into URL and worklist, and the server complete."""
    words = positionals(args, args.worklist)
    if len(words) > 1:
        what = f"argument url: {words[0]!r} is not a URL (http://host/dicom-web)" if args.url is None and \
            not args.server else f"unrecognized arguments: {' '.join(words[1:])}"
        raise UsageError(what)
    args.worklist = words[0] if words else None
    if not args.worklist:
        raise UsageError("give a worklist: dicomtrolley export (URL | --server NAME) WORKLIST -o DIR")
    places = [name for name, value in (("-o", args.output), ("--to", args.to), ("--to-server", args.to_server))
              if value]
    if len(places) != 1:
        raise UsageError("give one place for the studies: -o DIR, --to URL or --to-server NAME"
                         + (f", not {' and '.join(places)}" if places else ""))
    if args.output is None and args.state_dir is None:
        raise UsageError(f"{places[0]} needs --state-dir DIR: the state database and report.csv go there")
    if args.output is None and args.template is not None:
        raise UsageError(f"--template applies to -o; {places[0]} names the instances it stores")
    if args.output is None and args.dask:
        raise UsageError(f"{places[0]} runs on this machine's threads, not on --dask: {ON_THIS_PROCESS_ONLY}")
    args.profile = profile(args, download=True)
    check_deidentify_options(args)
    args.destination = None
    if args.output is None:
        target = load_profile(args.to_server, args.config) if args.to_server else ServerProfile(url=args.to)
        searcher = target.trolley(download=False).searcher
        if searcher is None:  # pragma: no cover - a profile always names a searcher
            raise UsageError(f"{target} has no searcher to check what arrived")
        args.destination = Destination(target.build_sender(), searcher)


def run(args: argparse.Namespace) -> int:
    """Run the export; print its report, or how to continue after Ctrl-C."""
    options = ExportOptions(
        studies=args.studies, template=args.template,
        max_attempts=args.max_attempts, retry_delay=args.retry_delay, refresh=args.refresh,
        skip_bad_rows=args.skip_bad_rows,
        max_rate=args.max_rate, window=args.window, progress=False if args.no_progress else None,
        index_format=args.index_format, deidentify=deidentifier(args), state_dir=args.state_dir,
    )
    try:
        if args.dask:
            report = export_on_dask(
                args.profile, args.worklist, args.output, args.dask,
                options=options, announce=lambda line: print(line, file=sys.stderr),
            )
        else:
            trolley = SharedTrolley(args.profile.trolley())
            report = run_export(trolley, args.worklist, args.destination or args.output, options)
    except KeyboardInterrupt:
        print("dicomtrolley: interrupted; state saved; run the same command to continue",
              file=sys.stderr)
        if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
            # A request still waits on a silent server; the state is saved and the folder
            # unlocked, so end now rather than when its read timeout expires.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    print(report)
    print(f"report: {report.report_path}\nindex: {report.index_path}")
    if report.audit is not None:
        print_audit(report.audit)
    if report.instances_quarantined:
        print(f"{report.instances_quarantined} instances quarantined (not written: their pixels may show identities)",
              file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_FAILURES
