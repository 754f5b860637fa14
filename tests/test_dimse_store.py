"""C-STORE against a pynetdicom Storage SCP that misbehaves on purpose: what a real archive rarely does on cue."""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, evt

from dicomtrolley.dimse_store import ASSOCIATION_ATTEMPTS, DICOMCStore, context_groups
from dicomtrolley.progress import ProgressReporter
from dicomtrolley.sending import Tally, collect, dataset_offset
from tests.support.dicom_files import dicom_bytes, part10_bytes, part10_dataset
from tests.support.fault_server import make_instances
from tests.support.orthanc import free_ports


class StorageSCP:
    """Stores what it receives; aborts the association at chosen C-STOREs, or answers a chosen status."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}
        self.abort_at: set[int] = set()
        self.status = 0x0000
        self.requests = 0
        self._lock = threading.Lock()

    def handle(self, event: Any) -> int:
        with self._lock:
            self.requests += 1
            number = self.requests
        if number in self.abort_at:
            event.assoc.abort()
            return 0xC000
        if self.status == 0x0000:
            self.stored[str(event.request.AffectedSOPInstanceUID)] = event.encoded_dataset(include_meta=False)
        return self.status


@contextmanager
def storage_scp(maximum_pdu: int = 16382) -> Iterator[tuple[StorageSCP, int]]:
    """A Storage SCP taking PDUs of at most ``maximum_pdu`` bytes (0: any length), and its port."""
    handler = StorageSCP()
    ae = AE("STORESCP")
    ae.supported_contexts = StoragePresentationContexts
    ae.maximum_pdu_size = maximum_pdu
    (port,) = free_ports(1)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handler.handle)])
    try:
        yield handler, port
    finally:
        server.shutdown()


@pytest.fixture
def scp() -> Iterator[tuple[StorageSCP, int]]:
    with storage_scp() as running:
        yield running


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for number, instance in enumerate(make_instances(series_sizes=(6,), name="cstore")):
        (tmp_path / f"{number}.dcm").write_bytes(instance.data)
    return tmp_path


def test_an_association_the_peer_aborts_is_opened_again_and_every_instance_arrives(
    scp: tuple[StorageSCP, int], folder: Path
) -> None:
    handler, port = scp
    handler.abort_at = {3}
    summary = DICOMCStore("127.0.0.1", port, called_aet="STORESCP", workers=1).send(folder)
    assert summary.sent == 6
    assert len(handler.stored) == 6


def test_a_peer_that_keeps_aborting_fails_the_rest_after_a_few_associations(
    scp: tuple[StorageSCP, int], folder: Path
) -> None:
    handler, port = scp
    handler.abort_at = {2, 3, 4}
    summary = DICOMCStore("127.0.0.1", port, called_aet="STORESCP", workers=1).send(folder, on_error="collect")
    assert summary.sent == 1
    assert summary.failed == 5
    assert f"ended the association {ASSOCIATION_ATTEMPTS} times" in summary.failures[0].reason


def test_a_failure_status_fails_each_instance_with_its_meaning(scp: tuple[StorageSCP, int], folder: Path) -> None:
    handler, port = scp
    handler.status = 0xA700
    summary = DICOMCStore("127.0.0.1", port, called_aet="STORESCP").send(folder, on_error="collect")
    assert summary.failed == 6
    assert summary.failures[0].reason.startswith("0xA700 (Refused: Out of Resources")


def test_a_warning_status_counts_as_stored_and_keeps_the_warning(scp: tuple[StorageSCP, int], folder: Path) -> None:
    handler, port = scp
    handler.status = 0xB000
    summary = DICOMCStore("127.0.0.1", port, called_aet="STORESCP").send(folder)
    assert summary.sent == 6
    assert summary.warnings[0][1] == "0xB000 (Coercion of Data Elements)"


def test_more_than_128_sop_class_and_syntax_pairs_go_in_several_associations(tmp_path: Path) -> None:
    for number in range(130):
        (tmp_path / f"{number}.dcm").write_bytes(dicom_bytes(f"1.2.3.{number}", sop_class=f"1.2.840.99.{number}"))
    groups = context_groups(collect(tmp_path).items)
    assert [len(group) for group in groups] == [128, 2]


# ---------------------------------------------------------------- what arrives is the stored data set


def _odd_private_elements_and_trailing_padding(data: bytes) -> bytes:
    """An Explicit VR Little Endian file with two private UN elements of odd length and trailing padding."""
    creator = b"\x99\x00\x10\x00LO\x04\x00ACME"
    odd = b"".join(b"\x99\x00" + bytes([element]) + b"\x10UN\x00\x00" + length.to_bytes(4, "little")
                   + bytes(range(1, length + 1)) for element, length in ((1, 5), (2, 3)))
    padding = b"\xfc\xff\xfc\xffOB\x00\x00" + (64).to_bytes(4, "little") + bytes(64)
    return data + creator + odd + padding


def _long_meta(sop_uid: str) -> bytes:
    """A file whose meta (6 KB of Private Information) does not fit in the bytes first read of it."""
    ds = part10_dataset(sop_uid, PatientName="LONG^META")
    ds.file_meta.PrivateInformationCreatorUID = "1.2.826.0.1.3680043.8.498.77"
    ds.file_meta.PrivateInformation = bytes(6000)
    return part10_bytes(ds)


def _large(sop_uid: str) -> bytes:
    """A 2.5 MB instance: more than one block of PDUs."""
    ds = part10_dataset(sop_uid)
    ds.add_new(0x00990010, "LO", "ACME")
    ds.add_new(0x00991001, "OB", os.urandom(2_500_000))
    return part10_bytes(ds)


@pytest.fixture
def unusual(tmp_path: Path) -> dict[str, bytes]:
    """Files in every transfer syntax the SCP takes, with odd elements, padding, a long meta, a large data set."""
    files = {
        "implicit": dicom_bytes("1.2.3.1", syntax=ImplicitVRLittleEndian, PatientName="IMPLICIT"),
        "big-endian": dicom_bytes("1.2.3.2", syntax=ExplicitVRBigEndian, PatientName="BIG^ENDIAN", Rows=512),
        "deflated": dicom_bytes("1.2.3.3", syntax=DeflatedExplicitVRLittleEndian, ImageComments="DEFLATED " * 50),
        "odd-and-padded": _odd_private_elements_and_trailing_padding(dicom_bytes("1.2.3.4", PatientName="ODD")),
        "long-meta": _long_meta("1.2.3.5"),
        "large": _large("1.2.3.6"),
    }
    for name, data in files.items():
        (tmp_path / f"{name}.dcm").write_bytes(data)
    return files


@pytest.mark.parametrize("maximum_pdu", [16382, 4096, 0])
def test_every_data_set_arrives_byte_for_byte_as_stored_whatever_pdu_length_the_peer_takes(
    unusual: dict[str, bytes], tmp_path: Path, maximum_pdu: int
) -> None:
    with storage_scp(maximum_pdu) as (handler, port):
        summary = DICOMCStore("127.0.0.1", port, called_aet="STORESCP").send(tmp_path)
    assert summary.sent == len(unusual)
    by_uid = {f"1.2.3.{number}": data for number, data in enumerate(unusual.values(), start=1)}
    assert {uid: len(data) for uid, data in handler.stored.items()} == {
        uid: len(data) - (dataset_offset(data) or 0) for uid, data in by_uid.items()}
    for uid, data in by_uid.items():
        assert handler.stored[uid] == data[dataset_offset(data):]


def test_a_file_with_no_data_set_after_its_meta_fails_alone(scp: tuple[StorageSCP, int], folder: Path) -> None:
    _handler, port = scp
    whole = dicom_bytes("1.2.3.99")
    (folder / "meta-only.dcm").write_bytes(whole[:dataset_offset(whole)])
    summary = DICOMCStore("127.0.0.1", port, called_aet="STORESCP").send(folder, on_error="collect")
    assert summary.sent == 6
    assert [(f.name.endswith("meta-only.dcm"), f.reason) for f in summary.failures] == [
        (True, "cannot be read: it holds no data set after its file meta")]


def test_a_data_set_of_odd_length_fails_alone_at_once_with_the_reason(
    scp: tuple[StorageSCP, int], folder: Path
) -> None:
    handler, port = scp
    (folder / "odd.dcm").write_bytes(dicom_bytes("1.2.3.98") + b"\x99\x00\x01\x10UN\x00\x00\x01\x00\x00\x00\x07")
    summary = DICOMCStore("127.0.0.1", port, called_aet="STORESCP").send(folder, on_error="collect")
    assert summary.sent == 6
    assert len(summary.failures) == 1
    assert summary.failures[0].name.endswith("odd.dcm")
    assert "an odd number (an element has an odd length" in summary.failures[0].reason
    assert "1.2.3.98" not in handler.stored


def _deflated_of_odd_length(sop_uid: str) -> tuple[bytes, bytes]:
    """A deflated file whose deflated data set is an odd number of bytes, unpadded; and that data set."""
    for size in range(1, 40):
        ds = part10_dataset(sop_uid, ImageComments="X" * size)
        plain = part10_bytes(ds)
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = compressor.compress(plain[dataset_offset(plain):]) + compressor.flush()
        if len(deflated) % 2:
            ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
            meta = part10_bytes(ds)
            return meta[:dataset_offset(meta)] + deflated, deflated
    raise AssertionError("no size gave a deflated data set of odd length")


def test_a_deflated_data_set_of_odd_length_arrives_padded_with_a_nul(tmp_path: Path) -> None:
    data, deflated = _deflated_of_odd_length("1.2.3.97")
    (tmp_path / "deflated.dcm").write_bytes(data)
    with storage_scp() as (handler, port):
        DICOMCStore("127.0.0.1", port, called_aet="STORESCP").send(tmp_path)
    assert handler.stored["1.2.3.97"] == deflated + b"\0"


def test_a_file_gone_since_it_was_collected_fails_alone_and_the_association_carries_the_rest(
    scp: tuple[StorageSCP, int], folder: Path
) -> None:
    handler, port = scp
    found = collect(folder)
    (folder / "2.dcm").unlink()
    with ProgressReporter(False, len(found.items)) as reporter:
        tally = Tally(reporter, len(found.items))
        DICOMCStore("127.0.0.1", port, called_aet="STORESCP", workers=1).send_items(found.items, tally)
    assert tally.sent == 5
    assert [(f.name.endswith("2.dcm"), f.reason) for f in tally.failures] == [
        (True, "cannot be read: No such file or directory")]
    assert handler.requests == 5
