"""``dicomtrolley probe``: ask a server, read-only, what it supports; print a table; save what was learned."""

from __future__ import annotations

import argparse
import json
import sys

from dicomtrolley._cli.exits import EXIT_FAILURES, EXIT_OK, UsageError
from dicomtrolley._cli.options import server_command
from dicomtrolley._cli.server import positionals, profile
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.probe import ProbeReport, probe, save_profile


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``probe`` subcommand and its options."""
    probing = server_command(
        sub, "probe", help="ask a DICOMweb or DIMSE server what it supports (read-only)",
        usage="dicomtrolley probe (URL | --server NAME | --host HOST --port PORT) [--json] [--save NAME]",
    )
    probing.add_argument("--json", action="store_true", help="print the findings as JSON")
    probing.add_argument("--save", metavar="NAME",
                         help="write a server profile with what was learned into the servers file (see --config)")


def check(args: argparse.Namespace) -> None:
    """One server, nothing else."""
    words = positionals(args)
    if words:
        raise UsageError(f"unrecognized arguments: {' '.join(words)}")
    if args.host and not (args.url or args.server):
        # A DIMSE server on its own (--host, --port): probed, and saved, with the DIMSE protocols.
        args.searcher, args.downloader = "c-find", "c-get"
    args.profile = profile(args, download=True)  # as saved: the downloader the server's commands would use


def run(args: argparse.Namespace) -> int:
    """Probe over DICOMweb (a URL) and DIMSE (a host and port); 0 when the first search or C-ECHO worked.

    A server that cannot be reached at all raises (exit 3, the step named); one
    that refuses is reported in the table (exit 1 when nothing worked).
    """
    server = args.profile
    report: ProbeReport | None = None
    if server.url:
        report = probe(server.session(), server.url, timeout=server.timeout)
    if server.host and server.port:
        from dicomtrolley.probe_dimse import probe_dimse

        report = probe_dimse(server, report)
    if report is None:
        raise DICOMTrolleyError(f"{server}: nothing to probe: no DICOMweb url, no DIMSE host and port")
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.to_table())
    if args.save:
        path = save_profile(report.profile(server), args.save, args.config, notes=report.notes())
        print(f"saved server {args.save!r} to {path}", file=sys.stderr)
    answered = any(report.supports(first) for first in ("QIDO-RS studies", "C-ECHO", "C-FIND STUDY"))
    return EXIT_OK if answered else EXIT_FAILURES
