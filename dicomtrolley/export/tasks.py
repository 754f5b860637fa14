"""The two units of work of an export: find a row's studies, and download one study.

Each takes a *trolley source* (a callable that returns something with a
Trolley's ``find_studies`` and ``download``), plain arguments, and returns
small plain data, so an executor may run it on a thread here or ship it to
another machine. Neither touches the state database: only the driver does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from dicomtrolley.core import Downloadable, Query, QueryLevels
from dicomtrolley.deidentify import Deidentifier, DeidentifyOptions
from dicomtrolley.exceptions import DICOMTrolleyError, DownloadCancelledError, NoQueryResultsError, StorageError
from dicomtrolley.export.politeness import RateLimiter
from dicomtrolley.export.retry import all_worth_retrying, worth_retrying
from dicomtrolley.export.state import DONE, FAILED, NOT_FOUND, IndexRow
from dicomtrolley.roles import SavedInstance, Storage
from dicomtrolley.storage import INDEX_KEYWORDS, StorageDir, read_header_of_file

logger = logging.getLogger(__name__)


class Summary(Protocol):
    """What an exporter's download returns (a :class:`~dicomtrolley.trolley.DownloadSummary`)."""

    written: int
    bytes_written: int
    skipped: int
    expected: int | None
    failures: list[Any]
    missing: list[Any]
    quarantined: list[Any]
    transfer_syntaxes: Any


@runtime_checkable
class Exporter(Protocol):
    """What an export needs of a trolley: a search for studies, and a download with a hook per file."""

    def find_studies(self, query: Query) -> Iterable[Any]:
        """Every study matching the query."""

    def download(
        self,
        objects: Downloadable,
        output_dir: str | os.PathLike[str] | None = None,
        *,
        template: str | None = None,
        on_error: Literal["raise", "collect"] = "raise",
        progress: bool | None = None,
        deidentify: Deidentifier | None = None,
        on_saved: Callable[[SavedInstance], None] | None = None,
    ) -> Summary:
        """Download one study; see :meth:`~dicomtrolley.trolley.Trolley.download`."""


TrolleySource = Callable[[], Exporter]
"""Builds (or hands out) the trolley a task works with; picklable when the executor ships tasks away."""


@dataclass(frozen=True)
class SharedTrolley:
    """A trolley source that hands out one trolley: every thread shares its sessions and connection pools."""

    trolley: Exporter

    def __call__(self) -> Exporter:
        """The trolley."""
        return self.trolley

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (for another process) as the trolley's profile: its session and password stay here."""
        from dicomtrolley.export.remote import shipped_as_profile

        return shipped_as_profile(self.trolley)


@dataclass(frozen=True)
class StudyTask:
    """One study to download, and where to.

    ``after_crash`` says that an earlier attempt was cut off (the process died):
    files it wrote are then found on disk and added to the index.
    ``deidentify`` pseudonymises the study: a :class:`~dicomtrolley.deidentify.Deidentifier`
    for a task run on a thread here, or only its options for a task shipped to
    another process, which then loads the key from its own environment, key
    file or keyring (a task's pickle never holds the key).
    """

    study_uid: str
    output_dir: str
    template: str | None = None
    after_crash: bool = False
    deidentify: Deidentifier | DeidentifyOptions | None = None

    def deidentifier(self) -> Deidentifier | None:
        """The task's deidentifier, its key loaded here when the task carries only options."""
        if isinstance(self.deidentify, DeidentifyOptions):
            return Deidentifier(self.deidentify)
        return self.deidentify


@dataclass
class Controls:
    """What the driver shares with tasks on its own threads: stop, pace, count (never shipped elsewhere)."""

    stop: threading.Event = field(default_factory=threading.Event)
    limiter: RateLimiter | None = None
    on_saved: Callable[[SavedInstance], None] | None = None


@dataclass
class StudyOutcome:
    """How one attempt at a study ended: small and picklable.

    ``instances`` holds the index row of each file written; ``retry`` says that a
    failure may pass if the study is tried again (see :mod:`~dicomtrolley.export.retry`).
    """

    study_uid: str
    status: str
    expected: int | None = None
    written: int = 0
    skipped: int = 0
    quarantined: int = 0
    bytes_written: int = 0
    transfer_syntaxes: dict[str, int] = field(default_factory=dict)
    error: str = ""
    elapsed: float = 0.0
    interrupted: bool = False
    retry: bool = False
    instances: list[IndexRow] = field(default_factory=list)


def find_row_studies(source: TrolleySource, query: Query) -> list[str]:
    """The StudyInstanceUIDs a worklist row's query matches (none is an answer, not an error)."""
    return list(dict.fromkeys(study.uid for study in source().find_studies(query)))


def export_study(source: TrolleySource, task: StudyTask, controls: Controls | None = None) -> StudyOutcome:
    """Download one study (instances already complete on disk are skipped) and say how it went.

    A failure of the server or the network is an outcome, not an exception.
    """
    instances: list[IndexRow] = []
    lock = threading.Lock()

    def saved(instance: SavedInstance) -> None:
        with lock:
            instances.append(index_row(instance))
        if controls is not None:
            if controls.on_saved is not None:
                controls.on_saved(instance)
            if controls.limiter is not None:
                controls.limiter.wait_for(instance.size, controls.stop)
            if controls.stop.is_set():
                raise DownloadCancelledError("The export was interrupted")

    started = time.perf_counter()
    # Passed only when set, so an exporter that never pseudonymises need not take the argument.
    deidentifier = task.deidentifier()
    pseudonymise = {"deidentify": deidentifier} if deidentifier is not None else {}
    try:
        summary = source().download(
            task.study_uid, task.output_dir, template=task.template, on_error="collect", progress=False,
            on_saved=saved, **pseudonymise,
        )
    except DICOMTrolleyError as error:  # the plan's search failed, or the key is missing: nothing was fetched
        return StudyOutcome(
            task.study_uid, FAILED, error=str(error), elapsed=time.perf_counter() - started, retry=worth_retrying(error)
        )
    outcome = StudyOutcome(
        task.study_uid, DONE, expected=summary.expected, written=summary.written, skipped=summary.skipped,
        quarantined=len(summary.quarantined), bytes_written=summary.bytes_written,
        transfer_syntaxes=dict(summary.transfer_syntaxes),
        elapsed=time.perf_counter() - started, instances=instances,
    )
    if task.after_crash and summary.skipped:
        written = {row.path for row in instances}
        instances.extend(row for row in _files_on_disk(source(), task, deidentifier) if row.path not in written)
    errors = [failure.error for failure in summary.failures]
    if any(isinstance(e, DownloadCancelledError) for e in errors):
        outcome.status, outcome.interrupted, outcome.error = FAILED, True, "interrupted"
    elif errors and all(isinstance(e, NoQueryResultsError) for e in errors) and not summary.written + summary.skipped:
        outcome.status, outcome.error = NOT_FOUND, str(errors[0])
    elif errors or summary.missing:
        outcome.status, outcome.retry = FAILED, all_worth_retrying(errors)
        outcome.error = str(summary.failures[0]) if errors else f"{len(summary.missing)} instance(s) missing"
    return outcome


def index_row(instance: SavedInstance) -> IndexRow:
    """One line of the instance index, path relative to the output folder (as the storage rendered it).

    The values are the file's own (read from its header), so a pseudonymised
    file is indexed under its pseudonymised UIDs, not the reference it was downloaded by.
    """
    attributes = instance.attributes

    def text(keyword: str) -> str:
        value = attributes.get(keyword)
        return "" if value is None else str(value)

    reference = instance.reference
    return IndexRow(
        instance.relative, text("StudyInstanceUID") or reference.study_uid,
        text("SeriesInstanceUID") or reference.series_uid, text("SOPInstanceUID") or reference.instance_uid,
        text("PatientID"), text("StudyDate"), text("Modality"),
        text("SeriesNumber"), text("InstanceNumber"), instance.transfer_syntax, instance.size,
    )


def _files_on_disk(
    exporter: Exporter, task: StudyTask, deidentifier: Deidentifier | None
) -> Iterator[IndexRow]:
    """Index rows for the study's files already on disk, found through an instance-level search."""
    plain = StorageDir(task.output_dir, task.template)
    storage: Storage = plain if deidentifier is None else deidentifier.storage(plain)
    # A pseudonymised path of dates needs the PatientID too (the date shift is the patient's).
    fields = list(dict.fromkeys([*storage.fields, "PatientID"]))
    query = Query(StudyInstanceUID=task.study_uid, query_level=QueryLevels.INSTANCE, include_fields=fields)
    for study in exporter.find_studies(query):
        for instance in study.all_instances():
            reference = instance.reference()
            attributes = {
                **{k: instance.data.get(k) for k in fields},
                "StudyInstanceUID": reference.study_uid,
                "SeriesInstanceUID": reference.series_uid,
                "SOPInstanceUID": reference.instance_uid,
            }
            try:
                relative = storage.locate(attributes)
            except StorageError as error:  # the search lacks a field the path needs: the file is not indexed
                logger.debug("Not indexed after the crash: %s: %s", reference.instance_uid, error)
                continue
            path = plain.path / relative
            if not path.is_file():
                continue
            header = read_header_of_file(path, INDEX_KEYWORDS)
            size = path.stat().st_size
            yield index_row(SavedInstance(reference, path, size, header.transfer_syntax, header.attributes, relative))
