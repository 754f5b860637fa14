"""dicomtrolley 4.1.0's side of the research benchmark: ``WadoRSMetaData.datasets``.

Run with the interpreter of ``benchmarks/.venv-reference`` (no pandas there):
its rows are plain dicts of the same keywords, which leaves 4.1.0 the cost of
a DataFrame that this package's row pays; the comparison errs in 4.1.0's favour.
"""

from __future__ import annotations

import argparse
import sys

from clientlib import KEYWORDS, Commands, canned_argument, canned_session, report


def _datasets(args: argparse.Namespace) -> object:
    from dicomtrolley.core import StudyReference
    from dicomtrolley.wado_rs import WadoRSMetaData

    downloader = WadoRSMetaData(canned_session(args.dicomweb, args.canned, streamed=True), args.dicomweb)
    return lambda: downloader.datasets([StudyReference(study_uid=args.study)])


def metadata_rows(args: argparse.Namespace) -> None:
    """4.1.0: a dict of KEYWORDS per Dataset of ``WadoRSMetaData.datasets([StudyReference])``."""
    datasets = _datasets(args)
    report(lambda: [{k: ds.get(k) for k in KEYWORDS} for ds in datasets()], lambda rows: {"count": len(rows)})


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one task."""
    commands = Commands(__doc__)
    canned_argument(commands.add("metadata-rows", metadata_rows, "--dicomweb", "--study"))
    return commands.main(argv)


if __name__ == "__main__":
    sys.exit(main())
