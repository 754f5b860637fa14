"""Every text attribute of Table E.1-1 filled, through the real Orthanc: the pseudonymised output holds none of it.

The study of :mod:`tests.support.table_filled` fills each row of the table
whose VR can hold text (and each UID row) with a distinct marker, at top level,
in a walked sequence and in a removed one, and repeats the patient's identity
in the descriptors in the ways people write it. Downloaded and exported with
``--deidentify`` under each option set the package offers, the output passes
the audit, breaks no rule of the table, and - the independent proof - holds
none of the markers the table does not let through, searched as plain bytes.
The same audit, pointed at a plain download of the study, finds the planted
values: it can fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pydicom
import pytest
import requests

from dicomtrolley._annex_e import OPTION_COLUMNS, columns_of, violations
from dicomtrolley.audit import audit
from dicomtrolley.cli import main
from dicomtrolley.deidentify import Deidentifier, DeidentifyOptions
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from tests.support.orthanc import OrthancServer, running_orthanc
from tests.support.table_filled import (
    PATIENT_ID,
    PLANTED,
    STUDY_UID,
    WALKED,
    forbidden_markers,
    may_survive,
    write_table_filled,
)

pytestmark = pytest.mark.integration

KEY = "a test key of thirty-two bytes!!"
BASIC = dict.fromkeys(OPTION_COLUMNS, False)
OPTION_SETS: dict[str, dict[str, bool]] = {
    "basic-profile": BASIC,
    "defaults": {},
    **{f"only-{switch}": {**BASIC, switch: True} for switch in OPTION_COLUMNS},
    "every-option": dict.fromkeys(OPTION_COLUMNS, True),
}
"""The option sets tested: the Basic Profile alone, the package's defaults, each option alone, all of them."""


def options_of(switches: dict[str, bool]) -> DeidentifyOptions:
    return DeidentifyOptions.model_validate({"processes": 0, **switches})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    paths = write_table_filled(tmp_path_factory.mktemp("table-filled"))
    with running_orthanc(tmp_path_factory.mktemp("orthanc-table-filled"), stop_timeout=0.3) as started:
        started.upload(paths)
        yield started


def test_orthanc_stores_every_planted_attribute(server: OrthancServer, tmp_path: Path) -> None:
    trolley(server).download([STUDY_UID], tmp_path, progress=False)
    stored = [pydicom.dcmread(path) for path in dicom_files(tmp_path)]
    assert len(stored) == 3
    for dataset in stored:
        holders = [dataset, *(dataset[keyword][0] for keyword in WALKED)]
        removed = dataset.OtherPatientIDsSequence[0]
        for planted in PLANTED:
            assert [str(holder[planted.tag].value) for holder in holders] == [planted.value] * 5, planted.keyword
            if planted.removed_value is not None:
                assert str(removed[planted.tag].value) == planted.removed_value, planted.keyword


def trolley(server: OrthancServer) -> Trolley:
    session = requests.Session()
    return Trolley(QidoRS(session, server.dicomweb_url), WadoRS(session, server.dicomweb_url))


def dicom_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.read_bytes()[128:132] == b"DICM")


def write_toml(path: Path, switches: dict[str, bool]) -> Path:
    path.write_text("processes = 0\n" + "".join(f"{k} = {str(v).lower()}\n" for k, v in switches.items()))
    return path


def leaked_markers(folder: Path, options: DeidentifyOptions) -> list[tuple[str, str]]:
    """(file, keyword) of every marker the table does not let through that a file below ``folder`` holds."""
    forbidden = forbidden_markers(columns_of(options))
    if options.retain_modified_dates:  # a shifted date may fall on another row's date: no leak
        shift = Deidentifier(options, key=KEY).date_shift_days(PATIENT_ID)
        for planted in PLANTED:
            if planted.vr == "DA":
                moved = date(int(planted.value[:4]), int(planted.value[4:6]), int(planted.value[6:])) - timedelta(shift)
                forbidden.pop(moved.strftime("%Y%m%d"), None)
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [(path.name, keyword) for text, keyword in forbidden.items() if text.encode() in data]
    return found


def assert_pseudonymised(out: Path, state: Path, options: DeidentifyOptions) -> None:
    files = dicom_files(out)
    assert len(files) == 3
    assert [(path.name, v) for path in files for v in violations(pydicom.dcmread(path), options)] == []
    assert leaked_markers(out, options) == []
    assert main(["audit", str(out), "--state-dir", str(state)]) == 0


@pytest.mark.parametrize("option_set", list(OPTION_SETS))
def test_a_pseudonymised_download_holds_no_planted_value(
    server: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option_set: str
) -> None:
    monkeypatch.setenv("DICOMTROLLEY_DEID_KEY", KEY)
    switches = OPTION_SETS[option_set]
    toml = write_toml(tmp_path / "deid.toml", switches)
    out, state = tmp_path / "out", tmp_path / "state"
    command = ["download", server.dicomweb_url, STUDY_UID, "-o", str(out), "--no-progress",
               "--deidentify", str(toml), "--state-dir", str(state)]
    assert main(command) == 0
    assert_pseudonymised(out, state, options_of(switches))


def test_a_pseudonymised_export_holds_no_planted_value(
    server: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DICOMTROLLEY_DEID_KEY", KEY)
    toml = write_toml(tmp_path / "deid.toml", {})
    (tmp_path / "worklist.csv").write_text(f"StudyInstanceUID\n{STUDY_UID}\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["export", server.dicomweb_url, str(tmp_path / "worklist.csv"), "-o", str(out), "--no-progress",
                 "--index-format", "csv", "--deidentify", str(toml)]) == 0  # its own audit passed
    assert_pseudonymised(out, tmp_path / "out.state", options_of({}))


def test_the_audit_finds_the_planted_values_of_every_kind_in_a_plain_download(
    server: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DICOMTROLLEY_DEID_KEY", KEY)
    toml = write_toml(tmp_path / "deid.toml", {})
    assert main(["download", server.dicomweb_url, STUDY_UID, "-o", str(tmp_path / "out"), "--no-progress",
                 "--deidentify", str(toml), "--state-dir", str(tmp_path / "state")]) == 0
    trolley(server).download([STUDY_UID], tmp_path / "plain", progress=False)
    columns = columns_of(options_of({}))
    planted_kinds = {p.keyword for p in PLANTED if p.vr != "TM" and not may_survive(p, columns)}
    planted_kinds |= {p.keyword for p in PLANTED if p.removed_value is not None}
    found = {finding.kind for finding in audit(tmp_path / "plain", tmp_path / "state").findings}
    assert sorted(planted_kinds - found) == []
    assert len(planted_kinds) > 400
    capsys.readouterr()
    assert main(["audit", str(tmp_path / "plain"), "--state-dir", str(tmp_path / "state")]) == 1
    assert "findings in" in capsys.readouterr().out


def test_the_byte_search_finds_the_planted_values_in_a_plain_download(server: OrthancServer, tmp_path: Path) -> None:
    trolley(server).download([STUDY_UID], tmp_path, progress=False)
    every = options_of(BASIC)
    leaked = {keyword for _, keyword in leaked_markers(tmp_path, every)}
    assert leaked == set(forbidden_markers(columns_of(every)).values())
