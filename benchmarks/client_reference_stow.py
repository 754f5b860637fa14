"""dicomweb-client's side of the upload benchmark: ``store_instances`` series by series, or the whole study at once.

Run with the interpreter of ``benchmarks/.venv-reference`` (dicomweb-client
0.61.2); it imports nothing from this repository except ``clientlib.py``::

    python benchmarks/client_reference_stow.py --dicomweb URL --folder DIR [--whole-study]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import pydicom
from clientlib import report
from dicomweb_client.api import DICOMwebClient


def main() -> None:
    """Read the files with pydicom and store them: one ``store_instances`` call per series, or one in all."""
    parser = argparse.ArgumentParser(prog="client_reference_stow")
    parser.add_argument("--dicomweb", required=True)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--whole-study", action="store_true", help="one store_instances call for every file")
    args = parser.parse_args()
    client = DICOMwebClient(url=args.dicomweb)

    def work() -> int:
        series: dict[str, list[pydicom.Dataset]] = defaultdict(list)
        for path in sorted(args.folder.rglob("*.dcm")):
            dataset = pydicom.dcmread(path)
            series["all" if args.whole_study else dataset.SeriesInstanceUID].append(dataset)
        count = 0
        for datasets in series.values():
            client.store_instances(datasets)
            count += len(datasets)
        return count

    report(work, lambda count: {"count": count, "ok": True})


if __name__ == "__main__":
    main()
