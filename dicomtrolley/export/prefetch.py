"""One search for many studies: the series counts that each study's download asks for, fetched ahead.

Before it downloads a study into a folder that does not hold it yet, the
trolley searches the study's series and their instance counts, so that it can
check what arrives. For a worklist of small studies that search costs more
than the download (on Orthanc two QIDO-RS requests of 10-40 ms against one
WADO-RS request of a few ms). :class:`SeriesPrefetcher` makes the same search
for the next few dozen studies of the export in one request (a list of
StudyInstanceUIDs) and answers each download's search from it; anything else
it passes on to the searcher it wraps. :class:`LookAhead` runs those searches
for the export's driver, a batch or two ahead of the downloads.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

from dicomtrolley.core import Query, QueryLevels, Study
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.export.tasks import SharedTrolley, TrolleySource
from dicomtrolley.roles import Searcher
from dicomtrolley.trolley import Trolley

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


class LookAhead:
    """The export's searches ahead: the series counts of the studies next in line, a batch at a time.

    Up to two batches ahead, one search at a time, on a thread of its own: the
    downloads go on while the next batch is searched, instead of waiting for it.

    Parameters
    ----------
    prefetcher
        The searcher of the export's trolley, which answers the downloads' searches from these.
    """

    def __init__(self, prefetcher: SeriesPrefetcher) -> None:
        self.prefetcher = prefetcher
        self._searched: dict[str, Future[None]] = {}  # study: the batch search that fetches its series counts
        self._searching: Future[None] | None = None
        self._searches = ThreadPoolExecutor(1, "dicomtrolley-prefetch")

    def ahead(self, studies: Iterable[str]) -> None:
        """Start the search of the next batch of ``studies`` (the queue, in order) unless it runs or is done."""
        if self._searching is not None and not self._searching.done():
            return
        upcoming = list(itertools.islice(studies, 2 * BATCH))
        if all(uid in self._searched for uid in upcoming[:BATCH]):
            return  # the next batch to start is searched (or being searched) already
        batch = [uid for uid in upcoming if uid not in self._searched][:BATCH]
        if batch:
            self._searching = self._searches.submit(self.prefetcher.prefetch, batch)
            self._searching.add_done_callback(_log_failure)
            self._searched.update(dict.fromkeys(batch, self._searching))

    def wait_for(self, uid: str) -> None:
        """Wait for the search of ``uid``'s batch, if one runs: the study's download then needs no search.

        A search that broke is logged; the studies of its batch then search for themselves.
        """
        search = self._searched.get(uid)
        if search is not None:
            wait([search])

    def forget(self, uid: str) -> None:
        """Drop what was searched for a study (its download is over)."""
        self.prefetcher.forget(uid)
        self._searched.pop(uid, None)

    def close(self) -> None:
        """Stop searching ahead (a search under way is left to end on its own)."""
        self._searches.shutdown(wait=False, cancel_futures=True)


def looking_ahead(source: TrolleySource) -> tuple[TrolleySource, LookAhead | None]:
    """The trolley source a run on this process's threads uses, and its :class:`LookAhead` when it has one.

    A Trolley with a searcher is given a :class:`SeriesPrefetcher` in front of
    that searcher: its downloads then answer their series-count searches from
    one search per batch of studies. Any other source is used as it is.
    """
    trolley = source()
    if not isinstance(trolley, Trolley) or trolley.searcher is None:
        return source, None
    prefetcher = SeriesPrefetcher(trolley.searcher)
    ahead = Trolley(prefetcher, trolley.downloader, trolley.storage, profile=trolley.profile)
    return SharedTrolley(ahead), LookAhead(prefetcher)


def _log_failure(search: Future[None]) -> None:
    """Log a batch search that broke (a bug: a server's refusal is handled in the prefetcher)."""
    error = None if search.cancelled() else search.exception()
    if error is not None:
        logger.error("Searching the series of a batch of studies failed; each searches alone", exc_info=error)
