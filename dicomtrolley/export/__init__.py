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
:mod:`~dicomtrolley.export.retry` (which failures are worth another attempt, and when),
:mod:`~dicomtrolley.export.runner` (the driver) and
:mod:`~dicomtrolley.export.report` (report, index, :class:`ExportReport`).
It works on anything with a Trolley's ``find_studies`` and ``download``, and
imports no protocol.
"""

from __future__ import annotations

from concurrent.futures import Executor
from pathlib import Path

from dicomtrolley.deidentify import Deidentifier
from dicomtrolley.export.politeness import TimeWindow, parse_rate
from dicomtrolley.export.remote import ProfileTrolley
from dicomtrolley.export.report import REPORT_COLUMNS, ExportReport, IndexFormat
from dicomtrolley.export.runner import ExportOptions, run_export
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
    studies: int = 4,
    executor: Executor | None = None,
    template: str | None = None,
    max_attempts: int = 3,
    retry_delay: float = 5.0,
    refresh: bool = False,
    skip_bad_rows: bool = False,
    max_rate: float | str | None = None,
    window: TimeWindow | str | None = None,
    progress: bool | None = None,
    index_format: IndexFormat = "auto",
    deidentify: Deidentifier | None = None,
    state_dir: str | Path | None = None,
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
    studies
        Studies (or row searches) in flight at once.
    executor
        Where tasks run; a thread pool by default.
    template
        A storage path template (see :class:`~dicomtrolley.storage.StorageDir`).
    max_attempts
        Attempts a failing study gets in all, across runs. Within a run, a study
        whose failure may pass (a connection cut, a 5xx, a truncated body) goes back
        in the queue until it has had them; one that cannot (a 404, a refused
        login, a full disk) fails at once (see :mod:`~dicomtrolley.export.retry`).
    retry_delay
        Seconds before a failed study's next attempt in the same run; doubled after
        each attempt, jittered, at most five minutes.
    refresh
        Search again the rows an earlier run resolved.
    skip_bad_rows
        Report unreadable rows and go on instead of refusing the worklist.
    max_rate
        A cap for the whole export, in bytes per second or as text (``"50MB/s"``).
    window
        Start new studies only in this daily window (``"19:00-07:00"``).
    progress
        A progress bar; ``None``: when somebody watches.
    index_format
        ``"auto"`` (parquet with pyarrow, else csv), ``"csv"`` or ``"parquet"``.
    deidentify
        Pseudonymise every instance on the way to disk (see :mod:`dicomtrolley.deidentify`):
        files, paths and the instance index hold pseudonymised values only. Tasks
        run on this process's threads share this deidentifier; tasks an executor
        ships to other processes carry its options without the key, and each
        worker loads the key itself (``$DICOMTROLLEY_DEID_KEY``, the options'
        ``key_file`` or its keyring), as it logs in itself.
    state_dir
        The folder of the state database and ``report.csv`` (they hold the
        worklist and the original StudyInstanceUIDs). Default: the output folder;
        when pseudonymising, ``<output>.state`` beside the mapping table, or beside
        the output folder without one. Inside the output folder it is refused then.

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
    source = _source(trolley)
    options = ExportOptions(
        studies=studies, executor=executor, template=template, max_attempts=max_attempts,
        retry_delay=retry_delay, refresh=refresh,
        skip_bad_rows=skip_bad_rows, max_rate=parse_rate(max_rate) if isinstance(max_rate, str) else max_rate,
        window=TimeWindow.parse(window) if isinstance(window, str) else window, progress=progress,
        index_format=index_format, deidentify=deidentify, state_dir=Path(state_dir) if state_dir else None,
    )
    return run_export(source, worklist, output_dir, options)


def _source(trolley: Exporter | TrolleySource | ServerProfile) -> TrolleySource:
    """A trolley is shared by every thread; a profile builds one per process; a trolley source
    (a callable without a ``download``) is used as it is."""
    if isinstance(trolley, ServerProfile):
        return ProfileTrolley(trolley)
    if isinstance(trolley, Exporter):
        return SharedTrolley(trolley)
    return trolley
