"""What ``dicomtrolley search`` prints: one row per study, series or instance, as a table or for scripts.

Every format has the same columns, named by their DICOM keywords, fixed per
level so that even an empty answer has its header (``csv``, ``tsv``). A value
the search did not bring back is empty in ``csv``/``tsv``, ``null`` in
``json``/``jsonl`` and ``?`` in the table.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from dicomtrolley.core import QueryLevels, Study
from dicomtrolley.results import InstanceList, SeriesList, StudyList, text_table

FORMATS = ("table", "csv", "tsv", "jsonl", "json")
"""The values of ``--format``."""

_COUNTS = {"series": "NumberOfStudyRelatedSeries", "instances": "NumberOfStudyRelatedInstances"}
_SERIES_COUNTS = {"instances": "NumberOfSeriesRelatedInstances"}

LEVEL_COLUMNS: dict[QueryLevels, tuple[str, ...]] = {
    QueryLevels.STUDY: tuple(_COUNTS.get(name, name) for name in StudyList.columns),
    QueryLevels.SERIES: tuple(_SERIES_COUNTS.get(name, name) for name in SeriesList.columns),
    QueryLevels.INSTANCE: InstanceList.columns,
}
"""The columns of each level, in order: the library's tables, their counts named by keyword."""


def rows(studies: list[Study], level: QueryLevels) -> list[dict[str, Any]]:
    """One dict per object at ``level`` under the studies found, keyed by :data:`LEVEL_COLUMNS`.

    The rows are the library's tables (:class:`StudyList`, :class:`SeriesList`,
    :class:`InstanceList`) of what the search brought back, with their counts
    named by keyword.
    """
    if level == QueryLevels.STUDY:
        return [_renamed(row, _COUNTS) for row in StudyList(studies).rows()]
    series = SeriesList(one for study in studies for one in study.series)
    if level == QueryLevels.SERIES:
        return [_renamed(row, _SERIES_COUNTS) for row in series.rows()]
    return InstanceList(instance for one in series for instance in one.instances).rows()


def _renamed(row: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names.get(key, key): value for key, value in row.items() if key != "bytes"}


def render(found: list[dict[str, Any]], level: QueryLevels, output_format: str) -> str:
    """The rows in ``output_format`` (one of :data:`FORMATS`), without a final line end."""
    columns = LEVEL_COLUMNS[level]
    if output_format == "table":
        return text_table(found, noun=_NOUNS[level])
    if output_format == "json":
        return json.dumps(found, indent=1, ensure_ascii=False, default=str)
    if output_format == "jsonl":
        return "\n".join(json.dumps(row, ensure_ascii=False, default=str) for row in found)
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t" if output_format == "tsv" else ",", lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(row.get(name)) for name in columns] for row in found)
    return text.getvalue().rstrip("\n")


_NOUNS = {QueryLevels.STUDY: "studies", QueryLevels.SERIES: "series", QueryLevels.INSTANCE: "instances"}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def wildcard_hint(values: dict[str, str]) -> str | None:
    """Why a search may have found nothing that is there, and what to search for instead; ``None``: no reason.

    Some servers (Orthanc among them) do not decode a percent-encoded space or
    a non-ASCII letter in a QIDO-RS value, so such a value matches nothing.
    ``?`` stands for one character where a space or ``^`` stood, ``*`` for a
    run of non-ASCII letters; both match on every server.
    """
    suspect = {name: value for name, value in values.items() if value and _needs_wildcards(value)}
    if not suspect:
        return None
    tried = " ".join(f"--{name} '{_with_wildcards(value)}'" for name, value in suspect.items())
    return (
        "nothing matched. Some servers (Orthanc among them) match nothing for a value with a space, '^' or "
        f"a non-ASCII letter in it; try {tried} (? for a space or ^, * for non-ASCII letters)"
    )


def _needs_wildcards(value: str) -> bool:
    return any(c in " ^" or not c.isascii() for c in value)


def _with_wildcards(value: str) -> str:
    out: list[str] = []
    for char in value:
        if char in " ^":
            out.append("?")
        elif not char.isascii():
            if not out or out[-1] != "*":
                out.append("*")
        else:
            out.append(char)
    return "".join(out)
