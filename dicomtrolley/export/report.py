"""What an export did: ``report.csv``, the instance index, and :class:`ExportReport`.

Both files are written from the state database at the end of every run (also
after Ctrl-C), under a temporary name and renamed, so they are always whole
and always describe every run so far.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dicomtrolley._values import parse_date, whole_number
from dicomtrolley.export.state import BAD_ROW, DONE, FAILED, INDEX_COLUMNS, NOT_FOUND, IndexRow, StateDatabase

if TYPE_CHECKING:
    import pandas

    from dicomtrolley.audit import AuditResult

REPORT_NAME = "report.csv"
REPORT_COLUMNS: tuple[str, ...] = (
    "row", "query", "study_uid", "status", "instances_expected", "instances_written", "instances_skipped",
    "bytes", "attempts", "error", "started", "finished",
)
"""The columns of ``report.csv``, in order: one line per (worklist row, study), one for a row without studies."""

PSEUDONYMISED_REPORT_COLUMNS: tuple[str, ...] = (
    *REPORT_COLUMNS[:7], "instances_quarantined", *REPORT_COLUMNS[7:]
)
"""The columns of a pseudonymised export's ``report.csv``: also the instances held back (quarantined)."""

AUDIT_NAME = "audit.csv"
AUDIT_COLUMNS = ("file", "where", "kind", "reason")
"""``audit.csv``, beside ``report.csv``: a pseudonymised export's audit findings, never a value."""

IndexFormat = Literal["auto", "csv", "parquet"]


_WHOLE_NUMBERS = ("row", "instances_written", "instances_skipped", "instances_quarantined", "bytes", "attempts")


@dataclass
class ExportReport:
    """The outcome of an export, all runs into its folder included.

    The counts are taken while ``report.csv`` is written; the lines stay in
    that file (a worklist of 100,000 rows costs no memory here) and
    :attr:`lines` reads them back.

    Attributes
    ----------
    columns
        The columns ``report.csv`` and :meth:`to_dataframe` show: :data:`REPORT_COLUMNS`,
        or :data:`PSEUDONYMISED_REPORT_COLUMNS` for a pseudonymised export.
    report_path, index_path
        Where ``report.csv`` and the instance index were written.
    rows
        Worklist rows (bad rows included).
    studies_done
        Studies downloaded completely.
    studies_failed
        Studies that failed, or are still unfinished (an interrupted run).
    not_found
        Rows that matched no study, and studies the server does not have.
    bad_rows
        Worklist rows that could not be read and were skipped.
    failed_rows
        Rows whose search failed.
    instances_written, instances_quarantined, bytes_written
        Instance files written, instances a pseudonymised export held back
        (see :mod:`dicomtrolley.deidentify`), and the bytes of the files written;
        each by the last attempt at each study.
    ok
        True when every row is done: nothing failed, was not found, or was skipped as a bad row;
        for a pseudonymised export, also when its audit found nothing.
    audit
        A pseudonymised export's audit of its output folder (see :mod:`dicomtrolley.audit`), run at
        the end of each run that was not interrupted; ``None`` when there was nothing to audit.
        Its findings (file, where, kind: never a value) are also written to ``audit.csv`` beside
        ``report.csv``.
    """

    columns: tuple[str, ...] = REPORT_COLUMNS
    report_path: Path | None = None
    index_path: Path | None = None
    rows: int = 0
    studies_done: int = 0
    studies_failed: int = 0
    not_found: int = 0
    bad_rows: int = 0
    failed_rows: int = 0
    instances_written: int = 0
    instances_quarantined: int = 0
    bytes_written: int = 0
    ok: bool = False
    audit: AuditResult | None = None

    def record_audit(self, result: AuditResult | None) -> None:
        """Keep the audit's result and write its findings beside ``report.csv``; a finding makes the export not ok.

        ``audit.csv`` has a line per finding (``file``, ``where``, ``kind``, ``reason``), none when
        the output is clean; without an audit it is removed, so it never describes an older run.
        """
        self.audit = result
        if self.report_path is None:
            return
        path = self.report_path.with_name(AUDIT_NAME)
        if result is None:
            path.unlink(missing_ok=True)
            return
        with _Atomic(path) as temporary, temporary.open("w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(AUDIT_COLUMNS)
            writer.writerows((f.file, f.where, f.kind, f.reason) for f in result.findings)
        if not result.ok:
            self.ok = False

    @property
    def lines(self) -> list[dict[str, Any]]:
        """The report's lines, read from ``report.csv``: dicts with :data:`PSEUDONYMISED_REPORT_COLUMNS`.

        Counts are numbers, ``instances_expected`` is a number or ``""`` (unknown).
        """
        if self.report_path is None:
            return []
        with self.report_path.open(encoding="utf-8", newline="") as file:
            return [_typed(line) for line in csv.DictReader(file)]

    def to_dataframe(self) -> pandas.DataFrame:
        """The report's lines as a pandas DataFrame (``pip install dicomtrolley[pandas]``)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("to_dataframe needs pandas: pip install dicomtrolley[pandas]") from None
        return pandas.DataFrame(self.lines, columns=list(self.columns))

    def __str__(self) -> str:
        text = (
            f"{self.rows} rows: {self.studies_done} studies done, {self.studies_failed} failed, "
            f"{self.not_found} not found"
        )
        if self.bad_rows:
            text += f", {self.bad_rows} bad rows skipped"
        text += f"; {self.instances_written} instances written ({self.bytes_written / 1e6:.1f} MB)"
        if self.instances_quarantined:
            text += f", {self.instances_quarantined} quarantined"
        if self.audit is not None:
            text += "; audit: clean" if self.audit.ok else f"; audit: {len(self.audit.findings)} findings"
        return text


def _typed(line: dict[str, str]) -> dict[str, Any]:
    """A line of ``report.csv`` with its numbers as numbers (as the report was written)."""
    typed: dict[str, Any] = {"instances_quarantined": 0, **line}
    for column in _WHOLE_NUMBERS:
        typed[column] = int(typed[column] or 0)
    expected = typed["instances_expected"]
    typed["instances_expected"] = int(expected) if expected else ""
    return typed


def _report_lines(state: StateDatabase) -> Iterator[dict[str, Any]]:
    """The report's lines from the state database, streamed."""
    for row, study in state.report_lines():
        line: dict[str, Any] = {
            "row": row.line, "query": row.query, "study_uid": "", "status": row.status,
            "instances_expected": "", "instances_written": 0, "instances_skipped": 0, "instances_quarantined": 0,
            "bytes": 0,
            "attempts": 0, "error": row.error, "started": "", "finished": "",
        }
        if study is not None:
            line.update(
                study_uid=study.uid, status=study.status,
                instances_expected="" if study.expected is None else study.expected,
                instances_written=study.written, instances_skipped=study.skipped,
                instances_quarantined=study.quarantined, bytes=study.bytes,
                attempts=study.attempts, error=study.error, started=study.started, finished=study.finished,
            )
        yield line


class _Tally:
    """The report's counts, taken line by line as ``report.csv`` is written."""

    def __init__(self) -> None:
        self.rows: set[int] = set()
        self.studies: dict[str, tuple[str, int, int, int]] = {}  # uid: status, written, quarantined, bytes
        self.not_found = self.bad_rows = self.failed_rows = self.lines = self.done_lines = 0

    def add(self, line: dict[str, Any]) -> None:
        self.lines += 1
        self.rows.add(line["row"])
        status, uid = line["status"], line["study_uid"]
        self.done_lines += status == DONE
        self.not_found += status == NOT_FOUND
        self.bad_rows += status == BAD_ROW
        self.failed_rows += status == FAILED and not uid
        if uid:  # a study matched by several rows counts once, as its last line says
            self.studies[uid] = (status, line["instances_written"], line["instances_quarantined"], line["bytes"])

    def fill(self, report: ExportReport) -> None:
        studies = self.studies.values()
        report.rows = len(self.rows)
        report.studies_done = sum(1 for status, *_ in studies if status == DONE)
        report.studies_failed = sum(1 for status, *_ in studies if status not in (DONE, NOT_FOUND))
        report.not_found, report.bad_rows, report.failed_rows = self.not_found, self.bad_rows, self.failed_rows
        report.instances_written = sum(written for _, written, _, _ in studies)
        report.instances_quarantined = sum(held for _, _, held, _ in studies)
        report.bytes_written = sum(size for *_, size in studies)
        report.ok = self.lines > 0 and self.done_lines == self.lines


def write_outputs(
    state: StateDatabase,
    folder: Path,
    index_format: IndexFormat = "auto",
    *,
    report_folder: Path | None = None,
    pseudonymised: bool = False,
) -> ExportReport:
    """Write the instance index into ``folder`` and ``report.csv`` into ``report_folder`` (default: ``folder``).

    A pseudonymised export keeps its report (it holds the worklist's queries and
    the original StudyInstanceUIDs) outside the output folder, with a column for
    the instances it quarantined; its index holds pseudonymised values only.
    """
    report = ExportReport(columns=PSEUDONYMISED_REPORT_COLUMNS if pseudonymised else REPORT_COLUMNS)
    report.report_path = (report_folder or folder) / REPORT_NAME
    tally = _Tally()
    with _Atomic(report.report_path) as temporary, temporary.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=report.columns, extrasaction="ignore")
        writer.writeheader()
        for line in _report_lines(state):
            tally.add(line)
            writer.writerow(line)
    tally.fill(report)
    report.index_path = write_index(state.index_rows(), folder, index_format)
    return report


INDEX_INTEGERS: tuple[str, ...] = ("SeriesNumber", "InstanceNumber", "size")
"""The index columns that hold whole numbers (int64 in parquet; empty where a file has none)."""

INDEX_DATES: tuple[str, ...] = ("StudyDate",)
"""The index columns that hold dates (date32 in parquet, ``YYYY-MM-DD`` in CSV; empty where unreadable)."""

_INDEX_POSITIONS = {name: INDEX_COLUMNS.index(name) for name in (*INDEX_INTEGERS, *INDEX_DATES)}


def _typed_index_row(row: tuple[Any, ...]) -> list[Any]:
    """An index row with its numbers as numbers and its date in ISO form, as pandas and pyarrow read them.

    A file's own value that is no whole number (``"1\\2"``) or no date is left
    empty, so that one odd file cannot make the column text again.
    """
    cells = list(row)
    for name in INDEX_INTEGERS:
        position = _INDEX_POSITIONS[name]
        value = cells[position]
        if not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
            number = whole_number(value)
            cells[position] = "" if number is None else number
    for name in INDEX_DATES:
        position = _INDEX_POSITIONS[name]
        cells[position] = _iso_day(cells[position])
    return cells


@functools.lru_cache(maxsize=4096)
def _iso_day(value: Any) -> str:
    """A DICOM date as ``YYYY-MM-DD``, or '' (cached: an export holds few distinct study dates)."""
    try:
        return parse_date(value).isoformat() if value else ""
    except ValueError:
        return ""


def write_index(rows: Iterable[IndexRow], folder: Path, index_format: IndexFormat = "auto") -> Path:
    """``instances.parquet`` (when pyarrow is installed, or asked for) or ``instances.csv``.

    :data:`INDEX_INTEGERS` are integers and :data:`INDEX_DATES` dates in both:
    sorting by InstanceNumber sorts by number, not as text. The parquet file
    is converted from the CSV by pyarrow's own reader, which streams and
    needs no pandas (building arrays from Python lists would import it).
    """
    if index_format == "auto":
        index_format = "parquet" if importlib.util.find_spec("pyarrow") is not None else "csv"
    csv_path = folder / "instances.csv"
    with _Atomic(csv_path) as temporary, temporary.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(INDEX_COLUMNS)
        writer.writerows(_typed_index_row(row) for row in rows)
    if index_format == "csv":
        return csv_path
    from pyarrow import csv as arrow_csv
    from pyarrow import date32, int64, parquet, string, system_memory_pool

    path = folder / "instances.parquet"
    types = {
        name: int64() if name in INDEX_INTEGERS else date32() if name in INDEX_DATES else string()
        for name in INDEX_COLUMNS
    }
    # Batch by batch on one thread, with the system allocator (arrow's own keeps what it
    # freed), from a plain file (a memory map would count the whole CSV as ours), in blocks
    # below malloc's mmap threshold (larger ones grow the heap with every block read):
    # memory stays flat however many files the export wrote.
    pool = system_memory_pool()
    with csv_path.open("rb") as source:
        reader = arrow_csv.open_csv(
            source,
            read_options=arrow_csv.ReadOptions(use_threads=False, block_size=64 << 10),
            convert_options=arrow_csv.ConvertOptions(column_types=types),
            memory_pool=pool,
        )
        with _Atomic(path) as temporary, parquet.ParquetWriter(temporary, reader.schema, memory_pool=pool) as writer:
            for batch in reader:
                writer.write_batch(batch)
    csv_path.unlink()
    return path


class _Atomic:
    """A temporary path beside ``path``, renamed to it when the block ends without error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temporary = path.with_name(f".{path.name}.partial")

    def __enter__(self) -> Path:
        return self.temporary

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            os.replace(self.temporary, self.path)
        else:
            self.temporary.unlink(missing_ok=True)
