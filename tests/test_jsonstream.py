"""The JSON array reader: elements come out as the bytes arrive, however the chunks fall."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator

import pytest

from dicomtrolley._jsonstream import iter_json_array
from dicomtrolley.exceptions import MalformedResponseError

ARRAY = [
    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen"}]}},
    {"00200013": {"vr": "IS", "Value": [12]}, "00180050": {"vr": "DS", "Value": [-2.5e3]}},
    {"nested": [[1, 2], {"a": "]}[{,\""}], "flag": True, "none": None},
]


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_elements_are_the_same_whatever_the_chunk_size(size: int) -> None:
    data = json.dumps(ARRAY, ensure_ascii=False, indent=1).encode()
    assert list(iter_json_array(chunked(data, size))) == ARRAY


def test_a_number_cut_by_a_chunk_boundary_is_read_whole() -> None:
    assert list(iter_json_array([b"[12", b"34, 5", b"6]"])) == [1234, 56]


def test_an_empty_array_has_no_elements() -> None:
    assert list(iter_json_array([b" [ ", b"] "])) == []


@pytest.mark.parametrize("body", [b"", b'{"a": 1}', b'[{"a": 1}', b'[{"a": 1},', b'[{"a": 1} {"b": 2}]', b"[,1]"])
def test_a_body_that_is_not_a_whole_array_is_an_error(body: bytes) -> None:
    with pytest.raises(MalformedResponseError):
        list(iter_json_array(chunked(body, 3)))


def test_memory_stays_bounded_by_one_element_not_the_array() -> None:
    element = json.dumps({"00080018": {"vr": "UI", "Value": ["1.2.3" * 20]}, "x": list(range(200))}).encode()

    def body() -> Iterator[bytes]:  # about 40 MB in all, sent in 64 KiB chunks
        yield b"["
        pending = b""
        for number in range(20_000):
            pending += (b"," if number else b"") + element
            if len(pending) >= 65536:
                yield pending
                pending = b""
        yield pending + b"]"

    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_json_array(body()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 2_000_000
