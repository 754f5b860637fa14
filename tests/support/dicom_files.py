"""DICOM Part-10 files made in memory with pydicom: the one factory the unit tests and the fault server share."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def part10_dataset(
    sop_uid: str = "1.2.3.4",
    *,
    study_uid: str = "1.2.1",
    series_uid: str = "1.2.1.1",
    sop_class: str = SECONDARY_CAPTURE,
    syntax: str = ExplicitVRLittleEndian,
    **attributes: object,
) -> Dataset:
    """An instance with file meta, its three UIDs, its SOP class and any other ``attributes`` by keyword."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def add_pixels(ds: Dataset, image: np.ndarray[Any, np.dtype[np.uint16]]) -> None:
    """Give ``ds`` ``image`` as its pixels: one 16-bit unsigned grey frame, with the attributes that describe it."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = image.astype("<u2").tobytes()


def part10_bytes(ds: Dataset) -> bytes:
    """The dataset as a Part-10 file (preamble, file meta, dataset), as a server sends it."""
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def dicom_bytes(sop_uid: str = "1.2.3.4", **keywords: Any) -> bytes:
    """:func:`part10_dataset` as Part-10 bytes; ``keywords`` as it takes them."""
    return part10_bytes(part10_dataset(sop_uid, **keywords))
