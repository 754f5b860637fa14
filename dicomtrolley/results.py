"""What the trolley hands back: search results as a table, and the summary of a download.

:class:`StudyList` is a plain ``list`` of studies that also prints as a table,
renders as an HTML table in Jupyter, and turns into a pandas DataFrame;
:meth:`StudyList.series` gives a :class:`SeriesList` of their series, and
:meth:`SeriesList.instances` an :class:`InstanceList`, that do the same. Lists
made by a trolley search deeper for what their search did not return, and show
previews of what they hold (:meth:`StudyList.show_previews`).
:class:`DownloadSummary` says what a download wrote, skipped, and missed.
"""

from __future__ import annotations

import html
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from dicomtrolley._values import whole_number
from dicomtrolley.core import (
    DICOMObject,
    FetchFailure,
    Instance,
    InstanceReference,
    Quarantined,
    Query,
    QueryLevels,
    Series,
    Study,
)
from dicomtrolley.exceptions import NonInstanceParameterError, NonSeriesParameterError
from dicomtrolley.preview import DEFAULT_SIZE, Previewer, PreviewGallery, gallery
from dicomtrolley.roles import Searcher

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)

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


def _count(value: Any) -> int | str | None:
    """A count as the server reported it: an int; the text it sent when that is no one whole number
    (``[123, 3]``), which the table shows as it is; ``None`` when it sent none."""
    if value is None or value == "":
        return None
    number = whole_number(value)
    return number if number is not None else _text(value)


def _series_count(study: Study) -> int | str | None:
    """What the server says the study holds, or else how many series the search found; ``None``: unknown."""
    reported = _count(study.data.get("NumberOfStudyRelatedSeries"))
    if reported is not None:
        return reported
    return len(study.series) or None  # a study search lists no series; a study has at least one


def _instance_count(study: Study) -> int | str | None:
    """What the server says, or the sum over the series (their counts, or the instances found); else ``None``."""
    reported = _count(study.data.get("NumberOfStudyRelatedInstances"))
    if reported is not None:
        return reported
    counts: list[int] = []
    for series in study.series:
        count = _series_instances(series)
        if not isinstance(count, int):
            return None  # neither reported nor searched (a series has at least one instance), or unreadable
        counts.append(count)
    return sum(counts) or None


def text_table(rows: list[dict[str, Any]], *, noun: str = "rows") -> str:
    """Rows of the same keys as a fixed-width text table, one line per row; ``(no <noun>)`` for none.

    A value the search did not bring back (``None``) shows as :data:`UNKNOWN`.
    """
    if not rows:
        return f"(no {noun})"
    headers = list(rows[0])
    cells = [[_text(row[h]) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _series_instances(series: Series) -> int | str | None:
    """What the server says the series holds, or else how many instances the search found; ``None``: unknown."""
    reported = _count(series.data.get("NumberOfSeriesRelatedInstances"))
    return reported if reported is not None else len(series.instances) or None


class _ResultList:
    """Table output shared by study, series and instance lists: text, Jupyter HTML, pandas, previews."""

    noun = "objects"
    columns: tuple[str, ...] = ()
    """The columns of the table, also when it has no rows (an empty DataFrame has them too)."""

    def __init__(self, items: Iterable[Any] = (), *, previewer: Previewer | None = None) -> None:
        super().__init__(items)  # type: ignore[call-arg]  # list's, next in the method order
        self._previewer = previewer

    def rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _summary(self) -> str:
        raise NotImplementedError

    def _captioned(self) -> list[tuple[str, Any]]:
        raise NotImplementedError

    def to_table(self) -> str:
        """The rows as a fixed-width text table."""
        return text_table(self.rows(), noun=self.noun)

    def _repr_html_(self) -> str:
        rows = self.rows()
        if not rows:
            return f"<p>(no {self.noun})</p>"
        head = "".join(f"<th>{html.escape(h)}</th>" for h in rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row.values()) + "</tr>"
            for row in rows
        )
        caption = f"<caption>{html.escape(self._summary())}</caption>"
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def to_dataframe(self) -> pandas.DataFrame:
        """The table as a pandas DataFrame (``pip install dicomtrolley[pandas]``)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("to_dataframe needs pandas: pip install dicomtrolley[pandas]") from None
        rows = self.rows()
        return pandas.DataFrame(rows) if rows else pandas.DataFrame(columns=list(self.columns))

    def show_previews(self, size: int = DEFAULT_SIZE) -> PreviewGallery:
        """A row of previews, one per entry, rendered by the server; shows itself in Jupyter.

        Needs a list made by a :class:`~dicomtrolley.trolley.Trolley` with a WADO-RS downloader.
        """
        if self._previewer is None:
            raise TypeError(f"This {type(self).__name__} was not made by a Trolley, so it cannot render previews")
        return gallery(self._captioned(), self._previewer, size)


def _total(counts: Iterable[int | str | None]) -> str:
    """A sum for a caption; unknown when any part is unknown or unreadable."""
    values = list(counts)
    return str(sum(v for v in values if isinstance(v, int))) if all(isinstance(v, int) for v in values) else UNKNOWN


def _modalities(values: Iterable[str | None]) -> str:
    found = sorted({m for value in values if value for m in value.split("\\") if m and m != UNKNOWN})
    return ", ".join(found) or UNKNOWN


class _SearchableList(_ResultList):
    """A list that can search deeper for what its search did not return, when it knows its searcher."""

    def __init__(
        self, items: Iterable[Any] = (), *, previewer: Previewer | None = None, searcher: Searcher | None = None
    ) -> None:
        super().__init__(items, previewer=previewer)
        self._searcher = searcher


class StudyList(_SearchableList, list[Study]):
    """A list of studies that shows itself as a table.

    Each row is a study: the attributes in :data:`COLUMNS`, then how many
    series and instances it holds (as the server reports them, or else as
    many as the search found below it). What the search did not bring back,
    such as the study's description in a series-level search, is shown as
    :data:`UNKNOWN`, never as blank or 0. In Jupyter the table's caption sums
    them up: studies, series, instances and modalities.

    A study's size is known only once a download has written it whole
    (:attr:`DownloadSummary.study_sizes`, given to :meth:`with_sizes`): then a
    ``bytes`` column and the total in the caption. A search cannot tell it:
    DICOM defines no study-size attribute for QIDO-RS, MINT or C-FIND.
    Vendors' private ones (dcm4chee-arc's Study Size in KB) are not read, as
    Orthanc, the server this package is tested against, returns no private
    attributes in a study search.

    Parameters
    ----------
    items
        The studies.
    previewer
        Renders previews for :meth:`show_previews`; a trolley passes its own.
    searcher
        Searches deeper for :meth:`series` and :meth:`instances` when the
        studies were found without them; a trolley passes its own.
    """

    noun = "studies"
    columns = (*COLUMNS, "series", "instances")
    _sizes: Mapping[str, int] = MappingProxyType({})

    def with_sizes(self, sizes: Mapping[str, int]) -> StudyList:
        """These studies, with each one's size in bytes where ``sizes`` (study UID -> bytes) knows it.

        Pass :attr:`DownloadSummary.study_sizes` after downloading the studies.
        """
        shown = StudyList(self, previewer=self._previewer, searcher=self._searcher)
        shown._sizes = {study.uid: sizes[study.uid] for study in self if study.uid in sizes}
        return shown

    def rows(self) -> list[dict[str, Any]]:
        """One dict per study: the table's columns, ``series`` and ``instances`` counts, and ``bytes``
        when the size of any study is known (:meth:`with_sizes`); ``None``: unknown."""
        out = []
        for study in self:
            row: dict[str, Any] = {"StudyInstanceUID": study.uid}
            for name in COLUMNS[1:]:
                row[name] = _attribute(study, name)
            row["series"] = _series_count(study)
            row["instances"] = _instance_count(study)
            if self._sizes:
                row["bytes"] = self._sizes.get(study.uid)
            out.append(row)
        return out

    def _summary(self) -> str:
        rows = self.rows()
        modalities = [r["ModalitiesInStudy"] for r in rows]
        if all(m is None for m in modalities):  # a series-level search: the series say which
            modalities = [_text(s.first_value("Modality")) for study in self for s in study.series]
        size = ""
        if self._sizes:
            sizes = [r["bytes"] for r in rows]
            size = f", {UNKNOWN if None in sizes else f'{sum(sizes) / 1e6:.1f}'} MB"
        return (
            f"{len(rows)} studies, {_total(r['series'] for r in rows)} series, "
            f"{_total(r['instances'] for r in rows)} instances{size}; modalities: {_modalities(modalities)}"
        )

    def _captioned(self) -> list[tuple[str, Any]]:
        return [(f"{_text(s.first_value('PatientID'))} {_text(s.first_value('StudyDescription'))}", s) for s in self]

    def series(self) -> SeriesList:
        """Every series of these studies, as a table of its own.

        A study found without its series (by a study-level search) is searched
        at series level, one search per study, when this list knows its
        searcher (a list from :meth:`Trolley.find_studies
        <dicomtrolley.trolley.Trolley.find_studies>` does); the series found
        are added to the study.

        Raises
        ------
        NonSeriesParameterError
            A study lacks its series and this list has no searcher to find them.
        """
        self._search_deeper([s for s in self if not s.series], QueryLevels.SERIES)
        return SeriesList(
            (one for study in self for one in study.series), previewer=self._previewer, searcher=self._searcher
        )

    def instances(self) -> InstanceList:
        """Every instance of these studies, as a table of its own; see :meth:`SeriesList.instances`.

        A study found without its series is searched at instance level at
        once (one search per study), when this list knows its searcher.

        Raises
        ------
        NonInstanceParameterError
            Some series or study lacks its instances and this list has no searcher to find them.
        """
        self._search_deeper([s for s in self if not s.series], QueryLevels.INSTANCE)
        return self.series().instances()

    def _search_deeper(self, studies: list[Study], level: QueryLevels) -> None:
        """Give each of ``studies`` (found without series) what a search at ``level`` finds below it."""
        if not studies:
            return
        if self._searcher is None:
            error = NonSeriesParameterError if level is QueryLevels.SERIES else NonInstanceParameterError
            raise error(
                f"{len(studies)} of these studies were found without their series (a study-level search), and "
                f"this list has no searcher to find them: search with query_level={level.value!r}, or with a Trolley"
            )
        for study in studies:
            logger.info("Searching study %s at %s level for what its search did not return", study.uid, level.value)
            study.series = self._searcher.find_study_by_id(study.uid, level).series


SERIES_COLUMNS: tuple[str, ...] = (
    "PatientID",
    "StudyDate",
    "StudyDescription",
    "SeriesNumber",
    "Modality",
    "SeriesDescription",
)
"""The series attributes a series table shows after the two UIDs, in order."""


def _inherited(obj: DICOMObject, name: str) -> Any:
    """An attribute of ``obj``, or else of its series or study (a series row shows its study's date)."""
    node: DICOMObject | None = obj
    while node is not None:
        value = node.first_value(name)
        if value is not None:
            return value if isinstance(value, int) else _text(value)
        node = getattr(node, "parent", None)
    return None


class SeriesList(_SearchableList, list[Series]):
    """A list of series that shows itself as a table: one row per series, with its study's attributes.

    Parameters
    ----------
    items
        The series.
    previewer, searcher
        As for :class:`StudyList`; here the searcher finds the instances of :meth:`instances`.
    """

    noun = "series"
    columns = ("StudyInstanceUID", "SeriesInstanceUID", *SERIES_COLUMNS, "instances")

    def rows(self) -> list[dict[str, Any]]:
        """One dict per series: UIDs, :data:`SERIES_COLUMNS`, and an ``instances`` count; ``None``: unknown."""
        out = []
        for series in self:
            study = series.parent
            row: dict[str, Any] = {
                "StudyInstanceUID": study.uid if study is not None else None,
                "SeriesInstanceUID": series.uid,
            }
            for name in SERIES_COLUMNS:
                row[name] = _inherited(series, name)
            row["instances"] = _series_instances(series)
            out.append(row)
        return out

    def _summary(self) -> str:
        rows = self.rows()
        return (
            f"{len(rows)} series, {_total(r['instances'] for r in rows)} instances; "
            f"modalities: {_modalities(r['Modality'] for r in rows)}"
        )

    def _captioned(self) -> list[tuple[str, Any]]:
        return [
            (f"{_text(s.first_value('SeriesNumber'))} {_text(s.first_value('SeriesDescription'))}", s) for s in self
        ]

    def instances(self) -> InstanceList:
        """Every instance of these series, as a table of its own.

        A series found without its instances (by a study- or series-level
        search) is searched at instance level, one search per study for all
        its series in this list, when this list knows its searcher; the
        instances found are added to the series.

        Raises
        ------
        NonInstanceParameterError
            A series lacks its instances and this list has no searcher to find them.
        """
        lacking = [s for s in self if not s.instances]
        if lacking and self._searcher is None:
            raise NonInstanceParameterError(
                f"{len(lacking)} of these series were found without their instances, and this list has no "
                "searcher to find them: search with query_level='INSTANCE', or with a Trolley"
            )
        by_study: dict[str, list[Series]] = {}
        for series in lacking:
            by_study.setdefault(series.reference().study_uid, []).append(series)
        for study_uid, wanted in by_study.items():
            assert self._searcher is not None  # refused above
            query = Query(
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=",".join(s.uid for s in wanted),
                query_level=QueryLevels.INSTANCE,
            )
            found = {s.uid: s for study in self._searcher.find_studies(query) for s in study.series}
            for series in wanted:
                series.instances = found[series.uid].instances if series.uid in found else []
        return InstanceList(
            (one for series in self for one in series.instances), previewer=self._previewer
        )


INSTANCE_COLUMNS: tuple[str, ...] = (
    "PatientID",
    "StudyDate",
    "SeriesNumber",
    "Modality",
    "InstanceNumber",
    "SOPClassUID",
)
"""The instance attributes an instance table shows after the three UIDs, in order (from the series or
study when the instance's own search row lacks them)."""


class InstanceList(_ResultList, list[Instance]):
    """A list of instances that shows itself as a table: one row per instance, with its series' and study's attributes.

    Parameters
    ----------
    items
        The instances.
    previewer
        As for :class:`StudyList`.
    """

    noun = "instances"
    columns = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", *INSTANCE_COLUMNS)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per instance: its three UIDs and :data:`INSTANCE_COLUMNS`; ``None``: unknown."""
        out = []
        for instance in self:
            series = instance.parent
            study = series.parent if series is not None else None
            row: dict[str, Any] = {
                "StudyInstanceUID": study.uid if study is not None else None,
                "SeriesInstanceUID": series.uid if series is not None else None,
                "SOPInstanceUID": instance.uid,
            }
            for name in INSTANCE_COLUMNS:
                row[name] = _inherited(instance, name)
            out.append(row)
        return out

    def _summary(self) -> str:
        rows = self.rows()
        series = {r["SeriesInstanceUID"] for r in rows}
        return f"{len(rows)} instances in {len(series)} series; modalities: {_modalities(r['Modality'] for r in rows)}"

    def _captioned(self) -> list[tuple[str, Any]]:
        return [
            (f"{_text(i.first_value('SeriesNumber'))} {_text(i.first_value('InstanceNumber'))}", i) for i in self
        ]


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
    study_sizes
        Bytes written per study UID (as the written files name it), for each
        study this run wrote whole: one with an instance already on disk,
        failed, missing or quarantined is left out, as this run did not see
        all of it. Give it to :meth:`StudyList.with_sizes` to show sizes.
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
    study_sizes: dict[str, int] = field(default_factory=dict)

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
