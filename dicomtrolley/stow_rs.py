"""STOW-RS (DICOM PS3.18 10.5): store instances in an archive over DICOMweb.

:class:`StowRS` posts ``multipart/related; type="application/dicom"`` bodies
to ``{url}/studies``, a few small bodies at once on a bounded pool of
workers. A body is never built in memory: :class:`MultipartBody` knows its
length from the files' sizes and reads each file only while the request
goes out, again on a retry (the figures behind both choices are in
docs/performance.md).

The answer is read instance by instance: 200 (all stored), 202 with a
FailedSOPSequence (0008,1198) whose FailureReason (0008,1197) names each
refused instance, warnings (WarningReason, 0008,1196) kept beside the
instance, 409 (none stored), and 413 (the body is too large: the batch is
split in two and each half sent again).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from dicomtrolley._http import DEFAULT_TIMEOUT, HTTPClient, RetryPolicy, Timeout, redact_url
from dicomtrolley.exceptions import ConnectionFailedError, DICOMTrolleyError
from dicomtrolley.roles import BatchLimits
from dicomtrolley.sending import InstanceSender, SendItem, Tally

logger = logging.getLogger(__name__)

READ_SIZE = 1 << 20
"""Bytes of a file read at a time while a body goes out."""

DEFAULT_BATCH_BYTES = 1 << 20
"""A body closes once it holds this many bytes of instances (one instance at least)."""

DEFAULT_BATCH_INSTANCES = 8
"""A body holds at most this many instances."""

REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"

FAILURE_REASONS: Mapping[int, str] = {
    0x0110: "processing failure",
    0x0111: "duplicate SOP instance",
    0x0117: "invalid SOP instance",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
}
"""FailureReason codes of a STOW-RS answer (PS3.18 Table 10.5.3-2, PS3.4 B.2.3) and what they mean."""

WARNING_REASONS: Mapping[int, str] = {
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
}
"""WarningReason codes: the instance was stored, changed."""


def reason_text(code: int, table: Mapping[int, str]) -> str:
    """``0xA700 (out of resources)``; a code missing from the table by its range (A7xx, A9xx, Cxxx)."""
    meaning = table.get(code)
    if meaning is None:
        ranges = {0xA7: "out of resources", 0xA9: "data set does not match SOP class"}
        meaning = ranges.get(code >> 8) or ("cannot understand" if code >> 12 == 0xC else "unknown reason")
    return f"0x{code:04X} ({meaning})"


class MultipartBody:
    """A ``multipart/related`` body of DICOM files, read from disk while it is sent.

    Iterating yields the body in pieces of at most :data:`READ_SIZE` file
    bytes (a part's header goes out with its first piece); each iteration
    reads the files anew, so a retried request sends the same body.
    ``len()`` is the exact length, so the request carries a Content-Length
    rather than chunked encoding, which some servers refuse.
    """

    def __init__(self, items: Sequence[SendItem], boundary: str | None = None) -> None:
        self.items = list(items)
        self.boundary = boundary or f"dicomtrolley-{secrets.token_hex(16)}"
        self._heads = [
            (b"\r\n" if index else b"")
            + f"--{self.boundary}\r\nContent-Type: application/dicom\r\nContent-Length: {item.size}\r\n\r\n".encode()
            for index, item in enumerate(self.items)
        ]
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def content_type(self) -> str:
        """The request's Content-Type, with this body's boundary."""
        return f'multipart/related; type="application/dicom"; boundary={self.boundary}'

    def __len__(self) -> int:
        return sum(len(head) + item.size for head, item in zip(self._heads, self.items, strict=True)) + len(self._tail)

    def __iter__(self) -> Iterator[bytes | bytearray]:
        for head, item in zip(self._heads, self.items, strict=True):
            yield from _pieces(head, item)
        yield self._tail


def _pieces(head: bytes, item: SendItem) -> Iterator[bytes | bytearray]:
    """A part: its header and the file's bytes, read straight into the buffer that goes out."""
    left = item.size
    with item.open() as file:
        prefix = head
        while left or prefix:
            size = min(left, READ_SIZE)
            buffer = bytearray(len(prefix) + size)
            buffer[:len(prefix)] = prefix
            view = memoryview(buffer)
            filled = len(prefix)
            while filled < len(buffer):
                count = file.readinto(view[filled:])  # type: ignore[attr-defined]
                if not count:
                    raise FileChangedError(f"{item.name} is shorter than when the send began")
                filled += count
            left -= size
            prefix = b""
            yield buffer


class FileChangedError(DICOMTrolleyError):
    """A file changed size between being listed and being sent; its request is abandoned."""


class StowRS(InstanceSender):
    """Store instances with STOW-RS at ``{url}/studies``.

    Parameters
    ----------
    session
        The ``requests.Session`` to post on; its auth (basic, a bearer token,
        a Vitrea login) applies unchanged.
    url
        The DICOMweb root, e.g. ``http://localhost:8042/dicom-web``.
    workers
        Requests in flight at once.
    timeout
        Seconds to connect and to wait for the answer, as for downloads.
    retry
        When a request is tried again: a broken connection, 429, 502, 503, 504
        (storing an instance twice stores it once).
    batch_bytes, batch_instances
        A body closes at this many bytes or instances, whichever comes first
        (a larger instance goes alone). Small bodies in parallel are what
        archives store fastest (docs/performance.md).
    """

    def __init__(
        self,
        session: requests.Session,
        url: str,
        *,
        workers: int = 4,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        batch_instances: int = DEFAULT_BATCH_INSTANCES,
    ) -> None:
        if workers < 1 or batch_instances < 1:
            raise ValueError("workers and batch_instances must be at least 1")
        self.url = url.rstrip("/")
        self.workers = workers
        self.batch_bytes = batch_bytes
        self.batch_instances = batch_instances
        self.http = HTTPClient(session, timeout=timeout, retry=retry, pool_size=workers)

    def __repr__(self) -> str:
        return f"StowRS({redact_url(self.url)!r}, workers={self.workers})"

    @property
    def batch_limits(self) -> BatchLimits:
        """:attr:`batch_instances` and :attr:`batch_bytes`: how a body is filled, here and in an export."""
        return BatchLimits(self.batch_instances, self.batch_bytes)

    @property
    def destination(self) -> str:
        """The STOW-RS endpoint, without credentials."""
        return redact_url(f"{self.url}/studies")

    def send_items(self, items: Sequence[SendItem], tally: Tally) -> None:
        """Post ``items`` in batches on :attr:`workers` threads; every instance ends in ``tally``.

        Once a request finds the server unreachable (after its retries), the
        batches not yet sent fail at once with the same reason.
        """
        batches = list(self.batches(items))
        gone: list[str] = []

        def store(batch: list[SendItem]) -> None:
            if gone:
                for item in batch:
                    tally.failed(item, f"not sent: {gone[0]}", unreachable=True)
                return
            self._store(batch, tally, gone)

        if self.workers == 1 or len(batches) == 1:
            for batch in batches:
                store(batch)
            return
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="dicomtrolley-stow") as pool:
            for _ in pool.map(store, batches):
                pass

    def batches(self, items: Sequence[SendItem]) -> Iterator[list[SendItem]]:
        """``items`` in bodies of at most :attr:`batch_bytes` bytes and :attr:`batch_instances` instances."""
        limits = self.batch_limits
        batch: list[SendItem] = []
        size = 0
        for item in items:
            if limits.closes(len(batch), size, item.size):
                yield batch
                batch, size = [], 0
            batch.append(item)
            size += item.size
        if batch:
            yield batch

    def _store(self, batch: list[SendItem], tally: Tally, gone: list[str]) -> None:
        """Post one body and file each of its instances as delivered or failed; a 413 splits it.

        A server that cannot be reached is noted in ``gone``.
        """
        body = MultipartBody(batch)
        headers = {"Content-Type": body.content_type, "Accept": "application/dicom+json"}
        try:
            response = self.http.send("POST", self.destination, data=body, headers=headers)
        except ConnectionFailedError as error:
            gone.append(str(error))
            for item in batch:
                tally.failed(item, str(error), unreachable=True)
            return
        except FileChangedError as error:
            for item in batch:
                tally.failed(item, f"not sent: {error}")
            return
        with response:
            if response.status_code == 413 and len(batch) > 1:
                middle = len(batch) // 2
                logger.info("%s answered 413 to %d instances; sending them in two halves",
                            self.destination, len(batch))
                self._store(batch[:middle], tally, gone)
                self._store(batch[middle:], tally, gone)
                return
            self._file_answer(batch, response, tally)

    def _file_answer(self, batch: list[SendItem], response: requests.Response, tally: Tally) -> None:
        """Read a STOW-RS answer: which instances were stored, with which warnings, which failed and why."""
        status = response.status_code
        text = response.content.decode("utf-8", "replace")
        answer = _answer_json(text)
        stored, failed = _referenced(answer.get(REFERENCED_SOP_SEQUENCE)), _referenced(answer.get(FAILED_SOP_SEQUENCE))
        if status not in (200, 202) and not failed:
            message = " ".join(text.split())[:300]
            reason = f"{status} {response.reason or ''}".strip() + (f": {message}" if message else "")
            for item in batch:
                tally.failed(item, reason)
            return
        for item in batch:
            uid = item.sop_instance_uid
            if uid in failed:
                tally.failed(item, f"{status}: refused, {_describe(failed[uid], FAILURE_REASON, FAILURE_REASONS)}")
            elif status in (200, 202) and (uid in stored or not stored):
                tally.delivered(item, _describe(stored.get(uid, {}), WARNING_REASON, WARNING_REASONS, ""))
            else:
                tally.failed(item, f"{status}: the answer does not confirm it was stored")


def _answer_json(text: str) -> dict[str, Any]:
    """The DICOM JSON of an answer; ``{}`` when it is empty or not JSON (some servers answer 200 with nothing)."""
    try:
        answer = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    if isinstance(answer, list) and answer:
        answer = answer[0]
    return answer if isinstance(answer, dict) else {}


def _referenced(element: Any) -> dict[str, dict[str, Any]]:
    """The items of a ReferencedSOPSequence or FailedSOPSequence, by ReferencedSOPInstanceUID."""
    items = element.get("Value", []) if isinstance(element, dict) else []
    found = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        values = (item.get(REFERENCED_SOP_INSTANCE_UID) or {}).get("Value") or [""]
        found[str(values[0])] = item
    return found


def _describe(item: Mapping[str, Any], tag: str, table: Mapping[int, str], default: str = "no reason given") -> str:
    """The reason (failure or warning) an answer's item gives, as text."""
    values = (item.get(tag) or {}).get("Value") or []
    codes = [int(value) for value in values if isinstance(value, (int, float, str)) and str(value).isdigit()]
    return ", ".join(reason_text(code, table) for code in codes) or default
