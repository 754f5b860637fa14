"""Reading a worklist: a CSV file, a DataFrame, or a list of StudyInstanceUIDs or queries.

Every row becomes a :class:`~dicomtrolley.core.Query` for studies. All of the
worklist is read before anything is downloaded, so a typo on line 7,412 stops
the export at once, naming the line, instead of after hours of work.

Columns (any subset, in any order, with a header row): ``StudyInstanceUID``,
``AccessionNumber``, ``PatientID``, ``StudyDate`` (``YYYYMMDD``,
``YYYY-MM-DD``, or a range ``A-B`` with either end open, read by the rules
a :class:`~dicomtrolley.core.Query` reads ``StudyDate`` by),
``ModalitiesInStudy``, ``StudyDescription``. A CSV file may be separated by
commas, semicolons or tabs (whichever its header line holds most of), and is
read in the encoding its byte order mark names (UTF-8, UTF-16, UTF-32), else as
UTF-8, else as Windows-1252: what Excel saves as "CSV UTF-8", "Unicode Text"
and "CSV" in Western Europe. A file that fits none is refused, saying how to
save it.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
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

logger = logging.getLogger(__name__)

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
"""What :func:`read_worklist` takes: a CSV path, a DataFrame, StudyInstanceUIDs / Queries, or a read Worklist."""


def read_worklist(source: WorklistSource) -> Worklist:
    """Read a whole worklist into queries, setting aside the rows that cannot be read.

    Raises
    ------
    WorklistError
        The file cannot be read, or has a column that is not one of :data:`COLUMNS`
        (nothing can be exported from it then).
    """
    if isinstance(source, Worklist):
        return source
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


def read_checked(source: WorklistSource, *, skip_bad_rows: bool) -> Worklist:
    """:func:`read_worklist`, refusing a worklist with a bad row unless bad rows are to be skipped.

    An export calls it before any work, so a wrong worklist costs no request.

    Raises
    ------
    WorklistError
        The file cannot be read, has an unknown column, or (without ``skip_bad_rows``) a bad row.
    """
    worklist = read_worklist(source)
    if not skip_bad_rows:
        worklist.check()
    return worklist


def _from_csv(path: Path) -> Worklist:
    text = _decoded(path)
    delimiter = _delimiter(text.partition("\n")[0])
    if delimiter != ",":
        logger.info("Worklist %s: separated by %r", path, delimiter)
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
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
    except csv.Error as error:
        raise WorklistError(f"Cannot read worklist {path}: {error}") from error
    return _from_records(records)


_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
"""Longest first: a UTF-32 little-endian mark starts as the UTF-16 one does."""

SAVE_AS = "save it from Excel as 'CSV UTF-8 (Comma delimited)', or from any editor as UTF-8 text"
"""How to save a worklist that cannot be read, as the refusal says."""


def _decoded(path: Path) -> str:
    """The file's text: in the encoding its byte order mark names, else UTF-8, else Windows-1252 (cp1252).

    Excel saves "CSV" in the system's ANSI code page (cp1252 in Western
    Europe, a superset of Latin-1's printable characters), "Unicode Text" as
    UTF-16 with a mark, and "CSV UTF-8" with a UTF-8 mark. The encoding used is
    logged; a guess (cp1252) as a warning.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WorklistError(f"Cannot read worklist {path}: {error}") from error
    for mark, codec in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError as error:
                raise WorklistError(f"Cannot read worklist {path}: its byte order mark says {codec}, "
                                    f"but {error.reason} at byte {error.start}; {SAVE_AS}") from None
            logger.info("Worklist %s: read as %s (its byte order mark says so)", path, codec)
            return text
    if b"\x00" in data:
        raise WorklistError(f"Cannot read worklist {path}: it is not text (NUL bytes and no byte order mark; "
                            f"an Excel workbook?); {SAVE_AS}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        logger.info("Worklist %s: read as utf-8", path)
        return text
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError as error:
        raise WorklistError(f"Cannot read worklist {path}: neither UTF-8 nor Windows-1252 "
                            f"(byte 0x{data[error.start]:02x} at {error.start}); {SAVE_AS}") from None
    logger.warning("Worklist %s is not UTF-8: read as Windows-1252 (cp1252), as Excel saves CSV", path)
    return text


def _delimiter(header: str) -> str:
    """The separator of the header line: the most frequent of comma, semicolon and tab (a comma for one column)."""
    counts = {candidate: header.count(candidate) for candidate in (",", ";", "\t")}
    best = max(counts, key=lambda candidate: counts[candidate])
    return best if counts[best] else ","


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
