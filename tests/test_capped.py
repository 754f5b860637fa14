"""Capped searches: an answer cut at the server's cap is found out, and a date range split until no part is.

Against the real Orthanc behind a server that cuts QIDO-RS answers at three
studies (the sample has seven, on seven dates) and cannot be paged past,
with and without the standard's Warning header.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import requests

from dicomtrolley import QidoRS, Query, Trolley, WadoRS
from dicomtrolley.capped import SearchCapped, find_uncapped, split_dates
from dicomtrolley.export import export
from dicomtrolley.profiles import ServerProfile
from tests.support.capped_find_scp import CappedFindSCP
from tests.support.orthanc import OrthancServer
from tests.support.quirk_server import QuirkServer

CAP = 3
EVERY_DATE = Query(min_study_date=date(2019, 1, 1), max_study_date=date(2023, 12, 31))


@pytest.fixture(params=[True, False], ids=["with-warning", "silent"])
def capped_server(request: pytest.FixtureRequest, orthanc: OrthancServer) -> Iterator[QuirkServer]:
    with QuirkServer(orthanc.base_url, qido_cap=CAP, cap_warning=request.param, ignore_offset=True) as quirks:
        yield quirks


def trolley_at(server: QuirkServer) -> Trolley:
    session = requests.Session()
    return Trolley(QidoRS(session, f"{server.url}/dicom-web"), WadoRS(session, f"{server.url}/dicom-web"))


def test_a_range_splits_in_two_halves_that_cover_it() -> None:
    first, second = split_dates(Query(min_study_date=date(2021, 1, 1), max_study_date=date(2021, 12, 31))) or ()
    assert (first.min_study_date, first.max_study_date) == (date(2021, 1, 1), date(2021, 7, 2))
    assert (second.min_study_date, second.max_study_date) == (date(2021, 7, 3), date(2021, 12, 31))


def test_an_open_end_stays_open_in_its_half() -> None:
    first, second = split_dates(Query(min_study_date=date(2020, 1, 1))) or ()
    assert first.min_study_date == date(2020, 1, 1)
    assert second.max_study_date is None


def test_one_day_or_no_range_cannot_be_split() -> None:
    assert split_dates(Query(min_study_date=date(2021, 1, 1), max_study_date=date(2021, 1, 1))) is None
    assert split_dates(Query(PatientID="P1")) is None


@pytest.mark.integration
def test_a_search_cut_at_the_cap_is_split_by_date_until_every_study_is_found(
    orthanc: OrthancServer, capped_server: QuirkServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="dicomtrolley")
    studies = trolley_at(capped_server).find_studies(EVERY_DATE)
    assert sorted(s.uid for s in studies) == sorted(s.uid for s in orthanc.sample.studies)
    assert "the server may cap its answers at 3" in caplog.text
    assert "as many as the server's cap; searching" in caplog.text


@pytest.mark.integration
def test_a_known_cap_from_the_profile_splits_without_paging_first(
    orthanc: OrthancServer, capped_server: QuirkServer
) -> None:
    profile = ServerProfile(url=f"{capped_server.url}/dicom-web", search_cap=CAP)
    studies = profile.trolley().find_studies(EVERY_DATE)
    assert len(studies) == len(orthanc.sample.studies)


@pytest.mark.integration
def test_a_cut_search_without_a_range_to_split_says_studies_may_be_missing(
    capped_server: QuirkServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomtrolley")
    trolley = trolley_at(capped_server)
    trolley.find_studies(Query())  # learns the cap
    capped: list[SearchCapped] = []
    studies = find_uncapped(trolley.searcher, Query(), capped)  # type: ignore[arg-type]
    assert len(studies) == CAP
    assert capped == [SearchCapped(Query(), CAP)]
    assert "studies beyond the cap may be missing (3 found" in caplog.text


@pytest.mark.integration
def test_an_export_of_a_date_range_row_finds_every_study_through_the_cap(
    orthanc: OrthancServer, capped_server: QuirkServer, tmp_path: Path
) -> None:
    worklist = tmp_path / "worklist.csv"
    worklist.write_text("StudyDate\n20190101-20221231\n", encoding="utf-8")
    wanted = [s for s in orthanc.sample.studies if s.study_date <= "20221231"]
    report = export(trolley_at(capped_server), worklist, tmp_path / "out", progress=False,
                    template="{StudyInstanceUID}/{SOPInstanceUID}.dcm")
    assert report.ok
    assert {p.parent.name for p in (tmp_path / "out").rglob("*.dcm")} == {s.uid for s in wanted}
    assert len(wanted) > CAP


@pytest.mark.integration
def test_a_c_find_cut_at_its_cap_is_split_by_date_until_every_study_is_found(
    orthanc: OrthancServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomtrolley")
    with CappedFindSCP("127.0.0.1", orthanc.dicom_port, orthanc.aet, cap=CAP) as scp:
        profile = ServerProfile(searcher="c-find", downloader="c-get", host="127.0.0.1", port=scp.port,
                                aec=scp.aet, search_cap=CAP)
        studies = profile.trolley().find_studies(EVERY_DATE)
        searches = scp.searches
    assert sorted(s.uid for s in studies) == sorted(s.uid for s in orthanc.sample.studies)
    assert searches > 1
    assert "as many as the server's cap; searching" in caplog.text
