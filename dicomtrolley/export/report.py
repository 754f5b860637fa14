"""What an export did: ``report.csv``, the instance index, and :class:`ExportReport`.

Both files are written from the state database at the end of every run (also
after Ctrl-C), under a temporary name and renamed, so they are always whole
and always describe every run so far.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dicomtrolley.export.state import BAD_ROW, DONE, FAILED, INDEX_COLUMNS, NOT_FOUND, StateDatabase

if TYPE_CHECKING:
    import pandas

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

IndexFormat = Literal["auto", "csv", "parquet"]


@dataclass
class ExportReport:
    """The outcome of an export, all runs into its folder included.

    Attributes
    ----------
    lines
        The report's lines, as dicts with :data:`PSEUDONYMISED_REPORT_COLUMNS`.
    columns
        The columns ``report.csv`` and :meth:`to_dataframe` show: :data:`REPORT_COLUMNS`,
        or :data:`PSEUDONYMISED_REPORT_COLUMNS` for a pseudonymised export.
    report_path, index_path
        Where ``report.csv`` and the instance index were written.
    """

    lines: list[dict[str, Any]] = field(default_factory=list)
    columns: tuple[str, ...] = REPORT_COLUMNS
    report_path: Path | None = None
    index_path: Path | None = None

    @property
    def rows(self) -> int:
        """Worklist rows (bad rows included)."""
        return len({line["row"] for line in self.lines})

    def _studies(self, status: str) -> int:
        return len({line["study_uid"] for line in self.lines if line["study_uid"] and line["status"] == status})

    @property
    def studies_done(self) -> int:
        """Studies downloaded completely."""
        return self._studies(DONE)

    @property
    def studies_failed(self) -> int:
        """Studies that failed, or are still unfinished (an interrupted run)."""
        done_or_missing = (DONE, NOT_FOUND)
        return len({
            line["study_uid"] for line in self.lines if line["study_uid"] and line["status"] not in done_or_missing
        })

    @property
    def not_found(self) -> int:
        """Rows that matched no study, and studies the server does not have."""
        return sum(1 for line in self.lines if line["status"] == NOT_FOUND)

    @property
    def bad_rows(self) -> int:
        """Worklist rows that could not be read and were skipped."""
        return sum(1 for line in self.lines if line["status"] == BAD_ROW)

    @property
    def failed_rows(self) -> int:
        """Rows whose search failed."""
        return sum(1 for line in self.lines if line["status"] == FAILED and not line["study_uid"])

    @property
    def instances_written(self) -> int:
        """Instance files written (by the last attempt at each study)."""
        return sum(self._unique("instances_written"))

    @property
    def instances_quarantined(self) -> int:
        """Instances a pseudonymised export held back (see :mod:`dicomtrolley.deidentify`), by the last attempts."""
        return sum(self._unique("instances_quarantined"))

    @property
    def bytes_written(self) -> int:
        """Bytes of the files written (by the last attempt at each study)."""
        return sum(self._unique("bytes"))

    def _unique(self, column: str) -> Iterable[int]:
        seen: dict[str, int] = {}
        for line in self.lines:
            if line["study_uid"]:
                seen[line["study_uid"]] = int(line[column] or 0)
        return seen.values()

    @property
    def ok(self) -> bool:
        """True when every row is done: nothing failed, was not found, or was skipped as a bad row."""
        return bool(self.lines) and all(line["status"] == DONE for line in self.lines)

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
        return text


def build_report(state: StateDatabase) -> ExportReport:
    """The report's lines from the state database."""
    report = ExportReport()
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
        report.lines.append(line)
    return report


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
    report = build_report(state)
    if pseudonymised:
        report.columns = PSEUDONYMISED_REPORT_COLUMNS
    report.report_path = (report_folder or folder) / REPORT_NAME
    with _Atomic(report.report_path) as temporary, temporary.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=report.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(report.lines)
    report.index_path = write_index(state.index_rows(), folder, index_format)
    return report


def write_index(rows: Iterable[tuple[Any, ...]], folder: Path, index_format: IndexFormat = "auto") -> Path:
    """``instances.parquet`` (when pyarrow is installed, or asked for) or ``instances.csv``.

    The parquet file is converted from the CSV by pyarrow's own reader, which
    streams and needs no pandas (building arrays from Python lists would import it).
    """
    if index_format == "auto":
        index_format = "parquet" if importlib.util.find_spec("pyarrow") is not None else "csv"
    csv_path = folder / "instances.csv"
    with _Atomic(csv_path) as temporary, temporary.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(INDEX_COLUMNS)
        writer.writerows(rows)
    if index_format == "csv":
        return csv_path
    from pyarrow import csv as arrow_csv
    from pyarrow import int64, parquet, string, system_memory_pool

    path = folder / "instances.parquet"
    types = {name: int64() if name == "size" else string() for name in INDEX_COLUMNS}
    # Batch by batch on one thread, with the system allocator (arrow's own keeps what it
    # freed): memory stays flat however many files the export wrote.
    pool = system_memory_pool()
    reader = arrow_csv.open_csv(
        csv_path,
        read_options=arrow_csv.ReadOptions(use_threads=False, block_size=256 << 10),
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
