"""Instances full of identifying values, for the pseudonymisation tests.

Two patients, three studies, identifiers everywhere a real archive puts them:
names (one in UTF-8 with non-ASCII letters), IDs, birth dates, study dates,
addresses, free-text descriptions and comments that repeat the names and IDs,
private attributes, and sequences holding IDs, accession numbers and UIDs.
Beside the plain CT images are instances that must be quarantined: one CT
marked BurnedInAnnotation=YES, one secondary capture, one ultrasound image.

:data:`IDENTIFYING_VALUES` lists every original value that must not appear in
a pseudonymised output; :func:`write_identifying_data` writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, SecondaryCaptureImageStorage, UltrasoundImageStorage, generate_uid

from tests.support.dicom_files import add_pixels, part10_dataset
from tests.support.sample_data import UID_PREFIX


def identifying_uid(*parts: object) -> str:
    """A fixed UID for a named object of this data."""
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=["dicomtrolley-identifying", *map(str, parts)]))


@dataclass(frozen=True)
class Patient:
    """A patient of the identifying data."""

    patient_id: str
    name: str
    birth_date: str
    sex: str
    charset: str
    address: str
    phone: str
    other_id: str


@dataclass(frozen=True)
class StudySpec:
    """A study of the identifying data: its images, and the instances to quarantine."""

    key: str
    patient: Patient
    date: str
    accession: str
    description: str
    images: int
    quarantined: tuple[str, ...] = ()
    """Kinds of instances that must be held back: ``burned-in``, ``secondary-capture``, ``ultrasound``."""

    @property
    def uid(self) -> str:
        """The StudyInstanceUID."""
        return identifying_uid("study", self.key)


HILDEGUND = Patient(
    "MRN-4711-ZX", "Ørnsköld^Hildegund^Wiebke", "19610304", "F", "ISO_IR 192",
    "Lindenstraße 12, 8001 Zürich", "+41 44 555 12 34", "AHV-756.1234.5678.97",
)
KENJIRO = Patient(
    "PB-2201-QT", "Nakamura-Ito^Kenjiro", "19790917", "M", "ISO_IR 100",
    "Hauptgasse 7, 4500 Solothurn", "+41 32 555 98 76", "AHV-756.9876.5432.10",
)
REFERRER = "Pemberton-Hale^Quirinus"
OPERATOR = "Vögeli^Balthasar"
INSTITUTION = "Klinik Hirslanden Zürich"
INSTITUTION_ADDRESS = "Witellikerstrasse 40, 8032 Zürich"
PRIVATE_CREATOR = "ACME IDENT 1.0"
KEPT_CREATOR = "ACME GEOMETRY 1.0"
KEPT_PRIVATE_TAG = f"0013,{KEPT_CREATOR},10"
"""A private attribute a test keeps (``keep_private_tags``); it holds no identity."""
KEPT_PRIVATE_VALUE = "table-height-1412"

STUDIES = (
    StudySpec("hildegund-ct-1", HILDEGUND, "20230405", "ACC-88231-A", "CT Thorax Ørnsköld follow-up", 3,
              ("burned-in", "secondary-capture")),
    StudySpec("hildegund-ct-2", HILDEGUND, "20230612", "ACC-88232-B", "CT Thorax control MRN-4711-ZX", 2),
    StudySpec("kenjiro-ct", KENJIRO, "20220110", "ACC-10991-C", "CT Abdomen Nakamura-Ito", 2, ("ultrasound",)),
)

IDENTIFYING_VALUES: tuple[str, ...] = tuple(dict.fromkeys(
    value
    for patient in (HILDEGUND, KENJIRO)
    for value in (
        patient.patient_id, patient.name, *patient.name.split("^"), patient.birth_date, patient.address,
        patient.address.split(",")[0], patient.phone, patient.other_id,
    )
)) + tuple(dict.fromkeys(
    value
    for study in STUDIES
    for value in (study.uid, study.date, study.accession, f"ST-{study.accession[4:9]}", f"RP-{study.accession}")
)) + (
    REFERRER, *REFERRER.split("^"), OPERATOR, *OPERATOR.split("^"), INSTITUTION, "Hirslanden",
    INSTITUTION_ADDRESS, "Witellikerstrasse", "RM7-Ørnsköld", "secret-private-note",
)
"""Every original value that identifies someone; none may appear in pseudonymised output.

Series and instance UIDs are checked separately (they are many)."""


@dataclass(frozen=True)
class IdentifyingData:
    """What :func:`write_identifying_data` wrote."""

    paths: list[Path]
    image_uids: dict[str, list[str]]
    """SOPInstanceUIDs of the images that must be written, by study key."""
    quarantined_uids: dict[str, str]
    """SOPInstanceUID of each instance that must be quarantined -> its kind."""
    series_uids: list[str]

    @property
    def image_count(self) -> int:
        """How many images must be written (every instance that is not quarantined)."""
        return sum(len(uids) for uids in self.image_uids.values())

    @property
    def all_uids(self) -> list[str]:
        """Every original SOPInstanceUID and SeriesInstanceUID."""
        return [u for uids in self.image_uids.values() for u in uids] + list(self.quarantined_uids) + self.series_uids


def write_identifying_data(directory: Path) -> IdentifyingData:
    """Write every instance of :data:`STUDIES` under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    images: dict[str, list[str]] = {}
    quarantined: dict[str, str] = {}
    series_uids: list[str] = []
    for study in STUDIES:
        kinds = [("image", number) for number in range(1, study.images + 1)]
        kinds += [(kind, 1) for kind in study.quarantined]
        for kind, number in kinds:
            series_uid = identifying_uid("series", study.key, kind)
            if series_uid not in series_uids:
                series_uids.append(series_uid)
            instance_uid = identifying_uid("instance", study.key, kind, number)
            dataset = _instance(study, kind, series_uid, instance_uid, number)
            path = directory / f"{study.key}-{kind}-{number}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            paths.append(path)
            if kind == "image":
                images.setdefault(study.key, []).append(instance_uid)
            else:
                quarantined[instance_uid] = kind
    return IdentifyingData(paths, images, quarantined, series_uids)


def _instance(study: StudySpec, kind: str, series_uid: str, instance_uid: str, number: int) -> Dataset:
    patient = study.patient
    sop_class = {"secondary-capture": SecondaryCaptureImageStorage, "ultrasound": UltrasoundImageStorage}.get(
        kind, CTImageStorage
    )
    ds = part10_dataset(instance_uid, study_uid=study.uid, series_uid=series_uid, sop_class=sop_class)
    ds.SpecificCharacterSet = patient.charset
    ds.FrameOfReferenceUID = identifying_uid("frame", study.key)
    ds.Modality = {"secondary-capture": "OT", "ultrasound": "US"}.get(kind, "CT")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = study.date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101530"
    ds.AcquisitionDateTime = f"{study.date}101530.000000"
    ds.AccessionNumber = study.accession
    ds.StudyID = f"ST-{study.accession[4:9]}"
    ds.StudyDescription = study.description
    ds.SeriesDescription = f"Lung 1mm for {patient.name.split('^')[1]}"
    ds.ImageComments = f"Reviewed by Dr. {REFERRER.split('^')[1]} {REFERRER.split('^')[0]}"
    ds.SeriesNumber = 1 + ["image", "burned-in", "secondary-capture", "ultrasound"].index(kind)
    ds.InstanceNumber = number

    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = "Kantonsspital"
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = "061Y" if patient is HILDEGUND else "043Y"
    ds.PatientWeight = 64.5
    ds.PatientAddress = patient.address
    ds.PatientTelephoneNumbers = patient.phone
    ds.OtherPatientIDs = patient.other_id
    ds.PatientComments = f"{patient.name.split('^')[1]} prefers mornings; ID {patient.patient_id}"
    ds.AdditionalPatientHistory = f"Born {patient.birth_date}, previous scan {study.accession}"
    other = Dataset()
    other.PatientID = patient.other_id
    other.IssuerOfPatientID = "AHV"
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])

    ds.ReferringPhysicianName = REFERRER
    # More of the text attributes PS3.15 Table E.1-1 removes or replaces, holding the same identities.
    ds.PerformingPhysicianName = OPERATOR
    ds.NameOfPhysiciansReadingStudy = ds.RequestingPhysician = ds.PhysiciansOfRecord = REFERRER
    ds.ConsultingPhysicianName = REFERRER
    ds.OtherPatientNames = ds.PatientBirthName = ds.PatientMotherBirthName = ds.ResponsiblePerson = patient.name
    ds.MedicalRecordLocator = patient.patient_id
    ds.PlacerOrderNumberImagingServiceRequest = ds.FillerOrderNumberImagingServiceRequest = study.accession
    ds.InstitutionalDepartmentName = INSTITUTION
    ds.PatientTelecomInformation = patient.phone
    ds.StudyComments = f"Follow-up for {patient.name.split('^')[0]}, {patient.patient_id}"
    ds.OperatorsName = OPERATOR
    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = INSTITUTION_ADDRESS
    ds.StationName = "CT-ROOM-7"
    ds.DeviceSerialNumber = "SN-4455"
    ds.Manufacturer = "ACME"
    code = Dataset()
    code.CodeValue = "RM7-Ørnsköld"
    code.CodingSchemeDesignator = "L"
    code.CodeMeaning = "referrer code"
    person = Dataset()
    person.PersonIdentificationCodeSequence = Sequence([code])
    person.InstitutionName = INSTITUTION
    ds.ReferringPhysicianIdentificationSequence = Sequence([person])

    request = Dataset()
    request.AccessionNumber = study.accession
    request.RequestedProcedureID = f"RP-{study.accession}"
    request.ScheduledProcedureStepID = f"SPS-{study.accession}"
    request.StudyInstanceUID = study.uid
    ds.RequestAttributesSequence = Sequence([request])
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    referenced.ReferencedSOPInstanceUID = study.uid
    ds.ReferencedStudySequence = Sequence([referenced])

    block = ds.private_block(0x0011, PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "LO", patient.patient_id)
    block.add_new(0x11, "LO", "secret-private-note")
    kept = ds.private_block(0x0013, KEPT_CREATOR, create=True)
    kept.add_new(0x10, "LO", KEPT_PRIVATE_VALUE)

    ds.BurnedInAnnotation = "YES" if kind == "burned-in" else "NO"
    add_pixels(ds, pixels(instance_uid))
    return ds


def pixels(instance_uid: str) -> np.ndarray[tuple[int, int], np.dtype[np.uint16]]:
    """The image of an instance: different for each, derived from its UID."""
    seed = int(instance_uid.rsplit(".", 1)[1]) % 4096
    return ((np.arange(256, dtype=np.uint32).reshape(16, 16) * 7 + seed) % 4096).astype("<u2")
