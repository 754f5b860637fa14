"""The audit against the real Orthanc: pseudonymised downloads and exports come out clean, plain ones do not.

Also: nothing identifying is in the output folder at any moment of a
pseudonymised download (temporary files included), and the worker processes
never run the caller's script again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import requests

from dicomtrolley._originals import OriginalValues
from dicomtrolley.audit import ValueSearch, audit
from dicomtrolley.cli import main
from dicomtrolley.deidentify import Deidentifier, DeidentifyOptions
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from tests.support.command_line import pseudonymising_download
from tests.support.identifying_data import STUDIES
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.integration

KEY = "a test key of thirty-two bytes!!"
STUDY_UIDS = [study.uid for study in STUDIES]
PLANTED_KINDS = {
    "PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "SOPInstanceUID", "SeriesInstanceUID",
    "ReferringPhysicianName", "PerformingPhysicianName", "PatientAddress", "PatientTelephoneNumbers", "InstitutionName",
    "OtherPatientIDs",
}
"""Kinds of values the audit must find in a plain download of the identifying studies."""


def trolley(server: OrthancServer, **wado: Any) -> Trolley:
    session = requests.Session()
    return Trolley(QidoRS(session, server.dicomweb_url), WadoRS(session, server.dicomweb_url, **wado))


def download_command(server: OrthancServer, tmp_path: Path, *options: str) -> int:
    return pseudonymising_download(server.dicomweb_url, STUDY_UIDS, tmp_path, "", *options)


def test_a_pseudonymised_download_passes_the_audit(
    identifying_orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DICOMTROLLEY_DEID_KEY", KEY)
    assert download_command(identifying_orthanc, tmp_path) == 0
    assert (tmp_path / "out.state" / "identifying-values.jsonl").is_file()  # beside the output, not in it
    assert main(["audit", str(tmp_path / "out")]) == 0
    assert "clean" in capsys.readouterr().out


def test_the_audit_finds_the_planted_values_in_a_plain_download(
    identifying_orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DICOMTROLLEY_DEID_KEY", KEY)
    assert download_command(identifying_orthanc, tmp_path, "--state-dir", str(tmp_path / "secure")) == 0
    trolley(identifying_orthanc).download(STUDY_UIDS, tmp_path / "plain", progress=False)
    result = audit(tmp_path / "plain", tmp_path / "secure")
    assert {finding.kind for finding in result.findings} >= PLANTED_KINDS
    assert main(["audit", str(tmp_path / "plain"), "--state-dir", str(tmp_path / "secure")]) == 1
    assert "findings in" in capsys.readouterr().out


def export(server: OrthancServer, out: Path) -> Any:
    deidentifier = Deidentifier(DeidentifyOptions(mapping=out.parent / "secure" / "mapping.csv"), key=KEY)
    return trolley(server).export(STUDY_UIDS, out, progress=False, index_format="csv", deidentify=deidentifier)


def test_a_pseudonymised_export_audits_its_output_and_reports_it(
    identifying_orthanc: OrthancServer, tmp_path: Path
) -> None:
    report = export(identifying_orthanc, tmp_path / "out")
    assert report.ok
    assert report.audit is not None
    assert report.audit.ok
    assert report.audit.files == report.instances_written + 2  # the index and the lock file too
    assert "audit: clean" in str(report)
    assert report.report_path is not None
    assert report.report_path.with_name("audit.csv").read_text(encoding="utf-8") == "file,where,kind,reason\n"
    assert (tmp_path / "secure" / "out.state" / "identifying-values.jsonl").is_file()


def test_an_export_whose_output_holds_an_identifying_value_fails_its_audit(
    identifying_orthanc: OrthancServer, tmp_path: Path
) -> None:
    export(identifying_orthanc, tmp_path / "out")
    (tmp_path / "out" / "notes.txt").write_text(f"patient {STUDIES[0].patient.patient_id}\n", encoding="utf-8")
    again = export(identifying_orthanc, tmp_path / "out")
    assert not again.ok
    assert again.audit is not None
    assert [(f.file, f.kind) for f in again.audit.findings] == [("notes.txt", "PatientID")]
    assert "audit: 1 findings" in str(again)
    assert again.report_path is not None
    written = again.report_path.with_name("audit.csv").read_text(encoding="utf-8").splitlines()
    assert written == ["file,where,kind,reason", "notes.txt,bytes at offset 8,PatientID,"]


def test_the_export_command_exits_1_on_an_audit_finding(
    identifying_orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DICOMTROLLEY_DEID_KEY", KEY)
    (tmp_path / "deid.toml").write_text("", encoding="utf-8")
    (tmp_path / "worklist.csv").write_text("StudyInstanceUID\n" + "\n".join(STUDY_UIDS) + "\n", encoding="utf-8")
    command = ["export", identifying_orthanc.dicomweb_url, str(tmp_path / "worklist.csv"), "-o", str(tmp_path / "out"),
               "--no-progress", "--index-format", "csv", "--deidentify", str(tmp_path / "deid.toml")]
    assert main(command) == 0
    assert "audit of" in capsys.readouterr().out
    (tmp_path / "out" / STUDIES[1].accession).mkdir()
    assert main(command) == 1
    assert f"finding: {STUDIES[1].accession}: path: AccessionNumber" in capsys.readouterr().err


def test_no_file_in_the_output_folder_ever_holds_an_identifying_value(
    identifying_orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    snapshots: list[tuple[str, bytes]] = []
    spilled: list[str] = []
    replace, temporary_file = os.replace, tempfile.TemporaryFile

    def snapshot_then_replace(source: Any, target: Any, **kwargs: Any) -> None:
        if str(source).startswith(str(out)):  # every file there, the temporary about to be renamed included
            snapshots.extend((str(p), p.read_bytes()) for p in out.rglob("*") if p.is_file())
        replace(source, target, **kwargs)

    def spill(*args: Any, **kwargs: Any) -> Any:
        spilled.append(str(kwargs.get("dir") or tempfile.gettempdir()))
        return temporary_file(*args, **kwargs)

    monkeypatch.setattr(os, "replace", snapshot_then_replace)
    monkeypatch.setattr(tempfile, "TemporaryFile", spill)
    deidentifier = Deidentifier(DeidentifyOptions(processes=2), key=KEY)
    spilling = trolley(identifying_orthanc, spill_threshold=0)
    summary = spilling.download(STUDY_UIDS, out, progress=False, deidentify=deidentifier)
    assert summary.ok
    assert any(".dicomtrolley-partial" in path for path, _ in snapshots)
    assert spilled  # the downloaded bodies went to temporary files: outside the output folder
    assert not any(Path(folder).resolve().is_relative_to(out.resolve()) for folder in spilled)
    search = ValueSearch(OriginalValues.read(tmp_path / "out.state"))
    assert len(search.kinds) > 100
    found = [(path, kind) for path, data in snapshots for _, kind in search.find(data)]
    assert found == []


UNGUARDED = """
from pathlib import Path
with open(COUNTER, "a") as counter:  # no `if __name__ == "__main__":` anywhere
    counter.write("ran\\n")
"""


@pytest.mark.parametrize("how", ["python", "cli"])
def test_an_unguarded_script_runs_once_and_its_pseudonymised_export_finishes(
    identifying_orthanc: OrthancServer, tmp_path: Path, how: str
) -> None:
    counter = tmp_path / "runs.txt"
    url = identifying_orthanc.dicomweb_url
    if how == "python":
        body = f"""
import requests
from dicomtrolley.deidentify import Deidentifier, DeidentifyOptions
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
session = requests.Session()
trolley = Trolley(QidoRS(session, {url!r}), WadoRS(session, {url!r}))
report = trolley.export({STUDY_UIDS!r}, {str(tmp_path / "out")!r}, progress=False, index_format="csv",
                        deidentify=Deidentifier(DeidentifyOptions(processes=2), key={KEY!r}))
assert report.ok, report
"""
    else:
        (tmp_path / "deid.toml").write_text("processes = 2\n", encoding="utf-8")
        (tmp_path / "worklist.csv").write_text("StudyInstanceUID\n" + "\n".join(STUDY_UIDS) + "\n")
        body = f"""
import sys
from dicomtrolley.cli import main
sys.exit(main(["export", {url!r}, {str(tmp_path / "worklist.csv")!r}, "-o", {str(tmp_path / "out")!r},
               "--no-progress", "--index-format", "csv", "--deidentify", {str(tmp_path / "deid.toml")!r}]))
"""
    script = tmp_path / "unguarded.py"
    script.write_text(f"COUNTER = {str(counter)!r}\n" + textwrap.dedent(UNGUARDED) + body, encoding="utf-8")
    repository = str(Path(__file__).resolve().parent.parent)
    environment = {**os.environ, "DICOMTROLLEY_DEID_KEY": KEY, "PYTHONPATH": repository}
    finished = subprocess.run([sys.executable, str(script)], env=environment, timeout=180, capture_output=True,
                              text=True, check=False)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert counter.read_text().splitlines() == ["ran"]
    assert audit(tmp_path / "out").ok
