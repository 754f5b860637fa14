"""Batch export: a worklist in, every study on disk, a state database that survives anything, a report out.

:func:`export` (also :meth:`Trolley.export <dicomtrolley.trolley.Trolley.export>`
and ``dicomtrolley export`` on the command line) reads a worklist, finds the
studies of each row, downloads them into one folder a few at a time, and keeps
its state in a SQLite database there, so that running it again continues where
it stopped. It writes ``report.csv`` and an index of the files written. A
pseudonymised export (``deidentify=``) keeps the database and ``report.csv``,
which hold original identifiers, in a state folder outside the output folder.

The subpackage, one job per module: :mod:`~dicomtrolley.export.worklist`
(reading the worklist), :mod:`~dicomtrolley.export.state` (the database and
the folder's lock), :mod:`~dicomtrolley.export.tasks` (the units of work an
executor runs), :mod:`~dicomtrolley.export.politeness` (rate and time window),
:mod:`~dicomtrolley.export.prefetch` (one search for the series counts of many studies),
:mod:`~dicomtrolley.export.rows` (worklist rows into studies),
:mod:`~dicomtrolley.export.options` (:class:`ExportOptions`, how it runs),
:mod:`~dicomtrolley.export.retry` (which failures are worth another attempt, and when),
:mod:`~dicomtrolley.export.runner` (the driver) and
:mod:`~dicomtrolley.export.report` (report, index, :class:`ExportReport`).
It works on anything with a Trolley's ``find_studies`` and ``download``, and
imports no protocol.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor
from pathlib import Path

from dicomtrolley.deidentify import Deidentifier
from dicomtrolley.export.options import ExportOptions
from dicomtrolley.export.politeness import TimeWindow, parse_rate
from dicomtrolley.export.remote import ProfileTrolley
from dicomtrolley.export.report import REPORT_COLUMNS, ExportReport, IndexFormat
from dicomtrolley.export.runner import run_export
from dicomtrolley.export.state import INDEX_COLUMNS
from dicomtrolley.export.tasks import Exporter, SharedTrolley, TrolleySource
from dicomtrolley.export.worklist import WorklistSource
from dicomtrolley.profiles import ServerProfile

__all__ = [
    "INDEX_COLUMNS",
    "REPORT_COLUMNS",
    "ExportOptions",
    "ExportReport",
    "Exporter",
    "ProfileTrolley",
    "SharedTrolley",
    "TrolleySource",
    "export",
]


def export(
    trolley: Exporter | TrolleySource | ServerProfile,
    worklist: WorklistSource,
    output_dir: str | Path,
    *,
    studies: int | None = ExportOptions.studies,
    executor: Executor | None = ExportOptions.executor,
    template: str | None = ExportOptions.template,
    max_attempts: int = ExportOptions.max_attempts,
    retry_delay: float = ExportOptions.retry_delay,
    refresh: bool = ExportOptions.refresh,
    skip_bad_rows: bool = ExportOptions.skip_bad_rows,
    max_rate: float | str | None = ExportOptions.max_rate,
    window: TimeWindow | str | None = ExportOptions.window,
    progress: bool | None = ExportOptions.progress,
    index_format: IndexFormat = ExportOptions.index_format,
    deidentify: Deidentifier | None = ExportOptions.deidentify,
    state_dir: str | os.PathLike[str] | None = ExportOptions.state_dir,
) -> ExportReport:
    """Export every study of a worklist into ``output_dir``; run it again to continue.

    Parameters
    ----------
    trolley
        A :class:`~dicomtrolley.trolley.Trolley` (shared by all threads), a
        :class:`~dicomtrolley.profiles.ServerProfile` (each process builds its
        trolley from it when it first needs one, and logs in itself), or a
        callable that returns a trolley. Tasks that an executor sends to other
        processes carry the server's profile, never a trolley or a password.
    worklist
        A CSV file, a pandas DataFrame, or a list of StudyInstanceUIDs or Queries
        (see :mod:`dicomtrolley.export.worklist`).
    output_dir
        The folder; it holds the files, the state database, ``report.csv`` and the index.
    studies, executor, template, max_attempts, retry_delay, refresh, skip_bad_rows, max_rate, window, progress, \
index_format, deidentify, state_dir
        How the export runs: the fields of :class:`ExportOptions`, which says what
        each does and holds their defaults (the one place they are declared).

    Raises
    ------
    WorklistError
        The worklist has unknown columns or bad rows (unless ``skip_bad_rows``); nothing was downloaded.
    TemplateError
        ``template`` names something that is not a DICOM keyword; nothing was downloaded.
    OutputFolderError
        ``output_dir`` (or the state folder) cannot be made or written in; nothing was downloaded.
    ExportLockedError
        Another export is using ``output_dir``.
    DeidentificationError
        A pseudonymised export's state folder or mapping table lies inside ``output_dir``.
    KeyboardInterrupt
        After Ctrl-C, once the state and the report are saved.
    """
    options = ExportOptions(
        studies=studies, executor=executor, template=template, max_attempts=max_attempts,
        retry_delay=retry_delay, refresh=refresh,
        skip_bad_rows=skip_bad_rows, max_rate=parse_rate(max_rate) if isinstance(max_rate, str) else max_rate,
        window=TimeWindow.parse(window) if isinstance(window, str) else window, progress=progress,
        index_format=index_format, deidentify=deidentify, state_dir=Path(state_dir) if state_dir else None,
    )
    return run_export(_source(trolley), worklist, output_dir, options)


def _source(trolley: Exporter | TrolleySource | ServerProfile) -> TrolleySource:
    """A trolley is shared by every thread; a profile builds one per process; a trolley source
    (a callable without a ``download``) is used as it is."""
    if isinstance(trolley, ServerProfile):
        return ProfileTrolley(trolley)
    if isinstance(trolley, Exporter):
        return SharedTrolley(trolley)
    return trolley
