"""The audit of a pseudonymised output: what it searches for, where, and what it says (never a value)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomtrolley._originals import VALUES_NAME, OriginalValues
from dicomtrolley.audit import AuditError, AuditResult, audit, forms
from dicomtrolley.cli import main
from dicomtrolley.core import InstancePart
from dicomtrolley.deidentify import Deidentifier, DeidentifyOptions
from dicomtrolley.exceptions import InstanceQuarantinedError, StorageError
from dicomtrolley.storage import StorageDir
from tests.support.identifying_data import HILDEGUND, IDENTIFYING_VALUES, IdentifyingData

KEY = "a test key of thirty-two bytes!!"


def pseudonymise(identifying: IdentifyingData, out: Path) -> None:
    """Every instance of the identifying data through the pseudonymising storage (in this thread)."""
    storage = Deidentifier(DeidentifyOptions(processes=0), key=KEY).storage(StorageDir(out))
    for path in identifying.paths:
        data = path.read_bytes()
        try:
            storage.save(InstancePart(io.BytesIO(data), len(data), "application/dicom", None, None, {}))
        except InstanceQuarantinedError:
            continue


@pytest.fixture(scope="module")
def output(identifying: IdentifyingData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("audited") / "out"
    pseudonymise(identifying, out)
    return out


def copy_output(output: Path, tmp_path: Path) -> Path:
    """A copy of the pseudonymised output, with its state folder beside it, to plant values in."""
    shutil.copytree(output, tmp_path / "out")
    shutil.copytree(output.parent / "out.state", tmp_path / "out.state")
    return tmp_path / "out"


def test_a_pseudonymised_output_is_clean(output: Path) -> None:
    result = audit(output)
    assert result.ok
    assert result.files == 7
    assert result.values > 50
    assert "clean" in str(result)


def test_the_originals_values_are_recorded_outside_the_output_folder(output: Path) -> None:
    recorded = OriginalValues.read(output.parent / "out.state")
    assert recorded[HILDEGUND.name][0] == "PatientName"
    assert recorded[HILDEGUND.patient_id][0] == "PatientID"
    assert not any(VALUES_NAME in str(path) for path in output.rglob("*"))


def test_a_recorded_value_is_in_the_file_when_add_returns_and_is_written_once(tmp_path: Path) -> None:
    values = OriginalValues(tmp_path / "out.state")
    values.add([("PatientName", "Doe^John", "")])
    assert OriginalValues.read(tmp_path / "out.state") == {"Doe^John": ("PatientName", frozenset())}  # not closed yet
    values.close()
    values.add([("PatientID", "PAT001", ""), ("PatientName", "Doe^John", "")])
    values.close()
    assert set(OriginalValues.read(tmp_path / "out.state")) == {"Doe^John", "PAT001"}
    assert len((tmp_path / "out.state" / VALUES_NAME).read_text(encoding="utf-8").splitlines()) == 2


def audit_of_a_plain_copy(identifying: IdentifyingData, output: Path, tmp_path: Path) -> AuditResult:
    """The audit of a copy of the identifying data itself, with the pseudonymised output's recorded values."""
    plain = tmp_path / "plain"
    shutil.copytree(identifying.paths[0].parent, plain)
    return audit(plain, output.parent / "out.state")


def test_every_planted_value_of_a_plain_copy_is_found(
    identifying: IdentifyingData, output: Path, tmp_path: Path
) -> None:
    result = audit_of_a_plain_copy(identifying, output, tmp_path)
    assert not result.ok
    assert {"PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "SeriesInstanceUID", "SOPInstanceUID",
            "ReferringPhysicianName", "PatientAddress", "OtherPatientIDs"} <= {f.kind for f in result.findings}


def instances(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_a_finding_names_file_attribute_and_kind_never_the_value(
    output: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = copy_output(output, tmp_path)
    victim = instances(out)[0]
    dataset = pydicom.dcmread(victim)
    dataset.ImageComments = f"seen by {HILDEGUND.name.replace('^', ' ').upper()}"
    dataset.save_as(victim)
    assert main(["audit", str(out)]) == 1
    printed = capsys.readouterr()
    relative = victim.relative_to(out).as_posix()
    assert f"finding: {relative}: ImageComments: PatientName" in printed.err
    assert "1 findings in 1 files" in printed.out
    for value in IDENTIFYING_VALUES:
        assert value.lower() not in (printed.out + printed.err).lower()


def test_a_value_in_a_path_is_found(output: Path, tmp_path: Path) -> None:
    out = copy_output(output, tmp_path)
    (out / f"notes-{HILDEGUND.patient_id}.txt").write_text("nothing", encoding="utf-8")
    result = audit(out)
    assert [(f.where, f.kind) for f in result.findings] == [("path", "PatientID")]


def test_a_value_in_any_file_is_found_at_its_offset(output: Path, tmp_path: Path) -> None:
    out = copy_output(output, tmp_path)
    (out / ".scratch.partial").write_bytes(b"\x00" * 100 + HILDEGUND.phone.encode())
    found = [(f.file, f.where, f.kind) for f in audit(out).findings]
    assert found == [(".scratch.partial", "bytes at offset 100", "PatientTelephoneNumbers")]


def test_a_date_counts_only_beside_its_patients_pseudonym(output: Path, tmp_path: Path) -> None:
    out = copy_output(output, tmp_path)
    birth = HILDEGUND.birth_date
    (out / "dates.txt").write_text(f"OTHER-ID {birth}\n", encoding="utf-8")
    assert audit(out).ok  # another patient's shifted date may fall on it
    patients = sorted({str(pydicom.dcmread(p).PatientID) for p in instances(out) if p.suffix != ".txt"})
    lines = "".join(f"{patient} {birth[:4]}-{birth[4:6]}-{birth[6:]}\n" for patient in patients)
    (out / "dates.txt").write_text(lines, encoding="utf-8")
    assert [(f.file, f.kind) for f in audit(out).findings] == [("dates.txt", "PatientBirthDate")]


def test_the_forms_a_value_is_searched_in() -> None:
    assert {b"\xc3\xb8rnsk\xc3\xb6ld hildegund wiebke", b"hildegund \xc3\xb8rnsk\xc3\xb6ld",
            b"\xc3\xb8rnsk\xc3\xb6ld, hildegund", b"wiebke", b"\xf8rnsk\xf6ld"} <= forms(HILDEGUND.name)
    assert b"\xc3\x98rnsk\xc3\x96ld".lower() in forms(HILDEGUND.name)  # upper case, as UTF-8
    assert {b"19610304", b"1961-03-04", b"04.03.1961", b"03/04/1961"} <= forms("19610304")
    assert b"li" not in forms("Li^Wu")


def test_a_compound_name_is_searched_by_its_halves_and_a_date_with_its_months_name() -> None:
    assert {b"pemberton", b"hale", b"quirinus"} <= forms("Pemberton-Hale^Quirinus")
    assert {b"04-mar-1961", b"04 mar 1961", b"04 march 1961", b"march 04, 1961"} <= forms("19610304")


def test_checks_report_attributes_that_must_be_gone(output: Path) -> None:
    @dataclass(frozen=True)
    class Gone:
        path: str
        keyword: str
        reason: str

    def no_station_name(dataset: Dataset) -> Iterable[Gone]:
        return [Gone("StationName", "StationName", "must be removed")] if "StationName" in dataset else []

    result = audit(output, checks=[no_station_name])
    assert len(result.findings) == 7
    assert str(result.findings[0]).endswith(": StationName: StationName (must be removed)")


def test_without_recorded_values_the_audit_refuses_with_usage_status(
    output: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(AuditError, match="No identifying values are recorded"):
        audit(output, tmp_path)
    assert main(["audit", str(output), "--state-dir", str(tmp_path)]) == 2
    assert main(["audit", str(tmp_path / "missing")]) == 2
    assert main(["audit", str(output)]) == 0
    assert "clean" in capsys.readouterr().out


def test_a_state_folder_inside_the_output_is_refused(identifying: IdentifyingData, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="inside the output folder"):
        Deidentifier(DeidentifyOptions(state_dir=tmp_path / "out" / "state"), key=KEY).storage(
            StorageDir(tmp_path / "out")
        )


def test_a_state_folder_behind_a_looping_link_is_refused_as_a_storage_error(output: Path, tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(StorageError, match="Could not check"):
        audit(output, loop)


def test_a_long_value_is_found_even_in_pixel_data_a_short_one_only_in_the_header(
    output: Path, tmp_path: Path
) -> None:
    out = copy_output(output, tmp_path)
    victim = instances(out)[0]
    dataset = pydicom.dcmread(victim)
    pixels = bytearray(dataset.PixelData)
    pixels[64:64 + len(HILDEGUND.patient_id)] = HILDEGUND.patient_id.lower().encode()
    pixels[200:203] = b"AHV"  # a removed issuer of three letters: by chance in pixel data, not a finding
    dataset.PixelData = bytes(pixels)
    dataset.save_as(victim)
    found = [(f.file, f.where, f.kind) for f in audit(out).findings]
    assert found == [(victim.relative_to(out).as_posix(), "PixelData", "PatientID")]


def test_digits_inside_a_longer_number_are_no_finding(output: Path, tmp_path: Path) -> None:
    out = copy_output(output, tmp_path)
    birth = HILDEGUND.birth_date
    patients = sorted({str(pydicom.dcmread(p).PatientID) for p in instances(out)})
    (out / "numbers.txt").write_text(f"{' '.join(patients)} 9{birth} {birth}7 x{birth}x\n", encoding="utf-8")
    assert [f.kind for f in audit(out).findings] == ["PatientBirthDate"]  # only the one standing alone


def test_the_default_check_is_table_e11_under_the_options_each_file_declares(
    identifying: IdentifyingData, output: Path, tmp_path: Path
) -> None:
    result = audit_of_a_plain_copy(identifying, output, tmp_path)
    checked = {(f.where, f.reason) for f in result.findings if f.reason}
    assert ("PatientAddress", "removed by Table E.1-1 (2026c)") in checked
    assert ("(0011,0010)", "private attribute that Retain Safe Private does not keep") in checked
