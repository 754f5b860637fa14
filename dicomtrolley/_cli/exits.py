"""The exit statuses of the ``dicomtrolley`` command, as docs/cli.md lists them."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURES = 1
"""Something failed or is missing (each is listed on standard error)."""

EXIT_USAGE = 2
"""A mistake on the command line (an output folder that cannot be written in included), or a bad worklist."""

EXIT_BAD_WORKLIST = EXIT_USAGE

EXIT_ERROR = 3
"""Any other error: a bad login, an unreachable server, a folder in use by another export."""

EXIT_INTERRUPTED = 130
"""An export interrupted with Ctrl-C (its state is saved)."""


class UsageError(Exception):
    """A mistake on the command line found after parsing; reported in one line with exit status 2."""
