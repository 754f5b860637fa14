"""QidoRS against mocked servers: URLs, query encoding, paging, and every way an answer can be wrong.

The behaviour of a real server is covered in test_qido_rs_orthanc.py; these tests
cover what Orthanc will not do (send a Warning header, 204, broken JSON, errors).
"""

from __future__ import annotations

import gc
import json
import logging
import re
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from pydantic import ValidationError

from dicomtrolley._http import RetryPolicy
from dicomtrolley.core import Query, QueryLevels
from dicomtrolley.exceptions import MalformedResponseError, ServerError, UnSupportedParameterError
from dicomtrolley.qido_rs import DEFAULT_INCLUDE_FIELDS, HierarchicalQuery, QidoRS, RelationalQuery

ROOT = "http://pacs.test/dicom-web"
ANY_URL = re.compile(re.escape(ROOT) + r"/.*")
ST, SE, SOP = "1.2.840.1", "1.2.840.1.2", "1.2.840.1.2.3"

Handler = Callable[[requests.PreparedRequest], tuple[int, Mapping[str, str], str]]


def uid(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]}


def study_row(study: str) -> dict[str, Any]:
    return {"0020000D": uid(study), "00100020": {"vr": "LO", "Value": ["PAT1"]}}


def series_row(study: str, series: str) -> dict[str, Any]:
    return {**study_row(study), "0020000E": uid(series), "00080060": {"vr": "CS", "Value": ["CT"]}}


def instance_row(study: str, series: str, instance: str) -> dict[str, Any]:
    return {**series_row(study, series), "00080018": uid(instance)}


def searcher(**kwargs: Any) -> QidoRS:
    return QidoRS(requests.Session(), ROOT, retry=RetryPolicy(attempts=1), **kwargs)


def answer(rows: list[dict[str, Any]], *, status: int = 200, **kwargs: Any) -> None:
    responses.add(responses.GET, ANY_URL, json=rows, status=status, **kwargs)


def sent_url(call: int = 0) -> str:
    url = responses.calls[call].request.url
    assert url is not None
    return url


def sent_path(call: int = 0) -> str:
    return urlsplit(sent_url(call)).path.removeprefix("/dicom-web")


def sent_params(call: int = 0) -> dict[str, list[str]]:
    return parse_qs(urlsplit(sent_url(call)).query)


def sent_query(call: int = 0) -> str:
    return urlsplit(sent_url(call)).query


# ---------------------------------------------------------------- which resource


@responses.activate
@pytest.mark.parametrize(
    ("query", "path", "matching"),
    [
        (Query(PatientID="PAT1"), "/studies", {"PatientID": ["PAT1"]}),
        (Query(StudyInstanceUID=ST), "/studies", {"StudyInstanceUID": [ST]}),
        (Query(StudyInstanceUID=ST, query_level=QueryLevels.SERIES), f"/studies/{ST}/series", {}),
        (
            Query(StudyInstanceUID=ST, Modality="CT", query_level=QueryLevels.SERIES),
            f"/studies/{ST}/series",
            {"Modality": ["CT"]},
        ),
        (
            Query(StudyInstanceUID=ST, PatientID="PAT1", query_level=QueryLevels.SERIES),
            "/series",
            {"StudyInstanceUID": [ST], "PatientID": ["PAT1"]},
        ),
        (Query(Modality="CT", query_level=QueryLevels.SERIES), "/series", {"Modality": ["CT"]}),
        (
            Query(StudyInstanceUID=f"{ST},1.2.3", query_level=QueryLevels.SERIES),
            "/series",
            {"StudyInstanceUID": [f"{ST},1.2.3"]},
        ),
        (
            Query(StudyInstanceUID=ST, SeriesInstanceUID=SE, query_level=QueryLevels.INSTANCE),
            f"/studies/{ST}/series/{SE}/instances",
            {},
        ),
        (
            Query(StudyInstanceUID=ST, SeriesInstanceUID=SE, SOPInstanceUID=SOP, query_level=QueryLevels.INSTANCE),
            f"/studies/{ST}/series/{SE}/instances",
            {"SOPInstanceUID": [SOP]},
        ),
        (Query(StudyInstanceUID=ST, query_level=QueryLevels.INSTANCE), f"/studies/{ST}/instances", {}),
        (
            Query(StudyInstanceUID=ST, SeriesInstanceUID=SE, Modality="CT", query_level=QueryLevels.INSTANCE),
            f"/studies/{ST}/instances",
            {"SeriesInstanceUID": [SE], "Modality": ["CT"]},
        ),
        (
            Query(StudyInstanceUID=ST, PatientID="PAT1", query_level=QueryLevels.INSTANCE),
            "/instances",
            {"StudyInstanceUID": [ST], "PatientID": ["PAT1"]},
        ),
        (Query(SOPInstanceUID=SOP, query_level=QueryLevels.INSTANCE), "/instances", {"SOPInstanceUID": [SOP]}),
    ],
    ids=[
        "study",
        "study-by-uid",
        "series-of-one-study",
        "series-of-one-study-by-series-attribute",
        "series-with-a-study-attribute-is-relational",
        "series-without-study",
        "series-of-a-study-list",
        "instances-of-one-series",
        "instance-by-uid-in-one-series",
        "instances-of-one-study",
        "instances-of-one-study-by-series-attribute",
        "instances-with-a-study-attribute-are-relational",
        "instance-without-parents",
    ],
)
def test_a_plain_query_goes_to_the_narrowest_resource_that_honours_it(
    query: Query, path: str, matching: dict[str, list[str]]
) -> None:
    answer([])

    searcher().find_studies(query)

    assert sent_path() == path
    params = sent_params()
    params.pop("includefield")
    assert params == matching


@responses.activate
@pytest.mark.parametrize(
    ("query", "path"),
    [
        (HierarchicalQuery(PatientID="PAT1"), "/studies"),
        (HierarchicalQuery(StudyInstanceUID=ST, query_level=QueryLevels.SERIES), f"/studies/{ST}/series"),
        (
            HierarchicalQuery(StudyInstanceUID=ST, SeriesInstanceUID=SE, query_level=QueryLevels.INSTANCE),
            f"/studies/{ST}/series/{SE}/instances",
        ),
        (RelationalQuery(StudyInstanceUID=ST, query_level=QueryLevels.SERIES), "/series"),
        (RelationalQuery(StudyInstanceUID=ST, SeriesInstanceUID=SE, query_level=QueryLevels.INSTANCE),
         f"/studies/{ST}/instances"),
        (RelationalQuery(Modality="CT", query_level=QueryLevels.INSTANCE), "/instances"),
    ],
    ids=["hierarchical-study", "hierarchical-series", "hierarchical-instance", "relational-series",
         "relational-instances-of-one-study", "relational-instances"],
)
def test_hierarchical_and_relational_queries_force_their_kind_of_resource(query: Query, path: str) -> None:
    answer([])

    searcher().find_studies(query)

    assert sent_path() == path


@responses.activate
@pytest.mark.parametrize(
    ("query", "message"),
    [
        (Query(SOPInstanceUID=SOP), "SOPInstanceUID is a INSTANCE attribute: a STUDY-level"),
        (Query(SeriesInstanceUID=SE), "SeriesInstanceUID is a SERIES attribute: a STUDY-level"),
        (Query(Modality="CT"), "Modality is a SERIES attribute"),
        (Query(SeriesDescription="AX*"), "SeriesDescription is a SERIES attribute"),
        (Query(SOPInstanceUID=SOP, query_level=QueryLevels.SERIES), "SOPInstanceUID is a INSTANCE attribute"),
        (Query(ModalitiesInStudy="CT", query_level=QueryLevels.SERIES), "ModalitiesInStudy can only be matched"),
    ],
    ids=[
        "instance-uid-at-study-level",
        "series-uid-at-study-level",
        "modality-at-study-level",
        "series-description-at-study-level",
        "instance-uid-at-series-level",
        "modalities-in-study-below-study-level",
    ],
)
def test_a_query_no_resource_can_honour_raises_before_sending(query: Query, message: str) -> None:
    with pytest.raises(UnSupportedParameterError, match=message):
        searcher().find_studies(query)

    assert len(responses.calls) == 0


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        (HierarchicalQuery, {"query_level": QueryLevels.SERIES}, "needs one StudyInstanceUID"),
        (
            HierarchicalQuery,
            {"StudyInstanceUID": f"{ST},1.2.3", "query_level": QueryLevels.SERIES},
            "needs one StudyInstanceUID",
        ),
        (
            HierarchicalQuery,
            {"StudyInstanceUID": ST, "query_level": QueryLevels.INSTANCE},
            "needs one StudyInstanceUID and one SeriesInstanceUID",
        ),
        (HierarchicalQuery, {"SeriesInstanceUID": SE}, "with a SeriesInstanceUID needs its StudyInstanceUID"),
        (
            HierarchicalQuery,
            {"StudyInstanceUID": ST, "PatientID": "PAT1", "query_level": QueryLevels.SERIES},
            "matches SERIES attributes only, not PatientID",
        ),
        (
            HierarchicalQuery,
            {"StudyInstanceUID": ST, "min_study_date": date(2020, 1, 1), "query_level": QueryLevels.SERIES},
            "matches SERIES attributes only, not StudyDate",
        ),
        (
            HierarchicalQuery,
            {"StudyInstanceUID": ST, "SeriesInstanceUID": SE, "Modality": "CT", "query_level": QueryLevels.INSTANCE},
            "matches INSTANCE attributes only, not Modality",
        ),
        (RelationalQuery, {"PatientID": "PAT1"}, "A RelationalQuery searches series or instances"),
    ],
    ids=[
        "hierarchical-series-without-study",
        "hierarchical-series-with-study-list",
        "hierarchical-instance-without-series",
        "hierarchical-series-uid-without-study-uid",
        "hierarchical-series-with-study-attribute",
        "hierarchical-series-with-study-date",
        "hierarchical-instance-with-series-attribute",
        "relational-study",
    ],
)
def test_a_forced_query_no_resource_can_take_is_refused_when_built(
    kind: type[Query], fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        kind(**fields)


def test_a_hierarchical_query_keeps_open_date_ranges() -> None:
    query = HierarchicalQuery(min_study_date=date(2020, 1, 1))

    assert query.study_date_range() == "20200101-"


def test_a_forced_query_is_checked_again_when_changed() -> None:
    query = HierarchicalQuery(StudyInstanceUID=ST, query_level=QueryLevels.SERIES)

    with pytest.raises(ValidationError, match="needs one StudyInstanceUID"):
        query.StudyInstanceUID = ""


# ---------------------------------------------------------------- encoding


@responses.activate
def test_wildcards_and_comma_lists_go_out_unescaped() -> None:
    answer([])

    searcher().find_studies(Query(PatientName="DOE*", PatientID="PAT?", ModalitiesInStudy="CT,MR"))

    query = sent_query()
    assert "PatientName=DOE*" in query
    assert "PatientID=PAT?" in query
    assert "ModalitiesInStudy=CT,MR" in query


@responses.activate
def test_a_caret_goes_out_percent_encoded_as_rfc_3986_requires() -> None:
    # requests and urllib3 both escape "^" in a query; Orthanc 1.10, which
    # does not decode, therefore cannot match a name with a "^" exactly.
    answer([])

    searcher().find_studies(Query(PatientName="DOE^J*"))

    assert "PatientName=DOE%5EJ*" in sent_query()


@responses.activate
def test_spaces_reserved_characters_and_non_ascii_are_percent_encoded() -> None:
    answer([])

    searcher().find_studies(Query(PatientName="Müller*", StudyDescription="A&B=C D+E#"))

    query = sent_query()
    assert "PatientName=M%C3%BCller*" in query
    assert "StudyDescription=A%26B%3DC%20D%2BE%23" in query


@responses.activate
@pytest.mark.parametrize(
    ("low", "high", "sent"),
    [
        (date(2020, 1, 1), date(2020, 12, 31), "20200101-20201231"),
        (date(2020, 1, 1), None, "20200101-"),
        (None, date(2020, 12, 31), "-20201231"),
        (date(2020, 3, 14), date(2020, 3, 14), "20200314"),
    ],
    ids=["closed", "open-high", "open-low", "single-day"],
)
def test_study_date_ranges_are_sent_as_dicom_ranges(low: date | None, high: date | None, sent: str) -> None:
    answer([])

    searcher().find_studies(Query(min_study_date=low, max_study_date=high))

    assert sent_params()["StudyDate"] == [sent]
    assert f"StudyDate={sent}&" in sent_query() or sent_query().endswith(f"StudyDate={sent}")


@responses.activate
def test_study_date_applies_to_series_searches_too() -> None:
    answer([])

    searcher().find_studies(Query(min_study_date=date(2020, 1, 1), query_level=QueryLevels.SERIES))

    assert sent_path() == "/series"
    assert sent_params()["StudyDate"] == ["20200101-"]


@responses.activate
@pytest.mark.parametrize(
    ("level", "needed"),
    [
        (QueryLevels.SERIES, {"StudyInstanceUID", "SeriesInstanceUID"}),
        (QueryLevels.INSTANCE, {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"}),
    ],
)
def test_series_and_instance_searches_ask_for_the_uids_the_tree_needs(level: QueryLevels, needed: set[str]) -> None:
    answer([])

    searcher().find_studies(Query(Modality="CT", query_level=level))

    (fields,) = sent_params()["includefield"]
    assert needed <= set(fields.split(","))


@responses.activate
def test_include_fields_are_added_to_the_defaults_once() -> None:
    answer([])

    searcher().find_studies(
        Query(query_level=QueryLevels.INSTANCE, include_fields=["Rows", "00280011", "SOPInstanceUID"])
    )

    (fields,) = sent_params()["includefield"]
    assert fields.split(",") == [*DEFAULT_INCLUDE_FIELDS[QueryLevels.INSTANCE], "Rows", "00280011"]


@responses.activate
def test_include_field_all_is_sent_on_its_own_beside_the_named_fields() -> None:
    answer([])

    searcher().find_studies(Query(include_fields=["all", "StudyTime"]))

    assert sent_params()["includefield"] == [
        "all",
        ",".join([*DEFAULT_INCLUDE_FIELDS[QueryLevels.STUDY], "StudyTime"]),
    ]


@responses.activate
def test_the_request_asks_for_dicom_json() -> None:
    answer([])

    searcher().find_studies(Query())

    assert responses.calls[0].request.headers["Accept"] == "application/dicom+json"


# ---------------------------------------------------------------- results


@responses.activate
def test_instance_results_become_a_tree_of_studies_series_and_instances() -> None:
    answer([instance_row(ST, SE, SOP), instance_row(ST, SE, SOP + ".1"), instance_row(ST, SE + ".9", SOP + ".2")])

    (study,) = searcher().find_studies(Query(StudyInstanceUID=ST, query_level=QueryLevels.INSTANCE))

    assert study.uid == ST
    assert [(s.uid, [i.uid for i in s.instances]) for s in study.series] == [
        (SE, [SOP, SOP + ".1"]),
        (SE + ".9", [SOP + ".2"]),
    ]
    assert study.series[0].instances[0].data.Modality == "CT"


@responses.activate
def test_a_hierarchical_answer_without_the_uids_of_its_path_still_builds_the_tree() -> None:
    answer([{"00080018": uid(SOP)}])

    (study,) = searcher().find_studies(
        Query(StudyInstanceUID=ST, SeriesInstanceUID=SE, query_level=QueryLevels.INSTANCE)
    )

    assert study.series[0].instances[0].reference().series_uid == SE
    assert study.uid == ST


@responses.activate
def test_no_content_means_no_results() -> None:
    responses.add(responses.GET, ANY_URL, status=204)

    assert searcher().find_studies(Query(PatientID="NOBODY")) == []


@responses.activate
def test_an_empty_list_means_no_results() -> None:
    answer([])

    assert searcher().find_studies(Query(PatientID="NOBODY")) == []
    assert len(responses.calls) == 1


@responses.activate
def test_an_empty_body_means_no_results() -> None:
    responses.add(responses.GET, ANY_URL, body=b"", status=200)

    assert searcher().find_studies(Query(PatientID="NOBODY")) == []


# ---------------------------------------------------------------- paging


def paging_server(
    rows: list[dict[str, Any]], *, cap: int, warn: bool = False, honour_offset: bool = True
) -> Handler:
    """A QIDO-RS server that returns at most ``cap`` rows per request, honouring limit and offset."""

    def handle(request: requests.PreparedRequest) -> tuple[int, Mapping[str, str], str]:
        params = parse_qs(urlsplit(request.url or "").query)
        offset = int(params.get("offset", ["0"])[0]) if honour_offset else 0
        limit = min(int(params.get("limit", [str(cap)])[0]), cap)
        page = rows[offset : offset + limit]
        headers = {"Content-Type": "application/dicom+json"}
        left = len(rows) - offset - len(page)
        if warn and left > 0:
            headers["Warning"] = f'299 pacs.test "There are {left} additional results that can be requested"'
        return 200, headers, json.dumps(page)

    return handle


def studies(count: int) -> list[dict[str, Any]]:
    return [study_row(f"1.2.3.{n}") for n in range(count)]


def requested(call: int) -> tuple[str | None, str | None]:
    params = sent_params(call)
    return params.get("limit", [None])[0], params.get("offset", [None])[0]


@responses.activate
def test_a_complete_answer_costs_one_extra_empty_request() -> None:
    responses.add_callback(responses.GET, ANY_URL, callback=paging_server(studies(3), cap=100))

    found = searcher().find_studies(Query())

    assert len(found) == 3
    assert [requested(n) for n in range(len(responses.calls))] == [(None, None), (None, "3")]


@responses.activate
def test_a_silent_server_cap_is_paged_past_until_a_short_page() -> None:
    responses.add_callback(responses.GET, ANY_URL, callback=paging_server(studies(5), cap=2))

    found = searcher().find_studies(Query())

    assert [s.uid for s in found] == [f"1.2.3.{n}" for n in range(5)]
    assert [requested(n) for n in range(len(responses.calls))] == [(None, None), (None, "2"), (None, "4")]


@responses.activate
def test_a_silent_cap_that_divides_the_total_ends_at_an_empty_page() -> None:
    responses.add_callback(responses.GET, ANY_URL, callback=paging_server(studies(4), cap=2))

    found = searcher().find_studies(Query())

    assert len(found) == 4
    assert [requested(n)[1] for n in range(len(responses.calls))] == [None, "2", "4"]


@responses.activate
def test_page_size_asks_for_full_pages_and_stops_at_a_short_one() -> None:
    responses.add_callback(responses.GET, ANY_URL, callback=paging_server(studies(5), cap=100))

    found = searcher(page_size=2).find_studies(Query())

    assert len(found) == 5
    assert [requested(n) for n in range(len(responses.calls))] == [("2", None), ("2", "2"), ("2", "4")]


@responses.activate
def test_page_size_with_an_exact_multiple_ends_at_an_empty_page() -> None:
    responses.add_callback(responses.GET, ANY_URL, callback=paging_server(studies(4), cap=100))

    found = searcher(page_size=2).find_studies(Query())

    assert len(found) == 4
    assert len(responses.calls) == 3


@responses.activate
def test_a_warning_of_additional_results_asks_for_the_next_page() -> None:
    responses.add_callback(responses.GET, ANY_URL, callback=paging_server(studies(5), cap=2, warn=True))

    found = searcher(page_size=10).find_studies(Query())

    assert len(found) == 5
    assert [requested(n) for n in range(len(responses.calls))] == [("10", None), ("10", "2"), ("10", "4")]


@responses.activate
def test_a_warning_that_is_not_about_more_results_is_logged_and_does_not_page(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answer(studies(2), headers={"Warning": '299 pacs.test "fuzzymatching is not supported"'})

    found = searcher(page_size=10).find_studies(Query())

    assert len(found) == 2
    assert len(responses.calls) == 1
    assert "fuzzymatching is not supported" in caplog.text


@responses.activate
def test_a_user_limit_is_sent_and_stops_the_search() -> None:
    responses.add_callback(responses.GET, ANY_URL, callback=paging_server(studies(10), cap=100))

    found = searcher().find_studies(Query(limit=3))

    assert [s.uid for s in found] == ["1.2.3.0", "1.2.3.1", "1.2.3.2"]
    assert [requested(n) for n in range(len(responses.calls))] == [("3", None)]


@responses.activate
def test_a_user_limit_above_a_silent_cap_is_reached_by_paging() -> None:
    responses.add_callback(responses.GET, ANY_URL, callback=paging_server(studies(10), cap=2))

    found = searcher().find_studies(Query(limit=5))

    assert len(found) == 5
    assert [requested(n) for n in range(len(responses.calls))] == [("5", None), ("3", "2"), ("1", "4")]


@responses.activate
def test_a_user_limit_smaller_than_the_page_size_asks_for_only_what_is_left() -> None:
    responses.add_callback(responses.GET, ANY_URL, callback=paging_server(studies(10), cap=100))

    found = searcher(page_size=2).find_studies(Query(limit=3))

    assert len(found) == 3
    assert [requested(n) for n in range(len(responses.calls))] == [("2", None), ("1", "2")]


@pytest.mark.parametrize(("query", "requests_made"), [
    (Query(StudyInstanceUID="1.2.3.0"), 1),
    (Query(StudyInstanceUID="1.2.3.0", query_level=QueryLevels.SERIES), 2),
    (Query(StudyInstanceUID="1.2.3.0,1.2.3.1"), 2),
    (Query(StudyInstanceUID="1.2.3.*"), 2),
    (Query(PatientID="P1"), 2),
], ids=["one study by its UID", "the series of a study", "a list of UIDs", "a wildcard", "by patient"])
@responses.activate
def test_an_empty_page_looks_for_a_silent_cap_unless_the_query_names_one_object(
    query: Query, requests_made: int
) -> None:
    rows = [series_row("1.2.3.0", "1.2.3.0.1")] if query.query_level is QueryLevels.SERIES else studies(1)
    responses.add_callback(responses.GET, ANY_URL, callback=paging_server(rows, cap=100))

    searcher().find_studies(query)

    assert len(responses.calls) == requests_made


@responses.activate
def test_a_user_offset_starts_the_first_page_there() -> None:
    responses.add_callback(responses.GET, ANY_URL, callback=paging_server(studies(10), cap=100))

    found = searcher().find_studies(Query(offset=7))

    assert [s.uid for s in found] == ["1.2.3.7", "1.2.3.8", "1.2.3.9"]
    assert requested(0) == (None, "7")


@responses.activate
def test_a_server_that_ignores_offset_does_not_loop_or_duplicate() -> None:
    responses.add_callback(
        responses.GET, ANY_URL, callback=paging_server(studies(3), cap=2, honour_offset=False)
    )

    found = searcher().find_studies(Query())

    assert [s.uid for s in found] == ["1.2.3.0", "1.2.3.1"]
    assert len(responses.calls) == 2


@responses.activate
def test_a_server_ignoring_offset_after_all_it_had_is_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    responses.add_callback(responses.GET, ANY_URL, callback=paging_server(studies(2), cap=2, honour_offset=False))

    with caplog.at_level(logging.DEBUG, logger="dicomtrolley.qido_rs"):
        found = searcher().find_studies(Query())

    assert len(found) == 2
    assert [r.levelname for r in caplog.records if "ignores offset" in r.getMessage()] == ["DEBUG"]


@responses.activate
def test_a_server_ignoring_offset_when_it_said_there_is_more_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    responses.add_callback(
        responses.GET, ANY_URL, callback=paging_server(studies(3), cap=2, warn=True, honour_offset=False)
    )

    with caplog.at_level(logging.DEBUG, logger="dicomtrolley.qido_rs"):
        searcher().find_studies(Query())

    warned = [r for r in caplog.records if "ignores offset" in r.getMessage()]
    assert [r.levelname for r in warned] == ["WARNING"]
    assert "results after the first page are missing" in warned[0].getMessage()


@responses.activate
def test_rows_repeated_across_pages_are_kept_once() -> None:
    responses.add(responses.GET, ANY_URL, json=[instance_row(ST, SE, SOP), instance_row(ST, SE, SOP + ".1")])
    responses.add(responses.GET, ANY_URL, json=[instance_row(ST, SE, SOP + ".1")])
    responses.add(responses.GET, ANY_URL, json=[])

    (study,) = searcher().find_studies(Query(StudyInstanceUID=ST, query_level=QueryLevels.INSTANCE))

    assert [i.uid for i in study.all_instances()] == [SOP, SOP + ".1"]


# ---------------------------------------------------------------- malformed answers


@responses.activate
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>Service unavailable</html>", "is not JSON"),
        (b'{"0020000D": {"vr": "UI", "Value": ["1.2"]}}', "is not a list of DICOM JSON objects"),
        (b'["1.2.3", "1.2.4"]', "Result 0 from .* is not a DICOM JSON object"),
        (b'[{"0020000D": {"Value": ["1.2"]}}]', "attribute 0020000D is not a DICOM JSON attribute"),
        (b'[{"0020000D": "1.2"}]', "attribute 0020000D is not a DICOM JSON attribute"),
        (b'[{"00100020": {"vr": "LO", "Value": ["P"]}}]', "has no StudyInstanceUID"),
        (b"\xff\xfe\x00garbage", "is not JSON"),
    ],
    ids=["html", "object", "list-of-strings", "attribute-without-vr", "bare-value", "no-study-uid", "binary"],
)
def test_an_answer_that_is_not_dicom_json_raises_naming_the_url(body: bytes, message: str) -> None:
    responses.add(responses.GET, ANY_URL, body=body, content_type="application/dicom+json")

    with pytest.raises(MalformedResponseError, match=message) as caught:
        searcher().find_studies(Query(PatientID="PAT1"))

    assert f"{ROOT}/studies" in str(caught.value)


@responses.activate
def test_a_series_result_without_its_series_uid_raises_naming_the_url() -> None:
    answer([series_row(ST, SE), study_row(ST)])

    expected = rf"Result 1 from {re.escape(ROOT)}/series has no SeriesInstanceUID"
    with pytest.raises(MalformedResponseError, match=expected):
        searcher().find_studies(Query(Modality="CT", query_level=QueryLevels.SERIES))


@responses.activate
def test_a_study_result_without_its_uid_never_becomes_a_study() -> None:
    answer([study_row(ST), {"00100020": {"vr": "LO", "Value": ["PAT1"]}}])

    with pytest.raises(MalformedResponseError, match=r"Result 1 .* has no StudyInstanceUID"):
        searcher().find_studies(Query(PatientID="PAT1"))


# ---------------------------------------------------------------- server errors


@responses.activate
@pytest.mark.parametrize("status", [400, 413, 500, 503])
@pytest.mark.parametrize("body", ["", "Too many results: narrow the query"], ids=["no-body", "with-body"])
def test_an_error_status_raises_server_error_with_status_url_and_message(status: int, body: str) -> None:
    responses.add(responses.GET, ANY_URL, body=body, status=status)

    with pytest.raises(ServerError) as caught:
        searcher().find_studies(Query(PatientID="PAT1"))

    error = caught.value
    assert error.status == status
    assert error.url.startswith(f"{ROOT}/studies?PatientID=PAT1")
    assert error.server_message == body
    assert str(status) in str(error)
    if body:
        assert body in str(error)


@responses.activate
def test_a_busy_server_is_asked_again() -> None:
    responses.add(responses.GET, ANY_URL, status=503)
    answer([study_row(ST)])
    answer([])

    found = QidoRS(requests.Session(), ROOT, retry=RetryPolicy(attempts=2, backoff=0)).find_studies(Query())

    assert [s.uid for s in found] == [ST]
    assert len(responses.calls) == 3


def test_a_page_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="page_size must be at least 1"):
        QidoRS(requests.Session(), ROOT, page_size=0)


@responses.activate
def test_a_trailing_slash_on_the_root_is_ignored() -> None:
    answer([])

    QidoRS(requests.Session(), ROOT + "/").find_studies(Query())

    assert sent_url().startswith(f"{ROOT}/studies?")


@responses.activate
def test_the_garbage_collector_is_back_on_after_a_failed_parse() -> None:
    responses.add(responses.GET, ANY_URL, body=b"[{", content_type="application/dicom+json")

    with pytest.raises(MalformedResponseError):
        searcher().find_studies(Query())

    assert gc.isenabled()
