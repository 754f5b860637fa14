"""One download as named steps: plan, fetch, verify counts, recover, summarise.

:meth:`~dicomtrolley.trolley.Trolley.download` reads as this module's
:func:`download`: each step is a function of its own, and the only state
shared between threads is the :class:`Receiver` that writes what arrives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dicomtrolley._planning import Plan, covers, plan_download
from dicomtrolley.core import FetchFailure, InstancePart, InstanceReference, Reference, reference_key
from dicomtrolley.exceptions import (
    ConnectionFailedError,
    DownloadError,
    InstanceQuarantinedError,
    MultipartError,
    OutputFolderError,
    StorageError,
)
from dicomtrolley.progress import Progress, ProgressCallback, ProgressReporter
from dicomtrolley.results import DownloadSummary
from dicomtrolley.roles import Downloader, SavedInstance, Searcher, Storage

logger = logging.getLogger(__name__)

_RECOVERABLE = (ConnectionFailedError, MultipartError)
"""Failures after which the missing instances are worth asking for one by one:
the stream broke, the server may well answer a smaller request."""


@dataclass(frozen=True)
class DownloadJob:
    """What one download is asked to do.

    Parameters
    ----------
    targets
        The studies, series and instances to download.
    searcher
        Says which instances exist; ``None`` downloads the targets as they are, unchecked.
    downloader
        Fetches the instances.
    storage
        Where they go (a folder, a pseudonymising wrapper around one, another archive).
    stop_on_failure
        Stop at the first failure and raise :class:`~dicomtrolley.exceptions.DownloadError`.
    on_saved
        Called with each instance written, from the thread that wrote it.
    """

    targets: Sequence[Reference]
    searcher: Searcher | None
    downloader: Downloader
    storage: Storage
    stop_on_failure: bool
    on_saved: Callable[[SavedInstance], None] | None = None


class Receiver:
    """The sink of a download job: writes each part to the job's storage, counts it, reports progress.

    Downloaders call it from their worker threads, so its counts sit behind a lock.
    Unless the download stops on failure, an instance that cannot be read or
    written is a failure of that instance alone (in ``failures``), and the
    stream it came in goes on; but an output folder that cannot be written
    (:class:`~dicomtrolley.exceptions.OutputFolderError`) stops the download.
    """

    def __init__(self, job: DownloadJob, summary: DownloadSummary, reporter: ProgressReporter, started: float) -> None:
        self.job = job
        self.summary = summary
        self.reporter = reporter
        self.started = started
        self.received: set[InstanceReference] = set()
        self.failures: list[FetchFailure] = []
        self.study_bytes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, part: InstancePart) -> None:
        summary = self.summary
        try:
            saved = self.job.storage.save(part)
        except InstanceQuarantinedError as held:  # pseudonymisation held it back: listed, not a failure
            with self._lock:
                self.received.add(held.quarantined.reference)
                summary.quarantined.append(held.quarantined)
            return
        except StorageError as error:
            target = part.reference or part.source
            if isinstance(error, OutputFolderError) and target is not None:
                with self._lock:  # every later write would fail too: the download stops, naming this one
                    self.failures.append(FetchFailure(target, error))
            if self.job.stop_on_failure or target is None or isinstance(error, OutputFolderError):
                raise
            logger.info("Could not save an instance of %s: %s", target, error)
            with self._lock:
                self.failures.append(FetchFailure(target, error))
            return
        with self._lock:
            self.received.add(saved.reference)
            summary.written += 1
            summary.bytes_written += saved.size
            self.study_bytes[saved.reference.study_uid] += saved.size
            summary.transfer_syntaxes[saved.transfer_syntax] += 1
            update = Progress(
                summary.written + summary.skipped, summary.expected,
                summary.bytes_written, time.perf_counter() - self.started,
            )
        self.reporter.update(update)
        if self.job.on_saved is not None:
            self.job.on_saved(saved)


def download(job: DownloadJob, progress: bool | ProgressCallback | None) -> DownloadSummary:
    """Run ``job``: plan, fetch, verify counts, recover, summarise.

    Raises
    ------
    DownloadError
        With ``job.stop_on_failure``, when anything failed or is missing; and
        always when the output folder turned out not writable (its first
        :class:`~dicomtrolley.exceptions.OutputFolderError` is the cause).
    """
    started = time.perf_counter()
    plan = make_plan(job)
    summary = DownloadSummary(
        skipped=len(plan.complete),
        expected=plan.expected_count if job.searcher is not None else None,
        failures=list(plan.not_found),
    )
    with ProgressReporter(progress, summary.expected) as reporter:
        if job.stop_on_failure and plan.not_found:
            raise DownloadError(f"Download stopped: {plan.not_found[0]}", summary)
        receiver = Receiver(job, summary, reporter, started)
        stopped: OutputFolderError | None = None
        try:
            failures = fetch(job, plan, receiver)
        except OutputFolderError as error:  # nothing more can be written: no recovery either
            failures, stopped = [], error
        expected, unlisted = verify_counts(plan, job.searcher, receiver.received)
        if stopped is None:
            failures = recover(job, failures + unlisted, still_missing(expected, plan, receiver), receiver)
        summary.failures.extend(receiver.failures + failures)
        summary.downloader_report = job.downloader.report()
    summary.missing = sorted(still_missing(expected, plan, receiver), key=reference_key)
    summary.study_sizes = whole_study_sizes(receiver.study_bytes, plan, summary)
    summary.elapsed = time.perf_counter() - started
    if stopped is not None:
        raise DownloadError(f"Download stopped: {stopped}", summary) from stopped
    return summarise(job, summary)


def make_plan(job: DownloadJob) -> Plan:
    """Decide what to fetch, telling the planner what the storage already holds."""
    storage = job.storage
    return plan_download(
        job.targets,
        job.searcher,
        job.downloader.finest_level_needed,
        on_disk=storage.has if storage.may_hold({t.study_uid for t in job.targets}) else None,
        fields=storage.fields,
    )


def fetch(job: DownloadJob, plan: Plan, receiver: Receiver) -> list[FetchFailure]:
    """Fetch what the plan says into the receiver; return the targets that failed.

    The storage says how parts reach it (:meth:`~dicomtrolley.roles.Storage.parallel`):
    a pseudonymising one works on several instances at once, in worker
    processes, so its parts are handed over without waiting for each to be written.
    """
    late: list[FetchFailure] = []
    with job.storage.parallel(receiver, late) as sink:
        failures = job.downloader.fetch(plan.fetch, sink, stop_on_failure=job.stop_on_failure)
    return failures + late


def verify_counts(
    plan: Plan, searcher: Searcher | None, received: set[InstanceReference]
) -> tuple[set[InstanceReference], list[FetchFailure]]:
    """Every instance expected by name after the fetch, and the series that could not be listed.

    A series that came up short of the count its search gave is listed
    instance by instance, so that what it misses can be named.
    """
    if searcher is None:
        return set(), []
    return plan.named_expected(searcher, received)


def still_missing(expected: set[InstanceReference], plan: Plan, receiver: Receiver) -> set[InstanceReference]:
    """The instances expected by name that were neither on disk before nor received since."""
    return expected - plan.complete - receiver.received


def recover(
    job: DownloadJob,
    failures: list[FetchFailure],
    missing: set[InstanceReference],
    receiver: Receiver,
) -> list[FetchFailure]:
    """After broken streams, fetch what is still ``missing`` instance by instance; return the failures left."""
    if job.searcher is None or not any(isinstance(f.error, _RECOVERABLE) for f in failures):
        return failures
    kept = [f for f in failures if not isinstance(f.error, _RECOVERABLE)]
    retry = sorted((i for i in missing if not any(covers(f.target, i) for f in kept)), key=reference_key)
    logger.warning(
        "%d request(s) broke off; fetching the %d missing instance(s) one by one",
        len(failures) - len(kept), len(retry),
    )
    return kept + job.downloader.fetch(retry, receiver, stop_on_failure=False)


def whole_study_sizes(written: Counter[str], plan: Plan, summary: DownloadSummary) -> dict[str, int]:
    """Bytes written per study, for the studies this run wrote whole.

    A study with an instance already on disk, failed, missing or quarantined
    is left out: what this run wrote of it is not its size.
    """
    partial = {i.study_uid for i in plan.complete} | {i.study_uid for i in summary.missing}
    partial |= {f.target.study_uid for f in summary.failures}
    partial |= {q.reference.study_uid for q in summary.quarantined}
    return {uid: size for uid, size in written.items() if uid not in partial}


def summarise(job: DownloadJob, summary: DownloadSummary) -> DownloadSummary:
    """Log the summary; raise it as a :class:`DownloadError` when the job stops on failure and one happened."""
    logger.info("Download to %r: %s", job.storage, summary)
    if job.stop_on_failure and not summary.ok:
        first = summary.failures[0] if summary.failures else f"{len(summary.missing)} instances missing"
        raise DownloadError(f"Download incomplete: {first}", summary)
    return summary
