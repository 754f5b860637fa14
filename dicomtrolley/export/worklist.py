"""Reading a worklist: a CSV file, a DataFrame, or a list of StudyInstanceUIDs or queries.

Every row becomes a :class:`~dicomtrolley.core.Query` for studies. All of the
worklist is read before anything is downloaded, so a typo on line 7,412 stops
the export at once, naming the line, instead of after hours of work.

Columns (any subset, in any order, with a header row): ``StudyInstanceUID``,
``AccessionNumber``, ``PatientID``, ``StudyDate`` (``YYYYMMDD``,
``YYYY-MM-DD``, or a range ``A-B`` with either end open, read by the rules
a :class:`~dicomtrolley.core.Query` reads ``StudyDate`` by),
``ModalitiesInStudy``, ``StudyDescription``. A CSV file may be separated by
commas or tabs, and may start with a UTF-8 byte order mark.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dicomtrolley._values import parse_date_range
from dicomtrolley.core import Query
from dicomtrolley.exceptions import WorklistError

COLUMNS: tuple[str, ...] = (
    "StudyInstanceUID",
    "AccessionNumber",
    "PatientID",
    "StudyDate",
    "ModalitiesInStudy",
    "StudyDescription",
)
"""The columns a worklist may have."""


@dataclass(frozen=True)
class WorklistRow:
    """One row of a worklist: where it stands and what it asks for.

    Parameters
    ----------
    line
        The line in the file (header = line 1), or the position in a list or DataFrame (from 1).
    query
        The study search the row stands for.
    """

    line: int
    query: Query

    @property
    def key(self) -> str:
        """What identifies the row across runs: its query, not its line (rows may be added or moved)."""
        return json.dumps(self.query.model_dump(mode="json", exclude_defaults=True), sort_keys=True)

    @property
    def study_uid(self) -> str | None:
        """The StudyInstanceUID when that is all the row gives: such a row needs no search."""
        attributes = self.query.attributes()
        if set(attributes) == {"StudyInstanceUID"} and not self.query.study_date_range():
            return attributes["StudyInstanceUID"]
        return None

    def describe(self) -> str:
        """The row's query in a line, for the report."""
        parts = [f"{k}={v}" for k, v in self.query.attributes().items()]
        if self.query.study_date_range():
            parts.append(f"StudyDate={self.query.study_date_range()}")
        return " ".join(parts)


@dataclass(frozen=True)
class BadRow:
    """A row that could not be read, and why."""

    line: int
    error: str


@dataclass
class Worklist:
    """The rows of a worklist that can be exported, and those that cannot."""

    rows: list[WorklistRow] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)

    def check(self) -> None:
        """Raise :class:`WorklistError` naming every bad row, if there is one."""
        if self.bad:
            first = self.bad[0]
            more = f" (and {len(self.bad) - 1} more bad row(s))" if len(self.bad) > 1 else ""
            raise WorklistError(
                f"Worklist line {first.line}: {first.error}{more}",
                [(row.line, row.error) for row in self.bad],
            )


WorklistSource = str | os.PathLike[str] | Iterable[str | Query] | Any
"""What :func:`read_worklist` takes: a CSV path, a DataFrame, or StudyInstanceUIDs / Queries."""


def read_worklist(source: WorklistSource) -> Worklist:
    """Read a whole worklist into queries, setting aside the rows that cannot be read.

    Raises
    ------
    WorklistError
        The file cannot be read, or has a column that is not one of :data:`COLUMNS`
        (nothing can be exported from it then).
    """
    if isinstance(source, (str, os.PathLike)):
        return _from_csv(Path(source))
    if hasattr(source, "columns") and hasattr(source, "to_dict"):  # a pandas DataFrame
        frame: Any = source
        _check_columns([str(c) for c in frame.columns], line=1)
        records = frame.astype(object).where(frame.notna(), "").to_dict("records")
        return _from_records((index, record) for index, record in enumerate(records, start=1))
    worklist = Worklist()
    for index, item in enumerate(source, start=1):
        if isinstance(item, Query):
            worklist.rows.append(WorklistRow(index, item))
        elif isinstance(item, str) and item.strip():
            worklist.rows.append(WorklistRow(index, Query(StudyInstanceUID=item.strip())))
        else:
            worklist.bad.append(BadRow(index, f"expected a StudyInstanceUID or a Query, got {item!r}"))
    return worklist


def _from_csv(path: Path) -> Worklist:
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            first = file.readline()
            file.seek(0)
            delimiter = "\t" if "\t" in first else ","
            reader = csv.reader(file, delimiter=delimiter)
            header = [name.strip() for name in next(reader, [])]
            if not any(header):
                raise WorklistError(f"{path} is empty: a worklist needs a header row", [(1, "no header row")])
            _check_columns(header, line=1)
            records: list[tuple[int, dict[str, Any]]] = []
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue  # a blank line
                if len(cells) != len(header):
                    records.append((reader.line_num, {"": f"{len(cells)} fields, the header has {len(header)}"}))
                    continue
                records.append((reader.line_num, dict(zip(header, cells, strict=True))))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise WorklistError(f"Cannot read worklist {path}: {error}") from error
    return _from_records(records)


def _check_columns(columns: list[str], line: int) -> None:
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise WorklistError(
            f"Worklist line {line}: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"the columns are {', '.join(COLUMNS)}",
            [(line, f"unknown column(s) {', '.join(unknown)}")],
        )


def _from_records(records: Iterable[tuple[int, Mapping[str, Any]]]) -> Worklist:
    worklist = Worklist()
    for line, record in records:
        if "" in record:
            worklist.bad.append(BadRow(line, str(record[""])))
            continue
        try:
            worklist.rows.append(WorklistRow(line, _query(record)))
        except (ValueError, ValidationError) as error:
            worklist.bad.append(BadRow(line, _message(error)))
    return worklist


def _message(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
    return str(error)


def _query(record: Mapping[str, Any]) -> Query:
    values = {name: _cell(value) for name, value in record.items()}
    study_date = values.pop("StudyDate", "")
    if not any(values.values()) and not study_date:
        raise ValueError("the row is empty")
    try:
        low, high = parse_date_range(study_date) if study_date else (None, None)
    except ValueError as error:
        raise ValueError(f"StudyDate {error}") from None
    fields: dict[str, Any] = {k: v for k, v in values.items() if v}
    return Query(**fields, min_study_date=low, max_study_date=high)


def _cell(value: Any) -> str:
    if isinstance(value, (date, datetime)):
        return value.strftime("%Y%m%d")
    return "" if value is None else str(value).strip()
