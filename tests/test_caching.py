"""The search cache: repeated and narrower searches are answered without asking the server again.

Requests are counted where they leave for the real Orthanc, by a session that counts what it sends.
"""

from __future__ import annotations

import threading
import time
from datetime import date
from typing import Any

import pytest
import requests

from dicomtrolley.caching import CachedSearcher, DICOMObjectCache, NodeNotFound
from dicomtrolley.core import Query, QueryLevels, SeriesReference, StudyReference
from dicomtrolley.qido_rs import QidoRS
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.integration


class CountingSession(requests.Session):
    """A session that counts the requests it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append(str(request.url))
        return super().send(request, **kwargs)


@pytest.fixture
def session() -> CountingSession:
    return CountingSession()


def cached(orthanc: OrthancServer, session: CountingSession, **options: Any) -> CachedSearcher:
    return CachedSearcher(QidoRS(session, orthanc.dicomweb_url), **options)


def uids(studies: list[Any]) -> list[tuple[str, list[str]]]:
    return sorted((s.uid, sorted(x.uid for x in s.series)) for s in studies)


def test_a_repeated_search_is_answered_from_the_cache(orthanc: OrthancServer, session: CountingSession) -> None:
    searcher = cached(orthanc, session)
    query = Query(PatientID="PAT001", query_level=QueryLevels.SERIES)
    first = searcher.find_studies(query)
    sent = len(session.sent)
    again = searcher.find_studies(Query(PatientID="PAT001", query_level=QueryLevels.SERIES))
    assert len(session.sent) == sent
    assert uids(again) == uids(first)
    assert (searcher.hits, searcher.misses) == (1, 1)


def test_a_narrower_search_is_answered_from_a_wider_one(orthanc: OrthancServer, session: CountingSession) -> None:
    searcher = cached(orthanc, session)
    wide = searcher.find_studies(Query(PatientID="PAT001", query_level=QueryLevels.SERIES))
    sent = len(session.sent)
    target = wide[0]
    study = searcher.find_study_by_id(target.uid, QueryLevels.SERIES)
    one_series = searcher.find_studies(
        Query(PatientID="PAT001", StudyInstanceUID=target.uid, SeriesInstanceUID=target.series[0].uid,
              query_level=QueryLevels.SERIES)
    )
    assert len(session.sent) == sent
    assert study.uid == target.uid
    assert sorted(s.uid for s in study.series) == sorted(s.uid for s in target.series)
    assert [s.uid for s in one_series[0].series] == [target.series[0].uid]
    assert len(target.series) > 1, "the cached answer itself must not be narrowed"


def test_narrowed_answers_equal_the_servers(orthanc: OrthancServer, session: CountingSession) -> None:
    searcher = cached(orthanc, session)
    plain = QidoRS(requests.Session(), orthanc.dicomweb_url)
    searcher.find_studies(Query(PatientID="PAT001", query_level=QueryLevels.SERIES))
    for narrow in (
        Query(PatientID="PAT001", Modality="CT", query_level=QueryLevels.SERIES),
        Query(PatientID="PAT001", min_study_date=date(2020, 1, 1), query_level=QueryLevels.SERIES),
        Query(PatientID="PAT001", AccessionNumber="ACC1001", query_level=QueryLevels.SERIES),
    ):
        sent = len(session.sent)
        assert uids(searcher.find_studies(narrow)) == uids(plain.find_studies(narrow)), narrow
        assert len(session.sent) == sent, narrow


def test_a_search_the_cache_cannot_check_goes_to_the_server(orthanc: OrthancServer, session: CountingSession) -> None:
    searcher = cached(orthanc, session)
    searcher.find_studies(Query(PatientID="PAT001", query_level=QueryLevels.SERIES))
    for other in (
        Query(query_level=QueryLevels.SERIES),  # wider
        Query(PatientID="PAT001", PatientName="DOE*", query_level=QueryLevels.SERIES),  # a wildcard
        Query(PatientID="PAT001", query_level=QueryLevels.STUDY),  # another level
        Query(PatientID="PAT001", query_level=QueryLevels.SERIES, include_fields=["BodyPartExamined"]),
    ):
        sent = len(session.sent)
        searcher.find_studies(other)
        assert len(session.sent) > sent, other


def test_an_expired_answer_is_asked_for_again(orthanc: OrthancServer, session: CountingSession) -> None:
    searcher = cached(orthanc, session, expiry=0.2)
    query = Query(PatientID="PAT002")
    searcher.find_studies(query)
    sent = len(session.sent)
    time.sleep(0.3)
    searcher.find_studies(query)
    assert len(session.sent) > sent


def test_the_least_recently_used_answer_goes_first_when_full(orthanc: OrthancServer, session: CountingSession) -> None:
    searcher = cached(orthanc, session, max_objects=5)  # PAT002 and PAT003 studies, 1-2 objects each
    first, second = Query(PatientID="PAT002"), Query(PatientID="PAT003")
    searcher.find_studies(first)
    searcher.find_studies(second)
    searcher.find_studies(first)  # first is now the most recently used
    searcher.find_studies(Query(PatientID="PAT001"))  # three studies: second must go
    sent = len(session.sent)
    searcher.find_studies(first)
    assert len(session.sent) == sent
    searcher.find_studies(second)
    assert len(session.sent) > sent


def test_threads_share_one_cache_safely(orthanc: OrthancServer, session: CountingSession) -> None:
    searcher = cached(orthanc, session)
    query = Query(PatientID="PAT001", query_level=QueryLevels.SERIES)
    expected = uids(searcher.find_studies(query))
    results: list[Any] = []

    def work() -> None:
        for _ in range(200):
            results.append(uids(searcher.find_studies(query)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 800
    assert searcher.misses == 1


def test_the_4x_cache_object_works_as_before(orthanc: OrthancServer, session: CountingSession) -> None:
    cache = DICOMObjectCache(expiry_seconds=600)
    searcher = CachedSearcher(QidoRS(session, orthanc.dicomweb_url), cache)
    study = searcher.find_study(Query(PatientID="PAT002", StudyDescription="CT*", query_level=QueryLevels.SERIES))
    series = study.series[0]
    assert cache.retrieve(StudyReference(study.uid)) is study
    assert cache.retrieve(SeriesReference(study.uid, series.uid)) is series
    with pytest.raises(NodeNotFound):
        cache.retrieve(StudyReference("1.2.3"))


def test_a_download_after_a_search_plans_from_the_cache(
    orthanc: OrthancServer, session: CountingSession, tmp_path: Any
) -> None:
    from dicomtrolley.trolley import Trolley
    from dicomtrolley.wado_rs import WadoRS

    trolley = Trolley(cached(orthanc, session), WadoRS(requests.Session(), orthanc.dicomweb_url))
    found = trolley.find_studies(Query(PatientID="PAT001", query_level=QueryLevels.SERIES))
    sent = len(session.sent)
    summary = trolley.download(found.series()[:2], tmp_path, progress=False)
    assert summary.ok
    assert len(session.sent) == sent
