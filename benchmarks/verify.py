"""Checks that a client really did the work it was timed for.

A download counts only if every instance arrived: the number of files, and
either their bytes (clients that write what the server sent, such as this
package and curl) or their SOPInstanceUIDs (clients that parse and re-encode
each instance, such as dicomtrolley 4.1.0 and dicomweb-client, whose files
differ from the originals in their encoding, not in their content). A
client that receives instances over DIMSE writes file meta information of its
own making, so there the dataset after the file meta is compared.
"""

from __future__ import annotations

import filecmp
import hashlib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydicom
from pydicom.filereader import read_file_meta_info

from benchmarks.clientlib import file_chunks
from benchmarks.data import Collection
from dicomtrolley._header import read_header
from dicomtrolley._multipart import boundary_of, iter_parts


class VerificationError(AssertionError):
    """A client's output is not what it should be."""


def _sop_of(path: Path) -> str:
    """The SOPInstanceUID a file is named after: ``1_2_3`` (StorageDir) or ``1.2.3.dcm``."""
    return path.name.removesuffix(".dcm").replace("_", ".")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


def files_byte_equal(out: Path, expected: Collection) -> str:
    """Every instance of ``expected`` is under ``out``, byte for byte, and nothing else is."""
    files = _files(out)
    originals = expected.by_sop()
    if len(files) != len(originals):
        raise VerificationError(f"{len(files)} files in {out}, expected {len(originals)}")
    for path in files:
        item = originals.get(_sop_of(path))
        if item is None:
            raise VerificationError(f"{path} is not named after an uploaded instance")
        if not filecmp.cmp(path, item.path, shallow=False):
            raise VerificationError(f"{path} differs from the uploaded {item.path}")
    return f"{_count(len(files), 'file')}, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB, byte-equal"


def _dataset_offset(head: bytes, path: Path) -> int:
    """Where the dataset starts in a Part 10 file: after the preamble, ``DICM`` and the file meta group.

    The file meta group is found by its group length element (0002,0000),
    which every writer measured here puts first.
    """
    if head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
        raise VerificationError(f"{path} is not a DICOM file that starts with a file meta group length")
    return 144 + int.from_bytes(head[140:144], "little")


def _dataset_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return data[_dataset_offset(data[:144], path):]


def files_dataset_byte_equal(out: Path, expected: Collection) -> str:
    """Every instance of ``expected`` is under ``out`` once, its dataset byte for byte, whatever the file meta.

    Files are matched to the originals by the SOPInstanceUID of their file
    meta, so any file naming (``getscu``'s ``CT.<uid>`` too) will do.
    """
    files = _files(out)
    originals = expected.by_sop()
    if len(files) != len(originals):
        raise VerificationError(f"{len(files)} files in {out}, expected {len(originals)}")
    seen: set[str] = set()
    for path in files:
        sop = str(read_file_meta_info(path).get("MediaStorageSOPInstanceUID", ""))
        item = originals.get(sop)
        if item is None or sop in seen:
            raise VerificationError(f"{path} holds {sop or 'no SOPInstanceUID'}: not an uploaded instance, or twice")
        seen.add(sop)
        if _dataset_bytes(path) != _dataset_bytes(item.path):
            raise VerificationError(f"the dataset in {path} differs from that in the uploaded {item.path}")
    return (f"{_count(len(files), 'file')}, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB, "
            "dataset byte-equal")


def files_same_instances(out: Path, expected: Collection) -> str:
    """Every instance of ``expected`` is under ``out`` (by SOPInstanceUID), re-encoded or not."""
    files = _files(out)
    found = {_sop_of(path) for path in files}
    wanted = set(expected.by_sop())
    if len(files) != len(wanted) or found != wanted:
        raise VerificationError(
            f"{len(files)} files in {out}; {len(wanted - found)} instance(s) missing, {len(found - wanted)} unexpected"
        )
    sample = pydicom.dcmread(files[0], stop_before_pixels=True)
    if _sop_of(files[0]) != sample.SOPInstanceUID:
        raise VerificationError(f"{files[0]} holds {sample.SOPInstanceUID}, not the instance it is named after")
    return f"{_count(len(files), 'file')}, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB, same SOPInstanceUIDs"


def files_pseudonymised(out: Path, expected: Collection) -> str:
    """Every instance of ``expected`` is under ``out`` once, pseudonymised: new UIDs, the same pixel data."""
    files = _files(out)
    originals = expected.by_sop()
    if len(files) != len(originals):
        raise VerificationError(f"{len(files)} files in {out}, expected {len(originals)}")
    wanted = Counter(_pixel_digest(item.path) for item in originals.values())
    found: Counter[str] = Counter()
    for path in files:
        dataset = pydicom.dcmread(path)
        if dataset.SOPInstanceUID in originals or dataset.get("PatientIdentityRemoved") != "YES":
            raise VerificationError(f"{path} is not pseudonymised ({dataset.SOPInstanceUID})")
        found[hashlib.sha256(dataset.PixelData).hexdigest()] += 1
    if found != wanted:
        raise VerificationError(f"the pixel data under {out} differs from that of the uploaded instances")
    return f"{_count(len(files), 'file')}, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB, pixels byte-equal"


def _pixel_digest(path: Path) -> str:
    return hashlib.sha256(pydicom.dcmread(path).PixelData).hexdigest()


def multipart_body_byte_equal(body: Path, content_type_boundary: str, expected: Collection) -> str:
    """A raw WADO-RS body (as curl saved it) holds every instance of ``expected``, byte for byte."""
    originals = expected.by_sop()
    seen: set[str] = set()

    for part in iter_parts(file_chunks(body), content_type_boundary):
        with part.body:
            sop = str(read_header(part.body, ["SOPInstanceUID"]).get("SOPInstanceUID"))
            item = originals.get(sop)
            if item is None or part.size != item.size:
                raise VerificationError(f"part {len(seen) + 1} of {body} ({sop}) is not an uploaded instance")
            with item.path.open("rb") as original:
                if part.body.read() != original.read():
                    raise VerificationError(f"part {len(seen) + 1} of {body} differs from {item.path}")
            seen.add(sop)
    if seen != set(originals):
        raise VerificationError(f"{body} holds {len(seen)} of the {len(originals)} instances")
    return f"{_count(len(seen), 'part')}, byte-equal"


def boundary_from_headers(headers: Path) -> str:
    """The multipart boundary from a header dump (``curl --dump-header``)."""
    for line in headers.read_text(encoding="latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            return boundary_of(value.strip())
    raise VerificationError(f"no Content-Type in {headers}")


def reported(output: Mapping[str, Any], *, count: int, size: int | None = None) -> str:
    """The client's own report names ``count`` objects (and ``size`` bytes when given)."""
    if output.get("count") != count:
        raise VerificationError(f"the client reported {output.get('count')} objects, expected {count}")
    if size is not None and output.get("bytes") != size:
        raise VerificationError(f"the client reported {output.get('bytes')} bytes, expected {size}")
    if output.get("ok") is False:
        raise VerificationError("the client reported failures")
    return _count(count, "object") + (f", {size / 1e6:.1f} MB" if size is not None else "")
