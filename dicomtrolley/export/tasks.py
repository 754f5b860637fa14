"""The two units of work of an export: find a row's studies, and download one study.

Each takes a *trolley source* (a callable that returns something with a
Trolley's ``find_studies`` and ``download``), plain arguments, and returns
small plain data, so an executor may run it on a thread here or ship it to
another machine. Neither touches the state database: only the driver does.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from dicomtrolley.core import Downloadable, Query, QueryLevels
from dicomtrolley.exceptions import DICOMTrolleyError, DownloadCancelledError, NoQueryResultsError
from dicomtrolley.export.politeness import RateLimiter
from dicomtrolley.export.state import DONE, FAILED, NOT_FOUND
from dicomtrolley.storage import INDEX_KEYWORDS, SavedInstance, StorageDir, read_header_of_file


class Summary(Protocol):
    """What an exporter's download returns (a :class:`~dicomtrolley.trolley.DownloadSummary`)."""

    written: int
    bytes_written: int
    skipped: int
    expected: int | None
    failures: list[Any]
    missing: list[Any]
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


@dataclass(frozen=True)
class StudyTask:
    """One study to download, and where to.

    ``after_crash`` says that an earlier attempt was cut off (the process died):
    files it wrote are then found on disk and added to the index.
    """

    study_uid: str
    output_dir: str
    template: str | None = None
    after_crash: bool = False


@dataclass
class Controls:
    """What the driver shares with tasks on its own threads: stop, pace, count (never shipped elsewhere)."""

    stop: threading.Event = field(default_factory=threading.Event)
    limiter: RateLimiter | None = None
    on_saved: Callable[[SavedInstance], None] | None = None


@dataclass
class StudyOutcome:
    """How one attempt at a study ended: small and picklable.

    ``instances`` holds one tuple of :data:`~dicomtrolley.export.state.INDEX_COLUMNS` per file written.
    """

    study_uid: str
    status: str
    expected: int | None = None
    written: int = 0
    skipped: int = 0
    bytes_written: int = 0
    transfer_syntaxes: dict[str, int] = field(default_factory=dict)
    error: str = ""
    elapsed: float = 0.0
    interrupted: bool = False
    instances: list[tuple[Any, ...]] = field(default_factory=list)


def find_row_studies(source: TrolleySource, query: Query) -> list[str]:
    """The StudyInstanceUIDs a worklist row's query matches (none is an answer, not an error)."""
    return list(dict.fromkeys(study.uid for study in source().find_studies(query)))


def export_study(source: TrolleySource, task: StudyTask, controls: Controls | None = None) -> StudyOutcome:
    """Download one study (instances already complete on disk are skipped) and say how it went.

    A failure of the server or the network is an outcome, not an exception.
    """
    instances: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    def saved(instance: SavedInstance) -> None:
        with lock:
            instances.append(index_row(instance, task.output_dir))
        if controls is not None:
            if controls.on_saved is not None:
                controls.on_saved(instance)
            if controls.limiter is not None:
                controls.limiter.wait_for(instance.size, controls.stop)
            if controls.stop.is_set():
                raise DownloadCancelledError("The export was interrupted")

    started = time.perf_counter()
    try:
        summary = source().download(
            task.study_uid, task.output_dir, template=task.template, on_error="collect", progress=False,
            on_saved=saved,
        )
    except DICOMTrolleyError as error:  # the plan's search failed: nothing was fetched
        return StudyOutcome(task.study_uid, FAILED, error=str(error), elapsed=time.perf_counter() - started)
    outcome = StudyOutcome(
        task.study_uid, DONE, expected=summary.expected, written=summary.written, skipped=summary.skipped,
        bytes_written=summary.bytes_written, transfer_syntaxes=dict(summary.transfer_syntaxes),
        elapsed=time.perf_counter() - started, instances=instances,
    )
    if task.after_crash and summary.skipped:
        written = {row[0] for row in instances}
        instances.extend(row for row in _files_on_disk(source(), task) if row[0] not in written)
    errors = [failure.error for failure in summary.failures]
    if any(isinstance(e, DownloadCancelledError) for e in errors):
        outcome.status, outcome.interrupted, outcome.error = FAILED, True, "interrupted"
    elif errors and all(isinstance(e, NoQueryResultsError) for e in errors) and not summary.written + summary.skipped:
        outcome.status, outcome.error = NOT_FOUND, str(errors[0])
    elif errors or summary.missing:
        outcome.status = FAILED
        outcome.error = str(summary.failures[0]) if errors else f"{len(summary.missing)} instance(s) missing"
    return outcome


def index_row(instance: SavedInstance, output_dir: str) -> tuple[Any, ...]:
    """One line of the instance index, path relative to the output folder."""
    attributes = instance.attributes

    def text(keyword: str) -> str:
        value = attributes.get(keyword)
        return "" if value is None else str(value)

    return (
        os.path.relpath(instance.path, output_dir), instance.reference.study_uid, instance.reference.series_uid,
        instance.reference.instance_uid, text("PatientID"), text("StudyDate"), text("Modality"),
        text("SeriesNumber"), text("InstanceNumber"), instance.transfer_syntax, instance.size,
    )


def _files_on_disk(exporter: Exporter, task: StudyTask) -> Iterator[tuple[Any, ...]]:
    """Index rows for the study's files already on disk, found through an instance-level search."""
    storage = StorageDir(task.output_dir, task.template)
    query = Query(
        StudyInstanceUID=task.study_uid, query_level=QueryLevels.INSTANCE, include_fields=list(storage.template.fields)
    )
    for study in exporter.find_studies(query):
        for instance in study.all_instances():
            reference = instance.reference()
            attributes = {
                **{k: instance.data.get(k) for k in storage.template.fields},
                "StudyInstanceUID": reference.study_uid,
                "SeriesInstanceUID": reference.series_uid,
                "SOPInstanceUID": reference.instance_uid,
            }
            path = storage.path_for(attributes)
            if not path.is_file():
                continue
            header = read_header_of_file(path, INDEX_KEYWORDS)
            saved = SavedInstance(reference, path, path.stat().st_size, header.transfer_syntax, header.attributes)
            yield index_row(saved, task.output_dir)
