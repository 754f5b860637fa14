"""``dicomtrolley upload``: send files and folders to an archive (STOW-RS, or a profile's C-STORE).

Exit status: 0 every instance was stored, 1 some failed (each is listed),
2 a usage mistake, 3 the server could not be reached.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from dicomtrolley.profiles import ServerProfile
from dicomtrolley.sending import SendSummary

EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def add_upload_parser(sub: Any, server_options: Callable[[argparse.ArgumentParser], None],
                      positive_int: Callable[[str], int]) -> None:
    """Add the ``upload`` subcommand to the command's subparsers."""
    upload = sub.add_parser(
        "upload", help="send DICOM files and folders to an archive (STOW-RS, or the server's C-STORE)",
        usage="dicomtrolley upload (URL | --server NAME) PATH [...] [options]",
    )
    server_options(upload)
    upload.add_argument("paths", nargs="*", metavar="PATH",
                        help="DICOM files, or folders searched recursively (files that are not DICOM are skipped)")
    upload.add_argument("--workers", type=positive_int, help="requests (STOW-RS) or associations (C-STORE) at once")
    upload.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_upload(args: argparse.Namespace, profile: Callable[[argparse.Namespace], ServerProfile]) -> int:
    """Send ``args.paths`` to the server ``profile(args)`` describes; print the summary and every failure."""
    if args.server and args.url:  # with --server, every positional is a path
        args.url, args.paths = None, [args.url, *args.paths]
    if not args.paths:
        print("dicomtrolley upload: error: give the files or folders to send: "
              "dicomtrolley upload (URL | --server NAME) PATH [...]", file=sys.stderr)
        return EXIT_USAGE
    sender = profile(args).build_sender()
    return report(sender.send(args.paths, on_error="collect", progress=False if args.no_progress else None))


def report(summary: SendSummary) -> int:
    """Print what a send did, each failure on standard error; return the exit status."""
    print(summary)
    for name, reason in summary.skipped:
        print(f"skipped: {name}: {reason}", file=sys.stderr)
    for name, warning in summary.warnings:
        print(f"warning: {name}: {warning}", file=sys.stderr)
    if summary.unreachable:
        print(f"dicomtrolley: {summary.failures[0].reason}; {summary.failed} instances not sent", file=sys.stderr)
        return EXIT_UNREACHABLE
    for failure in summary.failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 0 if summary.ok else EXIT_FAILURES
