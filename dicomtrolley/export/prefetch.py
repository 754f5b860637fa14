"""One search for many studies: the series counts that each study's download asks for, fetched ahead.

Before it downloads a study into a folder that does not hold it yet, the
trolley searches the study's series and their instance counts, so that it can
check what arrives. For a worklist of small studies that search costs more
than the download (on Orthanc two QIDO-RS requests of 10-40 ms against one
WADO-RS request of a few ms). :class:`SeriesPrefetcher` makes the same search
for the next few dozen studies of the export in one request (a list of
StudyInstanceUIDs) and answers each download's search from it; anything else
it passes on to the searcher it wraps.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from dicomtrolley.core import Query, QueryLevels, Study
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.roles import Searcher

logger = logging.getLogger(__name__)

COUNT_FIELD = "NumberOfSeriesRelatedInstances"
BATCH = 50
"""Studies searched with one request."""


class SeriesPrefetcher(Searcher):
    """A searcher that answers "the series of study X, with counts" from a search made for many studies.

    Parameters
    ----------
    searcher
        The searcher that really searches.
    """

    def __init__(self, searcher: Searcher) -> None:
        self.searcher = searcher
        self._found: dict[str, Study] = {}
        self._lock = threading.Lock()
        self._broken = False

    def __repr__(self) -> str:
        return f"SeriesPrefetcher({self.searcher!r})"

    @property
    def result_cap(self) -> int | None:
        """The wrapped searcher's cap: a capped search is split the same through the prefetcher."""
        return self.searcher.result_cap

    @result_cap.setter
    def result_cap(self, cap: int | None) -> None:
        self.searcher.result_cap = cap

    def prefetch(self, study_uids: Sequence[str]) -> None:
        """Search the series (with counts) of these studies in one request, for their downloads to use.

        A server that cannot search a list of studies is asked study by study
        from then on (the first failure is logged).
        """
        if self._broken or not study_uids:
            return
        query = Query(
            StudyInstanceUID=",".join(study_uids), query_level=QueryLevels.SERIES, include_fields=[COUNT_FIELD]
        )
        try:
            studies = self.searcher.find_studies(query)
        except DICOMTrolleyError as error:
            logger.info("Searching %d studies at once failed (%s); searching them one by one", len(study_uids), error)
            self._broken = True
            return
        wanted = set(study_uids)
        with self._lock:
            self._found.update((s.uid, s) for s in studies if s.uid in wanted)

    def forget(self, study_uid: str) -> None:
        """Drop what is kept for a study (its download is over)."""
        with self._lock:
            self._found.pop(study_uid, None)

    def find_studies(self, query: Query) -> list[Study]:
        """The prefetched answer when ``query`` is a study's series-count search; else the wrapped searcher's."""
        uid = query.StudyInstanceUID
        plain = (
            query.query_level is QueryLevels.SERIES
            and set(query.include_fields) <= {COUNT_FIELD}
            and query.attributes() == {"StudyInstanceUID": uid}
            and not (query.min_study_date or query.max_study_date or query.limit or query.offset)
        )
        if plain:
            with self._lock:
                study = self._found.pop(uid, None)
            if study is not None:
                return [study]
        return self.searcher.find_studies(query)
