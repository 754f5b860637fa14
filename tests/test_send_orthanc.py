"""Sending to a second, empty Orthanc over STOW-RS and C-STORE: what arrives is what was sent."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from dicomtrolley.cli import main
from dicomtrolley.dimse_store import DICOMCStore
from dicomtrolley.stow_rs import StowRS
from tests.support.dicom_files import dicom_bytes
from tests.support.orthanc import OrthancFactory, OrthancServer, stored_files
from tests.support.sample_data import SampleData

pytestmark = pytest.mark.integration


@pytest.fixture
def destination(orthanc_factory: OrthancFactory) -> OrthancServer:
    return orthanc_factory(load=False)


@pytest.fixture
def small(sample_data: SampleData) -> SampleData:
    return sample_data.small_only()


def test_stow_rs_stores_every_instance_byte_equal(destination: OrthancServer, small: SampleData) -> None:
    summary = StowRS(requests.Session(), destination.dicomweb_url).send(small.paths())
    assert summary.sent == len(small.all_instances())
    assert summary.ok
    assert summary.bytes_sent == sum(i.size for i in small.all_instances())
    arrived = stored_files(destination)
    assert arrived == {i.uid: i.path.read_bytes() for i in small.all_instances()}


def test_c_store_stores_every_instance_with_equal_attributes_and_pixels(
    destination: OrthancServer, small: SampleData
) -> None:
    sender = DICOMCStore("127.0.0.1", destination.dicom_port, called_aet=destination.aet, workers=2)
    summary = sender.send(small.paths())
    assert summary.sent == len(small.all_instances())
    assert summary.ok
    arrived = stored_files(destination)
    assert set(arrived) == {i.uid for i in small.all_instances()}
    for instance in small.all_instances():
        sent, got = dcmread(instance.path), dcmread(io.BytesIO(arrived[instance.uid]))
        assert got == sent  # every element of the dataset (the file meta is the receiver's own)
        assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID


def test_c_store_fails_alone_an_instance_whose_sop_class_the_peer_refuses(
    destination: OrthancServer, tmp_path: Path
) -> None:
    (tmp_path / "ok.dcm").write_bytes(dicom_bytes("1.2.826.0.1.3680043.8.498.1", PatientID="P1",
                                                   study_uid="1.2.826.0.1.3680043.8.498.2",
                                                   series_uid="1.2.826.0.1.3680043.8.498.3"))
    unknown = "1.2.826.0.1.3680043.8.498.999"  # no storage SOP class Orthanc knows (UnknownSopClassAccepted: false)
    (tmp_path / "odd.dcm").write_bytes(dicom_bytes("1.2.826.0.1.3680043.8.498.4", sop_class=unknown,
                                                    study_uid="1.2.826.0.1.3680043.8.498.2",
                                                    series_uid="1.2.826.0.1.3680043.8.498.3", PatientID="P1"))
    summary = DICOMCStore("127.0.0.1", destination.dicom_port, called_aet=destination.aet).send(
        tmp_path, on_error="collect")
    assert summary.sent == 1
    assert summary.failed == 1
    assert summary.failures[0].name.endswith("odd.dcm")
    assert f"accepted no presentation context for SOP class {unknown}" in summary.failures[0].reason


def test_upload_of_a_folder_with_a_non_dicom_file_skips_it_and_exits_zero(
    destination: OrthancServer, small: SampleData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = small.studies[0]
    for number, instance in enumerate(study.instances):
        (tmp_path / f"{number:03d}.dcm").write_bytes(instance.path.read_bytes())
    (tmp_path / "README.txt").write_text("handed over with the files")
    status = main(["upload", destination.dicomweb_url, str(tmp_path), "--no-progress"])
    out, err = capsys.readouterr()
    assert status == 0
    assert out.startswith(f"{len(study.instances)} instances sent")
    assert ", 1 skipped" in out
    assert "README.txt: not a DICOM file" in err
    assert set(stored_files(destination)) == {i.uid for i in study.instances}


def test_upload_to_a_named_server_sends_with_its_c_store_sender(
    destination: OrthancServer, small: SampleData, tmp_path: Path
) -> None:
    config = tmp_path / "servers.toml"
    config.write_text(f'[servers.archive]\nsender = "c-store"\nsearcher = "c-find"\ndownloader = "c-get"\n'
                      f'host = "127.0.0.1"\nport = {destination.dicom_port}\naec = "{destination.aet}"\n')
    study = small.studies[1]
    paths = [str(i.path) for i in study.instances]
    assert main(["upload", "--server", "archive", "--config", str(config), *paths, "--no-progress"]) == 0
    assert set(stored_files(destination)) == {i.uid for i in study.instances}


def test_upload_to_a_dimse_address_sends_with_c_store(destination: OrthancServer, small: SampleData) -> None:
    study = small.studies[2]
    paths = [str(i.path) for i in study.instances]
    argv = ["upload", "--host", "127.0.0.1", "--port", str(destination.dicom_port), "--called-aet", destination.aet]
    assert main([*argv, *paths, "--no-progress"]) == 0
    assert set(stored_files(destination)) == {i.uid for i in study.instances}


def test_c_store_to_a_port_where_nothing_listens_fails_every_instance_as_unreachable(small: SampleData) -> None:
    from tests.support.orthanc import free_ports

    (port,) = free_ports(1)
    summary = DICOMCStore("127.0.0.1", port, acse_timeout=2).send(small.paths()[:3], on_error="collect")
    assert summary.unreachable
    assert summary.failed == 3


def test_c_store_stores_data_sets_in_every_syntax_with_odd_elements_and_padding_element_by_element(
    destination: OrthancServer, tmp_path: Path
) -> None:
    odd = (b"\x99\x00\x10\x00LO\x04\x00ACME"  # a private creator, two elements of odd length, trailing padding
           + b"\x99\x00\x01\x10UN\x00\x00" + (5).to_bytes(4, "little") + b"\x01\x02\x03\x04\x05"
           + b"\x99\x00\x02\x10UN\x00\x00" + (3).to_bytes(4, "little") + b"\x01\x02\x03"
           + b"\xfc\xff\xfc\xffOB\x00\x00" + (64).to_bytes(4, "little") + bytes(64))
    files = {
        "implicit": dicom_bytes("1.2.826.0.1.3680043.8.498.11", syntax=ImplicitVRLittleEndian, PatientID="P1"),
        "big-endian": dicom_bytes("1.2.826.0.1.3680043.8.498.12", syntax=ExplicitVRBigEndian, PatientID="P1",
                                  Rows=512, Columns=256),
        "deflated": dicom_bytes("1.2.826.0.1.3680043.8.498.13", syntax=DeflatedExplicitVRLittleEndian,
                                PatientID="P1", ImageComments="DEFLATED " * 50),
        "odd-and-padded": dicom_bytes("1.2.826.0.1.3680043.8.498.14", PatientID="P1") + odd,
    }
    for name, data in files.items():
        (tmp_path / f"{name}.dcm").write_bytes(data)
    summary = DICOMCStore("127.0.0.1", destination.dicom_port, called_aet=destination.aet).send(tmp_path)
    assert summary.sent == len(files)
    arrived = stored_files(destination)
    for data in files.values():
        sent = dcmread(io.BytesIO(data))
        got = dcmread(io.BytesIO(arrived[sent.SOPInstanceUID]))
        assert [(e.tag, e.VR, e.value) for e in got] == [(e.tag, e.VR, _even(e.value)) for e in sent]


def _even(value: object) -> object:
    """A value as Orthanc stores it: bytes of odd length get the NUL that pads them to even (PS3.5 7.1.1)."""
    return value + b"\0" if isinstance(value, bytes) and len(value) % 2 else value
