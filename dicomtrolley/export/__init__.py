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
:mod:`~dicomtrolley.export.runner` (the driver) and
:mod:`~dicomtrolley.export.report` (report, index, :class:`ExportReport`).
It works on anything with a Trolley's ``find_studies`` and ``download``, and
imports no protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dicomtrolley.export.options import ExportOptions, options_of
from dicomtrolley.export.remote import ProfileTrolley
from dicomtrolley.export.report import REPORT_COLUMNS, ExportReport
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
    options: ExportOptions | None = None,
    **changes: Any,
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
    options
        How the export runs (:class:`ExportOptions`); the defaults when omitted.
    **changes
        Fields of :class:`ExportOptions` to set, for short: ``export(trolley, uids, "out", studies=8)``.

    Raises
    ------
    TypeError
        A keyword that is no field of :class:`ExportOptions`.
    WorklistError
        The worklist has unknown columns or bad rows (unless ``skip_bad_rows``); nothing was downloaded.
    ExportLockedError
        Another export is using ``output_dir``.
    DeidentificationError
        A pseudonymised export's state folder or mapping table lies inside ``output_dir``.
    KeyboardInterrupt
        After Ctrl-C, once the state and the report are saved.
    """
    return run_export(_source(trolley), worklist, output_dir, options_of(options, changes))


def _source(trolley: Exporter | TrolleySource | ServerProfile) -> TrolleySource:
    """A trolley is shared by every thread; a profile builds one per process; a trolley source
    (a callable without a ``download``) is used as it is."""
    if isinstance(trolley, ServerProfile):
        return ProfileTrolley(trolley)
    if isinstance(trolley, Exporter):
        return SharedTrolley(trolley)
    return trolley
