"""The ``dicomtrolley`` command: search a server, download from it, export a worklist.

Everything here is a thin layer over the library; see ``dicomtrolley --help``.
The password for a login is read from the environment variable
``DICOMTROLLEY_PASSWORD`` or asked for at a prompt, never taken as an
argument, so ``ps`` cannot show it.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any, NoReturn

from dicomtrolley._values import parse_date
from dicomtrolley._version import __version__
from dicomtrolley.audit import AuditError, AuditResult, audit
from dicomtrolley.core import Query, QueryLevels
from dicomtrolley.deidentify import Deidentifier
from dicomtrolley.exceptions import (
    ConnectionFailedError,
    DICOMTrolleyError,
    DownloadError,
    StorageError,
    WorklistError,
)
from dicomtrolley.export import export
from dicomtrolley.export.cluster import export_on_dask
from dicomtrolley.export.politeness import TimeWindow, parse_rate
from dicomtrolley.profiles import DOWNLOADERS, PASSWORD_VARIABLE, SEARCHERS, ServerProfile, load_profile
from dicomtrolley.results import DownloadSummary, StudyList
from dicomtrolley.storage import PathTemplate

EXIT_FAILURES = 1
EXIT_BAD_WORKLIST = EXIT_USAGE = 2
EXIT_ERROR = 3
EXIT_INTERRUPTED = 130

SEARCH_KEYWORDS = (
    "PatientID", "PatientName", "AccessionNumber", "StudyInstanceUID", "ModalitiesInStudy", "StudyDescription",
)
"""The query attributes ``dicomtrolley search`` takes as options (``--PatientID VALUE``)."""


class _Parser(argparse.ArgumentParser):
    """Reports a user's mistake in one line that names the option, and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _date(text: str) -> date:
    try:
        return parse_date(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _template(text: str) -> str:
    try:
        PathTemplate(text)
    except StorageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dicomtrolley", description="Find DICOM studies on a DICOMweb server and download them."
    )
    parser.add_argument("--version", action="version", version=f"dicomtrolley {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    def server_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("url", nargs="?", help="DICOMweb root URL, e.g. http://localhost:8042/dicom-web "
                                              "(or --server NAME)")
        p.add_argument("--server", help="a server named in the servers file instead of a URL")
        p.add_argument("--config", help="the servers file (default: servers.toml in the user's config folder)")
        p.add_argument("--user", help="user name: HTTP basic auth, or a Vitrea login with --login-url")
        p.add_argument("--login-url", help=f"Vitrea Connection login URL (password: ${PASSWORD_VARIABLE} or prompt)")
        p.add_argument("--realm", default="DefaultSystemRealm", help="Vitrea realm (default: %(default)s)")
        tokens = p.add_mutually_exclusive_group()
        tokens.add_argument("--auth", choices=["google", "azure"],
                            help="bearer tokens from Google's Application Default Credentials, or from Azure's "
                            "DefaultAzureCredential for its DICOM service; renewed as they expire")
        tokens.add_argument("--token-command", metavar="CMD",
                            help="bearer tokens printed by this command, e.g. 'gcloud auth print-access-token'")
        tls = p.add_mutually_exclusive_group()
        tls.add_argument("--no-verify", action="store_true", help="do not verify TLS certificates")
        tls.add_argument("--ca-file", help="verify TLS certificates with this CA file (default: $REQUESTS_CA_BUNDLE, "
                                           "$SSL_CERT_FILE, or the system's)")

    def deidentify_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--deidentify", metavar="CONFIG.toml", type=Path,
                       help="pseudonymise on the way to disk with these options (an empty file: the defaults); "
                       "the key comes from $DICOMTROLLEY_DEID_KEY, the config's key_file, or the keyring")
        p.add_argument("--mapping", metavar="FILE", type=Path,
                       help="with --deidentify: write the original -> pseudonym table (CSV) here")
        p.add_argument("--mapping-in-output", action="store_true", help="allow --mapping inside the output folder")

    def searcher_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--searcher", choices=sorted(SEARCHERS),
                       help="search protocol (default: qido-rs, or the server's)")
        p.add_argument("--mint-url", help="MINT root, e.g. https://vitrea/MINTApi (with --searcher mint)")

    def downloader_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--downloader", choices=sorted(DOWNLOADERS),
                       help="download protocol (default: wado-rs, or the server's)")
        p.add_argument("--wado-uri-url", help="WADO-URI endpoint (default: <server>/wado next to the DICOMweb root)")
        p.add_argument("--rad69-url", help="IHE RAD-69 endpoint, e.g. https://vitrea/rids (with --downloader rad69)")

    search = sub.add_parser("search", help="find studies and print them as a table",
                            usage="dicomtrolley search (URL | --server NAME) [options]")
    server_options(search)
    searcher_options(search)
    for keyword in SEARCH_KEYWORDS:
        search.add_argument(f"--{keyword}", dest=keyword, default="", metavar="VALUE")
    search.add_argument("--from", dest="min_study_date", type=_date, help="earliest StudyDate, YYYYMMDD or YYYY-MM-DD")
    search.add_argument("--to", dest="max_study_date", type=_date, help="latest StudyDate, YYYYMMDD or YYYY-MM-DD")
    search.add_argument("--level", type=str.lower, choices=[lvl.value.lower() for lvl in QueryLevels], default="study")
    search.add_argument("--limit", type=_positive_int, help="at most this many results")
    search.add_argument("--json", action="store_true", help="print DICOM JSON instead of a table")

    download = sub.add_parser("download", help="download studies to a folder",
                              usage="dicomtrolley download (URL | --server NAME) STUDY_UID [...] -o DIR [options]")
    server_options(download)
    searcher_options(download)
    downloader_options(download)
    download.add_argument("study_uids", nargs="+", metavar="STUDY_UID")
    download.add_argument("-o", "--output", required=True, help="output folder")
    download.add_argument(
        "--template", type=_template,
        help="path template, e.g. '{PatientID}/{SeriesNumber:03d}/{InstanceNumber:05d}.dcm'",
    )
    download.add_argument("--workers", type=_positive_int, help="parallel requests")
    download.add_argument("--on-error", choices=["raise", "collect"], default="collect",
                          help="stop at the first failure, or go on and report all (default)")
    download.add_argument("--no-progress", action="store_true", help="no progress bar")
    deidentify_options(download)

    job = sub.add_parser("export", help="export every study of a worklist; run again to continue",
                         usage="dicomtrolley export (URL | --server NAME) WORKLIST -o DIR [options]")
    server_options(job)
    job.add_argument("worklist", nargs="?", help="CSV file: StudyInstanceUID, AccessionNumber, PatientID, ...")
    job.add_argument("-o", "--output", required=True, help="output folder (state, report.csv, index)")
    job.add_argument("--template", type=_template, help="path template, as for download")
    searcher_options(job)
    downloader_options(job)
    job.add_argument("--workers", type=_positive_int, help="parallel requests per study")
    job.add_argument("--max-connections", type=_positive_int, help="at most this many HTTP connections at once")
    job.add_argument("--studies", type=_positive_int,
                     help="studies in flight (default: 4; with --dask: two per worker thread)")
    job.add_argument("--dask", metavar="ADDRESS",
                     help="run the studies on a Dask cluster: tcp://scheduler:8786, or local:N to start N worker "
                          "processes here (local: one per core); workers need the password in their environment")
    job.add_argument("--max-attempts", type=_positive_int, default=3,
                     help="attempts per study, across runs; a failure that may pass is retried within the run")
    job.add_argument("--retry-delay", type=_seconds, default=5.0, metavar="SECONDS",
                     help="wait before a failed study's next attempt, doubled each time (default: %(default)s)")
    job.add_argument("--refresh", action="store_true", help="search rows resolved by an earlier run again")
    job.add_argument("--skip-bad-rows", action="store_true", help="report unreadable rows and go on")
    job.add_argument("--max-rate", type=parse_rate, help="bytes per second for the whole job, e.g. 50MB/s")
    job.add_argument("--window", type=TimeWindow.parse, help="start studies only in this window, e.g. 19:00-07:00")
    job.add_argument("--index-format", choices=["auto", "csv", "parquet"], default="auto",
                     help="instances.parquet (with pyarrow) or instances.csv (default: %(default)s)")
    job.add_argument("--no-progress", action="store_true", help="no progress bar")
    deidentify_options(job)
    job.add_argument("--state-dir", metavar="DIR", type=Path,
                     help="state database and report.csv here (default: the output folder; with --deidentify "
                     "<output>.state beside the mapping, or beside the output folder)")
    download.add_argument("--state-dir", metavar="DIR", type=Path,
                          help="with --deidentify: record the originals' identifying values here for the audit "
                          "(default: <output>.state beside the mapping, or beside the output folder)")

    check = sub.add_parser("audit", help="search a pseudonymised output for the originals' identifying values",
                           usage="dicomtrolley audit OUTPUT [--state-dir DIR]")
    check.add_argument("output", metavar="OUTPUT", help="the output folder of a pseudonymised download or export")
    check.add_argument("--state-dir", metavar="DIR", type=Path,
                       help="where its values were recorded (default: <OUTPUT>.state beside the output folder)")

    probing = sub.add_parser("probe", help="ask a DICOMweb server what it supports (read-only) and print a table",
                             usage="dicomtrolley probe (URL | --server NAME) [--json] [--save NAME]")
    server_options(probing)
    probing.add_argument("--json", action="store_true", help="print the findings as JSON")
    probing.add_argument("--save", metavar="NAME",
                         help="write a server profile with what was learned into the servers file (see --config)")
    return parser


def _probe(args: argparse.Namespace) -> int:
    from dicomtrolley.probe import probe, save_profile

    profile = _profile(args)
    report = probe(profile.session(), profile.url, timeout=profile.timeout) if profile.url else None
    if profile.host and profile.port:
        from dicomtrolley.probe_dimse import probe_dimse

        report = probe_dimse(profile, report)
    if report is None:
        raise DICOMTrolleyError(f"{profile}: nothing to probe: no DICOMweb url, no DIMSE host and port")
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.to_table())
    if args.save:
        path = save_profile(report.profile(profile), args.save, args.config)
        print(f"saved server {args.save!r} to {path}", file=sys.stderr)
    return 0 if report.supports("QIDO-RS studies") or report.supports("C-ECHO") else EXIT_FAILURES


def _search(args: argparse.Namespace) -> int:
    fields = {keyword: getattr(args, keyword) for keyword in SEARCH_KEYWORDS}
    query = Query(
        **fields,
        min_study_date=args.min_study_date,
        max_study_date=args.max_study_date,
        query_level=QueryLevels(args.level),
        limit=args.limit,
    )
    studies = _profile(args).trolley().find_studies(query)
    if args.json:
        print(json.dumps([s.to_dict() for s in studies], indent=1))
    else:
        print(StudyList(studies).to_table())
    return 0


def _deidentifier(args: argparse.Namespace) -> Deidentifier | None:
    """The deidentifier of ``--deidentify``, its key loaded: a missing key fails before any download."""
    if args.deidentify is None:
        if args.mapping or args.mapping_in_output:
            raise DICOMTrolleyError("--mapping needs --deidentify")
        if args.command == "download" and args.state_dir:
            raise DICOMTrolleyError("--state-dir needs --deidentify")
        return None
    return Deidentifier.from_toml(
        args.deidentify,
        mapping=args.mapping,
        mapping_in_output=True if args.mapping_in_output else None,
        state_dir=args.state_dir if args.command == "download" else None,
    )


def _download(args: argparse.Namespace) -> int:
    if args.server and args.url:  # with --server, every positional is a StudyInstanceUID
        args.url, args.study_uids = None, [args.url, *args.study_uids]
    deidentifier = _deidentifier(args)
    trolley = _profile(args).trolley()
    try:
        summary = trolley.download(
            args.study_uids, args.output, template=args.template, on_error=args.on_error,
            progress=False if args.no_progress else None, deidentify=deidentifier,
        )
    except DownloadError as error:
        print(f"dicomtrolley: {error}", file=sys.stderr)
        if isinstance(error.summary, DownloadSummary):
            print(error.summary, file=sys.stderr)
            return EXIT_ERROR if _unreachable(error.summary) else EXIT_FAILURES
        return EXIT_FAILURES
    print(summary)
    for failure in summary.failures:
        print(f"failed: {failure}", file=sys.stderr)
    for missing in summary.missing:
        print(f"missing: {missing}", file=sys.stderr)
    if summary.quarantined:
        print(f"{len(summary.quarantined)} instances quarantined (not written: their pixels may show identities)",
              file=sys.stderr)
    if _unreachable(summary):
        return EXIT_ERROR
    return 0 if summary.ok else EXIT_FAILURES


def _profile(args: argparse.Namespace) -> ServerProfile:
    """The server of every command: from the servers file with ``--server``, else from the URL; options on top.

    The options a command has (``--user``, ``--downloader``, ``--workers``, ...)
    override the profile's settings; the login happens when the trolley is built.
    """
    names = ("searcher", "downloader", "wado_uri_url", "mint_url", "rad69_url", "workers", "max_connections", "user",
             "login_url", "ca_file")
    given: dict[str, Any] = {name: getattr(args, name, None) for name in names}
    settings = {key: value for key, value in given.items() if value is not None}
    if args.no_verify:
        settings["verify"] = False
    if args.auth:
        settings["auth"] = args.auth
    elif args.token_command:
        settings.update(auth="token-command", token_command=args.token_command)
    elif args.login_url:
        settings.update(auth="vitrea", realm=args.realm)
    elif args.user:
        settings["auth"] = "basic"
    if args.server:
        server = load_profile(args.server, args.config)
        return ServerProfile(**{**server.model_dump(), **settings}) if settings else server
    return ServerProfile(url=args.url, **settings)


def _export(args: argparse.Namespace) -> int:
    worklist = args.worklist
    if args.server and not worklist:  # with --server, the one positional is the worklist
        args.url, worklist = None, args.url
    if not worklist:
        raise WorklistError("give a worklist: dicomtrolley export (URL | --server NAME) WORKLIST -o DIR")
    options: dict[str, Any] = dict(
        template=args.template,
        max_attempts=args.max_attempts, retry_delay=args.retry_delay, refresh=args.refresh,
        skip_bad_rows=args.skip_bad_rows,
        max_rate=args.max_rate, window=args.window, progress=False if args.no_progress else None,
        index_format=args.index_format, deidentify=_deidentifier(args), state_dir=args.state_dir,
    )
    try:
        if args.dask:
            report = export_on_dask(
                _profile(args), worklist, args.output, args.dask, studies=args.studies,
                announce=lambda line: print(line, file=sys.stderr), **options,
            )
        else:
            report = export(_profile(args).trolley(), worklist, args.output, studies=args.studies or 4, **options)
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
        _print_audit(report.audit)
    if report.instances_quarantined:
        print(f"{report.instances_quarantined} instances quarantined (not written: their pixels may show identities)",
              file=sys.stderr)
    return 0 if report.ok else EXIT_FAILURES


def _audit(args: argparse.Namespace) -> int:
    try:
        result = audit(args.output, args.state_dir)
    except AuditError as error:
        print(f"dicomtrolley: {error}", file=sys.stderr)
        return EXIT_USAGE
    _print_audit(result)
    return 0 if result.ok else EXIT_FAILURES


def _print_audit(result: AuditResult) -> None:
    """Each finding on a line of its own (file, where, kind: never a value), then the one-line summary."""
    for finding in result.findings:
        print(f"finding: {finding}", file=sys.stderr)
    print(result)


def _unreachable(summary: DownloadSummary) -> bool:
    """Nothing was written or found on disk, and every failure was a connection that could not be made."""
    return (
        not summary.written and not summary.skipped and bool(summary.failures)
        and all(isinstance(f.error, ConnectionFailedError) for f in summary.failures)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    0 ok, 1 failures (a download, or an export row failed, not found or skipped; the
    audit of a pseudonymised output found something), 2 usage or a bad worklist (the audit:
    no output folder or no recorded values), 3 other errors, 130 an export interrupted by Ctrl-C.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "audit":
        logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)])
        return _audit(args)
    if args.command == "search" and args.min_study_date and args.max_study_date \
            and args.min_study_date > args.max_study_date:
        parser.error(f"argument --from: {args.min_study_date} is after --to {args.max_study_date}")
    if not args.url and not args.server:
        parser.error(f"give a server: dicomtrolley {args.command} (URL | --server NAME) ...")
    if args.command == "search" and args.url and args.server:
        parser.error("argument --server: give a URL or --server NAME, not both")
    if args.login_url and not args.user:
        parser.error("argument --login-url: needs --user")
    if (args.auth or args.token_command) and args.user:
        parser.error(f"argument {'--auth' if args.auth else '--token-command'}: not allowed with --user")
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    commands = {"search": _search, "download": _download, "export": _export, "probe": _probe}
    # What the imports built (pydicom's data dictionary above all) lives as long as the command:
    # kept out of the garbage collector's sweeps, which a long download otherwise repeats.
    gc.freeze()
    try:
        return commands[args.command](args)
    except WorklistError as error:
        print(f"dicomtrolley: {error}", file=sys.stderr)
        for line, problem in error.problems[1:]:
            print(f"  line {line}: {problem}", file=sys.stderr)
        return EXIT_BAD_WORKLIST
    except DICOMTrolleyError as error:
        print(f"dicomtrolley: {error}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
