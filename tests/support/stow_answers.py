"""What a STOW-RS server does with a request, for the fault server: split the body, answer in DICOM JSON.

Kept apart from the fault server so that its one job (misbehaving on
purpose) stays readable: :func:`split_body` reads a ``multipart/related``
request body into the DICOM files it carries, :func:`answer` writes the
DICOM JSON a server sends back (ReferencedSOPSequence for what it stored,
FailedSOPSequence with a FailureReason for what it refused).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from pydicom import dcmread


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a Content-Type (quoted or not); ``""`` without one."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip('"')
    return ""


def split_body(content_type: str, body: bytes) -> list[bytes]:
    """The content of each part of a ``multipart/related`` body (RFC 2046: CRLF before a delimiter is its own)."""
    delimiter = b"--" + boundary_of(content_type).encode()
    pieces = body.split(b"\r\n" + delimiter)
    first = pieces[0]
    if first.startswith(delimiter):
        pieces[0] = first[len(delimiter):]
    contents = []
    for piece in pieces:
        if piece.startswith(b"--"):
            break  # the closing delimiter
        _headers, _, content = piece.partition(b"\r\n\r\n")
        contents.append(content)
    return contents


def sop_instance_uid(data: bytes) -> str:
    """The SOPInstanceUID of a DICOM file's bytes."""
    return str(dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def _reference(uid: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
            "00081155": {"vr": "UI", "Value": [uid]}, **(extra or {})}


def answer(stored: list[str], refused: Mapping[str, int], warnings: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The DICOM JSON of a STOW-RS answer: ``stored`` UIDs referenced, ``refused`` ones failed with their code."""
    warnings = warnings or {}
    result: dict[str, Any] = {}
    if stored:
        result["00081199"] = {"vr": "SQ", "Value": [
            _reference(uid, {"00081196": {"vr": "US", "Value": [warnings[uid]]}} if uid in warnings else None)
            for uid in stored
        ]}
    if refused:
        result["00081198"] = {"vr": "SQ", "Value": [
            _reference(uid, {"00081197": {"vr": "US", "Value": [code]}}) for uid, code in refused.items()
        ]}
    return result
