"""``dicomtrolley upload``: send files and folders to an archive, over STOW-RS or C-STORE.

The archive is a DICOMweb URL (STOW-RS at ``URL/studies``), a named server
(its own ``sender``), or a DIMSE address (``--host``, ``--port``: C-STORE).
Each instance that was not stored is printed once, with the file, its
SOPInstanceUID and the archive's reason; files that are not DICOM are listed
as skipped.
"""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from dicomtrolley._cli.exits import EXIT_ERROR, EXIT_FAILURES, EXIT_OK, UsageError
from dicomtrolley._cli.options import positive_int, server_command
from dicomtrolley._cli.server import positionals, profile
from dicomtrolley.profiles import SENDERS, ServerProfile, required_settings
from dicomtrolley.sending import SendSummary

_OPTION_FOR = {"url": "a URL", "host": "--host", "port": "--port"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``upload`` subcommand and its options."""
    upload = server_command(
        sub, "upload", help="send DICOM files and folders to an archive (STOW-RS or C-STORE)",
        usage="dicomtrolley upload (URL | --server NAME | --host HOST --port PORT) PATH [...] [options]",
        url_help="DICOMweb root URL for STOW-RS, e.g. http://localhost:8042/dicom-web "
                 "(or --server NAME, or --host and --port for C-STORE)",
    )
    upload.add_argument("paths", nargs="*", metavar="PATH",
                        help="DICOM files, or folders searched recursively (files that are not DICOM are skipped)")
    upload.add_argument("--sender", choices=sorted(SENDERS),
                        help="stow-rs (default with a URL), or c-store (default with --host), or the server's")
    upload.add_argument("--workers", type=positive_int, help="requests (STOW-RS) or associations (C-STORE) at once")
    upload.add_argument("--no-progress", action="store_true", help="no progress bar")


def check(args: argparse.Namespace) -> None:
    """The positionals sorted into URL and paths, and a server that can receive: before anything is read."""
    args.paths = positionals(args, *args.paths)
    if not args.paths:
        raise UsageError("give the files or folders to send: dicomtrolley upload (URL | --server NAME) PATH [...]")
    missing = [path for path in args.paths if not os.path.exists(path)]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    if all(os.path.isdir(path) and not _holds_a_file(path) for path in args.paths):
        raise UsageError(f"nothing to send: no file in {', '.join(args.paths)}")
    sender = args.sender or ("c-store" if args.host and not args.url and not args.server else None)
    if sender == "c-store" and args.host and not args.server:
        args.searcher = "c-find"  # a profile needs a searcher: at a DIMSE address, C-FIND, which needs nothing more
    server = profile(args, download=False)
    try:
        args.profile = ServerProfile(**{**server.model_dump(), "sender": sender or server.sender})
    except ValidationError as error:
        raise UsageError("; ".join(str(e["msg"]) for e in error.errors())) from None
    needs = required_settings(args.profile.sender)
    lacking = [_OPTION_FOR.get(name, name) for name in needs if getattr(args.profile, name) is None]
    if lacking:
        raise UsageError(f"--sender {args.profile.sender} needs {' and '.join(lacking)}")


def _holds_a_file(folder: str) -> bool:
    """Whether ``folder`` holds a file at any depth (the walk stops at the first)."""
    return any(files for _, _, files in os.walk(folder))


def run(args: argparse.Namespace) -> int:
    """Send, print the summary, each skipped file and each failure once; the exit status says how it went."""
    sender = args.profile.build_sender()
    return report(sender.send(args.paths, on_error="collect", progress=False if args.no_progress else None))


def report(summary: SendSummary) -> int:
    """Print what a send did, each problem on standard error; return the exit status."""
    print(summary)
    for name, reason in summary.skipped:
        print(f"skipped: {name}: {reason}", file=sys.stderr)
    for name, warning in summary.warnings:
        print(f"warning: {name}: {warning}", file=sys.stderr)
    if summary.unreachable:
        print(f"dicomtrolley: {summary.failures[0].reason}; {summary.failed} instances not sent", file=sys.stderr)
        return EXIT_ERROR
    for failure in summary.failures:
        print(f"failed: {failure}", file=sys.stderr)
    if not summary.sent and not summary.failures and summary.skipped:
        skipped = len(summary.skipped)
        print(f"dicomtrolley: nothing sent: no DICOM file among those given ({skipped} skipped)", file=sys.stderr)
        return EXIT_FAILURES
    return EXIT_OK if summary.ok else EXIT_FAILURES
