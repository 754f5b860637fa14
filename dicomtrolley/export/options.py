"""How an export runs: :class:`ExportOptions`, declared once.

:func:`~dicomtrolley.export.export` and :meth:`Trolley.export
<dicomtrolley.trolley.Trolley.export>` name its fields as their keyword
arguments, and the export runs on the one object they make;
:func:`~dicomtrolley.export.cluster.export_on_dask` and ``dicomtrolley export``
take the object itself. Its fields' defaults and meanings are declared here alone;
``tests/test_export_options.py`` checks that both keyword functions name every
field, with the same default.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from dicomtrolley.deidentify import Deidentifier
from dicomtrolley.export.politeness import TimeWindow
from dicomtrolley.export.report import IndexFormat

DEFAULT_STUDIES = 4
"""Studies in flight when :attr:`ExportOptions.studies` is not set and the executor sets no other default."""


@dataclass(frozen=True)
class ExportOptions:
    """How an export runs; every field is also a keyword of :func:`~dicomtrolley.export.export`.

    :func:`~dicomtrolley.export.export` also takes text where the command line gives text:
    ``max_rate="50MB/s"``, ``window="19:00-07:00"``, ``state_dir="state"``.

    Parameters
    ----------
    studies
        Tasks (study downloads, row searches) in flight at once; by default
        :data:`DEFAULT_STUDIES`, on a Dask cluster two per worker thread.
    executor
        Where tasks run; a thread pool of ``studies`` threads by default.
    template
        A storage path template (see :class:`~dicomtrolley.storage.StorageDir`).
    max_attempts
        Attempts a failing study gets in all, counted across runs. Within a run, a study
        whose failure may pass (a connection cut, a 5xx, a truncated body) goes back
        in the queue until it has had them; one that cannot (a 404, a refused
        login, a full disk) fails at once (see :mod:`~dicomtrolley.export.retry`).
    retry_delay
        Seconds a study whose failure may pass waits before its next attempt in
        the same run; doubled after each attempt, jittered, at most
        :data:`~dicomtrolley.export.retry.MAX_RETRY_DELAY`.
    refresh
        Search again the rows an earlier run resolved.
    skip_bad_rows
        Report unreadable rows and go on, instead of refusing the worklist.
    max_rate
        A cap for the whole export, in bytes per second (or as text, ``"50MB/s"``).
    window
        Start new studies only in this daily window (``"19:00-07:00"``).
    progress
        A bar of studies, instances, MB and failures; ``None``: when somebody watches.
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
        Required for an export to another archive (which has no folder for them).

    Raises
    ------
    ValueError
        ``studies`` or ``max_attempts`` below 1, or ``retry_delay`` below 0.
    """

    studies: int | None = None
    executor: Executor | None = None
    template: str | None = None
    max_attempts: int = 3
    retry_delay: float = 5.0
    refresh: bool = False
    skip_bad_rows: bool = False
    max_rate: float | None = None
    window: TimeWindow | None = None
    progress: bool | None = None
    index_format: IndexFormat = "auto"
    deidentify: Deidentifier | None = None
    state_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.studies is not None and self.studies < 1:
            raise ValueError(f"studies must be at least 1, got {self.studies}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.retry_delay < 0:
            raise ValueError(f"retry_delay must be 0 or more, got {self.retry_delay}")

    @property
    def in_flight(self) -> int:
        """Tasks in flight at once: ``studies``, or :data:`DEFAULT_STUDIES`."""
        return self.studies or DEFAULT_STUDIES
