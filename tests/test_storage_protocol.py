"""The Storage protocol: a folder, the pseudonymising wrapper and a storage of one's own behind one seam."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from dicomtrolley.core import InstancePart
from dicomtrolley.deidentify import Deidentifier, DeidentifyOptions
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.storage import StorageDir
from dicomtrolley.trolley import Trolley
from tests.support.dicom_files import dicom_bytes
from tests.support.fakes import STUDY, FakeDownloader, FakeSearcher, MemoryStorage, all_instances

KEY = "unit test key, thirty-two bytes!"


def test_a_saved_instance_carries_the_relative_path_its_template_rendered(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path / "out", template="{PatientID}/{SeriesNumber:03d}/{SOPInstanceUID}.dcm")

    data = dicom_bytes("1.2.3", PatientID="P/1", SeriesNumber=7)

    saved = storage.save(InstancePart(io.BytesIO(data), len(data)))

    assert saved.relative == "P_1/007/1.2.3.dcm"
    assert saved.path == tmp_path / "out" / saved.relative


def test_a_storage_of_ones_own_gets_every_instance_through_the_trolleys_download() -> None:
    storage = MemoryStorage()

    summary = Trolley(FakeSearcher(), FakeDownloader(), storage=storage).download(STUDY, progress=False)

    assert summary.ok
    assert summary.written == len(all_instances())
    assert sorted(storage.held) == sorted(i.instance_uid for i in all_instances())


def test_a_second_download_asks_the_storage_what_it_has_and_fetches_nothing() -> None:
    storage = MemoryStorage()
    trolley = Trolley(FakeSearcher(), FakeDownloader(), storage=storage)
    trolley.download(STUDY, progress=False)

    again = trolley.download(STUDY, progress=False)

    assert (again.written, again.skipped) == (0, len(all_instances()))
    assert sorted(storage.asked) == sorted(i.instance_uid for i in all_instances())


def test_a_storage_that_chooses_its_own_places_refuses_an_output_folder(tmp_path: Path) -> None:
    trolley = Trolley(FakeSearcher(), FakeDownloader(), storage=MemoryStorage())

    with pytest.raises(DICOMTrolleyError, match="chooses where instances go"):
        trolley.download(STUDY, tmp_path, progress=False)


def test_the_pseudonymising_wrapper_hands_pseudonymised_bytes_to_any_storage() -> None:
    memory = MemoryStorage()
    options = DeidentifyOptions(processes=0, quarantine_sop_classes=())  # the fakes are Secondary Captures
    deidentifier = Deidentifier(options, key=KEY)
    trolley = Trolley(FakeSearcher(), FakeDownloader(), storage=memory)

    summary = trolley.download(STUDY, progress=False, deidentify=deidentifier)

    assert summary.written == len(all_instances())
    originals = {i.instance_uid for i in all_instances()}
    assert len(memory.held) == len(originals)
    assert not originals & set(memory.held)
    assert all(pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID != STUDY for data in memory.held.values())
