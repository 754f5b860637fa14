"""``dicomtrolley audit``: search a pseudonymised output for the originals' identifying values."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dicomtrolley._cli.exits import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, UsageError
from dicomtrolley.audit import AuditError, AuditResult, audit


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``audit`` subcommand and its options."""
    check = sub.add_parser("audit", help="search a pseudonymised output for the originals' identifying values",
                           usage="dicomtrolley audit OUTPUT [--state-dir DIR]")
    check.add_argument("output", metavar="OUTPUT", help="the output folder of a pseudonymised download or export")
    check.add_argument("--state-dir", metavar="DIR", type=Path,
                       help="where its values were recorded (default: <OUTPUT>.state beside the output folder)")


def check(args: argparse.Namespace) -> None:
    """Nothing argparse leaves: the audit talks to no server."""
    if args.extra:
        raise UsageError(f"unrecognized arguments: {' '.join(args.extra)}")


def run(args: argparse.Namespace) -> int:
    """Audit the folder; each finding on standard error, then the summary."""
    try:
        result = audit(args.output, args.state_dir)
    except AuditError as error:
        print(f"dicomtrolley: {error}", file=sys.stderr)
        return EXIT_USAGE
    print_audit(result)
    return EXIT_OK if result.ok else EXIT_FAILURES


def print_audit(result: AuditResult) -> None:
    """Each finding on a line of its own (file, where, kind: never a value), then the one-line summary."""
    for finding in result.findings:
        print(f"finding: {finding}", file=sys.stderr)
    print(result)
