"""Unit tests of the streaming multipart/related parser (no server involved)."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from requests_toolbelt import MultipartEncoder

import dicomtrolley._multipart as multipart
from dicomtrolley._multipart import (
    MAX_HEADER_SIZE,
    Part,
    boundary_of,
    iter_parts,
    parse_content_type,
)
from dicomtrolley._spooled import SPILL_THRESHOLD
from dicomtrolley.exceptions import MultipartError

BOUNDARY = "8f1c2a9e-boundary-0123456789abcdef"
DICOM = "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"


def build(
    parts: Iterable[tuple[dict[str, str], bytes]],
    *,
    boundary: str = BOUNDARY,
    preamble: bytes = b"",
    epilogue: bytes = b"",
    close: bool = True,
) -> bytes:
    """Frame ``parts`` (headers, content) as RFC 2046 says: CRLF before every delimiter."""
    out = bytearray()
    if preamble:
        out += preamble + b"\r\n"
    for index, (headers, content) in enumerate(parts):
        out += (b"\r\n" if index else b"") + b"--" + boundary.encode() + b"\r\n"
        for name, value in headers.items():
            out += f"{name}: {value}\r\n".encode()
        out += b"\r\n" + content
    if close:
        out += b"\r\n--" + boundary.encode() + b"--"
    return bytes(out + epilogue)


def parse(
    body: bytes,
    boundary: str = BOUNDARY,
    chunk_size: int = 1 << 20,
    spill_threshold: int = SPILL_THRESHOLD,
    spill_dir: str | None = None,
) -> list[Part]:
    chunks = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)]
    return list(iter_parts(chunks, boundary, spill_threshold=spill_threshold, spill_dir=spill_dir))


def contents(parts: list[Part]) -> list[bytes]:
    return [part.body.read() for part in parts]


def sized(content: bytes) -> dict[str, str]:
    return {"Content-Type": DICOM, "Content-Length": str(len(content))}


def collect_until_error(chunks: Iterable[bytes], boundary: str = BOUNDARY) -> tuple[list[Part], MultipartError]:
    """Run the parser to its error and return the parts it yielded first."""
    parts: list[Part] = []
    try:
        for part in iter_parts(chunks, boundary):
            parts.append(part)
    except MultipartError as error:
        return parts, error
    pytest.fail("the parser raised no MultipartError")


# -- Content-Type ---------------------------------------------------------------------------------


def test_boundary_of_reads_an_unquoted_boundary() -> None:
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    assert boundary_of(content_type) == BOUNDARY


def test_boundary_of_reads_a_quoted_boundary_with_separators_inside() -> None:
    content_type = 'multipart/related; boundary="a;b c=d"; type="application/dicom"'
    assert boundary_of(content_type) == "a;b c=d"


def test_boundary_of_rejects_a_multipart_type_without_boundary_naming_it() -> None:
    content_type = 'multipart/related; type="application/dicom"'
    with pytest.raises(MultipartError, match="has no boundary") as raised:
        boundary_of(content_type)
    assert repr(content_type) in str(raised.value)


def test_boundary_of_rejects_a_type_that_is_not_multipart_naming_it() -> None:
    with pytest.raises(MultipartError, match="application/json"):
        boundary_of("application/json; boundary=abc")


def test_parse_content_type_lowercases_type_and_names_and_unquotes_values() -> None:
    media_type, parameters = parse_content_type(
        'Multipart/Related; Type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1; Boundary="say \\"hi\\""'
    )
    assert media_type == "multipart/related"
    assert parameters == {
        "type": "application/dicom",
        "transfer-syntax": "1.2.840.10008.1.2.1",
        "boundary": 'say "hi"',
    }


def test_parse_content_type_of_a_single_part_answer_has_no_parameters() -> None:
    assert parse_content_type("application/dicom") == ("application/dicom", {})


@pytest.mark.parametrize("value", [None, "", "   "])
def test_parse_content_type_rejects_a_missing_value(value: str | None) -> None:
    with pytest.raises(MultipartError, match="no Content-Type"):
        parse_content_type(value)


# -- framing ---------------------------------------------------------------------------------------


def test_preamble_and_epilogue_are_skipped() -> None:
    body = build(
        [({"Content-Type": DICOM}, b"first"), ({"Content-Type": DICOM}, b"second")],
        preamble=b"This is a multi-part message in MIME format.",
        epilogue=b"\r\nThis is the epilogue.\r\n",
    )
    assert contents(parse(body)) == [b"first", b"second"]


def test_parts_without_content_length_are_found_by_scanning() -> None:
    body = build([({"Content-Type": DICOM}, b"A" * 1000), ({"Content-Type": DICOM}, b"B" * 10)])
    parts = parse(body, chunk_size=64)
    assert contents(parts) == [b"A" * 1000, b"B" * 10]
    assert [part.size for part in parts] == [1000, 10]


def test_parts_with_content_length_keep_their_headers_and_content() -> None:
    first, second = os.urandom(3000), os.urandom(7)
    body = build(
        [
            ({**sized(first), "Content-Location": "/studies/1/series/2/instances/3"}, first),
            (sized(second), second),
        ]
    )
    parts = parse(body, chunk_size=100)
    assert contents(parts) == [first, second]
    assert parts[0].headers == {
        "content-type": DICOM,
        "content-length": "3000",
        "content-location": "/studies/1/series/2/instances/3",
    }
    assert parts[0].content_type == DICOM


def test_a_part_without_content_type_reports_an_empty_one() -> None:
    (part,) = parse(build([({}, b"x")]))
    assert part.content_type == ""
    assert part.headers == {}


@pytest.mark.parametrize("headers", [{"Content-Type": DICOM}, sized(b"payload\r\n")], ids=["scan", "sized"])
def test_crlf_before_a_delimiter_is_not_part_of_the_content(headers: dict[str, str]) -> None:
    # The content itself ends in CRLF; only the CRLF that the delimiter brings is removed.
    body = build([(headers, b"payload\r\n"), ({"Content-Type": DICOM}, b"next")])
    assert contents(parse(body)) == [b"payload\r\n", b"next"]


def test_a_zero_length_part_is_empty() -> None:
    body = build([({"Content-Type": DICOM}, b""), (sized(b""), b""), ({}, b"last")])
    assert contents(parse(body)) == [b"", b"", b"last"]


def test_text_resembling_a_delimiter_stays_in_the_content() -> None:
    lookalikes = (
        b"--" + BOUNDARY.encode() + b" not at the start of a line\r\n"
        b"\r\n--" + BOUNDARY[:-1].encode() + b"\r\n"  # a delimiter prefix
        b"\r\n--" + BOUNDARY.encode() + b"suffix\r\n"  # the delimiter, but the line goes on
        b"\r\n--" + BOUNDARY.encode() + b"-x"  # one dash is not the closing delimiter
        b"\r\n--" + BOUNDARY.encode() + b"\r\r\n--" + BOUNDARY.encode() + b"\rtail"
    )
    body = build([({"Content-Type": DICOM}, lookalikes), ({"Content-Type": DICOM}, b"second")])
    for chunk_size in (1, 7, 1 << 20):
        assert contents(parse(body, chunk_size=chunk_size)) == [lookalikes, b"second"]


def test_padding_after_a_delimiter_is_allowed() -> None:
    body = b"--" + BOUNDARY.encode() + b" \t\r\n\r\nfirst\r\n--" + BOUNDARY.encode() + b"--  \r\n"
    assert contents(parse(body)) == [b"first"]


def test_header_lines_may_end_in_a_bare_lf() -> None:
    body = (
        b"--" + BOUNDARY.encode() + b"\n"
        b"Content-Type: application/dicom\nContent-Length: 5\n\nhello\r\n--" + BOUNDARY.encode() + b"--"
    )
    (part,) = parse(body)
    assert part.headers == {"content-type": "application/dicom", "content-length": "5"}
    assert part.body.read() == b"hello"


def test_every_chunking_of_the_body_gives_the_same_parts() -> None:
    payloads = [b"\r\n" + os.urandom(50) + b"\r\n--", b"-" * 41, b"\r", os.urandom(3)]
    framed = [({"Content-Type": DICOM}, payloads[0]), (sized(payloads[1]), payloads[1])]
    framed += [({}, payloads[2]), (sized(payloads[3]), payloads[3])]
    body = build(framed, preamble=b"pre\r\n--" + BOUNDARY[:5].encode(), epilogue=b"\r\nepilogue")
    for chunk_size in range(1, 41):
        parts = parse(body, chunk_size=chunk_size)
        assert contents(parts) == payloads, f"chunk size {chunk_size}"
        assert [part.headers.get("content-length") for part in parts] == [None, "41", None, "3"]


def test_a_body_built_by_the_toolbelt_encoder_parses() -> None:
    first, second = os.urandom(2000), b"plain text\r\n"
    encoder = MultipartEncoder(
        fields={"first": ("1.dcm", first, "application/dicom"), "second": ("2.txt", second, "text/plain")}
    )
    boundary = boundary_of(encoder.content_type)
    assert boundary == encoder.boundary_value
    parts = parse(encoder.to_string(), boundary, chunk_size=333)
    assert contents(parts) == [first, second]
    assert [part.content_type for part in parts] == ["application/dicom", "text/plain"]
    assert parts[0].headers["content-disposition"] == 'form-data; name="first"; filename="1.dcm"'


def test_a_body_with_only_the_closing_delimiter_has_no_parts() -> None:
    assert parse(b"--" + BOUNDARY.encode() + b"--\r\n") == []


# -- streaming and storage -------------------------------------------------------------------------


def test_parts_are_yielded_before_the_body_ends() -> None:
    body = build([({"Content-Type": DICOM}, b"first"), ({"Content-Type": DICOM}, b"second")])
    split = body.index(b"second")
    sent: list[bytes] = []

    def chunks() -> Iterator[bytes]:
        for chunk in (body[:split], body[split:]):
            sent.append(chunk)
            yield chunk

    parts = iter_parts(chunks(), BOUNDARY)
    assert next(parts).body.read() == b"first"
    assert len(sent) == 1


def test_a_part_above_the_spill_threshold_moves_to_a_temporary_file(tmp_path: Path) -> None:
    big, small = os.urandom(5000), os.urandom(100)
    body = build([({"Content-Type": DICOM}, big), (sized(small), small)])
    parts = parse(body, chunk_size=1000, spill_threshold=1024, spill_dir=str(tmp_path))
    assert [not part.body.in_memory for part in parts] == [True, False]  # type: ignore[attr-defined]
    assert contents(parts) == [big, small]


def test_a_spill_threshold_of_zero_puts_every_part_in_a_file() -> None:
    body = build([({"Content-Type": DICOM}, b"tiny")])
    (part,) = parse(body, spill_threshold=0)
    assert not part.body.in_memory  # type: ignore[attr-defined]
    assert part.body.read() == b"tiny"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the file's directory")
def test_spilled_parts_live_in_the_spill_dir(tmp_path: Path) -> None:
    body = build([({"Content-Type": DICOM}, os.urandom(2048))])
    (part,) = parse(body, spill_threshold=1024, spill_dir=str(tmp_path))
    location = os.readlink(f"/proc/self/fd/{part.body.fileno()}")
    assert os.path.dirname(location) == str(tmp_path)


def test_close_releases_the_part_body() -> None:
    (part,) = parse(build([({"Content-Type": DICOM}, b"x")]))
    part.close()
    assert part.body.closed


# -- faults ----------------------------------------------------------------------------------------


def test_an_empty_body_raises() -> None:
    with pytest.raises(MultipartError, match="empty"):
        parse(b"")


def test_a_body_without_any_delimiter_raises() -> None:
    with pytest.raises(MultipartError, match=f"no multipart delimiter '--{BOUNDARY}'"):
        parse(b"<html>Internal error</html>")


def test_a_body_with_another_boundary_raises() -> None:
    with pytest.raises(MultipartError, match="no multipart delimiter"):
        parse(build([({}, b"x")], boundary="other"))


def test_a_body_cut_in_the_middle_of_a_part_raises_after_yielding_the_complete_ones() -> None:
    body = build([({"Content-Type": DICOM}, b"complete"), ({"Content-Type": DICOM}, b"cut " * 100)])
    parts, error = collect_until_error([body[:-150]])
    assert contents(parts) == [b"complete"]
    assert "truncated" in str(error)
    assert "part 2" in str(error)
    assert "1 part(s) completed before" in str(error)


def test_a_body_cut_inside_a_sized_part_says_how_much_arrived() -> None:
    content = b"z" * 100
    body = build([(sized(content), content)])
    parts, error = collect_until_error([body[: body.index(content) + 60]])
    assert parts == []
    assert "after 60 of the 100 bytes (Content-Length) of part 1" in str(error)


def test_a_body_cut_in_the_headers_raises() -> None:
    body = build([({"Content-Type": DICOM}, b"one"), ({"Content-Type": DICOM}, b"two")])
    parts, error = collect_until_error([body[: body.rindex(b"Content-Type") + 5]])
    assert contents(parts) == [b"one"]
    assert "truncated: it ended in the headers of part 2" in str(error)


@pytest.mark.parametrize("ending", [b"", b"\r\n", b"-"], ids=["bare", "line-end", "one-dash"])
def test_a_missing_closing_delimiter_raises_after_yielding_every_part(ending: bytes) -> None:
    body = build([({"Content-Type": DICOM}, b"one"), ({"Content-Type": DICOM}, b"two")], close=False)
    parts, error = collect_until_error([body + b"\r\n--" + BOUNDARY.encode() + ending])
    assert contents(parts) == [b"one", b"two"]
    assert f"without its closing delimiter '--{BOUNDARY}--'" in str(error)
    assert "2 part(s) completed before" in str(error)


def test_an_oversized_header_block_raises_without_reading_the_rest() -> None:
    consumed: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield b"--" + BOUNDARY.encode() + b"\r\nX-Huge: "
        for _ in range(1000):  # a 16 MB header line, were it all read
            consumed.append(16384)
            yield b"a" * 16384

    parts, error = collect_until_error(chunks())
    assert parts == []
    assert f"headers of part 1 exceed {MAX_HEADER_SIZE} bytes" in str(error)
    assert sum(consumed) <= MAX_HEADER_SIZE + 16384


def test_a_malformed_header_line_raises() -> None:
    body = b"--" + BOUNDARY.encode() + b"\r\nno colon here\r\n\r\nx\r\n--" + BOUNDARY.encode() + b"--"
    with pytest.raises(MultipartError, match="malformed header line 'no colon here'"):
        parse(body)


@pytest.mark.parametrize("declared", [3, 5], ids=["too-short", "too-long"])
def test_a_content_length_not_followed_by_the_delimiter_raises(declared: int) -> None:
    body = build([({"Content-Length": str(declared)}, b"four"), ({}, b"next")])
    parts, error = collect_until_error([body])
    assert parts == []
    assert f"part 1 declares Content-Length {declared} but no multipart delimiter follows" in str(error)


def test_an_unreadable_content_length_falls_back_to_scanning() -> None:
    body = build([({"Content-Length": "unknown"}, b"data")])
    assert contents(parse(body)) == [b"data"]


def test_a_boundary_that_is_not_ascii_raises() -> None:
    with pytest.raises(MultipartError, match="not ASCII"):
        parse(b"--b\xc3\xa9\r\n\r\nx\r\n--b\xc3\xa9--", boundary="bé")


# -- empty parts and any chunking (RFC 2046: the header block's CRLF may open the delimiter) -------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(b"Content-Type: application/dicom\r\n", id="scanned"),
        pytest.param(b"Content-Type: application/dicom\r\nContent-Length: 0\r\n", id="content-length-0"),
        pytest.param(b"", id="no-headers"),
    ],
)
def test_a_delimiter_right_after_the_header_block_ends_an_empty_part(headers: bytes) -> None:
    delimiter = b"--" + BOUNDARY.encode()
    body = delimiter + b"\r\n" + headers + b"\r\n" + delimiter + b"\r\n\r\nsecond\r\n" + delimiter + b"--"
    for chunk_size in (1, 2, 3, 1 << 20):
        assert contents(parse(body, chunk_size=chunk_size)) == [b"", b"second"]


def test_a_delimiter_lookalike_right_after_the_header_block_stays_in_the_content() -> None:
    content = b"--" + BOUNDARY.encode() + b"x and more"
    body = build([({"Content-Type": DICOM}, content)])
    for chunk_size in (1, 5, 1 << 20):
        assert contents(parse(body, chunk_size=chunk_size)) == [content]


_PIECES = [b"\r", b"\n", b"\r\n", b"-", b"--", b"\r\n--", BOUNDARY[:7].encode(), BOUNDARY.encode(), b"x", b" "]


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    contents_=st.lists(st.lists(st.sampled_from(_PIECES), max_size=12).map(b"".join), min_size=1, max_size=5),
    sized_=st.lists(st.booleans(), min_size=5, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=20),
)
def test_any_chunking_of_any_body_gives_the_parts_it_was_built_from(
    contents_: list[bytes], sized_: list[bool], cuts: list[int]
) -> None:
    delimiter = b"\r\n--" + BOUNDARY.encode()
    # Content that holds a delimiter (the header block's CRLF counts) can only be sent with its length.
    framed = [
        (sized(content) if sized_[index] or delimiter in b"\r\n" + content else {"Content-Type": DICOM}, content)
        for index, content in enumerate(contents_)
    ]
    body = build(framed, preamble=b"pre", epilogue=b"\r\npost")
    edges = sorted({min(cut, len(body)) for cut in cuts} | {0, len(body)})
    chunks = [body[start:end] for start, end in itertools.pairwise(edges)]
    assert [part.body.read() for part in iter_parts(chunks, BOUNDARY)] == contents_


def test_the_windowed_search_finds_a_delimiter_wherever_it_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart, "_FIND_WINDOW", 16)
    needle = b"\r\n--" + BOUNDARY.encode()
    for at in range(0, 60):
        data = b"x" * at + needle + b"y" * 20
        for start in (0, min(at, 17), at + 1):
            assert multipart._find(data, needle, start) == data.find(needle, start), (at, start)
