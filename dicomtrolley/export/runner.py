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
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from queue import Empty, SimpleQueue
from types import FrameType
from typing import Any

from dicomtrolley._originals import default_state_folder
from dicomtrolley._paths import lies_inside
from dicomtrolley.audit import audit, recorded_values
from dicomtrolley.deidentify import refuse_mapping_inside
from dicomtrolley.destination import Destination, as_destination
from dicomtrolley.exceptions import DeidentificationError, DICOMTrolleyError
from dicomtrolley.export.options import ExportOptions
from dicomtrolley.export.politeness import RateLimiter
from dicomtrolley.export.prefetch import looking_ahead
from dicomtrolley.export.report import ExportReport, write_outputs
from dicomtrolley.export.retry import Backoff, RetryQueue
from dicomtrolley.export.rows import RowResolver, RowSearch, StudyRun
from dicomtrolley.export.state import FAILED, FolderLock, StateDatabase
from dicomtrolley.export.tasks import (
    Controls,
    StudyOutcome,
    StudyTask,
    TrolleySource,
    export_study,
    find_row_studies,
)
from dicomtrolley.export.worklist import WorklistRow, WorklistSource, read_checked
from dicomtrolley.progress import is_watched
from dicomtrolley.roles import SavedInstance, Sender
from dicomtrolley.storage import PathTemplate, check_output_folder

logger = logging.getLogger(__name__)

ON_THIS_PROCESS_ONLY = (
    "the archive's intake bounds a transfer, and one process keeps it busy, while workers elsewhere "
    "would each need the archive's login beside the source's"
)
"""Why an export to another archive runs on this process's threads alone (docs/send.md says more)."""

STOP_GRACE = 2.0
"""Seconds the running downloads get to stop after Ctrl-C before their state is recorded as pending."""

_TICK = 0.25


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
    StorageError
        A link on the way to one of them loops, or cannot be read.
    """
    deidentify = options.deidentify
    if deidentify is None:
        return options.state_dir or output_dir
    refuse_mapping_inside(deidentify.options, output_dir)
    folder = options.state_dir or default_state_folder(output_dir, deidentify.options.mapping)
    if lies_inside(folder, output_dir):
        raise DeidentificationError(
            f"The state folder {folder} holds original identifiers, but lies inside the output folder "
            f"{output_dir} of a pseudonymised export; choose one outside it"
        )
    return folder


def destination_of(target: Sender | Destination, options: ExportOptions) -> tuple[Path, Destination]:
    """The state folder and the :class:`~dicomtrolley.destination.Destination` of an export to another archive.

    Raises
    ------
    DICOMTrolleyError
        No ``state_dir`` (an archive has no folder for the state), a ``template``
        (the archive names instances itself), an executor that ships tasks to other
        processes, or a sender whose archive cannot be searched; nothing was sent.
    """
    if options.state_dir is None:
        raise DICOMTrolleyError(
            f"An export to {target!r} keeps its state database and report in a folder: give state_dir"
        )
    if options.template is not None:
        raise DICOMTrolleyError(f"template applies to a folder; {target!r} names the instances it stores")
    if options.executor is not None and not isinstance(options.executor, ThreadPoolExecutor):
        raise DICOMTrolleyError(f"An export to {target!r} runs on this process's threads, not on an executor "
                                f"that ships tasks elsewhere (Dask): {ON_THIS_PROCESS_ONLY}")
    return options.state_dir, as_destination(target)


def run_export(
    source: TrolleySource, worklist: WorklistSource, output_dir: str | Path | Sender | Destination,
    options: ExportOptions,
) -> ExportReport:
    """Export every study of ``worklist`` into ``output_dir``, or send it to another archive.

    See :func:`dicomtrolley.export.export`.
    """
    destination: Destination | None = None
    if isinstance(output_dir, (Sender, Destination)):
        folder, destination = destination_of(output_dir, options)
        state_dir = folder
    else:
        folder = Path(output_dir)
        state_dir = state_folder(folder, options)
    if options.template is not None:
        PathTemplate(options.template)  # a typo in a keyword fails here, not once per study
    if options.deidentify is not None and options.deidentify.options.state_dir is None:
        # Every study records the originals' identifying values in the export's state folder, for the audit.
        options = replace(options, deidentify=options.deidentify.with_state_dir(state_dir))
    rows = read_checked(worklist, skip_bad_rows=options.skip_bad_rows)
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
            resolver = RowResolver(state, queries, options.max_attempts)
            del rows, queries  # the resolver keeps the rows it still has to search, and no more
            # Absolute: a task may run in a process with another working folder.
            interrupted = _Driver(source, state, str(folder.resolve()), options, resolver, destination).run()
        finally:
            report = write_outputs(state, folder, options.index_format, report_folder=state_dir,
                                   pseudonymised=options.deidentify is not None)
            state.close()
        if options.deidentify is not None and not interrupted and destination is None:
            report.record_audit(audit(folder, state_dir) if recorded_values(state_dir) else None)
    logger.info("Export to %s: %s", destination or folder, report)
    if interrupted:
        raise KeyboardInterrupt
    return report


Task = StudyRun | RowSearch
"""What the driver has in flight: a study's download, or a worklist row's search."""


class _Driver:
    """Keeps the executor busy and records outcomes, until all is done or Ctrl-C; one per run.

    Rows become studies in :class:`~dicomtrolley.export.rows.RowResolver`, and the
    series counts of the next studies are searched ahead in
    :class:`~dicomtrolley.export.prefetch.LookAhead`; the driver keeps the loop.
    """

    def __init__(
        self, source: TrolleySource, state: StateDatabase, folder: str, options: ExportOptions, rows: RowResolver,
        destination: Destination | None = None,
    ) -> None:
        self.destination = destination
        self.state = state
        self.folder = folder
        self.options = options
        self.rows = rows
        self.totals = _Totals()
        limiter = RateLimiter(options.max_rate) if options.max_rate else None
        self.controls = Controls(limiter=limiter, on_saved=self.totals.saved)
        # Tasks on this process's threads share the controls (stop, pace, count per instance)
        # and one trolley that searches ahead; an executor that ships tasks elsewhere gets
        # neither: Ctrl-C and the window then act between studies, and the counts arrive
        # with each outcome.
        self.in_process = options.executor is None or isinstance(options.executor, ThreadPoolExecutor)
        self.source, self.ahead = looking_ahead(source) if self.in_process else (source, None)
        self.in_flight: dict[Future[Any], Task] = {}
        self.finished: SimpleQueue[Future[Any]] = SimpleQueue()  # tasks tell it when they end
        self.after_crash: set[str] = set()
        self.retries = RetryQueue(Backoff(options.retry_delay))

    def run(self) -> bool:
        """Run until all is done or Ctrl-C; True when interrupted."""
        studies, self.after_crash = self.rows.studies_to_run()
        owned = self.options.executor is None
        executor = self.options.executor or ThreadPoolExecutor(self.options.in_flight, "dicomtrolley-export")
        done: list[Future[Any]] = []
        # The bar's total grows as rows are resolved into studies.
        with _sigint_sets(self.controls.stop), _Bar(self.options.progress, len(studies)) as bar:
            try:
                while (self.rows or studies or self.in_flight or self.retries) and not self.controls.stop.is_set():
                    self._wait_for_window(bar)
                    studies.extend(self.retries.due())
                    if studies and self.ahead is not None:
                        self.ahead.ahead(studies)
                    # What finished and what starts next: one commit, made before the new tasks run.
                    with self.state.batch():
                        for future in done:
                            new = self._record(future)
                            studies.extend(new)
                            bar.total += len(new)
                        starting = self._next_tasks(studies)
                    for task in starting:
                        self._submit(executor, task)
                    done = self._finished_tasks()
                    bar.show(self.totals)
                if self.controls.stop.is_set():
                    self._stop_in_flight()
            finally:
                if self.ahead is not None:
                    self.ahead.close()
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

    def _next_tasks(self, studies: deque[str]) -> list[Task]:
        """The tasks to start now, up to the limit in flight; the studies among them are recorded as running."""
        starting: list[Task] = []
        while len(self.in_flight) + len(starting) < self.options.in_flight and (studies or self.rows):
            if self.controls.stop.is_set() or not self._window_open():
                break
            if studies:
                uid = studies.popleft()
                if self.ahead is not None:
                    self.ahead.wait_for(uid)
                self.state.start_study(uid)
                starting.append(StudyRun(uid))
            else:
                starting.append(self.rows.next_search())
        return starting

    def _submit(self, executor: Executor, task: Task) -> None:
        future: Future[Any]
        if isinstance(task, RowSearch):
            future = executor.submit(find_row_studies, self.source, task.query)
        else:
            deidentify = self.options.deidentify
            study = StudyTask(
                task.uid, self.folder, self.options.template, after_crash=task.uid in self.after_crash,
                # A task shipped to another process carries the options, not the key: its worker loads the key.
                deidentify=deidentify if self.in_process or deidentify is None else deidentify.options,
                destination=self.destination,
            )
            controls = self.controls if self.in_process else None
            future = executor.submit(export_study, self.source, study, controls)
        self.in_flight[future] = task
        future.add_done_callback(self.finished.put)

    def _finished_tasks(self) -> list[Future[Any]]:
        """The tasks that ended since the last call, waiting up to a tick for the first."""
        try:
            done = [self.finished.get(timeout=_TICK)]
        except Empty:
            return []
        while True:
            try:
                done.append(self.finished.get_nowait())
            except Empty:
                return done

    def _record(self, future: Future[Any]) -> list[str]:
        """Write one finished task to the database; return the studies that are new to run."""
        task = self.in_flight.pop(future)
        result, error = _result(future)
        if isinstance(task, RowSearch):
            if error is not None:
                self.totals.failed += 1
            return self.rows.record(task, result, error)
        outcome: StudyOutcome = result if error is None else StudyOutcome(task.uid, FAILED, error=error)
        if self.ahead is not None:
            self.ahead.forget(task.uid)
        if outcome.interrupted:
            self.state.interrupt_study(task.uid)
            return []
        self.state.finish_study(outcome, outcome.instances)
        if not self.in_process:
            self.totals.instances += outcome.written
            self.totals.bytes += outcome.bytes_written
        if outcome.status == "done":
            self.totals.done += 1
        elif not self._retry_later(outcome):
            self.totals.failed += 1
            logger.warning("Study %s: %s: %s", task.uid, outcome.status, outcome.error)
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
        for task in self.in_flight.values():
            if isinstance(task, StudyRun):
                self.state.interrupt_study(task.uid)
        self.in_flight.clear()


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

