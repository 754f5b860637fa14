"""A plain pynetdicom C-GET of one study to disk, as a user of pynetdicom alone would write it.

Run by :mod:`benchmarks.run` in a fresh process per run::

    python benchmarks/client_pynetdicom.py --host H --port P --aec ORTHANC --study UID --out DIR

The recipe of pynetdicom's documentation: request the Study Root C-GET
context and CT Image Storage in the SCP role, and write each instance the
server sends, ``event.encoded_dataset()`` (file meta and dataset bytes as
received), to ``<SOPInstanceUID>.dcm``. pynetdicom's defaults otherwise
(transfer syntaxes, 16 KB maximum PDU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from clientlib import dimse_arguments, report
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, C-GET the study, print the timing and counts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    dimse_arguments(parser, aet="PYNETDICOM")
    args = parser.parse_args(argv)
    out = Path(args.out)
    written = {"count": 0, "bytes": 0}

    def handle_store(event: Event) -> int:
        data = event.encoded_dataset()
        with open(out / f"{event.request.AffectedSOPInstanceUID}.dcm", "wb") as file:  # type: ignore[union-attr]
            file.write(data)
        written["count"] += 1
        written["bytes"] += len(data)
        return 0x0000

    ae = AE(ae_title=args.aet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    role = build_role(CTImageStorage, scp_role=True)

    def work() -> int | None:
        assoc = ae.associate(args.host, args.port, ae_title=args.aec, ext_neg=[role],
                             evt_handlers=[(evt.EVT_C_STORE, handle_store)])
        if not assoc.is_established:
            raise SystemExit(f"association with {args.aec}@{args.host}:{args.port} not established")
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = args.study
        final = None
        for status, _identifier in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
            if "Status" in status:
                final = int(status.Status)
        assoc.release()
        return final

    def describe(final: int | None) -> dict[str, Any]:
        return {**written, "ok": final == 0x0000}

    report(work, describe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
