"""The command line's usage mistakes, as its tests see them: exit status 2 and what it wrote to stderr."""

from __future__ import annotations

import pytest

from dicomtrolley.cli import main


def usage_error(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command line on ``arguments`` that are a mistake; check that it exits 2 and return its stderr."""
    with pytest.raises(SystemExit) as stopped:
        main(arguments)
    assert stopped.value.code == 2
    return capsys.readouterr().err


def one_line_usage_error(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """:func:`usage_error` for a mistake the command line explains in one line (no usage text): that line."""
    (line,) = usage_error(arguments, capsys).splitlines()
    return line
