"""Table E.1-1 as data: its edition and rows, the generator that writes it, every code handled, the docs current."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydicom.datadict import dictionary_has_tag, keyword_for_tag

from dicomtrolley import _annex_e_table
from dicomtrolley._annex_e import HANDLER_NAMES, PRIVATE, Rules, resolve
from dicomtrolley._annex_e_table import COLUMNS, EDITION, ROWS

REPO = Path(__file__).resolve().parent.parent
CODES = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
VRS = ["PN", "LO", "SH", "ST", "LT", "UT", "UC", "UR", "AE", "DA", "DT", "TM", "UI", "CS", "AS", "IS", "DS", "US",
       "SS", "UL", "SL", "FL", "FD", "OB", "OW", "UN", "SQ", "AT"]
EXACT = [row for row in ROWS if row[0] != "private" and "x" not in row[0]]


def load_script(name: str) -> ModuleType:
    """A script of scripts/, imported by path (the folder is not a package)."""
    sys.path.insert(0, str(REPO))
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return load_script("generate_annex_e")


# ---------------------------------------------------------------- the data


def test_the_table_is_edition_2026c_with_its_655_rows_and_the_private_row() -> None:
    assert EDITION == "2026c"
    assert len(ROWS) == 656
    assert len({row[0] for row in ROWS}) == len(ROWS)
    assert [row[0] for row in ROWS if not row[0].isalnum()] == []
    assert {row[0] for row in ROWS if "x" in row[0] or row[0] == "private"} == {
        "50xxxxxx", "60xx3000", "60xx4000", "private"}


def test_every_action_code_of_the_table_is_one_the_standard_defines() -> None:
    assert {row[3] for row in ROWS} == CODES - {"K", "C"}
    option_codes = {code for row in ROWS for code in row[4].values()}
    assert option_codes <= {"K", "C", "X"}
    assert {column for row in ROWS for column in row[4]} <= set(COLUMNS)
    assert {row[5] for row in ROWS} == {"2020", "inferred"}


def test_keywords_are_pydicoms_where_pydicom_knows_the_tag() -> None:
    known = [row for row in EXACT if dictionary_has_tag(int(row[0], 16))]
    assert len(known) > 600
    assert [row[1] for row in known] == [keyword_for_tag(int(row[0], 16)) for row in known]


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_maps_to_a_handler_for_every_vr_and_option(code: str) -> None:
    for vr in VRS:
        for column in [*COLUMNS, None]:
            columns = frozenset({column}) if column else frozenset()
            options = {column: code} if column and code in ("K", "C", "X") else {}
            basic = code if code not in ("K", "C") else "X"
            handler = resolve(basic, options, columns, vr, 0x00080080)
            assert 0 <= handler < len(HANDLER_NAMES)
            assert handler != PRIVATE


def test_every_row_maps_to_a_handler_under_every_single_option() -> None:
    for column in [*COLUMNS, None]:
        rules = Rules(frozenset({column}) if column else frozenset())
        for row in EXACT:
            assert rules.handler(int(row[0], 16), strict=False) < len(HANDLER_NAMES)


# ---------------------------------------------------------------- the generator


def test_the_committed_table_is_the_generators_rendering_of_its_rows(generator: ModuleType) -> None:
    committed = Path(_annex_e_table.__file__).read_text(encoding="utf-8")
    assert generator.render_table(list(ROWS)) == committed


def test_the_generator_combines_2026c_rows_with_2020_option_columns(generator: ModuleType) -> None:
    rows_2026c = generator.parse_2026c(
        "Z_TAGS = [\n    (0x0008, 0x0050),  # Accession Number\n]\n"
        "X_TAGS = [\n    (0x0018, 0x4000),  # Acquisition Comments\n"
        "    (0x6000, 0x3000, 0xFF00, 0xFFFF),  # Overlay Data\n]\n"
        "X_D_TAGS = [\n    (0x0008, 0x0021),  # Series Date\n]\n"
        "U_TAGS = [\n    (\n        0x0040,\n        0x4023,\n    ),  # Referenced General Purpose UID\n]\n"
    )
    columns_2020 = generator.parse_2020(json.dumps([
        {"id": "00184000", "basicProfile": "X", "cleanDescOpt": "C", "name": "Acquisition Comments"},
        {"id": "60xx3000", "basicProfile": "X", "cleanGraphOpt": "C", "name": "Overlay Data"},
        {"id": "00080050", "basicProfile": "Z", "name": "Accession Number"},
        {"id": "GGGGEEEE-WHERE-GGGG-IS-ODD", "basicProfile": "X", "rtnSafePrivOpt": "C", "name": "Private"},
    ]))
    combined = generator.combine(rows_2026c, columns_2020)
    assert combined == [
        ("00080021", "SeriesDate", "Series Date", "X/D", {"full_dates": "K", "modified_dates": "C"}, "inferred"),
        ("00080050", "AccessionNumber", "Accession Number", "Z", {}, "2020"),
        ("00184000", "AcquisitionComments", "Acquisition Comments", "X", {"clean_descriptors": "C"}, "2020"),
        ("00404023", "ReferencedGeneralPurposeScheduledProcedureStepTransactionUID",
         "Referenced General Purpose UID", "U", {"uids": "K"}, "inferred"),
        ("60xx3000", "OverlayData", "Overlay Data", "X", {"clean_graphics": "C"}, "2020"),
        ("private", "", "Private Attributes", "X", {"safe_private": "C"}, "2020"),
    ]
    namespace: dict[str, object] = {}
    exec(generator.render_table(combined), namespace)  # noqa: S102 - the generator's own output
    assert namespace["ROWS"] == tuple(combined)


def test_a_source_wheel_with_another_digest_is_refused(generator: ModuleType, tmp_path: Path) -> None:
    (tmp_path / generator.ANONYMIZER[2]).write_bytes(b"not the wheel the table was generated from")
    with pytest.raises(SystemExit, match="SHA-256"):
        generator.read_member(tmp_path, generator.ANONYMIZER)


def test_the_docs_tables_are_current() -> None:
    docs = load_script("annex_e_docs")
    assert (REPO / "docs" / "annex-e.md").read_text(encoding="utf-8") == docs.render_page()
    summary = (REPO / "docs" / "deidentify.md").read_text(encoding="utf-8")
    assert docs.render_summary() in summary
