"""Synthetic DICOM files for the demo server and the tests, with a manifest saying what is in them.

The files are generated with pydicom, never downloaded, so every run sees the
same patients, studies, series and instances. Every UID is derived from
a fixed name, which makes the data identical from one machine to the next and lets a
generated directory be reused: a part whose manifest is complete is not written again.

Two parts exist. *Small*: a few patients (one with a non-ASCII name), CT, MR and PT
studies of 2-3 series of a few 64x64 images each, dated 2019 to 2023. *Large*: one CT
study of 300 instances of 512x512 16-bit pixels in one series (about 157 MB), for
download speed and memory tests; it is optional because a demo may want small data only.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import sys
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

MANIFEST_NAME = "manifest.json"
_STAGING_MARK = ".tmp-"
MANIFEST_VERSION = 1
"""Bump when the generated content changes, so stale caches are regenerated."""

UID_PREFIX = "1.2.826.0.1.3680043.8.498."
"""pydicom's registered root: UIDs under it are meant for exactly this kind of use."""

_NAMESPACE = "dicomtrolley-sample-data"
IMPLEMENTATION_CLASS_UID = UID(UID_PREFIX + "1")
IMPLEMENTATION_VERSION = "DICOMTROLLEY_T1"

SOP_CLASSES = {
    "CT": UID("1.2.840.10008.5.1.4.1.1.2"),  # CT Image Storage
    "MR": UID("1.2.840.10008.5.1.4.1.1.4"),  # MR Image Storage
    "PT": UID("1.2.840.10008.5.1.4.1.1.128"),  # Positron Emission Tomography Image Storage
}


def sample_uid(*parts: object) -> UID:
    """Return the UID for a named object of the sample data.

    Parameters
    ----------
    parts
        Names that identify the object, e.g. ``("study", "PAT001", 1)``.

    Returns
    -------
    UID
        Always the same for the same names, different for different names.
    """
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=[_NAMESPACE, *map(str, parts)])


LARGE_STUDY_UID = str(sample_uid("study", "large"))
"""Study Instance UID of the large study (present only when generated with ``large=True``)."""


# --- manifest ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleInstance:
    """One generated DICOM file."""

    uid: str
    number: int
    path: Path
    sop_class_uid: str
    size: int


@dataclass(frozen=True)
class SampleSeries:
    """One generated series and its instances, in instance-number order."""

    uid: str
    modality: str
    number: int
    description: str
    instances: list[SampleInstance]


@dataclass(frozen=True)
class SampleStudy:
    """One generated study: the patient and study attributes written into every file."""

    uid: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession: str
    modalities: list[str]
    description: str
    institution: str
    series: list[SampleSeries]

    @property
    def instances(self) -> list[SampleInstance]:
        """Every instance of the study, series by series."""
        return [instance for series in self.series for instance in series.instances]

    @property
    def size(self) -> int:
        """Total bytes of the study's files."""
        return sum(instance.size for instance in self.instances)


@dataclass(frozen=True)
class SampleData:
    """What was generated: studies -> series -> instances, each with its UID and file path."""

    studies: list[SampleStudy] = field(default_factory=list)

    def study(self, uid: str) -> SampleStudy:
        """Return the study with this Study Instance UID; raise KeyError if there is none."""
        for study in self.studies:
            if study.uid == uid:
                return study
        raise KeyError(uid)

    def series(self, uid: str) -> SampleSeries:
        """Return the series with this Series Instance UID; raise KeyError if there is none."""
        for study in self.studies:
            for series in study.series:
                if series.uid == uid:
                    return series
        raise KeyError(uid)

    def instance(self, uid: str) -> SampleInstance:
        """Return the instance with this SOP Instance UID; raise KeyError if there is none."""
        for instance in self.all_instances():
            if instance.uid == uid:
                return instance
        raise KeyError(uid)

    def study_of(self, uid: str) -> SampleStudy:
        """Return the study that holds the series or instance with this UID."""
        for study in self.studies:
            for series in study.series:
                if series.uid == uid or any(instance.uid == uid for instance in series.instances):
                    return study
        raise KeyError(uid)

    def studies_of_patient(self, patient_id: str) -> list[SampleStudy]:
        """Return the studies of one patient, in generation order."""
        return [study for study in self.studies if study.patient_id == patient_id]

    @property
    def large_study(self) -> SampleStudy:
        """The 300-instance CT study; KeyError if the data was generated without it."""
        return self.study(LARGE_STUDY_UID)

    @property
    def small_studies(self) -> list[SampleStudy]:
        """Every study except the large one."""
        return [study for study in self.studies if study.uid != LARGE_STUDY_UID]

    def small_only(self) -> SampleData:
        """A manifest of the small studies alone, e.g. for an extra server that needs no large data."""
        return SampleData(studies=self.small_studies)

    def all_instances(self) -> list[SampleInstance]:
        """Every instance of every study."""
        return [instance for study in self.studies for instance in study.instances]

    def paths(self) -> list[Path]:
        """The file path of every instance, e.g. to upload them."""
        return [instance.path for instance in self.all_instances()]


# --- what to generate ---------------------------------------------------------------------


@dataclass(frozen=True)
class _PatientSpec:
    patient_id: str
    name: str
    birth_date: str
    sex: str
    charset: str = "ISO_IR 100"


@dataclass(frozen=True)
class _SeriesSpec:
    modality: str
    description: str
    instances: int
    size: int = 64


@dataclass(frozen=True)
class _StudySpec:
    key: str
    patient: _PatientSpec
    date: str
    time: str
    accession: str
    description: str
    institution: str
    series: tuple[_SeriesSpec, ...]


_DOE = _PatientSpec("PAT001", "DOE^JOHN", "19650312", "M")
_SMITH = _PatientSpec("PAT002", "SMITH^JANE", "19800723", "F")
_MULLER = _PatientSpec("PAT003", "Müller^Jürgen", "19720101", "M", charset="ISO_IR 192")
_LARGE_PATIENT = _PatientSpec("PAT004", "LARGE^CT", "19590515", "O")

# fmt: off
_SMALL_STUDIES = (
    _StudySpec(
        "doe-ct-2019", _DOE, "20190314", "091500", "ACC1001", "CT THORAX", "St. Example Hospital",
        (_SeriesSpec("CT", "Scout", 2), _SeriesSpec("CT", "Thorax 5mm", 4),
         _SeriesSpec("CT", "Thorax 1mm", 3)),
    ),
    _StudySpec(
        "doe-mr-2021", _DOE, "20210602", "143000", "ACC1002", "MR BRAIN", "St. Example Hospital",
        (_SeriesSpec("MR", "T1 SAG", 3), _SeriesSpec("MR", "T2 AX", 4)),
    ),
    _StudySpec(
        "doe-petct-2023", _DOE, "20230120", "080000", "ACC1003", "PET-CT WHOLE BODY", "Nuclear Center",
        (_SeriesSpec("CT", "CT AC", 3), _SeriesSpec("PT", "PET AC", 3)),
    ),
    _StudySpec(
        "smith-ct-2020", _SMITH, "20200911", "101010", "ACC2001", "CT ABDOMEN", "General Hospital",
        (_SeriesSpec("CT", "Abdomen venous", 4), _SeriesSpec("CT", "Abdomen arterial", 3)),
    ),
    _StudySpec(
        "smith-mr-2022", _SMITH, "20221130", "160500", "ACC2002", "MR KNEE", "General Hospital",
        (_SeriesSpec("MR", "PD FS COR", 3), _SeriesSpec("MR", "T1 SAG", 2), _SeriesSpec("MR", "T2 AX", 3)),
    ),
    _StudySpec(
        "muller-mr-2023", _MULLER, "20230817", "120000", "ACC3001", "MR Schädel", "Klinikum Süd",
        (_SeriesSpec("MR", "T1 axial", 3), _SeriesSpec("MR", "FLAIR", 3)),
    ),
)

_LARGE_STUDIES = (
    _StudySpec(
        "large", _LARGE_PATIENT, "20230605", "073000", "ACC4001", "CT LARGE", "General Hospital",
        (_SeriesSpec("CT", "Body 0.6mm", 300, size=512),),
    ),
)
# fmt: on


# --- generation ---------------------------------------------------------------------------


def generate_sample_data(directory: Path, *, large: bool = True) -> SampleData:
    """Generate the sample files under ``directory``, or reuse those already there.

    Each part (``small/``, ``large/``) is written under a lock, in a temporary
    directory renamed into place with its manifest, so an interrupted run never
    leaves a part that looks complete.

    Parameters
    ----------
    directory
        Where the parts live; created if missing.
    large
        Also generate (or reuse) the 300-instance study.

    Returns
    -------
    SampleData
        Manifest of every study in the parts asked for.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    parts: list[tuple[str, tuple[_StudySpec, ...]]] = [("small", _SMALL_STUDIES)]
    if large:
        parts.append(("large", _LARGE_STUDIES))
    studies: list[SampleStudy] = []
    with _locked(directory / ".lock"):
        for leftover in directory.glob(f"*{_STAGING_MARK}*"):
            shutil.rmtree(leftover)  # from a run killed while generating
        for name, specs in parts:
            studies.extend(_ensure_part(directory / name, specs))
    return SampleData(studies=studies)


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock so two processes never generate the same part at once."""
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_part(part_dir: Path, specs: tuple[_StudySpec, ...]) -> list[SampleStudy]:
    cached = load_manifest(part_dir)
    if cached is not None:
        return cached.studies
    staging = part_dir.with_name(f"{part_dir.name}{_STAGING_MARK}{time.monotonic_ns()}")
    staging.mkdir()
    try:
        studies = [_write_study(spec, staging, part_dir) for spec in specs]
        _save_manifest(staging, studies, part_dir)
        if part_dir.exists():
            shutil.rmtree(part_dir)
        staging.rename(part_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return studies


def load_manifest(part_dir: Path) -> SampleData | None:
    """Read a part's manifest; None unless it is current and every file it names exists at its size.

    Parameters
    ----------
    part_dir
        A part directory written by :func:`generate_sample_data`.
    """
    manifest_path = part_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return None
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if raw.get("version") != MANIFEST_VERSION:
        return None
    data = SampleData(studies=[_study_from_json(item, part_dir) for item in raw["studies"]])
    for instance in data.all_instances():
        try:
            if instance.path.stat().st_size != instance.size:
                return None
        except FileNotFoundError:
            return None
    return data


def _save_manifest(staging: Path, studies: list[SampleStudy], final_dir: Path) -> None:
    def relative(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value.relative_to(final_dir))
        if isinstance(value, dict):
            return {key: relative(item) for key, item in value.items()}
        if isinstance(value, list):
            return [relative(item) for item in value]
        return value

    payload = {"version": MANIFEST_VERSION, "studies": [relative(asdict(study)) for study in studies]}
    (staging / MANIFEST_NAME).write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")


def _study_from_json(raw: dict[str, Any], part_dir: Path) -> SampleStudy:
    series = [
        SampleSeries(
            uid=item["uid"],
            modality=item["modality"],
            number=item["number"],
            description=item["description"],
            instances=[
                SampleInstance(
                    uid=inst["uid"],
                    number=inst["number"],
                    path=part_dir / inst["path"],
                    sop_class_uid=inst["sop_class_uid"],
                    size=inst["size"],
                )
                for inst in item["instances"]
            ],
        )
        for item in raw["series"]
    ]
    fields = {key: value for key, value in raw.items() if key != "series"}
    return SampleStudy(**fields, series=series)


def _write_study(spec: _StudySpec, staging: Path, final_dir: Path) -> SampleStudy:
    study_uid = LARGE_STUDY_UID if spec.key == "large" else str(sample_uid("study", spec.key))
    study_ds = _study_dataset(spec, study_uid)
    series_list = []
    for series_number, series_spec in enumerate(spec.series, start=1):
        series_uid = str(sample_uid("series", spec.key, series_number))
        frame_uid = str(sample_uid("frame", spec.key, series_number))
        relative_dir = Path(spec.key) / f"{series_number:02d}"
        (staging / relative_dir).mkdir(parents=True)
        instances = []
        for number in range(1, series_spec.instances + 1):
            instance_uid = str(sample_uid("instance", spec.key, series_number, number))
            ds = _image_dataset(study_ds, series_spec, series_uid, series_number, frame_uid, instance_uid, number)
            relative_path = relative_dir / f"IM{number:04d}.dcm"
            ds.save_as(staging / relative_path, enforce_file_format=True)
            instances.append(
                SampleInstance(
                    uid=instance_uid,
                    number=number,
                    path=final_dir / relative_path,
                    sop_class_uid=str(SOP_CLASSES[series_spec.modality]),
                    size=(staging / relative_path).stat().st_size,
                )
            )
        series_list.append(
            SampleSeries(
                uid=series_uid,
                modality=series_spec.modality,
                number=series_number,
                description=series_spec.description,
                instances=instances,
            )
        )
    return SampleStudy(
        uid=study_uid,
        patient_id=spec.patient.patient_id,
        patient_name=spec.patient.name,
        patient_birth_date=spec.patient.birth_date,
        patient_sex=spec.patient.sex,
        study_date=spec.date,
        study_time=spec.time,
        accession=spec.accession,
        modalities=sorted({series.modality for series in spec.series}),
        description=spec.description,
        institution=spec.institution,
        series=series_list,
    )


def _study_dataset(spec: _StudySpec, study_uid: str) -> Dataset:
    """Patient and study attributes shared by every file of a study."""
    ds = Dataset()
    ds.SpecificCharacterSet = spec.patient.charset
    ds.PatientID = spec.patient.patient_id
    ds.PatientName = spec.patient.name
    ds.PatientBirthDate = spec.patient.birth_date
    ds.PatientSex = spec.patient.sex
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = spec.date
    ds.StudyTime = spec.time
    ds.StudyID = spec.accession[-4:]
    ds.AccessionNumber = spec.accession
    ds.StudyDescription = spec.description
    ds.ReferringPhysicianName = "REFERRER^A"
    ds.InstitutionName = spec.institution
    ds.Manufacturer = "dicomtrolley tests"
    return ds


def _image_dataset(
    study_ds: Dataset,
    spec: _SeriesSpec,
    series_uid: str,
    series_number: int,
    frame_uid: str,
    instance_uid: str,
    number: int,
) -> Dataset:
    sop_class = SOP_CLASSES[spec.modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = UID(instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION

    ds = Dataset()
    ds.update(study_ds)
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = instance_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = study_ds.StudyDate
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = spec.description
    ds.SeriesDate = study_ds.StudyDate
    ds.SeriesTime = study_ds.StudyTime
    ds.Modality = spec.modality
    ds.BodyPartExamined = "HEAD" if spec.modality == "MR" else "CHEST"
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = number
    ds.AcquisitionNumber = 1
    ds.PatientPosition = "HFS"
    ds.ImagePositionPatient = [-160.0, -160.0, float(number) * 2.5]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceLocation = float(number) * 2.5
    ds.SliceThickness = 2.5
    ds.PixelSpacing = [320.0 / spec.size, 320.0 / spec.size]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.size
    ds.Columns = spec.size
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if spec.modality in ("CT", "PT"):
        ds.RescaleIntercept = -1024 if spec.modality == "CT" else 0
        ds.RescaleSlope = 1
    if spec.modality == "CT":
        ds.KVP = 120
    ds.PixelData = _pixels(spec.size, number + 7 * series_number)
    return ds


def _pixels(size: int, seed: int) -> bytes:
    """A cheap image that differs from slice to slice: a diagonal ramp shifted by ``seed``, 16-bit little endian.

    Pixel (row, column) is ``(row + 3 * column + 37 * seed) % 4096``: each row is a
    slice with step 3 of one ramp, so the image is made without numpy at C speed.
    """
    shift = 37 * seed
    ramp = array("H", range(4096)) * ((shift + 4 * size) // 4096 + 1)  # ramp[i] == i % 4096
    if sys.byteorder == "big":
        ramp.byteswap()
    return b"".join(ramp[row + shift:row + shift + 3 * size:3].tobytes() for row in range(size))
