"""What a pseudonymised download keeps outside its output folder: the mapping table, and the originals' state.

Both re-identify, so neither may lie in the output folder that is meant to
hold pseudonymised data only (:func:`refuse_mapping_inside`,
:func:`originals_folder`).
"""

from __future__ import annotations

import csv
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from dicomtrolley._originals import default_state_folder
from dicomtrolley._paths import lies_inside
from dicomtrolley.exceptions import DeidentificationError

if TYPE_CHECKING:
    from dicomtrolley.deidentify import DeidentifyOptions, Pseudonyms


def refuse_mapping_inside(options: DeidentifyOptions, folder: Path | None) -> None:
    """Refuse a mapping table inside ``folder`` (the output folder), unless ``mapping_in_output`` allows it.

    Raises
    ------
    DeidentificationError
        The table re-identifies, and lies inside the folder meant to hold pseudonymised data only.
    StorageError
        A link on the way to either loops, or cannot be read.
    """
    mapping = options.mapping
    if mapping is None or folder is None or options.mapping_in_output:
        return
    if lies_inside(mapping, folder):
        raise DeidentificationError(
            f"The mapping table {mapping} re-identifies, but lies inside the output folder {folder}; "
            "write it elsewhere, or allow it with mapping_in_output"
        )


def originals_folder(state_dir: Path | None, mapping: Path | None, folder: Path | None) -> Path | None:
    """Where the originals' identifying values are recorded for the audit: ``state_dir``, or beside ``folder``.

    ``folder`` is the output folder of the storage pseudonymised into; a storage
    that writes no files (another archive) records them only in a ``state_dir``
    given, and ``None`` says there is none.

    Raises
    ------
    DeidentificationError
        The state folder lies inside the output folder.
    StorageError
        A link on the way to either loops, or cannot be read.
    """
    state = state_dir or (default_state_folder(folder, mapping) if folder is not None else None)
    if state is not None and folder is not None and lies_inside(state, folder):
        raise DeidentificationError(
            f"The state folder {state} holds the originals' identifying values, but lies inside the output "
            f"folder {folder}; choose one outside it"
        )
    return state


class MappingTable:
    """The CSV table from original to pseudonymous identifiers, one row per study, appended as studies arrive.

    Rows already in the file are not written again, so one table can collect
    many runs and batches.
    """

    COLUMNS = (
        "PatientID", "PseudonymousPatientID", "StudyInstanceUID", "PseudonymousStudyInstanceUID",
        "AccessionNumber", "PseudonymousAccessionNumber", "DateShiftDays",
    )

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._studies: set[str] = set()
        if self.path.is_file():
            with self.path.open(newline="", encoding="utf-8") as file:
                self._studies = {row["StudyInstanceUID"] for row in csv.DictReader(file) if row.get("StudyInstanceUID")}

    def add(self, pseudonyms: Pseudonyms) -> None:
        """Append the row of this instance's study, unless the table has it."""
        with self._lock:
            if pseudonyms.study_uid in self._studies:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.is_file() or self.path.stat().st_size == 0
            with self.path.open("a", newline="", encoding="utf-8") as file:
                writer = csv.writer(file)
                if new:
                    writer.writerow(self.COLUMNS)
                writer.writerow([
                    pseudonyms.patient_id, pseudonyms.pseudonymous_patient_id,
                    pseudonyms.study_uid, pseudonyms.pseudonymous_study_uid,
                    pseudonyms.accession_number, pseudonyms.pseudonymous_accession_number,
                    pseudonyms.date_shift_days,
                ])
            self._studies.add(pseudonyms.study_uid)
