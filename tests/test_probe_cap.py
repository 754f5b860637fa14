"""The probe finds the cap a server cuts search answers at, saves it, and later searches split by it.

The check itself against a scripted server first; then against a real
Orthanc holding fourteen one-instance studies on fourteen dates, behind the
quirk server (QIDO-RS cut at ten, with and without the Warning header) and
behind a C-FIND SCP that stops at ten matches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests

from dicomtrolley.cli import main
from dicomtrolley.probe import probe
from dicomtrolley.probe_cap import CapCheck, check_cap
from dicomtrolley.profiles import load_profile
from tests.conftest import FIXTURE_STOP_TIMEOUT
from tests.support.capped_find_scp import CappedFindSCP
from tests.support.dicom_files import dicom_bytes
from tests.support.orthanc import OrthancServer, running_orthanc
from tests.support.quirk_server import QuirkServer

CAP = 10
DATES = [date(2021, 1, 4) + timedelta(days=20 * n) for n in range(14)]
STUDIES = {f"1.2.826.0.1.3680043.9.7741.{n + 1}": day.strftime("%Y%m%d") for n, day in enumerate(DATES)}
EVERY_DATE = ["--from", "20210101", "--to", "20211231"]


class Scripted:
    """A server holding ``STUDIES`` whose answers stop at ``cap``; records what it was asked."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.asked: list[tuple[str, int]] = []

    def ask(self, date_range: str, most: int) -> set[str]:
        self.asked.append((date_range, most))
        low, _, high = date_range.partition("-")
        inside = [uid for uid, day in STUDIES.items() if (not low or day >= low) and (not high or day <= high)]
        return set(inside[: min(most, self.cap)])


def first(count: int) -> dict[str, str]:
    return dict(list(STUDIES.items())[:count])


def test_an_answer_with_every_study_is_not_cut_and_each_half_is_asked_for_one_more() -> None:
    server = Scripted(cap=100)
    assert check_cap(STUDIES, server.ask) == CapCheck(False, 14, "no cap seen: all 14 studies answered")
    assert server.asked == [("-20210514", 8), ("20210515-", 8)]


def test_a_half_that_finds_a_study_the_answer_lacks_shows_the_cut() -> None:
    check = check_cap(first(CAP), Scripted(cap=CAP).ask)
    assert (check.cut, check.found) == (True, CAP)
    assert "StudyDate=20210405- finds studies the answer lacks" in check.detail


def test_a_server_that_says_there_is_more_is_taken_at_its_word_without_asking() -> None:
    server = Scripted(cap=CAP)
    assert check_cap(first(CAP), server.ask, told="299 more").cut is True
    assert server.asked == []


def test_an_answer_that_reaches_the_ceiling_shows_no_cap_below_it() -> None:
    assert check_cap(first(CAP), Scripted(cap=CAP).ask, ceiling=CAP) == CapCheck(
        False, CAP, "no cap seen up to 10 studies"
    )


def test_an_answer_on_one_date_cannot_be_told_and_a_round_number_is_named() -> None:
    same_day = {f"1.2.{n}": "20210104" for n in range(100)}
    check = check_cap(same_day, Scripted(cap=CAP).ask)
    assert check.cut is None
    assert "100 is a round number archives cap at" in check.detail


def test_a_refused_half_leaves_it_untold() -> None:
    assert check_cap(first(CAP), lambda date_range, most: None).cut is None


# ---------------------------------------------------------------- against Orthanc


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """An Orthanc holding the fourteen ``STUDIES``, one instance each."""
    files = tmp_path_factory.mktemp("many-studies")
    paths = []
    for n, (uid, day) in enumerate(STUDIES.items()):
        path = files / f"{n}.dcm"
        path.write_bytes(dicom_bytes(f"{uid}.1.1", study_uid=uid, series_uid=f"{uid}.1", StudyDate=day,
                                     PatientID=f"CAP{n:02d}", PatientName=f"CAP^{n}", Modality="OT"))
        paths.append(path)
    with running_orthanc(tmp_path_factory.mktemp("orthanc-many"), stop_timeout=FIXTURE_STOP_TIMEOUT) as server:
        server.upload(paths)
        yield server


@pytest.fixture(params=[True, False], ids=["with-warning", "silent"])
def cut(request: pytest.FixtureRequest, many: OrthancServer) -> Iterator[QuirkServer]:
    with QuirkServer(many.base_url, qido_cap=CAP, cap_warning=request.param, ignore_offset=True) as quirks:
        yield quirks


def finding(report_json: dict[str, object], name: str) -> dict[str, object]:
    findings = report_json["findings"]
    assert isinstance(findings, list)
    return next(f for f in findings if f["name"] == name)


def found_uids(capsys: pytest.CaptureFixture[str]) -> set[str]:
    return {study["uid"] for study in json.loads(capsys.readouterr().out)}


@pytest.mark.integration
def test_a_qido_rs_cap_offset_cannot_page_past_is_reported_saved_and_split_by_later_searches(
    cut: QuirkServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "servers.toml"
    assert main(["probe", f"{cut.url}/dicom-web", "--json", "--save", "cut", "--config", str(config)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["search_caps"] == {"qido-rs": CAP}
    assert finding(answer, "QIDO-RS result cap")["supported"] is False
    assert str(finding(answer, "QIDO-RS result cap")["detail"]).startswith("capped at 10")
    assert load_profile("cut", config).search_cap == CAP
    assert "search_cap = 10" in config.read_text()

    assert main(["search", "--server", "cut", "--config", str(config), *EVERY_DATE, "--json"]) == 0
    assert found_uids(capsys) == set(STUDIES)


@pytest.mark.integration
def test_the_table_names_the_cap(cut: QuirkServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", f"{cut.url}/dicom-web"]) == 0
    table = capsys.readouterr().out
    assert "QIDO-RS result cap" in table
    assert "qido-rs searches capped at 10" in table


@pytest.mark.integration
def test_a_cap_that_offset_pages_past_is_reported_but_not_saved(many: OrthancServer) -> None:
    with QuirkServer(many.base_url, qido_cap=CAP) as pageable:
        report = probe(requests.Session(), f"{pageable.url}/dicom-web")
    cap = next(f for f in report.findings if f.name == "QIDO-RS result cap")
    assert (cap.supported, cap.detail.endswith("offset pages past it")) == (True, True)
    assert report.search_caps == {}


@pytest.mark.integration
def test_a_server_without_a_cap_answers_every_study(many: OrthancServer) -> None:
    with QuirkServer(many.base_url) as plain:
        report = probe(requests.Session(), f"{plain.url}/dicom-web")
    cap = next(f for f in report.findings if f.name == "QIDO-RS result cap")
    assert (cap.supported, cap.detail) == (True, "no cap seen: all 14 studies answered")
    assert report.search_caps == {}


@pytest.fixture
def c_find_cut(many: OrthancServer, tmp_path: Path) -> Iterator[Path]:
    """A servers file whose ``cut`` server is a C-FIND SCP that stops at ten matches."""
    with CappedFindSCP("127.0.0.1", many.dicom_port, many.aet, cap=CAP) as scp:
        config = tmp_path / "servers.toml"
        config.write_text(f'[servers.cut]\nsearcher = "c-find"\ndownloader = "c-get"\nhost = "127.0.0.1"\n'
                          f'port = {scp.port}\naec = "{scp.aet}"\n')
        yield config


@pytest.mark.integration
def test_a_c_find_cap_is_reported_saved_and_split_by_later_searches(
    c_find_cut: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["probe", "--server", "cut", "--config", str(c_find_cut), "--json", "--save", "cut"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["search_caps"] == {"c-find": CAP}
    assert str(finding(answer, "C-FIND result cap")["detail"]).startswith("capped at 10")
    assert load_profile("cut", c_find_cut).search_cap == CAP

    assert main(["search", "--server", "cut", "--config", str(c_find_cut), *EVERY_DATE, "--json"]) == 0
    assert found_uids(capsys) == set(STUDIES)


@pytest.mark.integration
def test_an_unreachable_dimse_server_exits_three_naming_the_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "servers.toml"
    config.write_text('[servers.gone]\nsearcher = "c-find"\ndownloader = "c-get"\nhost = "127.0.0.1"\nport = 9\n')
    assert main(["probe", "--server", "gone", "--config", str(config)]) == 3
    assert "probe step 'C-ECHO'" in capsys.readouterr().err
