"""The facade: one searcher and one downloader, joined.

A :class:`Trolley` finds studies with its searcher and moves them to disk with
its downloader. It knows no protocol: a download's steps are in
:mod:`dicomtrolley._download`, what to fetch is decided in
:mod:`dicomtrolley._planning`, how bytes land on disk in
:mod:`dicomtrolley.storage`. :class:`~dicomtrolley.results.DownloadSummary`
is importable from here, as in 4.x.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydicom.dataset import Dataset

from dicomtrolley._compat import warn_arguments_swapped, warn_parallelism_moved
from dicomtrolley._dataset_storage import storage_for
from dicomtrolley._download import DownloadJob, download
from dicomtrolley._planning import count_series, find_instances
from dicomtrolley.capped import find_uncapped
from dicomtrolley.core import (
    DICOMObject,
    DICOMObjectLevels,
    Downloadable,
    FetchFailure,
    InstanceReference,
    Query,
    QueryLevels,
    Reference,
    Study,
    StudyReference,
    as_list,
    to_reference,
)
from dicomtrolley.deidentify import Deidentifier
from dicomtrolley.exceptions import DICOMTrolleyError, NoReferencesFoundError
from dicomtrolley.metadata import Metadata, MetadataSource
from dicomtrolley.preview import DEFAULT_SIZE, PreviewSource, RenderedImage, as_image, representative_instance
from dicomtrolley.progress import ProgressCallback
from dicomtrolley.results import DownloadSummary, StudyList
from dicomtrolley.roles import Downloader, SavedInstance, Searcher, Sender, Storage
from dicomtrolley.storage import DICOMDiskStorage

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from dicomtrolley.destination import Destination
    from dicomtrolley.export import ExportReport
    from dicomtrolley.export.politeness import TimeWindow
    from dicomtrolley.export.report import IndexFormat
    from dicomtrolley.export.worklist import WorklistSource
    from dicomtrolley.profiles import ServerProfile

logger = logging.getLogger(__name__)

__all__ = ["DownloadSummary", "Trolley"]


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
        The default storage for :meth:`download`: a :class:`~dicomtrolley.storage.StorageDir`,
        another :class:`~dicomtrolley.roles.Storage`, or a 4.x-style
        :class:`~dicomtrolley.storage.DICOMDiskStorage` that saves parsed
        Datasets (slower; see there).
    profile
        The :class:`~dicomtrolley.profiles.ServerProfile` the trolley was built
        from (:meth:`ServerProfile.trolley <dicomtrolley.profiles.ServerProfile.trolley>`
        sets it), so that an export ships it to other processes as it is.

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
        storage: Storage | DICOMDiskStorage | None = None,
        *,
        profile: ServerProfile | None = None,
    ) -> None:
        if isinstance(searcher, Downloader) and (downloader is None or isinstance(downloader, Searcher)):
            # The public reference took (downloader, searcher); accept that order too, and say so.
            warn_arguments_swapped()
            searcher, downloader = downloader, searcher
        self.searcher = searcher
        self.downloader = downloader
        self.storage = storage
        self.profile = profile

    def __repr__(self) -> str:
        return f"Trolley(searcher={self.searcher!r}, downloader={self.downloader!r})"

    # ------------------------------------------------------------ search

    def _require_searcher(self) -> Searcher:
        if self.searcher is None:
            raise DICOMTrolleyError("This Trolley has no searcher; pass one as Trolley(searcher=...)")
        return self.searcher

    def find_studies(self, query: Query) -> StudyList:
        """Every study matching ``query``, down to its query level; prints as a table.

        An answer cut at the server's cap is searched again over the halves of
        its StudyDate range, until no part is cut (:func:`~dicomtrolley.capped.find_uncapped`).
        Its ``series()`` and ``instances()`` search deeper, with this trolley's
        searcher, for the studies and series found without them.
        """
        searcher = self._require_searcher()
        return StudyList(find_uncapped(searcher, query), previewer=self.rendered, searcher=searcher)

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
        output_dir: str | os.PathLike[str] | Storage | None = None,
        *,
        template: str | None = None,
        on_error: Literal["raise", "collect"] = "raise",
        progress: bool | ProgressCallback | None = None,
        deidentify: Deidentifier | None = None,
        on_saved: Callable[[SavedInstance], None] | None = None,
        use_async: bool | None = None,
        max_workers: int | None = None,
    ) -> DownloadSummary:
        """Download studies, series or instances to disk; return what happened.

        Instances already complete in the output folder are skipped, so a
        second run continues where the first stopped.

        Parameters
        ----------
        objects
            A StudyInstanceUID, a reference, a Study/Series/Instance, or a list of them.
        output_dir
            The folder to write to, or another :class:`~dicomtrolley.roles.Storage` for this
            download (a :class:`~dicomtrolley.destination.Destination`: another archive);
            defaults to the trolley's ``storage``.
        template
            A path template, e.g. ``"{PatientID}/{StudyDate}/{SeriesNumber:03d}/{InstanceNumber:05d}.dcm"``.
        on_error
            ``"raise"``: stop at the first failure and raise :class:`DownloadError`
            (its ``summary`` says what was written). ``"collect"``: go on, and
            list every failure in the returned summary.
        progress
            ``None`` shows a bar when somebody watches; ``False`` none; a callable gets updates.
        deidentify
            Pseudonymise every instance before it is written (see :mod:`dicomtrolley.deidentify`);
            paths and template then see pseudonymised values.
        on_saved
            Called with each instance written, from the thread that wrote it
            (a batch export indexes the files and paces the download with it).
        use_async, max_workers
            Accepted from 4.x scripts with a DeprecationWarning, and not used:
            parallelism is set on the downloader (``WadoURI(session, url, workers=8)``).

        Raises
        ------
        DownloadError
            With ``on_error="raise"``, when anything failed or is missing.
        """
        if on_error not in ("raise", "collect"):
            raise ValueError(f"on_error must be 'raise' or 'collect', not {on_error!r}")
        if use_async is not None or max_workers is not None:
            warn_parallelism_moved("Trolley.download")
        storage = storage_for(self.storage, output_dir, template)
        job = DownloadJob(
            targets=[to_reference(o) for o in as_list(objects)],
            searcher=self.searcher,
            downloader=self._require_downloader(),
            storage=deidentify.storage(storage) if deidentify is not None else storage,
            stop_on_failure=on_error == "raise",
            on_saved=on_saved,
        )
        return download(job, progress)

    def export(
        self,
        worklist: WorklistSource,
        output_dir: str | os.PathLike[str] | Sender | Destination,
        *,
        studies: int | None = None,
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
        state_dir: str | os.PathLike[str] | None = None,
    ) -> ExportReport:
        """Export every study of a worklist into ``output_dir``, resumably; see :func:`dicomtrolley.export.export`.

        Run it again to continue after a crash or Ctrl-C: finished studies cost
        no request, and ``report.csv`` and the instance index are written to the folder.

        Parameters
        ----------
        worklist
            A CSV file, a pandas DataFrame, or a list of StudyInstanceUIDs or Queries.
        output_dir
            The folder; it holds the files, the state database, ``report.csv`` and the index.
            Or another archive (a STOW-RS sender, a :class:`~dicomtrolley.destination.Destination`),
            verified study by study; ``state_dir`` is then required.
        studies, executor, template, max_attempts, retry_delay, refresh, skip_bad_rows, max_rate, window, progress, \
index_format, deidentify, state_dir
            How the export runs (studies in flight, attempts, politeness, the index's
            format, pseudonymisation, where the state goes): as for
            :func:`dicomtrolley.export.export`, which says what each does.
        """
        from dicomtrolley.export import export  # the one upward edge: the export builds on the facade

        return export(
            self, worklist, output_dir if isinstance(output_dir, (Sender, Storage)) else Path(output_dir),
            studies=studies, executor=executor, template=template,
            max_attempts=max_attempts, retry_delay=retry_delay, refresh=refresh, skip_bad_rows=skip_bad_rows,
            max_rate=max_rate, window=window, progress=progress, index_format=index_format, deidentify=deidentify,
            state_dir=state_dir,
        )

    def fetch_all_datasets(self, objects: Downloadable | Iterable[Downloadable]) -> Iterator[Dataset]:
        """Yield a pydicom Dataset for every instance in ``objects``, nothing written to disk.

        Objects are split as finely as the downloader needs (WADO-URI:
        instances) by :meth:`obtain_references`: searching only for what a
        found study or series does not already list.
        """
        downloader = self._require_downloader()
        yield from downloader.datasets(self.obtain_references(objects, downloader.finest_level_needed))

    def obtain_references(
        self, objects: Downloadable | Iterable[Downloadable], max_level: DICOMObjectLevels
    ) -> list[Reference]:
        """References at ``max_level`` or finer covering ``objects``, searching only where they lack them.

        A study found with its series splits into them without a search; a
        study reference needs one search, and a series is split into its own
        instances, not those of its whole study. (4.x's method.)

        Raises
        ------
        DICOMTrolleyError
            A search was needed and this trolley has no searcher, or it failed.
        """
        found: list[Reference] = []
        unsplit: list[Reference] = []
        for obj in as_list(objects):
            item = obj if isinstance(obj, DICOMObject) else to_reference(obj)
            try:
                found.extend(item.contained_references(max_level))
            except NoReferencesFoundError:
                unsplit.append(item.reference())
        if not unsplit:
            return found
        searcher = self._require_searcher()
        if max_level is DICOMObjectLevels.INSTANCE:
            return found + [i.reference() for i in find_instances(searcher, unsplit, include_fields=())]
        for study in unsplit:  # only a study lacks series references
            found.extend(searcher.find_study_by_id(study.study_uid, QueryLevels.SERIES).contained_references(max_level))
        return found

    # ------------------------------------------------------------ look before downloading

    def metadata(self, objects: Downloadable | Iterable[Downloadable], *, keywords: Sequence[str] = ()) -> Metadata:
        """The attributes of every instance in ``objects``, without pixel data; read lazily and streamed.

        From the downloader's ``/metadata`` (WADO-RS); a study's series are
        requested side by side when the searcher can list them. A downloader
        without it (WADO-URI, DIMSE) makes this an instance-level search for
        ``keywords`` instead, which is logged as a warning and shows in
        ``Metadata.origin``.
        """
        targets = [to_reference(o) for o in as_list(objects)]
        downloader = self.downloader
        if isinstance(downloader, MetadataSource):
            return Metadata(lambda: downloader.metadata_json(self._by_series(targets)), origin="WADO-RS /metadata")
        searcher = self._require_searcher()
        logger.warning("%r cannot fetch metadata; searching at instance level instead", downloader)
        fields = list(keywords)
        return Metadata(
            lambda: (i.to_dict()["data"] for i in find_instances(searcher, targets, fields)),
            origin="instance-level search",
        )

    def _by_series(self, targets: list[Reference]) -> list[Reference]:
        """Studies split into their series (when a series search can list them), to be fetched side by side."""
        studies = [t for t in targets if isinstance(t, StudyReference)]
        if self.searcher is None or not studies:
            return targets
        failures: list[FetchFailure] = []
        counts = count_series(self.searcher, studies, failures)
        if counts is None or failures:
            return targets
        kept: list[Reference] = [t for t in targets if not isinstance(t, StudyReference)]
        return kept + list(counts)

    def preview(self, obj: Downloadable, size: int = DEFAULT_SIZE) -> Any:
        """A small image of a study, series or instance, as a PIL Image (bytes without Pillow).

        The server renders it (WADO-RS ``/rendered`` or ``/thumbnail``); of a
        series it shows the middle instance, of a study its first series.
        """
        return as_image(self.rendered(obj, size), size)

    def rendered(self, obj: Downloadable, size: int = DEFAULT_SIZE) -> RenderedImage:
        """The server's rendering behind :meth:`preview`, as bytes and media type."""
        downloader = self.downloader
        if not isinstance(downloader, PreviewSource):
            raise DICOMTrolleyError(f"{downloader!r} cannot render previews; use a WADO-RS downloader")
        reference = to_reference(obj)
        if not isinstance(reference, InstanceReference):
            found = obj.all_instances() if isinstance(obj, DICOMObject) else []
            if not found:
                found = find_instances(self._require_searcher(), [reference], ["InstanceNumber", "SeriesNumber"])
            reference = representative_instance(found).reference()
        return downloader.rendered(reference, size)
