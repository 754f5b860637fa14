"""Pseudonymisation without a server: the key, the options, keyed pseudonyms, cleaning, the pixel bytes."""

from __future__ import annotations

import io
import logging
import pickle
import threading
import time
from pathlib import Path

import keyring
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from dicomtrolley._spooled import SPILL_THRESHOLD, SpooledChunks
from dicomtrolley.core import FetchFailure, InstancePart, StudyReference
from dicomtrolley.deidentify import (
    KEY_VARIABLE,
    Deidentifier,
    DeidentifyOptions,
    load_key,
)
from dicomtrolley.exceptions import DeidentificationError, DeidentificationKeyError, StorageError
from dicomtrolley.roles import SavedInstance
from dicomtrolley.storage import StorageDir
from tests.support.fakes import MemoryKeyring
from tests.support.identifying_data import HILDEGUND, write_identifying_data

KEY = "unit test key, thirty-two bytes!"


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key in the environment, and an empty keyring."""
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring({}))
    yield
    keyring.set_keyring(previous)


@pytest.fixture
def instance(tmp_path: Path) -> Dataset:
    """The first image of the identifying data."""
    data = write_identifying_data(tmp_path / "data")
    return pydicom.dcmread(next(p for p in data.paths if "-image-1" in p.name))


@pytest.fixture
def pseudonymised(instance: Dataset) -> Dataset:
    """That image pseudonymised under ``KEY`` with the default options."""
    Deidentifier(key=KEY).deidentify(instance)
    return instance


# ---------------------------------------------------------------- the key


@pytest.mark.usefixtures("no_key")
def test_the_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    assert load_key() == KEY.encode()


@pytest.mark.usefixtures("no_key")
def test_a_key_file_is_read_and_its_surrounding_whitespace_ignored(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(f"  {KEY}\n", encoding="utf-8")
    assert load_key(tmp_path / "key") == KEY.encode()


@pytest.mark.usefixtures("no_key")
def test_the_keyring_is_asked_last() -> None:
    keyring.set_keyring(MemoryKeyring({("dicomtrolley", "deidentify"): KEY}))
    assert load_key() == KEY.encode()


@pytest.mark.usefixtures("no_key")
def test_no_key_anywhere_is_an_error_that_says_where_to_put_one() -> None:
    with pytest.raises(DeidentificationKeyError, match=KEY_VARIABLE):
        Deidentifier()


@pytest.mark.usefixtures("no_key")
def test_a_short_key_is_refused_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VARIABLE, "short-secret")
    with pytest.raises(DeidentificationKeyError, match="12 bytes; at least 16") as raised:
        load_key()
    assert "short-secret" not in str(raised.value)


def test_an_unreadable_key_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DeidentificationKeyError, match="Cannot read the key file"):
        load_key(tmp_path / "missing")


def test_the_key_is_not_in_repr_nor_in_logs(
    instance: Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="dicomtrolley")
    deidentifier = Deidentifier(DeidentifyOptions(processes=0), key=KEY)
    buffer = io.BytesIO()
    instance.save_as(buffer, enforce_file_format=True)
    deidentifier.storage(StorageDir(tmp_path / "out")).save(InstancePart(buffer, buffer.tell()))
    assert KEY not in repr(deidentifier)
    assert KEY not in caplog.text
    assert all(KEY.encode() not in p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())


# ---------------------------------------------------------------- options


def test_an_empty_config_file_means_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "deid.toml").write_text("", encoding="utf-8")
    assert DeidentifyOptions.from_toml(tmp_path / "deid.toml") == DeidentifyOptions()


def test_every_option_is_a_key_of_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "deid.toml").write_text(
        'key_file = "deid.key"\nmax_date_shift_days = 30\nkeep_private_tags = ["0019,ACME 1.0,0C"]\n'
        'allow_burned_in = true\nquarantine_sop_classes = ["Ultrasound"]\nmapping = "/secure/map.csv"\n'
        'mapping_in_output = true\nprocesses = 0\nstate_dir = "state"\nretain_modified_dates = false\n'
        "retain_patient_characteristics = false\nretain_device_identity = false\nretain_institution_identity = true\n"
        "clean_descriptors = false\nretain_uids = true\n",
        encoding="utf-8",
    )
    options = DeidentifyOptions.from_toml(tmp_path / "deid.toml")
    assert options.key_file == tmp_path / "deid.key"  # relative to the config file
    assert options.state_dir == tmp_path / "state"
    assert options.mapping == Path("/secure/map.csv")
    assert options.keep_private_tags == ("0019,ACME 1.0,0C",)
    assert set(options.model_fields_set) == set(DeidentifyOptions.model_fields)


def test_a_wrong_key_in_the_config_is_named(tmp_path: Path) -> None:
    (tmp_path / "deid.toml").write_text("max_shift_days = 30\n", encoding="utf-8")
    with pytest.raises(DeidentificationError, match="max_shift_days: unknown option"):
        DeidentifyOptions.from_toml(tmp_path / "deid.toml")


def test_a_wrong_value_in_the_config_is_named(tmp_path: Path) -> None:
    (tmp_path / "deid.toml").write_text('keep_private_tags = ["0010,ACME,10"]\n', encoding="utf-8")
    with pytest.raises(DeidentificationError, match="keep_private_tags"):
        DeidentifyOptions.from_toml(tmp_path / "deid.toml")


# ---------------------------------------------------------------- pseudonyms


def test_pseudonyms_are_a_function_of_key_and_original(instance: Dataset) -> None:
    def pseudonymised(key: str) -> Dataset:
        copy = pydicom.dcmread(io.BytesIO(_encoded(instance)))
        Deidentifier(key=key).deidentify(copy)
        return copy

    first, second, other = pseudonymised(KEY), pseudonymised(KEY), pseudonymised(KEY.upper())
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "SOPInstanceUID", "AccessionNumber", "StudyDate"):
        assert first[keyword].value == second[keyword].value != instance[keyword].value
        assert other[keyword].value != first[keyword].value


def test_pseudonyms_are_those_earlier_versions_gave_under_the_same_key(pseudonymised: Dataset) -> None:
    # Recorded from 4.x's dicognito pipeline: resumed exports and mapping tables must stay right.
    assert pseudonymised.PatientID == "8SGJCTFY9CDC"
    assert pseudonymised.PatientName == "RANDALL^ERIN^CHESTER"
    assert pseudonymised.AccessionNumber == "CA6B5E7YLPA0"
    assert pseudonymised.StudyID == "5OS5Q1UBP6QP"
    assert pseudonymised.StudyInstanceUID == "2.1081769221832909595481413334439366798093"
    assert pseudonymised.StudyDate == "20151030"
    assert pseudonymised.ReferringPhysicianName == "DAUGHERTY^CHANDRA^FLORINE"


def test_what_the_issue_found_kept_is_removed_or_cleaned(instance: Dataset) -> None:
    instance.ReferringPhysicianTelephoneNumbers = "+41 44 555 12 34"
    instance.PatientComments = "Referred by Quirinus Pemberton-Hale"
    Deidentifier(key=KEY).deidentify(instance)
    assert "ReferringPhysicianTelephoneNumbers" not in instance
    assert instance.PatientComments == "Referred by ***"


def test_a_deidentifier_survives_pickling_with_its_key(instance: Dataset) -> None:
    deidentifier = Deidentifier(key=KEY)
    copy = pickle.loads(pickle.dumps(deidentifier))  # noqa: S301 - our own bytes
    assert copy.date_shift_days(HILDEGUND.patient_id) == deidentifier.date_shift_days(HILDEGUND.patient_id)
    assert copy.options == deidentifier.options


def test_free_text_loses_the_values_the_profile_replaced(pseudonymised: Dataset) -> None:
    assert pseudonymised.StudyDescription == "CT Thorax *** follow-up"
    assert pseudonymised.SeriesDescription == "Lung 1mm for ***"
    assert pseudonymised.PatientComments == "*** prefers mornings; ID ***"
    assert pseudonymised.AdditionalPatientHistory == "Born ***, previous scan ***"
    assert "ReferringPhysicianIdentificationSequence" not in pseudonymised


def test_patient_characteristics_and_device_identity_are_kept(pseudonymised: Dataset) -> None:
    assert (pseudonymised.PatientSex, pseudonymised.PatientAge, pseudonymised.PatientWeight) == ("F", "061Y", 64.5)
    device = (pseudonymised.StationName, pseudonymised.DeviceSerialNumber, pseudonymised.Manufacturer)
    assert device == ("CT-ROOM-7", "SN-4455", "ACME")
    codes = [item.CodeValue for item in pseudonymised.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113108", "113109", "113105"]
    assert pseudonymised.LongitudinalTemporalInformationModified == "MODIFIED"


def test_the_date_shift_is_whole_days_within_the_configured_range() -> None:
    deidentifier = Deidentifier(DeidentifyOptions(max_date_shift_days=10), key=KEY)
    shifts = {deidentifier.date_shift_days(f"PAT{n}") for n in range(200)}
    assert shifts == set(range(1, 11))


# ---------------------------------------------------------------- pixel bytes


@pytest.mark.parametrize("trailing", [False, True], ids=["pixels-last", "attribute-after-pixels"])
def test_encapsulated_pixel_data_is_written_byte_for_byte(instance: Dataset, tmp_path: Path, trailing: bool) -> None:
    frames = [b"\xff\xd8fake jpeg frame one\xff\xd9", b"\xff\xd8frame two!\xff\xd9"]
    instance.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    instance.PixelData = encapsulate(frames)
    instance["PixelData"].VR = "OB"
    if trailing:
        instance.DataSetTrailingPadding = b"\x00" * 4
    original = pydicom.dcmread(io.BytesIO(_encoded(instance)))
    deidentifier = Deidentifier(DeidentifyOptions(processes=0), key=KEY)
    saved = deidentifier.storage(StorageDir(tmp_path)).save(InstancePart(io.BytesIO(_encoded(instance)), 0))
    written = pydicom.dcmread(saved.path)
    assert written.PixelData == original.PixelData
    assert written.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert saved.reference.instance_uid == original.SOPInstanceUID
    assert written.SOPInstanceUID != original.SOPInstanceUID


@pytest.mark.parametrize("processes", [0, 2], ids=["in-thread", "worker-processes"])
@pytest.mark.parametrize("encapsulated", [False, True], ids=["native", "encapsulated"])
def test_pixel_data_far_past_the_header_is_written_byte_for_byte(
    instance: Dataset, tmp_path: Path, processes: int, encapsulated: bool
) -> None:
    pixels = bytes(range(256)) * 1024  # 256 KB: the header is found in the first bytes, the pixels are not
    if encapsulated:
        instance.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        instance.PixelData = encapsulate([b"\xff\xd8" + pixels + b"\xff\xd9"])
        instance["PixelData"].VR = "OB"
    else:
        instance.Rows, instance.Columns, instance.BitsAllocated, instance.SamplesPerPixel = 256, 512, 16, 1
        instance.PixelData = pixels
    encoded = _encoded(instance)
    body = SpooledChunks(SPILL_THRESHOLD)
    for start in range(0, len(encoded), 64 * 1024):  # the chunks a download hands over
        body.write(encoded[start:start + 64 * 1024])
    body.seek(0)
    storage = Deidentifier(DeidentifyOptions(processes=processes), key=KEY).storage(StorageDir(tmp_path))
    try:
        saved = storage.save(InstancePart(body, len(encoded)))
    finally:
        storage.close()
    written = pydicom.dcmread(saved.path)
    assert written.PixelData == pydicom.dcmread(io.BytesIO(encoded)).PixelData
    assert written.PatientName != instance.PatientName
    assert saved.reference.instance_uid == instance.SOPInstanceUID


def test_an_instance_that_is_not_dicom_is_a_storage_error(tmp_path: Path) -> None:
    deidentifier = Deidentifier(DeidentifyOptions(processes=0), key=KEY)
    with pytest.raises(StorageError, match="Cannot pseudonymise"):
        deidentifier.storage(StorageDir(tmp_path)).save(InstancePart(io.BytesIO(b"not dicom"), 9))
    assert not any(tmp_path.iterdir())


def test_through_worker_processes_a_part_that_is_not_dicom_fails_alone(instance: Dataset, tmp_path: Path) -> None:
    encoded = _encoded(instance)
    storage = Deidentifier(DeidentifyOptions(processes=2), key=KEY).storage(StorageDir(tmp_path / "out"))
    saved: list[SavedInstance] = []
    failures: list[FetchFailure] = []
    parts = [
        InstancePart(io.BytesIO(encoded), len(encoded), source=StudyReference("1.2.3")),
        InstancePart(io.BytesIO(b"not dicom"), 9, source=StudyReference("4.5.6")),
        InstancePart(io.BytesIO(encoded), len(encoded), source=StudyReference("1.2.3")),
    ]
    with storage.parallel(lambda part: saved.append(storage.save(part)), failures) as sink:
        for part in parts:
            sink(part)
    assert [failure.target for failure in failures] == [StudyReference("4.5.6")]
    assert isinstance(failures[0].error, StorageError)
    assert "Cannot pseudonymise" in str(failures[0].error)
    assert [item.reference.instance_uid for item in saved] == [instance.SOPInstanceUID] * 2
    assert pydicom.dcmread(saved[0].path).PatientName != instance.PatientName


def test_parts_handed_over_by_many_threads_one_each_are_all_saved(instance: Dataset, tmp_path: Path) -> None:
    encoded = _encoded(instance)
    storage = Deidentifier(DeidentifyOptions(processes=2), key=KEY).storage(StorageDir(tmp_path / "out"))
    saved: list[SavedInstance] = []
    failures: list[FetchFailure] = []
    with storage.parallel(lambda part: saved.append(storage.save(part)), failures) as sink:
        threads = [  # as a WADO-URI download hands them over: a thread per instance, done after one
            threading.Thread(target=sink, args=(InstancePart(io.BytesIO(encoded), len(encoded)),))
            for _ in range(24)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = sum(thread.is_alive() for thread in threads)
    assert stuck == 0
    assert (len(saved), failures) == (24, [])


def test_parts_that_the_sink_drops_unsaved_do_not_stall_the_worker_processes(instance: Dataset, tmp_path: Path) -> None:
    encoded = _encoded(instance)
    storage = Deidentifier(DeidentifyOptions(processes=2), key=KEY).storage(StorageDir(tmp_path / "out"))
    dropped: list[InstancePart] = []

    def hand_over() -> None:
        with storage.parallel(dropped.append, []) as sink:  # a sink that never asks for a save
            for _ in range(12):
                sink(InstancePart(io.BytesIO(encoded), len(encoded)))

    thread = threading.Thread(target=hand_over, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert len(dropped) == 12


def _encoded(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
