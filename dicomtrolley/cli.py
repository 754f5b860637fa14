"""The ``dicomtrolley`` command: search a server, download from it, export a worklist, audit a pseudonymised output,
upload files to an archive.

Everything here is a thin layer over the library; see ``dicomtrolley --help``.
This module builds the parser and dispatches; each subcommand is a module of
:mod:`dicomtrolley._cli` with an ``add_parser``, a ``check`` (what argparse
cannot check alone, before anything is sent) and a ``run``.
The password for a login is read from the environment variable
``DICOMTROLLEY_PASSWORD`` or asked for at a prompt, never taken as an
argument, so ``ps`` cannot show it.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from dicomtrolley._cli import audit, download, export, probe, search, upload
from dicomtrolley._cli.exits import (
    EXIT_BAD_WORKLIST,
    EXIT_ERROR,
    EXIT_FAILURES,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    UsageError,
)
from dicomtrolley._cli.options import Parser
from dicomtrolley._cli.search import SEARCH_KEYWORDS
from dicomtrolley._cli.typos import corrected, subcommand_parser
from dicomtrolley._version import __version__
from dicomtrolley.exceptions import DICOMTrolleyError, OutputFolderError, WorklistError
from dicomtrolley.profiles import PASSWORD_VARIABLE

__all__ = [
    "EXIT_BAD_WORKLIST", "EXIT_ERROR", "EXIT_FAILURES", "EXIT_INTERRUPTED", "EXIT_USAGE", "PASSWORD_VARIABLE",
    "SEARCH_KEYWORDS", "main",
]

COMMANDS: dict[str, ModuleType] = {
    "search": search, "download": download, "export": export, "audit": audit, "upload": upload, "probe": probe,
}
"""Each subcommand's module: ``add_parser(subparsers)``, ``check(args)``, ``run(args) -> exit status``."""


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dicomtrolley", description="Find DICOM studies on a DICOMweb or DIMSE server and download them."
    )
    parser.add_argument("--version", action="version", version=f"dicomtrolley {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """The parsed arguments, option typos put right or refused, and each command's own checks made."""
    parser = _parser()
    chosen = subcommand_parser(parser, argv)
    if chosen is not None:
        argv = corrected(chosen, argv, SEARCH_KEYWORDS)
    # Positionals may stand after options (``download URL -o DIR UID``): argparse leaves those
    # over, and each command sorts them with the rest (see server.positionals).
    args, extra = parser.parse_known_args(argv)
    args.extra = extra
    stray = [word for word in extra if word.startswith("-")]
    if stray:
        (chosen or parser).error(f"unrecognized arguments: {' '.join(stray)}")
    if getattr(args, "login_url", None) and not args.user:
        parser.error("argument --login-url: needs --user")
    try:
        COMMANDS[args.command].check(args)
    except UsageError as error:
        (chosen or parser).error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    0 ok, 1 failures (a download, or an export row failed, not found or skipped; the
    audit of a pseudonymised output found something), 2 usage (an option, an output
    folder that cannot be written), a bad worklist, or an audit without an output folder or
    recorded values, 3 other errors, 130 an export interrupted by Ctrl-C.
    """
    try:
        args = _parse(sys.argv[1:] if argv is None else argv)
    except DICOMTrolleyError as error:  # the servers file of --server
        print(f"dicomtrolley: {error}", file=sys.stderr)
        return EXIT_ERROR
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # What the imports built (pydicom's data dictionary above all) lives as long as the command:
    # kept out of the garbage collector's sweeps, which a long download otherwise repeats.
    gc.freeze()
    try:
        status: int = COMMANDS[args.command].run(args)
    except WorklistError as error:
        print(f"dicomtrolley: {error}", file=sys.stderr)
        for line, problem in error.problems[1:]:
            print(f"  line {line}: {problem}", file=sys.stderr)
        return EXIT_BAD_WORKLIST
    except OutputFolderError as error:
        print(f"dicomtrolley {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except DICOMTrolleyError as error:
        print(f"dicomtrolley: {error}", file=sys.stderr)
        return EXIT_ERROR
    return status


if __name__ == "__main__":
    sys.exit(main())
