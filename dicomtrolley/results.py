"""What the trolley hands back: search results as a table, and the summary of a download.

:class:`StudyList` is a plain ``list`` of studies that also prints as a table,
renders as an HTML table in Jupyter, and turns into a pandas DataFrame.
:class:`DownloadSummary` says what a download wrote, skipped, and missed.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dicomtrolley.core import FetchFailure, InstanceReference, Quarantined, Study

if TYPE_CHECKING:
    import pandas

COLUMNS: tuple[str, ...] = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "StudyDate",
    "AccessionNumber",
    "ModalitiesInStudy",
    "StudyDescription",
)
"""The study attributes a table shows, in order."""


UNKNOWN = "?"
"""What the table shows for a value the search did not bring back (``None`` in :meth:`StudyList.rows`)."""


def _text(value: Any) -> str:
    if value is None:
        return UNKNOWN
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _attribute(study: Study, name: str) -> str | None:
    """The study attribute as text; ``None`` when the search did not return it (a series-level row lacks it)."""
    return _text(study.data.get(name)) if name in study.data else None


def _series_count(study: Study) -> int | None:
    """What the server says the study holds, or else how many series the search found; ``None``: unknown."""
    reported = study.data.get("NumberOfStudyRelatedSeries")
    if reported not in (None, ""):
        return int(reported)
    return len(study.series) or None  # a study search lists no series; a study has at least one


def _instance_count(study: Study) -> int | None:
    """What the server says, or the sum over the series (their counts, or the instances found); else ``None``."""
    reported = study.data.get("NumberOfStudyRelatedInstances")
    if reported not in (None, ""):
        return int(reported)
    counts: list[int] = []
    for series in study.series:
        number = series.data.get("NumberOfSeriesRelatedInstances")
        count = int(number) if number not in (None, "") else len(series.instances)
        if not count:
            return None  # neither reported nor searched: a series has at least one instance
        counts.append(count)
    return sum(counts) or None


class StudyList(list[Study]):
    """A list of studies that shows itself as a table.

    Each row is a study: the attributes in :data:`COLUMNS`, then how many
    series and instances it holds (as the server reports them, or else as
    many as the search found below it). What the search did not bring back,
    such as the study's description in a series-level search, is shown as
    :data:`UNKNOWN`, never as blank or 0.
    """

    def rows(self) -> list[dict[str, Any]]:
        """One dict per study: the table's columns, plus ``series`` and ``instances`` counts; ``None``: unknown."""
        out = []
        for study in self:
            row: dict[str, Any] = {"StudyInstanceUID": study.uid}
            for name in COLUMNS[1:]:
                row[name] = _attribute(study, name)
            row["series"] = _series_count(study)
            row["instances"] = _instance_count(study)
            out.append(row)
        return out

    def to_table(self) -> str:
        """The studies as a fixed-width text table."""
        rows = self.rows()
        if not rows:
            return "(no studies)"
        headers = list(rows[0])
        cells = [[_text(row[h]) for h in headers] for row in rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = self.rows()
        if not rows:
            return "<p>(no studies)</p>"
        head = "".join(f"<th>{html.escape(h)}</th>" for h in rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row.values()) + "</tr>"
            for row in rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def to_dataframe(self) -> pandas.DataFrame:
        """The table as a pandas DataFrame (``pip install dicomtrolley[pandas]``)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("to_dataframe needs pandas: pip install dicomtrolley[pandas]") from None
        return pandas.DataFrame(self.rows())


@dataclass
class DownloadSummary:
    """What a download did.

    Parameters
    ----------
    written
        Instances written by this run.
    bytes_written
        Bytes written by this run.
    skipped
        Instances already complete on disk, not fetched again.
    expected
        Instances the search said exist (``None`` without a searcher).
    elapsed
        Seconds the download took.
    failures
        Every target that could not be fetched, with the reason.
    missing
        Instances the search listed that did not arrive.
    transfer_syntaxes
        How many instances arrived in each transfer syntax.
    downloader_report
        What the protocol counted itself (C-GET/C-MOVE: completed, failed and
        warning sub-operations of the last request); empty for HTTP.
    quarantined
        Instances a pseudonymised download held back (burned-in annotations),
        with the reason; not failures, so they leave :attr:`ok` true.
    """

    written: int = 0
    bytes_written: int = 0
    skipped: int = 0
    expected: int | None = None
    elapsed: float = 0.0
    failures: list[FetchFailure] = field(default_factory=list)
    missing: list[InstanceReference] = field(default_factory=list)
    transfer_syntaxes: Counter[str] = field(default_factory=Counter)
    downloader_report: dict[str, int] = field(default_factory=dict)
    quarantined: list[Quarantined] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed and nothing is missing."""
        return not self.failures and not self.missing

    def __str__(self) -> str:
        rate = self.bytes_written / self.elapsed / 1e6 if self.elapsed else 0.0
        text = (
            f"{self.written} instances written ({self.bytes_written / 1e6:.1f} MB, {rate:.0f} MB/s), "
            f"{self.skipped} already on disk"
        )
        if self.failures or self.missing:
            text += f"; {len(self.failures)} failed, {len(self.missing)} missing"
        if self.quarantined:
            text += f"; {len(self.quarantined)} quarantined"
        return text
