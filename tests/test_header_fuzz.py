"""The fast header reader against pydicom on mutated real-world and generated headers.

The rule (issue 12): ``read_header`` gives the values ``dcmread(stop_before_pixels=True)``
gives, or raises a HeaderError that names the instance (a StorageError from storage.save);
never another exception type.
Hypothesis runs derandomized, so CI sees the same cases every run.
"""

from __future__ import annotations

import io
import tracemalloc
import warnings
import zlib
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from dicomtrolley._header import INFLATED_HEADER_LIMIT, read_header
from dicomtrolley.core import InstancePart
from dicomtrolley.exceptions import HeaderError, StorageError
from dicomtrolley.storage import StorageDir
from tests.test_header import KEYWORDS, encode, instance

DCMREAD = pydicom.dcmread

REAL_WORLD = ["CT_small.dcm", "rtplan.dcm", "image_dfl.dcm", "ExplVR_BigEnd.dcm", "JPEG2000.dcm", "reportsi.dcm"]
"""pydicom's own test files: other software's encodings (sequences, private tags, odd lengths)."""

SEEDS = {
    **{name: Path(get_testdata_file(name)).read_bytes() for name in REAL_WORLD},  # type: ignore[arg-type]
    "explicit": encode(instance(ExplicitVRLittleEndian)).getvalue(),
    "implicit": encode(instance(ImplicitVRLittleEndian)).getvalue(),
    "jpeg-undefined-lengths": encode(instance(JPEGBaseline8Bit), undefined_lengths=True).getvalue(),
    "deflated": encode(instance(DeflatedExplicitVRLittleEndian)).getvalue(),
    "big-endian": encode(instance(ExplicitVRBigEndian)).getvalue(),
}


REFUSALS = ("past the end", "deflated")


def pydicom_values(body: bytes) -> dict[str, Any] | None:
    """What pydicom reads of KEYWORDS, or None when it cannot read them."""
    try:
        dataset = DCMREAD(io.BytesIO(body), stop_before_pixels=True, force=True)
        return {keyword: dataset[keyword].value for keyword in KEYWORDS if keyword in dataset}
    except Exception:  # noqa: BLE001 - the reference may fail in any way; the reader may then refuse
        return None


def same(found: dict[str, Any], expected: dict[str, Any]) -> bool:
    return found == expected or repr(found) == repr(expected)


def check(body: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = pydicom_values(body)
        refusal: HeaderError | None = None
        try:
            found = read_header(io.BytesIO(body), KEYWORDS, name="instance 1.2.3.4.5.6").attributes
        except HeaderError as error:
            refusal = error
    if refusal is not None:
        assert str(refusal).startswith("instance 1.2.3.4.5.6: ")
        # pydicom fails too, or the reader refuses what it documents refusing
        # (a value longer than the instance, a deflated dataset it cannot read boundedly).
        assert expected is None or any(why in str(refusal) for why in REFUSALS), (expected, refusal)
        return
    assert expected is not None, "read_header read values that pydicom cannot read"
    assert same(found, expected)


mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "truncate", "swap"]),
    st.integers(min_value=0, max_value=2000),
    st.binary(min_size=1, max_size=8),
)


def mutate(body: bytes, changes: list[tuple[str, int, bytes]]) -> bytes:
    data = bytearray(body)
    for kind, offset, blob in changes:
        at = min(offset, len(data))
        if kind == "flip":
            data[at:at + len(blob)] = blob
        elif kind == "insert":
            data[at:at] = blob
        elif kind == "delete":
            del data[at:at + len(blob)]
        elif kind == "truncate":
            del data[at:]
        else:  # move a slice of the header elsewhere: out-of-order and duplicated elements
            piece = bytes(data[at:at + 8 * len(blob)])
            data[at // 2:at // 2] = piece
    return bytes(data)


@pytest.mark.parametrize("seed", sorted(SEEDS))
@settings(derandomize=True, max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_header_reads_as_pydicom_reads_or_is_refused(seed: str, changes: list[tuple[str, int, bytes]]) -> None:
    check(mutate(SEEDS[seed], changes))


@settings(derandomize=True, max_examples=150, deadline=None)
@given(length=st.integers(min_value=0, max_value=0xFFFFFFFF), offset=st.integers(min_value=132, max_value=1200))
def test_any_length_field_reads_as_pydicom_reads_or_is_refused(length: int, offset: int) -> None:
    body = bytearray(SEEDS["explicit"])
    body[offset:offset + 4] = length.to_bytes(4, "little")
    check(bytes(body))


@pytest.mark.parametrize(
    "body", [pytest.param(seed, id=name) for name, seed in SEEDS.items()]
    + [pytest.param(b"\0" * 128 + b"DICM", id="preamble-only")],
)
def test_unchanged_inputs_read_as_pydicom_reads(body: bytes) -> None:
    expected = pydicom_values(body)
    assert expected is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert same(read_header(io.BytesIO(body), KEYWORDS).attributes, expected)


def test_deflate_bomb_is_inflated_only_as_far_as_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = SEEDS["deflated"]
    meta_end = whole.index(b"1.2.840.10008.1.2.1.99") + 22
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = deflater.compress(b"\x08\x00\x05\x00CS\x00\x00" + b"\0" * (4 * INFLATED_HEADER_LIMIT)) + deflater.flush()
    inflated: list[int] = []
    real = zlib.decompressobj

    class Counting:
        def __init__(self, *args: Any) -> None:
            self.inner = real(*args)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            out = self.inner.decompress(data, max_length)
            inflated.append(len(out))
            return out

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    with pytest.raises(HeaderError, match=r"^instance 9\.9: "):
        read_header(io.BytesIO(whole[:meta_end] + bomb), KEYWORDS, name="instance 9.9")
    assert sum(inflated) <= INFLATED_HEADER_LIMIT


@settings(
    derandomize=True, max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.sampled_from(sorted(SEEDS)), changes=st.lists(mutation, min_size=1, max_size=3))
def test_saving_mutated_bytes_writes_them_or_raises_a_storage_error(
    seed: str, changes: list[tuple[str, int, bytes]], tmp_path: Path
) -> None:
    body = mutate(SEEDS[seed], changes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            saved = StorageDir(tmp_path).save(InstancePart(io.BytesIO(body), len(body)))
        except StorageError:
            return
    assert saved.path.read_bytes() == body
    assert saved.path.is_relative_to(tmp_path)


def test_a_length_field_claiming_gigabytes_allocates_nothing_of_the_kind(tmp_path: Path) -> None:
    whole = SEEDS["explicit"]
    at = whole.index(b"\x10\x00\x20\x00LO")  # PatientID, rewritten as UN with a 32-bit length
    body = whole[:at] + b"\x10\x00\x20\x00UN\x00\x00" + (0xFFFFFFF0).to_bytes(4, "little") + whole[at + 8:]
    path = tmp_path / "instance"
    path.write_bytes(body)
    tracemalloc.start()
    try:
        with path.open("rb") as file, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                read_header(file, KEYWORDS)
            except HeaderError as error:
                assert "past the end" in str(error)  # noqa: PT017 - either outcome is allowed; the memory is the point
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024
