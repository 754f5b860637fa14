"""The driver of an export: what runs next, what the database records, and when to stop.

One thread (the caller's) drives: it reads the worklist, takes the folder's
lock, keeps at most ``studies`` tasks in flight on an executor, and records
each outcome in the state database as it arrives. Tasks (row searches and
study downloads, see :mod:`dicomtrolley.export.tasks`) run on the executor,
a thread pool unless another is given.

Ctrl-C (SIGINT) starts no new task, tells the running downloads to stop at
their next instance, waits up to :data:`STOP_GRACE` seconds for them, records
the rest as pending, writes the report and raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from dicomtrolley._originals import default_state_folder
from dicomtrolley.audit import audit, recorded_values
from dicomtrolley.deidentify import Deidentifier
from dicomtrolley.exceptions import DeidentificationError, DICOMTrolleyError
from dicomtrolley.export.politeness import RateLimiter, TimeWindow
from dicomtrolley.export.prefetch import BATCH, SeriesPrefetcher
from dicomtrolley.export.report import ExportReport, IndexFormat, write_outputs
from dicomtrolley.export.retry import Backoff, RetryQueue
from dicomtrolley.export.state import FAILED, RUNNING, FolderLock, StateDatabase
from dicomtrolley.export.tasks import (
    Controls,
    SharedTrolley,
    StudyOutcome,
    StudyTask,
    TrolleySource,
    export_study,
    find_row_studies,
)
from dicomtrolley.export.worklist import WorklistRow, WorklistSource, read_worklist
from dicomtrolley.progress import is_watched
from dicomtrolley.storage import PathTemplate, SavedInstance, StorageDir, check_output_folder
from dicomtrolley.trolley import Trolley

logger = logging.getLogger(__name__)

STOP_GRACE = 2.0
"""Seconds the running downloads get to stop after Ctrl-C before their state is recorded as pending."""

_TICK = 0.25


@dataclass
class ExportOptions:
    """How an export runs; the keyword arguments of :func:`~dicomtrolley.export.export`.

    Parameters
    ----------
    studies
        Tasks (study downloads, row searches) in flight at once.
    executor
        Where tasks run; a thread pool of ``studies`` threads by default.
    template
        The storage path template (see :class:`~dicomtrolley.storage.StorageDir`).
    max_attempts
        Attempts a study gets in all, counted across runs.
    retry_delay
        Seconds a study whose failure may pass waits before its next attempt in
        the same run; doubled after each attempt, jittered, at most
        :data:`~dicomtrolley.export.retry.MAX_RETRY_DELAY` (see :mod:`~dicomtrolley.export.retry`).
    refresh
        Search rows that were resolved in an earlier run again.
    skip_bad_rows
        Report unreadable rows and go on, instead of refusing the worklist.
    max_rate
        Bytes per second for the whole export.
    window
        Start new studies only in this time window (``"19:00-07:00"``).
    progress
        A bar of studies, instances, MB and failures; ``None``: when somebody watches.
    index_format
        ``"auto"`` (parquet when pyarrow is installed), ``"csv"`` or ``"parquet"``.
    deidentify
        Pseudonymise every study on the way to disk (see :mod:`dicomtrolley.deidentify`).
    state_dir
        The folder of the state database and ``report.csv``: the output folder,
        unless the export pseudonymises; then see :func:`state_folder`.
    """

    studies: int = 4
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
        if self.studies < 1:
            raise ValueError(f"studies must be at least 1, got {self.studies}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.retry_delay < 0:
            raise ValueError(f"retry_delay must be 0 or more, got {self.retry_delay}")


@dataclass
class _Totals:
    instances: int = 0
    bytes: int = 0
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.perf_counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saved(self, instance: SavedInstance) -> None:
        with self.lock:
            self.instances += 1
            self.bytes += instance.size


def state_folder(output_dir: Path, options: ExportOptions) -> Path:
    """Where the state database and ``report.csv`` go: ``state_dir``, or a default.

    They hold the worklist's queries and the original StudyInstanceUIDs. A plain
    export keeps them in the output folder; a pseudonymised one beside the
    mapping table (``<mapping's folder>/<output name>.state``), or without a
    mapping beside the output folder (``<output>.state``), never inside it.

    Raises
    ------
    DeidentificationError
        A pseudonymised export was given a state folder, or a mapping table, inside the output folder.
    """
    deidentify = options.deidentify
    if deidentify is None:
        return options.state_dir or output_dir
    deidentify.storage(StorageDir(output_dir, options.template))  # refuses a mapping table inside the folder
    output = output_dir.resolve()
    folder = options.state_dir or default_state_folder(output, deidentify.options.mapping)
    if folder.resolve().is_relative_to(output):
        raise DeidentificationError(
            f"The state folder {folder} holds original identifiers, but lies inside the output folder "
            f"{output_dir} of a pseudonymised export; choose one outside it"
        )
    return folder


def run_export(
    source: TrolleySource, worklist: WorklistSource, output_dir: str | Path, options: ExportOptions
) -> ExportReport:
    """Export every study of ``worklist`` into ``output_dir``; see :func:`dicomtrolley.export.export`."""
    folder = Path(output_dir)
    state_dir = state_folder(folder, options)
    if options.template is not None:
        PathTemplate(options.template)  # a typo in a keyword fails here, not once per study
    if options.deidentify is not None and options.deidentify.options.state_dir is None:
        # Every study records the originals' identifying values in the export's state folder, for the audit.
        options = replace(options, deidentify=options.deidentify.with_state_dir(state_dir))
    rows = read_worklist(worklist)
    if not options.skip_bad_rows:
        rows.check()
    for writable in dict.fromkeys((folder, state_dir)):
        check_output_folder(writable)
    with FolderLock(folder):
        state = StateDatabase(state_dir)
        try:
            queries: dict[str, WorklistRow] = {}
            for row in rows.rows:
                queries.setdefault(row.key, row)  # a repeated row is the row where it first stands
            state.add_rows(((r.key, r.line, r.describe()) for r in queries.values()), refresh=options.refresh)
            for bad in rows.bad:
                logger.warning("Worklist line %d skipped: %s", bad.line, bad.error)
                state.add_bad_row(bad.line, bad.error)
            state.unresolve_failed_rows()
            # Absolute: a task may run in a process with another working folder.
            driver = _Driver(source, state, str(folder.resolve()), options, queries)
            del rows, queries  # the driver keeps the rows it still has to search, and no more
            interrupted = driver.run()
        finally:
            report = write_outputs(state, folder, options.index_format, report_folder=state_dir,
                                   pseudonymised=options.deidentify is not None)
            state.close()
        if options.deidentify is not None and not interrupted:
            report.record_audit(audit(folder, state_dir) if recorded_values(state_dir) else None)
    logger.info("Export to %s: %s", folder, report)
    if interrupted:
        raise KeyboardInterrupt
    return report


class _Driver:
    """Keeps the executor busy, records outcomes; one per run."""

    def __init__(
        self, source: TrolleySource, state: StateDatabase, folder: str, options: ExportOptions, rows: dict[str, Any]
    ) -> None:
        self.source = source
        self.state = state
        self.folder = folder
        self.options = options
        self.rows = rows
        self.totals = _Totals()
        limiter = RateLimiter(options.max_rate) if options.max_rate else None
        self.controls = Controls(limiter=limiter, on_saved=self.totals.saved)
        # Tasks on this process's threads share the controls (stop, pace, count per instance);
        # an executor that ships tasks elsewhere gets none: Ctrl-C and the window then act
        # between studies, and the counts arrive with each outcome.
        self.in_process = options.executor is None or isinstance(options.executor, ThreadPoolExecutor)
        self.prefetcher: SeriesPrefetcher | None = None
        self.prefetched: dict[str, Future[None]] = {}  # study: the batch search that fetches its series counts
        self._searching: Future[None] | None = None
        self._searches = ThreadPoolExecutor(1, "dicomtrolley-prefetch")
        trolley = source() if self.in_process else None
        if isinstance(trolley, Trolley) and trolley.searcher is not None:
            # The studies' downloads share one trolley whose searcher answers their
            # series-count searches from one search per batch of studies.
            self.prefetcher = SeriesPrefetcher(trolley.searcher)
            self.source = SharedTrolley(Trolley(self.prefetcher, trolley.downloader, trolley.storage))
        self.in_flight: dict[Future[Any], tuple[str, str]] = {}
        self.finished: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()  # tasks tell it when they end
        self.queued: set[str] = set()
        self.after_crash: set[str] = set()
        self.retries = RetryQueue(Backoff(options.retry_delay))

    def run(self) -> bool:
        """Run until all is done or Ctrl-C; True when interrupted."""
        unresolved = self.state.unresolved_rows()
        # Rows of only a StudyInstanceUID need no search: resolved at once, in one transaction.
        direct = [(row.key, [uid]) for row in unresolved if (uid := self.rows[row.key].study_uid) is not None]
        self.state.resolve_rows(direct, self.options.max_attempts)
        to_resolve = deque(row for row in unresolved if self.rows[row.key].study_uid is None)
        self.rows = {row.key: self.rows[row.key] for row in to_resolve}
        del unresolved, direct
        runnable = self.state.studies_to_run(self.options.max_attempts)
        self.after_crash = {uid for uid, status in runnable if status == RUNNING}
        studies = deque(uid for uid, _ in runnable)
        self.queued.update(studies)
        total = len(studies)  # grows as rows are resolved into studies
        owned = self.options.executor is None
        executor = self.options.executor or ThreadPoolExecutor(self.options.studies, "dicomtrolley-export")
        done: list[Future[Any]] = []
        with _sigint_sets(self.controls.stop), _Bar(self.options.progress, total) as bar:
            try:
                while (to_resolve or studies or self.in_flight or self.retries) and not self.controls.stop.is_set():
                    self._wait_for_window(bar)
                    studies.extend(self.retries.due())
                    if studies:
                        self._prefetch(studies)
                    # What finished and what starts next: one commit, made before the new tasks run.
                    with self.state.batch():
                        for future in done:
                            new = self._record(future)
                            studies.extend(new)
                            bar.total += len(new)
                        starting = self._next_tasks(studies, to_resolve)
                    for kind, item in starting:
                        if kind == "study":
                            self._submit_study(executor, item)
                        else:
                            self._start_search(executor, item)
                    done = self._finished_tasks()
                    bar.show(self.totals)
                if self.controls.stop.is_set():
                    self._stop_in_flight()
            finally:
                self._searches.shutdown(wait=False, cancel_futures=True)
                if owned:
                    executor.shutdown(wait=False, cancel_futures=True)
        return self.controls.stop.is_set()

    def _window_open(self) -> bool:
        return self.options.window is None or self.options.window.is_open()

    def _wait_for_window(self, bar: _Bar) -> None:
        window = self.options.window
        while window is not None and not window.is_open() and not self.in_flight:
            wait_s = window.seconds_until_open()
            bar.note(f"waiting {wait_s / 60:.0f} min for the window {window}")
            logger.info("Outside the window %s: waiting %.0f s", window, wait_s)
            if self.controls.stop.wait(min(wait_s, 60.0)):
                return
        bar.note("")

    def _prefetch(self, studies: deque[str]) -> None:
        """Search the series of the studies next in line, a batch at a time, on a thread of its own.

        Up to two batches ahead, one search at a time: the downloads go on
        while the next batch is searched, instead of waiting for it.
        """
        if self.prefetcher is None or (self._searching is not None and not self._searching.done()):
            return
        if all(uid in self.prefetched for uid in itertools.islice(studies, BATCH)):
            return  # the next batch to start is searched (or being searched) already
        batch = [uid for uid in itertools.islice(studies, 2 * BATCH) if uid not in self.prefetched][:BATCH]
        if batch:
            self._searching = self._searches.submit(self.prefetcher.prefetch, batch)
            self._searching.add_done_callback(_log_failure)
            self.prefetched.update(dict.fromkeys(batch, self._searching))

    def _searched(self, uid: str) -> None:
        """Wait for the search of ``uid``'s batch, if one runs: the study's download then needs no search.

        A search that broke is logged; the studies of its batch then search for themselves.
        """
        search = self.prefetched.get(uid)
        if search is not None:
            wait([search])

    def _next_tasks(self, studies: deque[str], to_resolve: deque[Any]) -> list[tuple[str, Any]]:
        """The tasks to start now, up to the limit in flight; the studies among them are recorded as running."""
        starting: list[tuple[str, Any]] = []
        while len(self.in_flight) + len(starting) < self.options.studies and (studies or to_resolve):
            if self.controls.stop.is_set() or not self._window_open():
                break
            if studies:
                uid = studies.popleft()
                self._searched(uid)
                self.state.start_study(uid)
                starting.append(("study", uid))
            else:
                starting.append(("row", to_resolve.popleft()))
        return starting

    def _submit_study(self, executor: Executor, uid: str) -> None:
        deidentify = self.options.deidentify
        task = StudyTask(
            uid, self.folder, self.options.template, after_crash=uid in self.after_crash,
            # A task shipped to another process carries the options, not the key: its worker loads the key.
            deidentify=deidentify if self.in_process or deidentify is None else deidentify.options,
        )
        controls = self.controls if self.in_process else None
        self._track(executor.submit(export_study, self.source, task, controls), ("study", uid))

    def _start_search(self, executor: Executor, row: Any) -> None:
        future = executor.submit(find_row_studies, self.source, self.rows[row.key].query)
        self._track(future, ("row", row.key))

    def _track(self, future: Future[Any], task: tuple[str, str]) -> None:
        self.in_flight[future] = task
        future.add_done_callback(self.finished.put)

    def _finished_tasks(self) -> list[Future[Any]]:
        """The tasks that ended since the last call, waiting up to a tick for the first."""
        try:
            done = [self.finished.get(timeout=_TICK)]
        except queue.Empty:
            return []
        while True:
            try:
                done.append(self.finished.get_nowait())
            except queue.Empty:
                return done

    def _record(self, future: Future[Any]) -> list[str]:
        """Write one finished task to the database; return the studies that are new to run."""
        kind, key = self.in_flight.pop(future)
        result, error = _result(future)
        if kind == "row":
            if error is not None:
                logger.warning("Worklist row %s: search failed: %s", key, error)
                self.state.fail_row(key, error)
                self.totals.failed += 1
                return []
            uids: list[str] = result
            if len(uids) > 1:
                logger.info("Worklist row %s matched %d studies; exporting all", key, len(uids))
            runnable = self.state.resolve_rows([(key, uids)], self.options.max_attempts)
            new = [u for u in runnable if u not in self.queued]
            self.queued.update(new)
            return new
        outcome: StudyOutcome = result if error is None else StudyOutcome(key, FAILED, error=error)
        if self.prefetcher is not None:
            self.prefetcher.forget(key)
            self.prefetched.pop(key, None)
        if outcome.interrupted:
            self.state.interrupt_study(key)
            return []
        self.state.finish_study(outcome, outcome.instances)
        if not self.in_process:
            self.totals.instances += outcome.written
            self.totals.bytes += outcome.bytes_written
        if outcome.status == "done":
            self.totals.done += 1
        elif not self._retry_later(outcome):
            self.totals.failed += 1
            logger.warning("Study %s: %s: %s", key, outcome.status, outcome.error)
        return []

    def _retry_later(self, outcome: StudyOutcome) -> bool:
        """Queue a failed study for another attempt if its failure may pass and it has attempts left."""
        attempts = self.state.attempts(outcome.study_uid)
        if not outcome.retry or attempts >= self.options.max_attempts:
            return False
        wait = self.retries.put(outcome.study_uid, attempts)
        logger.info("Study %s: attempt %d of %d failed, the next in %.1f s: %s", outcome.study_uid, attempts,
                    self.options.max_attempts, wait, outcome.error)
        return True

    def _stop_in_flight(self) -> None:
        """After Ctrl-C: give running tasks a moment, record what finished, the rest is pending."""
        done, _ = wait(self.in_flight, timeout=STOP_GRACE)
        for future in done:
            self._record(future)
        for _future, (kind, key) in list(self.in_flight.items()):
            if kind == "study":
                self.state.interrupt_study(key)
        self.in_flight.clear()


def _log_failure(search: Future[None]) -> None:
    """Log a batch search that broke (a bug: a server's refusal is handled in the prefetcher)."""
    error = None if search.cancelled() else search.exception()
    if error is not None:
        logger.error("Searching the series of a batch of studies failed; each searches alone", exc_info=error)


def _result(future: Future[Any]) -> tuple[Any, str | None]:
    """A finished task's result, or ``(None, error text)`` when it raised.

    The text of a :class:`~dicomtrolley.exceptions.DICOMTrolleyError` is its
    message; of anything else, its type and message (``KilledWorker: ...``).
    """
    try:
        return future.result(), None
    except DICOMTrolleyError as error:
        return None, str(error)
    # The executor boundary: whatever a task or its executor raises (Dask's KilledWorker after a
    # study killed its workers, a BrokenProcessPool, an unpicklable result, a bug in the task) fails
    # that task alone, because one task's failure must never end the batch. KeyboardInterrupt and
    # SystemExit are no Exception: they still stop the export.
    except Exception as error:
        logger.debug("Task raised", exc_info=error)
        return None, f"{type(error).__name__}: {error}"


@contextlib.contextmanager
def _sigint_sets(stop: threading.Event) -> Iterator[None]:
    """While the export runs in the main thread, Ctrl-C sets ``stop`` (a second one interrupts at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        logger.warning("Interrupted: no new study starts; saving the state")
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Bar:
    """The export's progress bar: studies done of the total, instances, MB, MB/s, failures."""

    def __init__(self, progress: bool | None, total: int) -> None:
        self.total = total
        self._bar: Any = None
        if progress is True or (progress is None and is_watched()):
            try:
                from tqdm.auto import tqdm
            except ImportError:
                if progress is True:
                    raise ImportError("A progress bar needs tqdm: pip install dicomtrolley[progress]") from None
            else:
                self._bar = tqdm(total=total, unit="study", desc="export")

    def show(self, totals: _Totals) -> None:
        if self._bar is None:
            return
        elapsed = time.perf_counter() - totals.started
        self._bar.total = self.total
        self._bar.n = totals.done + totals.failed
        self._bar.set_postfix_str(
            f"{totals.instances} instances, {totals.bytes / 1e6:.0f} MB, "
            f"{totals.bytes / 1e6 / elapsed if elapsed else 0:.1f} MB/s, {totals.failed} failed",
            refresh=False,
        )
        self._bar.refresh()

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(text or "export")

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

