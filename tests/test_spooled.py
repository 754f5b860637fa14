"""Unit tests of SpooledChunks, the file object that holds a multipart part as the chunks it arrived in."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pydicom
import pytest

import dicomtrolley._spooled as spooled
from dicomtrolley._spooled import SpooledChunks, copy_to_descriptor
from dicomtrolley.core import InstancePart, InstanceReference
from tests.support.dicom_files import dicom_bytes

DATA = bytes(range(256)) * 40  # 10240 bytes


def chunked(data: bytes = DATA, size: int = 1000, max_size: int = 1 << 20) -> SpooledChunks:
    """``data`` written in slices of ``size`` bytes, as the parser writes a part; positioned at 0."""
    body = SpooledChunks(max_size)
    view = memoryview(data)
    for start in range(0, len(data), size):
        body.write(view[start : start + size])
    body.seek(0)
    return body


def written_through(body: SpooledChunks | io.BytesIO, tmp_path: Path) -> tuple[int, bytes]:
    """What :func:`copy_to_descriptor` writes to a file from ``body``: the count it returns, the file's bytes."""
    target = tmp_path / "out"
    handle = os.open(target, os.O_WRONLY | os.O_CREAT)
    try:
        count = copy_to_descriptor(body, handle)
    finally:
        os.close(handle)
    return count, target.read_bytes()


def test_reads_back_what_was_written_across_chunk_ends() -> None:
    body = chunked()
    assert body.read(1500) == DATA[:1500]
    assert body.read(3) == DATA[1500:1503]
    assert body.read() == DATA[1503:]
    assert body.read() == b""


def test_a_whole_chunk_is_read_back_as_the_very_bytes_written() -> None:
    chunk = os.urandom(5000)
    body = SpooledChunks(1 << 20)
    body.write(chunk)
    body.seek(0)
    assert body.read() is chunk


def test_a_mutable_buffer_is_copied_so_the_writer_may_reuse_it() -> None:
    buffer = bytearray(b"first")
    body = SpooledChunks(1 << 20)
    body.write(buffer)
    buffer[:] = b"XXXXX"
    body.seek(0)
    assert body.read() == b"first"


def test_seek_and_tell_move_as_in_any_file() -> None:
    body = chunked()
    assert body.seek(2500) == 2500
    assert body.read(10) == DATA[2500:2510]
    assert body.seek(-10, io.SEEK_CUR) == 2500
    assert body.seek(-5, io.SEEK_END) == len(DATA) - 5
    assert body.read() == DATA[-5:]
    assert body.tell() == len(DATA)
    body.seek(len(DATA) + 100)
    assert body.read() == b""
    with pytest.raises(ValueError, match="negative seek"):
        body.seek(-1)


def test_readinto_fills_a_buffer_across_chunks() -> None:
    body = chunked()
    body.seek(900)
    buffer = bytearray(2500)
    assert body.readinto(buffer) == 2500
    assert bytes(buffer) == DATA[900:3400]
    assert body.readinto(bytearray(len(DATA))) == len(DATA) - 3400


def test_past_max_size_the_content_moves_to_a_temporary_file(tmp_path: Path) -> None:
    body = SpooledChunks(4000, dir=str(tmp_path))
    body.write(DATA[:3000])
    assert body.in_memory
    body.write(DATA[3000:])
    assert not body.in_memory
    body.seek(0)
    assert body.read() == DATA


def test_rollover_keeps_the_position() -> None:
    body = chunked()
    body.seek(1234)
    body.rollover()
    assert body.tell() == 1234
    assert body.read(6) == DATA[1234:1240]


def test_pydicom_reads_an_instance_from_it() -> None:
    body = chunked(dicom_bytes("1.2.3.9", PatientName="Chunked^Reader"), size=7)
    read = pydicom.dcmread(body)
    assert (read.SOPInstanceUID, read.PatientName) == ("1.2.3.9", "Chunked^Reader")


def test_a_closed_body_refuses_reads_and_writes() -> None:
    body = chunked()
    body.close()
    assert body.closed
    with pytest.raises(ValueError, match="closed"):
        body.read()
    with pytest.raises(ValueError, match="closed"):
        body.write(b"more")


@pytest.mark.parametrize("position", [0, 1500])
def test_copy_to_descriptor_writes_the_rest_of_the_chunks(tmp_path: Path, position: int) -> None:
    body = chunked()
    body.seek(position)
    assert written_through(body, tmp_path) == (len(DATA) - position, DATA[position:])


def test_copy_to_descriptor_goes_on_after_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_writev = os.writev

    def short_writev(handle: int, buffers: list[memoryview]) -> int:
        """At most 700 bytes per call, so writes end inside a chunk and at its end."""
        return real_writev(handle, [bytes(b"".join(buffers)[:700])])

    monkeypatch.setattr(os, "writev", short_writev)
    monkeypatch.setattr(spooled, "_IOV_MAX", 3)  # and several batches of chunks
    assert written_through(chunked(), tmp_path) == (len(DATA), DATA)


def test_copy_to_descriptor_reads_a_spilled_body_from_its_file(tmp_path: Path) -> None:
    body = chunked(max_size=100)
    assert not body.in_memory
    assert written_through(body, tmp_path) == (len(DATA), DATA)


def test_copy_to_descriptor_takes_any_binary_file(tmp_path: Path) -> None:
    body = io.BytesIO(DATA)
    body.seek(10)
    assert written_through(body, tmp_path) == (len(DATA) - 10, DATA[10:])


def test_write_from_takes_the_chunks_of_a_body_in_memory_as_they_are() -> None:
    chunk = bytes(range(256)) * 100
    source = SpooledChunks(1 << 20)
    source.write(chunk)
    source.seek(0)
    target = SpooledChunks(1 << 20)
    assert target.write_from(source) == len(chunk)
    target.seek(0)
    assert target.read() is chunk


@pytest.mark.parametrize("kind", ["spilled", "bytesio"])
def test_write_from_reads_any_other_body_through(kind: str) -> None:
    source = chunked(max_size=100) if kind == "spilled" else io.BytesIO(DATA)
    source.seek(10)
    target = SpooledChunks(1 << 20)
    assert target.write_from(source) == len(DATA) - 10
    target.seek(0)
    assert target.read() == DATA[10:]


def test_a_detached_part_outlives_the_part_it_was_taken_from() -> None:
    part = InstancePart(chunked(), len(DATA), "application/dicom", reference=InstanceReference("1", "2", "3"))
    copy = spooled.detached(part)
    part.close()
    assert copy.body.read() == DATA
    assert (copy.size, copy.reference) == (len(DATA), part.reference)
