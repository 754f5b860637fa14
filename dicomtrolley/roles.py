"""The two roles a protocol can play: a :class:`Searcher` finds studies, a :class:`Downloader` fetches them.

A :class:`~dicomtrolley.trolley.Trolley` joins one of each and knows nothing
else of the protocols behind them; each protocol module (QIDO-RS, WADO-RS,
C-FIND, C-GET, ...) implements one role on the model of
:mod:`dicomtrolley.core`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import ClassVar

from pydicom.dataset import Dataset

from dicomtrolley._concurrency import fetch_datasets
from dicomtrolley.core import (
    DICOMObjectLevels,
    Downloadable,
    FetchFailure,
    Instance,
    InstanceReference,
    PartSink,
    Query,
    QueryLevels,
    Reference,
    Study,
    as_list,
    to_reference,
)
from dicomtrolley.exceptions import AmbiguousQueryError, MalformedResponseError, NoQueryResultsError


class Searcher(ABC):
    """Something that finds studies: QIDO-RS, C-FIND, MINT."""

    result_cap: int | None = None
    """The most results the server gives for one search, when known (a server profile's
    ``search_cap``): an answer that large is taken as cut, and a date range is split
    (:mod:`dicomtrolley.capped`). None: the round numbers servers cap at are watched for."""

    @abstractmethod
    def find_studies(self, query: Query) -> list[Study]:
        """Every study matching ``query``, with series and instances down to its query level."""

    def find_study(self, query: Query) -> Study:
        """The one study matching ``query``.

        Raises
        ------
        NoQueryResultsError
            Nothing matched.
        AmbiguousQueryError
            More than one study matched.
        """
        studies = self.find_studies(query)
        if not studies:
            raise NoQueryResultsError(f"No study matches {query.to_short_string()}")
        if len(studies) > 1:
            raise AmbiguousQueryError(
                f"{len(studies)} studies match {query.to_short_string()}, expected exactly one"
            )
        return studies[0]

    def find_study_by_id(
        self, study_uid: str, query_level: QueryLevels = QueryLevels.STUDY
    ) -> Study:
        """The study with this StudyInstanceUID, searched down to ``query_level``."""
        return self.find_study(Query(StudyInstanceUID=study_uid, query_level=query_level))


class Downloader(ABC):
    """Something that fetches instances: WADO-RS, WADO-URI, C-GET, C-MOVE.

    Subclasses implement :meth:`fetch`; :meth:`datasets` is built on it.
    """

    finest_level_needed: ClassVar[DICOMObjectLevels] = DICOMObjectLevels.STUDY
    """The finest level the downloader needs references at (WADO-URI needs instances)."""

    @abstractmethod
    def fetch(
        self, targets: Sequence[Reference], sink: PartSink, *, stop_on_failure: bool = True
    ) -> list[FetchFailure]:
        """Fetch ``targets`` and hand every instance to ``sink`` as it arrives.

        Work runs on a bounded pool of workers; ``sink`` is called from them.
        A target that fails is returned as a :class:`FetchFailure` (parts it
        delivered before failing stay delivered). With ``stop_on_failure``
        no new target is started after the first failure.
        """

    def report(self) -> dict[str, int]:
        """Counts the protocol itself keeps about the last :meth:`fetch` (C-GET's
        sub-operations, say), for the download summary; none by default."""
        return {}

    def datasets(self, objects: Downloadable | Iterable[Downloadable]) -> Iterator[Dataset]:
        """Yield a pydicom Dataset for every instance in ``objects`` (one object or several).

        Raises the first failure once the parts fetched before it were yielded.
        """
        targets = [to_reference(o) for o in as_list(objects)]
        yield from fetch_datasets(lambda sink: self.fetch(targets, sink, stop_on_failure=True))

    def get_dataset(self, instance: InstanceReference | Instance) -> Dataset:
        """Fetch one instance as a pydicom Dataset (4.x's single-instance call).

        Raises
        ------
        DICOMTrolleyError
            The fetch failed, the bytes are not DICOM, or the server sent nothing.
        """
        datasets = self.datasets(instance)
        try:
            return next(datasets)
        except StopIteration:
            raise MalformedResponseError(f"The server sent no instance for {instance}") from None
        finally:
            if isinstance(datasets, Generator):
                datasets.close()  # ends the fetch now, not when the generator is collected
