"""The facade: one searcher and one downloader, joined.

A :class:`Trolley` finds studies with its searcher and moves them to disk with
its downloader. It knows no protocol: a download's steps are in
:mod:`dicomtrolley._download`, what to fetch is decided in
:mod:`dicomtrolley._planning`, how bytes land on disk in
:mod:`dicomtrolley.storage`. :class:`~dicomtrolley.results.DownloadSummary`
is importable from here, as in 4.x.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydicom.dataset import Dataset

from dicomtrolley._download import DownloadJob, download
from dicomtrolley._planning import find_instances
from dicomtrolley.core import Downloadable, Query, QueryLevels, Study, to_reference
from dicomtrolley.deidentify import Deidentifier
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.progress import ProgressCallback
from dicomtrolley.results import DownloadSummary, StudyList
from dicomtrolley.roles import Downloader, Searcher
from dicomtrolley.storage import SavedInstance, StorageDir

if TYPE_CHECKING:
    from dicomtrolley.export import ExportReport
    from dicomtrolley.export.worklist import WorklistSource

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
        deidentify: Deidentifier | None = None,
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
        deidentify
            Pseudonymise every instance before it is written (see :mod:`dicomtrolley.deidentify`);
            paths and template then see pseudonymised values.
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
        storage = self._storage_for(output_dir, template)
        job = DownloadJob(
            targets=[to_reference(o) for o in _as_list(objects)],
            searcher=self.searcher,
            downloader=self._require_downloader(),
            storage=deidentify.storage(storage) if deidentify is not None else storage,
            stop_on_failure=on_error == "raise",
            on_saved=on_saved,
        )
        return download(job, progress)

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
