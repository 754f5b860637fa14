"""The facade: one searcher and one downloader, joined.

A :class:`Trolley` finds studies with its searcher and moves them to disk with
its downloader. It knows no protocol: what to fetch is decided in
:mod:`dicomtrolley._planning`, how bytes land on disk in
:mod:`dicomtrolley.storage`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydicom.dataset import Dataset

from dicomtrolley._planning import covers, find_instances, plan_download
from dicomtrolley.core import (
    Downloadable,
    Downloader,
    FetchFailure,
    InstancePart,
    InstanceReference,
    PartSink,
    Query,
    QueryLevels,
    Searcher,
    Study,
    to_reference,
)
from dicomtrolley.exceptions import (
    ConnectionFailedError,
    DICOMTrolleyError,
    DownloadError,
    MultipartError,
)
from dicomtrolley.progress import Progress, ProgressCallback, ProgressReporter
from dicomtrolley.results import StudyList
from dicomtrolley.storage import SavedInstance, StorageDir

if TYPE_CHECKING:
    from dicomtrolley.export import ExportReport
    from dicomtrolley.export.worklist import WorklistSource

logger = logging.getLogger(__name__)

# Failures after which the missing instances are worth asking for one by one:
# the stream broke, the server may well answer a smaller request.
_RECOVERABLE = (ConnectionFailedError, MultipartError)


@dataclass
class DownloadSummary:
    """What a download did.

    Parameters
    ----------
    written
        Instances written by this run.
    bytes_written
        Bytes written by this run.
    skipped
        Instances already complete on disk, not fetched again.
    expected
        Instances the search said exist (``None`` without a searcher).
    elapsed
        Seconds the download took.
    failures
        Every target that could not be fetched, with the reason.
    missing
        Instances the search listed that did not arrive.
    transfer_syntaxes
        How many instances arrived in each transfer syntax.
    downloader_report
        What the protocol counted itself (C-GET/C-MOVE: completed, failed and
        warning sub-operations of the last request); empty for HTTP.
    """

    written: int = 0
    bytes_written: int = 0
    skipped: int = 0
    expected: int | None = None
    elapsed: float = 0.0
    failures: list[FetchFailure] = field(default_factory=list)
    missing: list[InstanceReference] = field(default_factory=list)
    transfer_syntaxes: Counter[str] = field(default_factory=Counter)
    downloader_report: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing failed and nothing is missing."""
        return not self.failures and not self.missing

    def __str__(self) -> str:
        rate = self.bytes_written / self.elapsed / 1e6 if self.elapsed else 0.0
        text = (
            f"{self.written} instances written ({self.bytes_written / 1e6:.1f} MB, {rate:.0f} MB/s), "
            f"{self.skipped} already on disk"
        )
        if self.failures or self.missing:
            text += f"; {len(self.failures)} failed, {len(self.missing)} missing"
        return text


class Trolley:
    """Finds studies with a searcher and downloads them with a downloader.

    Parameters
    ----------
    searcher
        Finds studies; also tells the downloader which instances exist, for
        resume and completeness checks. Optional for downloading plain study UIDs.
    downloader
        Fetches instances. Optional when the trolley only searches.
    storage
        The default storage for :meth:`download` (a :class:`StorageDir`).

    Examples
    --------
    >>> import requests
    >>> from dicomtrolley.qido_rs import QidoRS
    >>> from dicomtrolley.wado_rs import WadoRS
    >>> session = requests.Session()
    >>> trolley = Trolley(QidoRS(session, "http://localhost:8042/dicom-web"),
    ...                   WadoRS(session, "http://localhost:8042/dicom-web"))
    """

    def __init__(
        self,
        searcher: Searcher | None = None,
        downloader: Downloader | None = None,
        storage: StorageDir | None = None,
    ) -> None:
        if isinstance(searcher, Downloader) and (downloader is None or isinstance(downloader, Searcher)):
            # The public reference took (downloader, searcher); accept that order too.
            searcher, downloader = downloader, searcher
        self.searcher = searcher
        self.downloader = downloader
        self.storage = storage

    def __repr__(self) -> str:
        return f"Trolley(searcher={self.searcher!r}, downloader={self.downloader!r})"

    # ------------------------------------------------------------ search

    def _require_searcher(self) -> Searcher:
        if self.searcher is None:
            raise DICOMTrolleyError("This Trolley has no searcher; pass one as Trolley(searcher=...)")
        return self.searcher

    def find_studies(self, query: Query) -> StudyList:
        """Every study matching ``query``, down to its query level; prints as a table."""
        return StudyList(self._require_searcher().find_studies(query))

    def find_study(self, query: Query) -> Study:
        """The one study matching ``query``; an error if none or several match."""
        return self._require_searcher().find_study(query)

    def find_study_by_id(self, study_uid: str, query_level: QueryLevels = QueryLevels.STUDY) -> Study:
        """The study with this StudyInstanceUID, searched down to ``query_level``."""
        return self._require_searcher().find_study_by_id(study_uid, query_level)

    # ------------------------------------------------------------ download

    def _require_downloader(self) -> Downloader:
        if self.downloader is None:
            raise DICOMTrolleyError("This Trolley has no downloader; pass one as Trolley(downloader=...)")
        return self.downloader

    def download(
        self,
        objects: Downloadable | Iterable[Downloadable],
        output_dir: str | os.PathLike[str] | None = None,
        *,
        template: str | None = None,
        on_error: Literal["raise", "collect"] = "raise",
        progress: bool | ProgressCallback | None = None,
        on_saved: Callable[[SavedInstance], None] | None = None,
    ) -> DownloadSummary:
        """Download studies, series or instances to disk; return what happened.

        Instances already complete in the output folder are skipped, so a
        second run continues where the first stopped.

        Parameters
        ----------
        objects
            A StudyInstanceUID, a reference, a Study/Series/Instance, or a list of them.
        output_dir
            The folder to write to; defaults to the trolley's ``storage``.
        template
            A path template, e.g. ``"{PatientID}/{StudyDate}/{SeriesNumber:03d}/{InstanceNumber:05d}.dcm"``.
        on_error
            ``"raise"``: stop at the first failure and raise :class:`DownloadError`
            (its ``summary`` says what was written). ``"collect"``: go on, and
            list every failure in the returned summary.
        progress
            ``None`` shows a bar when somebody watches; ``False`` none; a callable gets updates.
        on_saved
            Called with each instance written, from the thread that wrote it
            (a batch export indexes the files and paces the download with it).

        Raises
        ------
        DownloadError
            With ``on_error="raise"``, when anything failed or is missing.
        """
        if on_error not in ("raise", "collect"):
            raise ValueError(f"on_error must be 'raise' or 'collect', not {on_error!r}")
        downloader = self._require_downloader()
        storage = self._storage_for(output_dir, template)
        targets = [to_reference(o) for o in _as_list(objects)]
        started = time.perf_counter()
        plan = plan_download(targets, self.searcher, storage, downloader.finest_level_needed)
        summary = DownloadSummary(
            skipped=len(plan.complete),
            expected=plan.expected_count if self.searcher is not None else None,
            failures=list(plan.not_found),
        )
        received: set[InstanceReference] = set()
        lock = threading.Lock()

        with ProgressReporter(progress, summary.expected) as reporter:

            def sink(part: InstancePart) -> None:
                saved = storage.save(part)
                with lock:
                    received.add(saved.reference)
                    summary.written += 1
                    summary.bytes_written += saved.size
                    summary.transfer_syntaxes[saved.transfer_syntax] += 1
                    update = Progress(
                        summary.written + summary.skipped, summary.expected,
                        summary.bytes_written, time.perf_counter() - started,
                    )
                reporter.update(update)
                if on_saved is not None:
                    on_saved(saved)

            if on_error == "raise" and plan.not_found:
                raise DownloadError(f"Download stopped: {plan.not_found[0]}", summary)
            failures = downloader.fetch(plan.fetch, sink, stop_on_failure=on_error == "raise")
            if self.searcher is not None and plan.counts:
                failures += plan.list_short_series(self.searcher, received)
            if self.searcher is not None and any(isinstance(f.error, _RECOVERABLE) for f in failures):
                failures = self._recover(downloader, plan.expected - plan.complete - received, failures, sink)
            summary.failures.extend(failures)
            summary.downloader_report = downloader.report()

        if plan.expected:
            summary.missing = sorted(
                plan.expected - plan.complete - received, key=lambda r: (r.series_uid, r.instance_uid)
            )
        summary.elapsed = time.perf_counter() - started
        logger.info("Download to %s: %s", storage.path, summary)
        if on_error == "raise" and not summary.ok:
            first = summary.failures[0] if summary.failures else f"{len(summary.missing)} instances missing"
            raise DownloadError(f"Download incomplete: {first}", summary)
        return summary

    @staticmethod
    def _recover(
        downloader: Downloader,
        missing: set[InstanceReference],
        failures: list[FetchFailure],
        sink: PartSink,
    ) -> list[FetchFailure]:
        """After broken streams, fetch what is still missing instance by instance."""
        kept = [f for f in failures if not isinstance(f.error, _RECOVERABLE)]
        retry = sorted(
            (i for i in missing if not any(covers(f.target, i) for f in kept)),
            key=lambda r: (r.series_uid, r.instance_uid),
        )
        logger.warning(
            "%d request(s) broke off; fetching the %d missing instance(s) one by one",
            len(failures) - len(kept), len(retry),
        )
        return kept + downloader.fetch(retry, sink, stop_on_failure=False)

    def export(
        self, worklist: WorklistSource, output_dir: str | os.PathLike[str], **options: Any
    ) -> ExportReport:
        """Export every study of a worklist into ``output_dir``, resumably; see :func:`dicomtrolley.export.export`.

        Run it again to continue after a crash or Ctrl-C: finished studies cost
        no request, and ``report.csv`` and the instance index are written to the folder.
        """
        from dicomtrolley.export import export

        return export(self, worklist, Path(output_dir), **options)

    def fetch_all_datasets(self, objects: Downloadable | Iterable[Downloadable]) -> Iterator[Dataset]:
        """Yield a pydicom Dataset for every instance in ``objects``, nothing written to disk."""
        downloader = self._require_downloader()
        targets = [to_reference(o) for o in _as_list(objects)]
        if self.searcher is not None and any(t.level > downloader.finest_level_needed for t in targets):
            found = find_instances(self.searcher, targets, include_fields=())
            yield from downloader.datasets(i.reference() for i in found)
        else:
            yield from downloader.datasets(targets)

    def _storage_for(self, output_dir: str | os.PathLike[str] | None, template: str | None) -> StorageDir:
        """A storage for one download: its record of paths written ends with the download,
        so a batch of thousands of studies does not grow it without bound."""
        if output_dir is None:
            if self.storage is None:
                raise DICOMTrolleyError("No output folder: pass output_dir, or Trolley(storage=...)")
            if template is not None:
                raise DICOMTrolleyError("template applies to output_dir; set it on the storage instead")
            return self.storage.at(self.storage.path)
        if self.storage is not None and template is None:
            return self.storage.at(output_dir)
        return StorageDir(output_dir, template=template)


def _as_list(objects: Downloadable | Iterable[Downloadable]) -> list[Downloadable]:
    if isinstance(objects, (str, bytes)) or not isinstance(objects, Iterable):
        return [objects]
    return list(objects)
