"""The benchmark data: generated once, cached under ``benchmarks/.work/data``.

Four kinds, each sized by :class:`Sizes` (the full run's figures by default,
tiny ones for the smoke test):

- a CT study of 500 instances of 512x512 16-bit pixels in 4 series (263 MB);
- one instance of 8192x16384 16-bit pixels (256 MiB of pixel data), a study of its own;
- a search tree of 20,000 small instances (10 studies x 4 series x 500) of one patient;
- multipart/related bodies of 64 MiB, 256 MiB and 1 GiB made of CT instances,
  with per-part Content-Length (as Orthanc sends them) and without (the parser must scan).

A collection lives in a folder named after its sizes, with a ``manifest.json``
written last: a folder without a current manifest is generated again, so an
interrupted run never leaves data that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

MANIFEST = "manifest.json"
VERSION = 1
"""Bump when generated content changes, so caches are made again."""

UID_ROOT = "1.2.826.0.1.3680043.8.498."
"""pydicom's root for UIDs made by software like this."""

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
BOUNDARY = "dicomtrolley-benchmark-boundary-6f0c9a4e2b1d"
QIDO_PATIENT_ID = "BENCH-QIDO"
MIB = 1 << 20


def bench_uid(*names: object) -> str:
    """A UID that is always the same for the same names (64 characters long)."""
    return str(generate_uid(prefix=UID_ROOT, entropy_srcs=["dicomtrolley-benchmarks", *map(str, names)]))


@dataclass(frozen=True)
class Sizes:
    """How much data to generate; the defaults are the full benchmark's."""

    ct_instances: int = 500
    """Instances of the CT study that the download benchmarks fetch, spread over ``ct_series`` series."""
    ct_series: int = 4
    ct_pixels: int = 512
    """Rows and columns of each CT image (16-bit): 0.5 MB an instance at 512."""
    big_rows: int = 8192
    big_columns: int = 16384
    """The single large instance of the peak-memory benchmark: 256 MB of 16-bit pixels at the defaults."""
    qido_studies: int = 10
    qido_series: int = 4
    qido_instances: int = 500
    """Instances per series of the search tree (``qido_studies`` studies of ``qido_series`` series)."""
    multipart_bodies: tuple[int, ...] = (64 * MIB, 256 * MIB, 1024 * MIB)

    @classmethod
    def quick(cls) -> Sizes:
        """Tiny data for the smoke test: every case runs, in seconds."""
        return cls(
            ct_instances=5, ct_series=2, ct_pixels=64, big_rows=256, big_columns=512,
            qido_studies=2, qido_series=2, qido_instances=5, multipart_bodies=(MIB, 2 * MIB),
        )


@dataclass(frozen=True)
class Item:
    """One generated DICOM file."""

    study_uid: str
    series_uid: str
    sop_uid: str
    path: Path
    size: int


@dataclass(frozen=True)
class Collection:
    """Generated files that are uploaded and downloaded together."""

    name: str
    directory: Path
    items: tuple[Item, ...]

    @property
    def study_uids(self) -> list[str]:
        """The studies, in generation order."""
        return list(dict.fromkeys(item.study_uid for item in self.items))

    @property
    def total_bytes(self) -> int:
        """Bytes of all files."""
        return sum(item.size for item in self.items)

    def by_sop(self) -> dict[str, Item]:
        """The items keyed by SOPInstanceUID."""
        return {item.sop_uid: item for item in self.items}


@dataclass(frozen=True)
class Body:
    """A multipart/related body on disk."""

    path: Path
    boundary: str
    parts: int
    part_bytes: int
    """Content bytes of all parts together."""
    sized: bool
    """True when every part carries a Content-Length header."""

    @property
    def size(self) -> int:
        """Bytes of the whole body."""
        return self.path.stat().st_size

    @property
    def content_type(self) -> str:
        """The Content-Type a server would send with this body."""
        return f'multipart/related; type="application/dicom"; boundary={self.boundary}'


# ---------------------------------------------------------------- caching


def _load(directory: Path, name: str) -> Collection | None:
    try:
        raw = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if raw.get("version") != VERSION:
        return None
    items = tuple(
        Item(row["study"], row["series"], row["sop"], directory / row["file"], row["size"]) for row in raw["items"]
    )
    if any(not item.path.is_file() or item.path.stat().st_size != item.size for item in items):
        return None
    return Collection(name, directory, items)


def _cached(root: Path, name: str, write: Callable[[Path], list[Item]]) -> Collection:
    """The collection in ``root/name``, generated by ``write(directory)`` unless it is there."""
    directory = root / name
    found = _load(directory, name)
    if found is not None:
        return found
    staging = root / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    items: list[Item] = write(staging)
    manifest = {
        "version": VERSION,
        "items": [
            {"study": i.study_uid, "series": i.series_uid, "sop": i.sop_uid,
             "file": str(i.path.relative_to(staging)), "size": i.size}
            for i in items
        ],
    }
    (staging / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    loaded = _load(directory, name)
    assert loaded is not None
    return loaded


# ---------------------------------------------------------------- datasets


def _image(study_uid: str, series_uid: str, sop_uid: str, number: int, rows: int, columns: int) -> Dataset:
    """An image dataset with its file meta; pixel data is set by the caller."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.Manufacturer = "dicomtrolley benchmarks"
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def _patient(ds: Dataset, patient_id: str, name: str, accession: str, description: str) -> None:
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.StudyDescription = description
    ds.StudyID = accession[-4:]


def _ramp(rows: int, columns: int, seed: int) -> bytes:
    """Pixels that differ from image to image, cheap to make."""
    ramp = np.arange(rows, dtype=np.uint16)[:, None] * 3 + np.arange(columns, dtype=np.uint16)[None, :]
    ramp += np.uint16(seed * 37 % 4096)
    ramp &= 0x0FFF
    return ramp.astype("<u2").tobytes()


def _write(ds: Dataset, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path.stat().st_size


def ct_study(root: Path, sizes: Sizes) -> Collection:
    """The CT study: ``ct_instances`` images spread over ``ct_series`` series."""
    name = f"ct-{sizes.ct_instances}x{sizes.ct_pixels}-{sizes.ct_series}series"

    def write(directory: Path) -> list[Item]:
        study_uid = bench_uid(name, "study")
        items = []
        for index in range(sizes.ct_instances):
            series = index % sizes.ct_series
            series_uid = bench_uid(name, "series", series)
            sop_uid = bench_uid(name, "instance", index)
            ds = _image(study_uid, series_uid, sop_uid, index // sizes.ct_series + 1, sizes.ct_pixels,
                        sizes.ct_pixels)
            _patient(ds, "BENCH-CT", "BENCH^CT", "BENCH0001", "CT BENCHMARK")
            ds.SeriesNumber = series + 1
            ds.SeriesDescription = f"Series {series + 1}"
            ds.PixelData = _ramp(sizes.ct_pixels, sizes.ct_pixels, index)
            path = directory / f"{series + 1:02d}" / f"IM{index:05d}.dcm"
            items.append(Item(study_uid, series_uid, sop_uid, path, _write(ds, path)))
        return items

    return _cached(root, name, write)


def big_instance(root: Path, sizes: Sizes) -> Collection:
    """One study holding one large image of ``big_rows`` x ``big_columns`` 16-bit pixels."""
    name = f"big-{sizes.big_rows}x{sizes.big_columns}"

    def write(directory: Path) -> list[Item]:
        study_uid, series_uid, sop_uid = (bench_uid(name, level) for level in ("study", "series", "instance"))
        ds = _image(study_uid, series_uid, sop_uid, 1, sizes.big_rows, sizes.big_columns)
        _patient(ds, "BENCH-BIG", "BENCH^BIG", "BENCH0002", "BIG INSTANCE BENCHMARK")
        ds.SeriesNumber = 1
        ds.PixelData = _ramp(sizes.big_rows, sizes.big_columns, 1)
        path = directory / "big.dcm"
        return [Item(study_uid, series_uid, sop_uid, path, _write(ds, path))]

    return _cached(root, name, write)


_PLACEHOLDER_UID = UID_ROOT + "9" * (64 - len(UID_ROOT))
_INSTANCE_NUMBER_PLACEHOLDER = "999999"
# (0020,0013) IS, explicit VR little endian, 6 bytes: the InstanceNumber element of the template.
_INSTANCE_NUMBER_ELEMENT = b"\x20\x00\x13\x00IS\x06\x00"


def search_tree(root: Path, sizes: Sizes) -> Collection:
    """One patient's studies for the search benchmark: many small instances.

    Each series is written once with pydicom as a template; its instances are
    the template with their own SOPInstanceUID and InstanceNumber put in place
    (all UIDs here are 64 characters, so the bytes line up), which makes
    20,000 files in a second or two instead of a minute.
    """
    name = f"qido-{sizes.qido_studies}x{sizes.qido_series}x{sizes.qido_instances}"

    def write(directory: Path) -> list[Item]:
        items = []
        for study in range(sizes.qido_studies):
            study_uid = bench_uid(name, "study", study)
            for series in range(sizes.qido_series):
                series_uid = bench_uid(name, "series", study, series)
                ds = _image(study_uid, series_uid, _PLACEHOLDER_UID, 1, 8, 8)
                _patient(ds, QIDO_PATIENT_ID, "BENCH^SEARCH", f"BENCHQ{study:03d}", f"SEARCH STUDY {study + 1}")
                ds.InstanceNumber = _INSTANCE_NUMBER_PLACEHOLDER
                ds.SeriesNumber = series + 1
                ds.SeriesDescription = f"Series {series + 1}"
                ds.PixelData = _ramp(8, 8, series)
                template_path = directory / ".template.dcm"
                _write(ds, template_path)
                template = template_path.read_bytes()
                template_path.unlink()
                number_at = template.index(_INSTANCE_NUMBER_ELEMENT + _INSTANCE_NUMBER_PLACEHOLDER.encode())
                if template.count(_PLACEHOLDER_UID.encode()) != 2:
                    raise RuntimeError("the search-tree template must hold its SOPInstanceUID twice")
                folder = directory / f"{study:03d}" / f"{series:02d}"
                folder.mkdir(parents=True)
                value_at = number_at + len(_INSTANCE_NUMBER_ELEMENT)
                for number in range(1, sizes.qido_instances + 1):
                    sop_uid = bench_uid(name, "instance", study, series, number)
                    data = bytearray(template)
                    data[value_at : value_at + 6] = f"{number:<6}".encode()
                    data = data.replace(_PLACEHOLDER_UID.encode(), sop_uid.encode())
                    path = folder / f"{number:05d}.dcm"
                    path.write_bytes(data)
                    items.append(Item(study_uid, series_uid, sop_uid, path, len(data)))
        return items

    return _cached(root, name, write)


# ---------------------------------------------------------------- multipart bodies


def _framed_parts(contents: list[bytes], *, sized: bool) -> Iterator[bytes]:
    for content in contents:
        header = "".join(
            f"{line}\r\n"
            for line in (
                f"--{BOUNDARY}",
                "Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
                *([f"Content-Length: {len(content)}"] if sized else []),
                "MIME-Version: 1.0",
                "",
            )
        )
        yield header.encode("ascii") + content + b"\r\n"


def multipart_body(root: Path, size: int, source: Collection, *, sized: bool) -> Body:
    """A body of at least ``size`` bytes: the files of ``source`` framed as parts, over and over.

    The layout is Orthanc's: no preamble, each part ``--boundary``, headers,
    blank line, content, CRLF; then ``--boundary--``.
    """
    contents = [item.path.read_bytes() for item in source.items[:8]]
    framed = list(_framed_parts(contents, sized=sized))
    path = root / f"multipart-{size}-{'sized' if sized else 'unsized'}-{source.name}.bin"
    meta = path.with_suffix(".json")
    try:
        known = json.loads(meta.read_text(encoding="utf-8"))
        if known.get("version") == VERSION and path.stat().st_size == known["bytes"]:
            return Body(path, BOUNDARY, known["parts"], known["part_bytes"], sized)
    except (OSError, ValueError):
        pass
    root.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    parts = part_bytes = written = 0
    with partial.open("wb") as out:
        while written < size:
            index = parts % len(framed)
            out.write(framed[index])
            written += len(framed[index])
            part_bytes += len(contents[index])
            parts += 1
        closing = f"--{BOUNDARY}--\r\n".encode("ascii")
        out.write(closing)
        written += len(closing)
    os.replace(partial, path)
    meta.write_text(
        json.dumps({"version": VERSION, "bytes": written, "parts": parts, "part_bytes": part_bytes}),
        encoding="utf-8",
    )
    return Body(path, BOUNDARY, parts, part_bytes, sized)
