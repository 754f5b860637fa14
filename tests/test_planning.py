"""Planning on its own: which searches, which requests, what counts as done, with no storage and no download."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydicom.dataset import Dataset

from dicomtrolley._planning import Plan, covers, plan_download, requests_for
from dicomtrolley.core import (
    UID_KEYWORDS,
    DICOMObjectLevels,
    InstanceReference,
    QueryLevels,
    SeriesReference,
    StudyReference,
)
from dicomtrolley.exceptions import DICOMTrolleyError, NoQueryResultsError, SearchCutError
from tests.support.fakes import SERIES, STUDY, FakeSearcher, all_instances

FIRST_SERIES = SeriesReference(STUDY, "1.1.1")
SECOND_SERIES = SeriesReference(STUDY, "1.1.2")


def plan(
    *targets: Any,
    searcher: FakeSearcher | None = None,
    on_disk: set[str] | None = None,
    finest: DICOMObjectLevels = DICOMObjectLevels.STUDY,
    fields: tuple[str, ...] = UID_KEYWORDS,
) -> Plan:
    """A plan for ``targets``; ``on_disk`` names the SOPInstanceUIDs already complete (None: empty folder)."""

    def has(attributes: Mapping[str, Any] | Dataset) -> bool:
        assert on_disk is not None
        return str(attributes.get("SOPInstanceUID")) in on_disk

    return plan_download(
        list(targets),
        searcher if searcher is not None else FakeSearcher(),
        finest,
        on_disk=has if on_disk is not None else None,
        fields=fields,
    )


def test_without_a_searcher_the_targets_are_fetched_as_given_and_nothing_is_expected() -> None:
    made = plan_download([StudyReference(STUDY)], None, DICOMObjectLevels.STUDY, on_disk=None, fields=UID_KEYWORDS)
    assert made == Plan(fetch=(StudyReference(STUDY),))
    assert made.expected_count == 0


def test_a_study_into_an_empty_folder_is_one_request_checked_by_series_counts() -> None:
    searcher = FakeSearcher()
    made = plan(StudyReference(STUDY), searcher=searcher)
    assert searcher.levels == [QueryLevels.SERIES]
    assert made.fetch == (StudyReference(STUDY),)
    assert made.counts == {FIRST_SERIES: 3, SECOND_SERIES: 2}
    assert made.listed == frozenset()


def test_without_counts_every_instance_is_listed() -> None:
    searcher = FakeSearcher(series_counts=False)
    made = plan(StudyReference(STUDY), searcher=searcher)
    assert searcher.levels == [QueryLevels.SERIES, QueryLevels.INSTANCE]
    assert made.listed == frozenset(all_instances())
    assert made.expected_count == 5


def test_instances_on_disk_are_complete_and_only_the_rest_is_fetched() -> None:
    made = plan(StudyReference(STUDY), on_disk={"1.1.1.1"})
    assert made.complete == {InstanceReference(STUDY, "1.1.1", "1.1.1.1")}
    assert made.fetch == (
        InstanceReference(STUDY, "1.1.1", "1.1.1.2"),
        InstanceReference(STUDY, "1.1.1", "1.1.1.3"),
        SECOND_SERIES,
    )


def test_a_template_beyond_the_uids_is_checked_on_the_instance_data() -> None:
    made = plan(StudyReference(STUDY), on_disk={"1.1.2.2"}, fields=("PatientID", "SOPInstanceUID"))
    assert made.complete == {InstanceReference(STUDY, "1.1.2", "1.1.2.2")}


def test_an_instance_downloader_gets_every_missing_instance_on_its_own() -> None:
    made = plan(FIRST_SERIES, on_disk=set(), finest=DICOMObjectLevels.INSTANCE)
    assert made.fetch == tuple(i for i in all_instances() if i.series_uid == FIRST_SERIES.series_uid)


def test_a_study_the_search_does_not_know_is_not_found() -> None:
    made = plan(StudyReference("9.9"))
    assert made.fetch == ()
    assert [(f.target, type(f.error)) for f in made.not_found] == [(StudyReference("9.9"), NoQueryResultsError)]


def test_a_failed_search_is_not_found_with_its_error() -> None:
    made = plan(StudyReference(STUDY), searcher=FakeSearcher(fail_at=QueryLevels.SERIES))
    assert [(f.target, type(f.error)) for f in made.not_found] == [(StudyReference(STUDY), DICOMTrolleyError)]


def test_named_expected_lists_only_the_series_that_came_up_short() -> None:
    searcher = FakeSearcher()
    made = plan(StudyReference(STUDY), searcher=searcher)
    received = {i for i in all_instances() if i.instance_uid != "1.1.2.2"}
    expected, failures = made.named_expected(searcher, received)
    assert searcher.queries[-1].SeriesInstanceUID == SECOND_SERIES.series_uid
    assert expected - received == {InstanceReference(STUDY, "1.1.2", "1.1.2.2")}
    assert failures == []


def test_named_expected_of_a_listed_plan_needs_no_search() -> None:
    searcher = FakeSearcher()
    made = plan(StudyReference(STUDY), searcher=searcher, on_disk=set())
    searches = len(searcher.queries)
    expected, _ = made.named_expected(searcher, set())
    assert expected == set(all_instances())
    assert len(searcher.queries) == searches


def test_requests_for_uses_series_only_where_the_whole_series_is_missing() -> None:
    expected = set(all_instances())
    missing = expected - {InstanceReference(STUDY, "1.1.1", "1.1.1.1")}
    whole = {SeriesReference(STUDY, s) for s in SERIES}
    assert requests_for(missing, expected, whole) == [
        InstanceReference(STUDY, "1.1.1", "1.1.1.2"),
        InstanceReference(STUDY, "1.1.1", "1.1.1.3"),
        SECOND_SERIES,
    ]


def test_a_study_covers_its_instances_a_series_only_its_own() -> None:
    instance = InstanceReference(STUDY, "1.1.2", "1.1.2.1")
    assert covers(StudyReference(STUDY), instance)
    assert covers(SECOND_SERIES, instance)
    assert not covers(FIRST_SERIES, instance)
    assert not covers(StudyReference("9.9"), instance)


# ---------------------------------------------------------------- listings a server cut at its cap


def test_a_resume_whose_listing_is_shorter_than_any_cap_asks_for_no_counts() -> None:
    searcher = FakeSearcher()
    plan(StudyReference(STUDY), searcher=searcher, on_disk={"1.1.1.1"})
    assert searcher.levels == [QueryLevels.INSTANCE]


def test_a_listing_as_long_as_the_cap_is_checked_by_counts_and_a_series_named_short_fetched_whole() -> None:
    searcher = FakeSearcher(cap=4)  # names the three instances of the first series and one of the second's two
    made = plan(StudyReference(STUDY), searcher=searcher, on_disk={"1.1.1.1"})
    assert searcher.levels == [QueryLevels.INSTANCE, QueryLevels.SERIES]
    assert made.fetch == (InstanceReference(STUDY, "1.1.1", "1.1.1.2"), InstanceReference(STUDY, "1.1.1", "1.1.1.3"),
                          SECOND_SERIES)
    assert made.counts == {FIRST_SERIES: 3, SECOND_SERIES: 2}
    assert SECOND_SERIES not in {r.series_reference for r in made.listed}


def test_a_series_named_short_is_a_failure_for_a_downloader_that_fetches_instance_by_instance() -> None:
    made = plan(StudyReference(STUDY), searcher=FakeSearcher(cap=4), finest=DICOMObjectLevels.INSTANCE)
    assert [(failure.target, type(failure.error)) for failure in made.not_found] == [(SECOND_SERIES, SearchCutError)]
    assert SECOND_SERIES not in made.fetch
    assert made.expected_count == 5
