"""Reading worklists: CSV (comma, semicolon or tab; BOM, UTF-8 or cp1252), DataFrames, lists;
bad input named by line before any download."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pandas
import pytest
from pydantic import ValidationError

from dicomtrolley.core import Query
from dicomtrolley.exceptions import WorklistError
from dicomtrolley.export.politeness import RateLimiter, TimeWindow, parse_rate
from dicomtrolley.export.worklist import read_worklist


def csv_file(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "worklist.csv"
    path.write_text(text, encoding=encoding)
    return path


def test_a_comma_separated_file_with_a_bom_gives_one_query_per_row(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "AccessionNumber,PatientID\nACC1,PAT1\nACC2,PAT2\n", encoding="utf-8-sig")
    rows = read_worklist(path).rows
    assert [r.query.attributes() for r in rows] == [
        {"AccessionNumber": "ACC1", "PatientID": "PAT1"},
        {"AccessionNumber": "ACC2", "PatientID": "PAT2"},
    ]
    assert [r.line for r in rows] == [2, 3]


def test_a_tab_separated_file_is_read_too(tmp_path: Path) -> None:
    rows = read_worklist(csv_file(tmp_path, "PatientID\tModalitiesInStudy\nPAT1\tCT\n")).rows
    assert rows[0].query.attributes() == {"PatientID": "PAT1", "ModalitiesInStudy": "CT"}


EXCEL_ROWS = "PatientID;StudyDescription\r\nPAT1;Schädel CT\r\nPAT2;Thorax\r\n"
"""A worklist as Excel writes one in Western Europe: semicolons, CRLF, a non-ASCII letter."""


@pytest.mark.parametrize(
    ("encoding", "said"),
    [("cp1252", "Windows-1252"), ("latin-1", "Windows-1252"), ("utf-16", "utf-16"), ("utf-8-sig", "utf-8-sig"),
     ("utf-8", "utf-8")],
)
def test_a_worklist_saved_by_excel_is_read_in_its_encoding_and_says_which(
    encoding: str, said: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "worklist.csv"
    path.write_bytes(EXCEL_ROWS.encode(encoding))
    with caplog.at_level(logging.INFO, logger="dicomtrolley.export.worklist"):
        rows = read_worklist(path).rows
    assert [r.query.attributes() for r in rows] == [
        {"PatientID": "PAT1", "StudyDescription": "Schädel CT"},
        {"PatientID": "PAT2", "StudyDescription": "Thorax"},
    ]
    assert any(said in record.getMessage() for record in caplog.records)


def test_the_separator_is_what_the_header_holds_most_of(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "PatientID;StudyDescription\nPAT1;CT, with contrast\n")
    attributes = read_worklist(path).rows[0].query.attributes()
    assert attributes == {"PatientID": "PAT1", "StudyDescription": "CT, with contrast"}


def test_a_file_that_is_no_text_is_refused_saying_how_to_save_it(tmp_path: Path) -> None:
    path = tmp_path / "worklist.xlsx"
    path.write_bytes(b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00")
    with pytest.raises(WorklistError, match=r"not text .*CSV UTF-8"):
        read_worklist(path)


def test_a_file_neither_utf8_nor_cp1252_is_refused_saying_how_to_save_it(tmp_path: Path) -> None:
    path = tmp_path / "worklist.csv"
    path.write_bytes(b"PatientID\nPAT\x81\n")  # 0x81: not UTF-8, and undefined in cp1252
    with pytest.raises(WorklistError, match=r"neither UTF-8 nor Windows-1252 \(byte 0x81 at 13\); save it"):
        read_worklist(path)


def test_study_date_is_a_day_or_a_range_open_at_either_end(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "PatientID,StudyDate\nP,20200105\nP,20200101-20201231\nP,-20201231\nP,2020-01-01-\n")
    dates = [(r.query.min_study_date, r.query.max_study_date) for r in read_worklist(path).rows]
    assert dates == [
        (date(2020, 1, 5), date(2020, 1, 5)),
        (date(2020, 1, 1), date(2020, 12, 31)),
        (None, date(2020, 12, 31)),
        (date(2020, 1, 1), None),
    ]


STUDY_DATE_TEXTS = ["20200105", "2020-01-05", "20200101-20201231", "2020-01-01 - 2020-12-31", "-20201231", "20200101-",
                    "yesterday", "20200231", "20201231-20200101"]


def test_a_study_date_is_read_as_a_query_reads_it(tmp_path: Path) -> None:
    worklist = read_worklist(csv_file(tmp_path, "StudyDate\n" + "\n".join(STUDY_DATE_TEXTS) + "\n"))

    read = {row.line: row.query.study_date_range() for row in worklist.rows}
    for line, text in enumerate(STUDY_DATE_TEXTS, start=2):
        try:
            expected = Query(StudyDate=text).study_date_range()
        except ValidationError:
            assert line in {bad.line for bad in worklist.bad}, text
        else:
            assert read[line] == expected, text


def test_an_unknown_column_is_refused_naming_line_one(tmp_path: Path) -> None:
    with pytest.raises(WorklistError, match=r"line 1: unknown column\(s\) 'Patient'"):
        read_worklist(csv_file(tmp_path, "Patient,AccessionNumber\nP,A\n"))


def test_unreadable_rows_are_named_by_line(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "PatientID,StudyDate\nP1,20200101\nP2,yesterday\n,\nP4,20200101,extra\n")
    worklist = read_worklist(path)
    assert [r.line for r in worklist.rows] == [2]
    assert [b.line for b in worklist.bad] == [3, 5]
    with pytest.raises(WorklistError, match=r"line 3: StudyDate 'yesterday'.*1 more bad row") as raised:
        worklist.check()
    assert [line for line, _ in raised.value.problems] == [3, 5]


def test_a_row_of_only_a_study_uid_needs_no_search(tmp_path: Path) -> None:
    rows = read_worklist(csv_file(tmp_path, "StudyInstanceUID,PatientID\n1.2.3,\n1.2.4,P\n")).rows
    assert [r.study_uid for r in rows] == ["1.2.3", None]


def test_a_dataframe_is_a_worklist(tmp_path: Path) -> None:
    frame = pandas.DataFrame({"PatientID": ["P1", "P2"], "StudyDate": [date(2021, 3, 4), None]})
    rows = read_worklist(frame).rows
    assert rows[0].query.min_study_date == date(2021, 3, 4)
    assert rows[1].query.attributes() == {"PatientID": "P2"}


def test_a_list_of_uids_and_queries_is_a_worklist() -> None:
    rows = read_worklist(["1.2.3", Query(AccessionNumber="A1")]).rows
    assert rows[0].study_uid == "1.2.3"
    assert rows[1].query.AccessionNumber == "A1"


def test_the_same_query_is_the_same_row_across_runs() -> None:
    first, second = read_worklist([Query(PatientID="P"), Query(PatientID="P")]).rows
    assert first.key == second.key


def test_rates_read_as_bytes_per_second() -> None:
    assert parse_rate("50MB/s") == 50e6
    assert parse_rate("1.5 GiB/s") == 1.5 * 2**30
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate("fast")


def test_a_window_over_midnight_is_open_at_night() -> None:
    window = TimeWindow.parse("19:00-07:00")
    assert window.seconds_until_open(pandas.Timestamp("2024-01-01 18:00").to_pydatetime()) == 3600


def test_the_rate_limiter_paces_to_its_rate() -> None:
    import time

    limiter = RateLimiter(1_000_000, burst=0.1)
    started = time.monotonic()
    for _ in range(5):
        limiter.wait_for(100_000)
    assert 0.3 < time.monotonic() - started < 1.0
