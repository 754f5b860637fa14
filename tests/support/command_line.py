"""The command line run in-process as its tests run it: usage mistakes (exit 2), pseudonymising downloads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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


def pseudonymising_download(url: str, uids: Sequence[str], folder: Path, config: str, *options: str) -> int:
    """``dicomtrolley download`` of ``uids`` into ``folder/out``, pseudonymised as the config file says.

    ``config`` is the text of ``folder/deid.toml`` (empty: the defaults); ``options`` are added to the
    command. Returns the exit status. The key comes from the environment, as for a user.
    """
    (folder / "deid.toml").write_text(config, encoding="utf-8")
    return main(["download", url, *uids, "-o", str(folder / "out"), "--no-progress",
                 "--deidentify", str(folder / "deid.toml"), *options])
