"""What a send takes: files, folders, datasets and bytes; what is skipped; the summary's one line."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicomtrolley.sending import SendFailure, SendSummary, collect
from tests.support.dicom_files import dicom_bytes, part10_dataset


def test_a_folder_is_walked_recursively_in_name_order_and_non_dicom_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / "b" / "c" / "2.dcm").write_bytes(dicom_bytes("1.2.2"))
    (tmp_path / "a.dcm").write_bytes(dicom_bytes("1.2.1"))
    (tmp_path / "notes.txt").write_text("not an image")
    found = collect(tmp_path)
    assert [i.sop_instance_uid for i in found.items] == ["1.2.1", "1.2.2"]
    assert found.skipped == [(str(tmp_path / "notes.txt"), "not a DICOM file")]


def test_an_item_knows_its_sop_class_instance_and_transfer_syntax_from_the_file_meta(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(dicom_bytes("1.2.9", syntax="1.2.840.10008.1.2"))
    (item,) = collect(path).items
    assert (item.sop_class_uid, item.sop_instance_uid, item.transfer_syntax) == (
        "1.2.840.10008.5.1.4.1.1.7", "1.2.9", "1.2.840.10008.1.2")
    assert item.size == path.stat().st_size
    assert item.data is None


def test_bytes_and_datasets_are_sent_as_part10_files_and_a_dataset_without_file_meta_is_left_unchanged() -> None:
    bare = Dataset()
    bare.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    bare.SOPInstanceUID = "1.2.5"
    found = collect([dicom_bytes("1.2.3"), part10_dataset("1.2.4"), bare, b"plain text"])
    assert [i.name for i in found.items] == ["bytes #1", "dataset #1", "dataset #2"]
    assert [i.sop_instance_uid for i in found.items] == ["1.2.3", "1.2.4", "1.2.5"]
    assert found.skipped == [("bytes #2", "not a DICOM file")]
    assert not hasattr(bare, "file_meta") or "TransferSyntaxUID" not in bare.file_meta
    with found.items[2].open() as file:
        assert dcmread(file).SOPInstanceUID == "1.2.5"


def test_a_dicomdir_is_skipped_and_a_file_meta_without_uids_fails(tmp_path: Path) -> None:
    (tmp_path / "DICOMDIR").write_bytes(dicom_bytes("1.2.7", sop_class="1.2.840.10008.1.3.10"))
    broken = bytearray(dicom_bytes("1.2.8"))
    at = broken.index(b"1.2.8\x00")
    (tmp_path / "broken.dcm").write_bytes(bytes(broken[:at - 8]))  # cut inside the file meta
    found = collect(tmp_path)
    assert found.items == []
    assert found.skipped[0][1].startswith("a DICOMDIR")
    assert "lacks" in found.failures[0].reason


def test_the_summary_is_one_line_with_counts_size_and_rate() -> None:
    summary = SendSummary(sent=2, bytes_sent=3_000_000, skipped=[("a", "not a DICOM file")],
                          failures=[SendFailure("b.dcm", "1.2.3", "0xA700 (out of resources)")], elapsed=1.5)
    assert str(summary) == "2 instances sent (3.0 MB, 2 MB/s), 1 skipped; 1 failed"
    assert not summary.ok
    assert summary.failed == 1
    assert str(summary.failures[0]) == "b.dcm (1.2.3): 0xA700 (out of resources)"
