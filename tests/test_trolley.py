"""Trolley and download planning, with an in-memory searcher and downloader.

These pin down what the facade decides (which queries, which requests, what is
skipped, recovered and reported) independent of any protocol; the same
behaviours run against the real server in test_download_orthanc.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dicomtrolley.core import (
    InstanceReference,
    Query,
    QueryLevels,
    SeriesReference,
    StudyReference,
)
from dicomtrolley.exceptions import DICOMTrolleyError, DownloadError
from dicomtrolley.trolley import Trolley
from tests.support.fakes import SERIES, STUDY, FakeDownloader, FakeSearcher, all_instances


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*") if p.is_file()}


def test_study_uid_string_into_an_empty_folder_is_one_series_query_and_one_request(tmp_path: Path) -> None:
    searcher, downloader = FakeSearcher(), FakeDownloader()
    summary = Trolley(searcher, downloader).download(STUDY, tmp_path, progress=False)
    assert searcher.levels == [QueryLevels.SERIES]
    assert downloader.requests == [StudyReference(STUDY)]
    assert summary.written == 5
    assert summary.ok
    assert len(files_in(tmp_path)) == 5


def test_one_series_downloads_that_series_only(tmp_path: Path) -> None:
    searcher, downloader = FakeSearcher(), FakeDownloader()
    summary = Trolley(searcher, downloader).download(SeriesReference(STUDY, "1.1.2"), tmp_path, progress=False)
    assert downloader.requests == [SeriesReference(STUDY, "1.1.2")]
    assert searcher.queries[0].SeriesInstanceUID == "1.1.2"
    assert summary.written == 2


def test_several_series_of_one_study_cost_one_query(tmp_path: Path) -> None:
    searcher = FakeSearcher()
    Trolley(searcher, FakeDownloader()).download(
        [SeriesReference(STUDY, "1.1.1"), SeriesReference(STUDY, "1.1.2")], tmp_path, progress=False
    )
    assert len(searcher.queries) == 1
    assert searcher.queries[0].SeriesInstanceUID == "1.1.1,1.1.2"


def test_series_without_instance_counts_are_searched_instance_by_instance(tmp_path: Path) -> None:
    searcher, downloader = FakeSearcher(series_counts=False), FakeDownloader()
    summary = Trolley(searcher, downloader).download(STUDY, tmp_path, progress=False)
    assert searcher.levels == [QueryLevels.SERIES, QueryLevels.INSTANCE]
    assert sorted(downloader.requests, key=str) == [SeriesReference(STUDY, s) for s in SERIES]
    assert summary.expected == 5
    assert summary.ok


def test_series_short_of_its_count_is_searched_to_name_the_missing_instance(tmp_path: Path) -> None:
    searcher = FakeSearcher()
    downloader = FakeDownloader(leave_out=frozenset({"1.1.2.2"}))
    summary = Trolley(searcher, downloader).download(STUDY, tmp_path, on_error="collect", progress=False)
    assert searcher.levels == [QueryLevels.SERIES, QueryLevels.INSTANCE]
    assert searcher.queries[1].SeriesInstanceUID == "1.1.2"
    assert summary.missing == [InstanceReference(STUDY, "1.1.2", "1.1.2.2")]
    assert (summary.expected, summary.written) == (5, 4)


def test_short_series_whose_listing_fails_is_reported_as_a_failure(tmp_path: Path) -> None:
    searcher = FakeSearcher(fail_at=QueryLevels.INSTANCE)
    downloader = FakeDownloader(leave_out=frozenset({"1.1.2.2"}))
    summary = Trolley(searcher, downloader).download(STUDY, tmp_path, on_error="collect", progress=False)
    assert [(f.target, str(f.error)) for f in summary.failures] == [
        (SeriesReference(STUDY, "1.1.2"), "search at INSTANCE level failed")
    ]
    assert summary.written == 4
    assert not summary.ok


def test_series_short_of_its_count_raises_naming_how_many_are_missing(tmp_path: Path) -> None:
    downloader = FakeDownloader(leave_out=frozenset({"1.1.1.3"}))
    with pytest.raises(DownloadError, match="1 instances missing") as raised:
        Trolley(FakeSearcher(), downloader).download(STUDY, tmp_path, progress=False)
    assert raised.value.summary.missing == [InstanceReference(STUDY, "1.1.1", "1.1.1.3")]


def test_reference_argument_order_downloader_then_searcher_is_accepted_with_a_warning() -> None:
    searcher, downloader = FakeSearcher(), FakeDownloader()
    with pytest.warns(DeprecationWarning, match=r"Trolley\(downloader, searcher\) is 4.x's order"):
        trolley = Trolley(downloader, searcher)  # type: ignore[arg-type]
    assert trolley.searcher is searcher
    assert trolley.downloader is downloader


def test_second_run_of_a_finished_download_requests_nothing(tmp_path: Path) -> None:
    Trolley(FakeSearcher(), FakeDownloader()).download(STUDY, tmp_path, progress=False)
    again = FakeDownloader()
    summary = Trolley(FakeSearcher(), again).download(STUDY, tmp_path, progress=False)
    assert again.requests == []
    assert summary.skipped == 5
    assert summary.written == 0


def test_half_done_series_is_completed_instance_by_instance(tmp_path: Path) -> None:
    Trolley(FakeSearcher(), FakeDownloader()).download(InstanceReference(STUDY, "1.1.1", "1.1.1.1"), tmp_path,
                                                       progress=False)
    downloader = FakeDownloader()
    summary = Trolley(FakeSearcher(), downloader).download(STUDY, tmp_path, progress=False)
    assert set(downloader.requests) == {
        InstanceReference(STUDY, "1.1.1", "1.1.1.2"),
        InstanceReference(STUDY, "1.1.1", "1.1.1.3"),
        SeriesReference(STUDY, "1.1.2"),
    }
    assert summary.skipped == 1
    assert summary.written == 4


def test_stream_broken_after_k_parts_keeps_them_and_fetches_only_the_rest(tmp_path: Path) -> None:
    downloader = FakeDownloader(break_after={"1.1.1": 2})
    summary = Trolley(FakeSearcher(), downloader).download(
        [SeriesReference(STUDY, s) for s in SERIES], tmp_path, progress=False
    )
    assert summary.ok
    assert summary.written == 5
    assert InstanceReference(STUDY, "1.1.1", "1.1.1.3") in downloader.requests
    assert InstanceReference(STUDY, "1.1.1", "1.1.1.1") not in downloader.requests
    assert len(files_in(tmp_path)) == 5


def test_study_stream_broken_after_k_parts_lists_the_short_series_and_fetches_the_rest(tmp_path: Path) -> None:
    searcher, downloader = FakeSearcher(), FakeDownloader(break_after={STUDY: 4})
    summary = Trolley(searcher, downloader).download(STUDY, tmp_path, progress=False)
    assert summary.ok
    assert searcher.levels == [QueryLevels.SERIES, QueryLevels.INSTANCE]
    assert searcher.queries[1].SeriesInstanceUID == "1.1.2"
    assert downloader.requests == [StudyReference(STUDY), InstanceReference(STUDY, "1.1.2", "1.1.2.2")]


def test_unknown_study_raises_download_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"9\.9\.9"):
        Trolley(FakeSearcher(), FakeDownloader()).download("9.9.9", tmp_path, progress=False)


def test_collect_mode_lists_the_unknown_study_and_downloads_the_rest(tmp_path: Path) -> None:
    summary = Trolley(FakeSearcher(), FakeDownloader()).download(
        ["9.9.9", STUDY], tmp_path, on_error="collect", progress=False
    )
    assert [f.target for f in summary.failures] == [StudyReference("9.9.9")]
    assert summary.written == 5
    assert not summary.ok


def test_collect_mode_reports_an_unreadable_instance_and_writes_the_rest_of_its_stream(tmp_path: Path) -> None:
    summary = Trolley(FakeSearcher(), FakeDownloader(corrupt=frozenset({"1.1.1.2"}))).download(
        STUDY, tmp_path, on_error="collect", progress=False
    )
    assert summary.written == 4
    assert [type(f.error).__name__ for f in summary.failures] == ["StorageError"]
    assert summary.missing == [InstanceReference(STUDY, "1.1.1", "1.1.1.2")]


def test_raise_mode_stops_at_an_unreadable_instance(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="not a readable DICOM instance"):
        Trolley(FakeSearcher(), FakeDownloader(corrupt=frozenset({"1.1.1.2"}))).download(
            STUDY, tmp_path, progress=False
        )


def test_progress_callback_sees_every_instance(tmp_path: Path) -> None:
    seen = []
    Trolley(FakeSearcher(), FakeDownloader()).download(STUDY, tmp_path, progress=seen.append)
    assert sorted(p.instances for p in seen) == [1, 2, 3, 4, 5]
    assert all(p.total == 5 for p in seen)


def test_download_without_searcher_fetches_the_targets_as_given(tmp_path: Path) -> None:
    downloader = FakeDownloader()
    summary = Trolley(downloader=downloader).download(STUDY, tmp_path, progress=False)
    assert downloader.requests == [StudyReference(STUDY)]
    assert summary.expected is None
    assert summary.written == 5


def test_fetch_all_datasets_yields_every_instance() -> None:
    datasets = list(Trolley(FakeSearcher(), FakeDownloader()).fetch_all_datasets(STUDY))
    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(i.instance_uid for i in all_instances())


def test_search_without_searcher_says_so() -> None:
    with pytest.raises(DICOMTrolleyError, match="no searcher"):
        Trolley(downloader=FakeDownloader()).find_studies(Query())


def test_found_studies_print_as_a_table() -> None:
    table = Trolley(FakeSearcher()).find_studies(Query(StudyInstanceUID=STUDY)).to_table()
    assert table.splitlines()[0].split()[:2] == ["StudyInstanceUID", "PatientID"]
    assert STUDY in table.splitlines()[1]


def test_one_instance_downloads_that_instance_only(tmp_path: Path) -> None:
    downloader = FakeDownloader()
    one = InstanceReference(STUDY, "1.1.1", "1.1.1.2")
    summary = Trolley(FakeSearcher(), downloader).download(one, tmp_path, progress=False)
    assert downloader.requests == [one]
    assert summary.written == 1


def test_abandoning_fetch_all_datasets_stops_the_download() -> None:
    datasets = Trolley(FakeSearcher(), FakeDownloader()).fetch_all_datasets(STUDY)
    next(datasets)
    datasets.close()
    assert not any(t.name == "dicomtrolley-datasets" for t in threading.enumerate())
