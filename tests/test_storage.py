"""Storage: layouts, templates, safe names, atomic writes, collisions."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from dicomtrolley.core import InstancePart
from dicomtrolley.exceptions import OutputFolderError, StorageCollisionError, StorageError, TemplateError
from dicomtrolley.storage import (
    TEMPORARY_SUFFIX,
    FlatStorageDir,
    PathTemplate,
    StorageDir,
    check_output_folder,
    remove_stale_temporaries,
    safe_segment,
    temporary_name,
)
from tests.support.dicom_files import dicom_bytes


def part(data: bytes) -> InstancePart:
    return InstancePart(io.BytesIO(data), len(data))


def test_default_layout_is_the_references_study_series_instance_with_underscores(tmp_path: Path) -> None:
    saved = StorageDir(tmp_path).save(part(dicom_bytes("1.2.3.4")))
    assert saved.path == tmp_path / "1_2_1" / "1_2_1_1" / "1_2_3_4"


def test_saved_file_holds_the_received_bytes_unchanged(tmp_path: Path) -> None:
    data = dicom_bytes()
    saved = StorageDir(tmp_path).save(part(data))
    assert saved.path.read_bytes() == data
    assert saved.size == len(data)
    assert saved.transfer_syntax == ExplicitVRLittleEndian


def test_flat_layout_names_files_by_sop_instance_uid(tmp_path: Path) -> None:
    saved = FlatStorageDir(tmp_path).save(part(dicom_bytes("1.2.3.4")))
    assert saved.path == tmp_path / "1_2_3_4"


def test_template_formats_numbers_and_keeps_uid_dots(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path, template="{PatientID}/{SeriesNumber:03d}_{Modality}/{InstanceNumber:05d}.dcm")
    saved = storage.save(part(dicom_bytes(PatientID="P1", SeriesNumber=7, Modality="CT", InstanceNumber=12)))
    assert saved.path == tmp_path / "P1" / "007_CT" / "00012.dcm"


def test_missing_or_empty_attribute_becomes_placeholder(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path, template="{PatientID}/{AccessionNumber}/{SOPInstanceUID}.dcm")
    saved = storage.save(part(dicom_bytes("9.9", PatientID="")))
    assert saved.path == tmp_path / "unknown" / "unknown" / "9.9.dcm"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("../../etc", ".._.._etc"), ("..", "__"), ("a/b\\c", "a_b_c"), ("tab\there", "tab_here"), ("", "unknown")],
)
def test_safe_segment_neutralises_separators_dots_and_control_characters(value: str, expected: str) -> None:
    assert safe_segment(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2"),
        ("CT_head-1+2", "CT_head-1+2"),
        (".", "_"),
        ("...", "___"),
        ("a" * 250, "a" * 200),
        (" padded ", "padded"),
    ],
)
def test_safe_segment_keeps_plain_values_and_still_cuts_dots_and_length(value: str, expected: str) -> None:
    assert safe_segment(value) == expected


def test_hostile_tag_value_cannot_climb_out_of_the_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    storage = StorageDir(out, template="{PatientID}/{SOPInstanceUID}")
    saved = storage.save(part(dicom_bytes(PatientID="../../../../tmp/evil")))
    assert saved.path.resolve().is_relative_to(out.resolve())
    assert not (tmp_path / "tmp").exists()


def test_template_renders_text_with_slashes_and_the_same_path_as_render() -> None:
    template = PathTemplate("{PatientID}/{SeriesNumber:03d}/{SOPInstanceUID}.dcm")
    attributes = {"PatientID": "P/1", "SeriesNumber": 7, "SOPInstanceUID": "1.2.3"}
    assert template.render_text(attributes) == "P_1/007/1.2.3.dcm"
    assert template.render(attributes) == Path("P_1", "007", "1.2.3.dcm")


def test_template_with_a_climbing_literal_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unsafe path"):
        StorageDir(tmp_path, template="../{SOPInstanceUID}").path_for({"SOPInstanceUID": "1"})


@pytest.mark.parametrize(
    ("field", "meant"),
    [("PatientId", "; did you mean PatientID?"), ("SeriesNumbr", "; did you mean SeriesNumber?"), ("Foo", "")],
)
def test_a_template_field_that_is_no_dicom_keyword_is_refused_with_the_closest(field: str, meant: str) -> None:
    with pytest.raises(TemplateError) as refused:
        PathTemplate(f"{{{field}}}/{{SOPInstanceUID}}.dcm")
    assert str(refused.value).endswith(f"{field!r} is not a DICOM keyword{meant}")
    assert isinstance(refused.value, ValueError)


def test_the_output_folder_is_made_with_its_parents_and_left_empty(tmp_path: Path) -> None:
    folder = check_output_folder(tmp_path / "a" / "b")
    assert folder.is_dir()
    assert list(folder.iterdir()) == []


def test_an_output_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(OutputFolderError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "f")


def test_a_write_into_a_folder_that_is_a_file_stops_as_an_output_folder_error(tmp_path: Path) -> None:
    (tmp_path / "P1").write_bytes(b"")
    storage = StorageDir(tmp_path, template="{PatientID}/{SOPInstanceUID}.dcm")
    data = dicom_bytes(PatientID="P1")
    with pytest.raises(OutputFolderError, match="a file stands where its folder should be"):
        storage.save(part(data))


def test_template_without_fields_is_refused() -> None:
    with pytest.raises(StorageError, match="names no attribute"):
        PathTemplate("all.dcm")


def test_two_instances_on_one_path_are_reported_not_overwritten(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path, template="{PatientID}.dcm")
    first = storage.save(part(dicom_bytes("1.1", PatientID="P")))
    with pytest.raises(StorageCollisionError, match=r"1\.1 and 1\.2"):
        storage.save(part(dicom_bytes("1.2", PatientID="P")))
    assert first.path.read_bytes() == dicom_bytes("1.1", PatientID="P")


def test_collision_with_a_file_from_an_earlier_run_is_reported(tmp_path: Path) -> None:
    StorageDir(tmp_path, template="{PatientID}.dcm").save(part(dicom_bytes("1.1", PatientID="P")))
    with pytest.raises(StorageCollisionError):
        StorageDir(tmp_path, template="{PatientID}.dcm").save(part(dicom_bytes("1.2", PatientID="P")))


def test_saving_the_same_instance_again_replaces_it(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path)
    storage.save(part(dicom_bytes("1.1")))
    saved = storage.save(part(dicom_bytes("1.1")))
    assert saved.path.is_file()


def test_bytes_that_are_not_dicom_raise_storage_error_and_leave_nothing(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a readable DICOM"):
        StorageDir(tmp_path).save(part(b"<html>an error page</html>"))
    assert list(tmp_path.rglob("*")) == []


def test_failed_write_leaves_no_file_under_the_final_name_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(body: object, handle: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dicomtrolley.storage.copy_to_descriptor", full_disk)
    with pytest.raises(StorageError, match="disk is full"):
        StorageDir(tmp_path).save(part(dicom_bytes("1.1")))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# A child that starts writing an instance with StorageDir and stalls after the first bytes.
_STALLED_WRITER = """
import io, os, sys, time
from pathlib import Path
from dicomtrolley import storage
from dicomtrolley.core import InstancePart

def stall(body, handle):
    os.write(handle, body.read(100))
    print("writing", flush=True)
    time.sleep(60)

storage.copy_to_descriptor = stall
data = Path(sys.argv[2]).read_bytes()
storage.StorageDir(sys.argv[1]).save(InstancePart(io.BytesIO(data), len(data)))
"""


def test_a_writer_killed_mid_write_leaves_no_temporary_once_the_folder_is_written_again(tmp_path: Path) -> None:
    data = dicom_bytes("1.1")
    (tmp_path / "instance").write_bytes(data)
    out = tmp_path / "out"
    writer = subprocess.Popen(
        [sys.executable, "-c", _STALLED_WRITER, str(out), str(tmp_path / "instance")], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    assert writer.stdout.readline() == "writing\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert [p.name for p in out.rglob(f"*{TEMPORARY_SUFFIX}")] != []  # what kill -9 leaves

    saved = StorageDir(out).save(part(data))
    assert saved.path.read_bytes() == data
    assert list(out.rglob(f"*{TEMPORARY_SUFFIX}")) == []


def test_temporaries_of_running_writers_and_of_other_machines_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "1_1"
    mine = tmp_path / f"{temporary_name(target)}abc{TEMPORARY_SUFFIX}"  # this process: still writing
    other_machine = tmp_path / f".1_1.00000000-{os.getpid() + 1}.abc{TEMPORARY_SUFFIX}"
    unknown = tmp_path / f".1_1.abc{TEMPORARY_SUFFIX}"  # not a name storage makes: not ours to judge
    for temporary in (mine, other_machine, unknown):
        temporary.write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path) == []
    assert all(t.exists() for t in (mine, other_machine, unknown))


def test_a_temporary_whose_writer_has_ended_is_stale(tmp_path: Path) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(ended.stdout)
    stale = tmp_path / temporary_name(tmp_path / "1_1").replace(str(os.getpid()), str(pid))
    stale = stale.with_name(f"{stale.name}abc{TEMPORARY_SUFFIX}")
    stale.write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists()


def test_has_is_true_only_for_complete_files_under_their_final_name(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path)
    attributes = {"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.1", "SOPInstanceUID": "1.1"}
    assert not storage.has(attributes)
    folder = storage.path_for(attributes).parent
    folder.mkdir(parents=True)
    (folder / f".1_1.x{TEMPORARY_SUFFIX}").write_bytes(b"half")
    assert not storage.has(attributes)
    storage.save(part(dicom_bytes("1.1")))
    assert storage.has(attributes)


def test_has_is_false_when_the_search_lacks_a_template_attribute(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path, template="{PatientID}/{SOPInstanceUID}")
    assert not storage.has({"SOPInstanceUID": "1.1"})


def test_at_keeps_the_template_under_another_folder(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path / "a", template="{SOPInstanceUID}.dcm").at(tmp_path / "b")
    assert storage.path_for({"SOPInstanceUID": "1.1"}) == tmp_path / "b" / "1.1.dcm"


def test_non_ascii_values_are_kept(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path, template="{PatientName}/{SOPInstanceUID}")
    saved = storage.save(part(dicom_bytes(PatientName="Müller^Jürgen", SpecificCharacterSet="ISO_IR 192")))
    assert saved.path.parent.name == "Müller^Jürgen"
    assert os.path.isfile(saved.path)


def test_is_occupied_only_when_the_output_folder_holds_something(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path / "out")
    assert not storage.is_occupied()
    (tmp_path / "out").mkdir()
    assert not storage.is_occupied()
    storage.save(part(dicom_bytes()))
    assert storage.is_occupied()


# -- symbolic links -------------------------------------------------------------------------------


def test_a_link_below_the_output_folder_that_leads_outside_is_refused(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "1_2_1").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(StorageError, match="leads outside the output folder"):
        StorageDir(out).save(part(dicom_bytes("1.2.3.4")))
    assert list(elsewhere.iterdir()) == []


def test_a_file_reached_through_a_link_leading_outside_is_not_on_disk(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    (elsewhere / "1_2_1_1").mkdir(parents=True)
    (elsewhere / "1_2_1_1" / "1_2_3_4").write_bytes(dicom_bytes("1.2.3.4"))
    (out / "1_2_1").symlink_to(elsewhere, target_is_directory=True)
    uids = {"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.1", "SOPInstanceUID": "1.2.3.4"}
    assert not StorageDir(out).has(uids)
    assert StorageDir(out, allow_links_outside=True).has(uids)


def test_a_link_leading_outside_is_written_through_when_allowed(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "1_2_1").symlink_to(elsewhere, target_is_directory=True)
    StorageDir(out, allow_links_outside=True).save(part(dicom_bytes("1.2.3.4")))
    assert (elsewhere / "1_2_1_1" / "1_2_3_4").is_file()


def test_a_link_below_the_output_folder_that_loops_is_refused_by_name(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "1_2_1").symlink_to(out / "1_2_1")
    with pytest.raises(StorageError, match=r"Could not check .*1_2_1"):
        StorageDir(out).save(part(dicom_bytes("1.2.3.4")))


def test_the_output_folder_itself_may_be_a_link(tmp_path: Path) -> None:
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real, target_is_directory=True)
    saved = StorageDir(link).save(part(dicom_bytes("1.2.3.4")))
    assert (real / saved.path.relative_to(link)).read_bytes() == dicom_bytes("1.2.3.4")


def test_a_link_at_a_final_name_to_a_file_that_is_not_dicom_is_not_on_disk_and_is_replaced(tmp_path: Path) -> None:
    storage = FlatStorageDir(tmp_path / "out")
    (tmp_path / "out").mkdir()
    decoy = tmp_path / "decoy.txt"
    decoy.write_text("not an instance")
    (tmp_path / "out" / "1_2_3_4").symlink_to(decoy)
    assert not storage.has({"SOPInstanceUID": "1.2.3.4"})
    saved = storage.save(part(dicom_bytes("1.2.3.4")))
    assert not saved.path.is_symlink()
    assert decoy.read_text() == "not an instance"


def test_a_link_at_a_final_name_to_the_same_complete_instance_inside_the_folder_is_on_disk(tmp_path: Path) -> None:
    storage = FlatStorageDir(tmp_path)
    (tmp_path / "copy.dcm").write_bytes(dicom_bytes("1.2.3.4"))
    (tmp_path / "1_2_3_4").symlink_to(tmp_path / "copy.dcm")
    (tmp_path / "1_2_3_5").symlink_to(tmp_path / "copy.dcm")  # another instance's name
    assert storage.has({"SOPInstanceUID": "1.2.3.4"})
    assert not storage.has({"SOPInstanceUID": "1.2.3.5"})


def test_a_link_at_a_final_name_to_a_dicom_file_outside_the_folder_is_not_on_disk(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "outside.dcm").write_bytes(dicom_bytes("1.2.3.4"))
    (tmp_path / "out" / "1_2_3_4").symlink_to(tmp_path / "outside.dcm")
    assert not FlatStorageDir(tmp_path / "out").has({"SOPInstanceUID": "1.2.3.4"})


def test_uids_encoded_as_un_name_the_folders_as_their_values(tmp_path: Path) -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes("1.2.3.4")))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        raw = ds[keyword].value.encode("ascii")
        ds[keyword] = pydicom.DataElement(ds[keyword].tag, "UN", raw + b"\0" * (len(raw) % 2))
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    saved = StorageDir(tmp_path).save(part(out.getvalue()))
    assert saved.path == tmp_path / "1_2_1" / "1_2_1_1" / "1_2_3_4"
    assert (saved.reference.study_uid, saved.reference.instance_uid) == ("1.2.1", "1.2.3.4")
