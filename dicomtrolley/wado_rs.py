"""Download over WADO-RS (DICOM PS3.18 10.4): one request per study, series or instance.

The server answers with a multipart/related stream of instances, which is
parsed as it arrives and handed on part by part, so memory stays bounded
whatever the size of the study. Several targets (studies or series) are
fetched in parallel on a bounded pool.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from functools import partial

import requests
from pydicom.dataset import Dataset

from dicomtrolley._accept import AcceptForms
from dicomtrolley._concurrency import interleave
from dicomtrolley._http import HTTPClient, iter_body, spool
from dicomtrolley._http_downloader import HTTPDownloader
from dicomtrolley._multipart import boundary_of, is_multipart, iter_parts, parse_content_type
from dicomtrolley.core import (
    Downloadable,
    InstancePart,
    InstanceReference,
    PartSink,
    Reference,
    SeriesReference,
    as_list,
    to_reference,
)
from dicomtrolley.exceptions import MalformedResponseError, ServerError
from dicomtrolley.metadata import JSONObject, dataset_from_json, stream_metadata
from dicomtrolley.preview import RenderedImage
from dicomtrolley.roles import ProfileParts

logger = logging.getLogger(__name__)

METADATA_DEPTH = 256
"""Instances' metadata waiting for the reader, from all requests together (about 2 KB each)."""

AS_STORED = "*"
"""Ask for each instance in the transfer syntax it is stored in: no transcoding, byte-exact."""

_MULTIPART_DICOM = 'multipart/related; type="application/dicom"'

EXPLICIT_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.70",  # JPEG lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.5",  # RLE lossless
)
"""The syntaxes named, in the last Accept form, to a server that takes neither ``*`` nor no syntax."""

AS_STORED_FORMS = (
    f"{_MULTIPART_DICOM}; transfer-syntax=*",
    _MULTIPART_DICOM,
    ", ".join(f"{_MULTIPART_DICOM}; transfer-syntax={uid}" for uid in EXPLICIT_SYNTAXES),
)
"""The Accept forms of an as-stored retrieve, in the order tried: any syntax, the server's default, a list."""


IMAGE_TYPE = "image/jpeg"
"""The one media type asked for: every rendering server has it, and Orthanc 1.10 answers
400 to an Accept header that lists several types."""

_NOT_THERE = frozenset({400, 404, 405, 406, 501})
"""Statuses by which a server says it does not offer a rendering resource (Orthanc 1.10: /thumbnail is 404)."""


def fetch_rendered(http: HTTPClient, instance_url: str, size: int) -> RenderedImage:
    """Ask for ``/rendered?viewport=size,size`` of an instance; ``/thumbnail`` where that is missing.

    ``/rendered`` comes first: it is in every WADO-RS server since 2017, while
    ``/thumbnail`` is newer and missing in Orthanc 1.10.

    Raises
    ------
    ServerError
        Neither resource gave an image (the error of ``/rendered`` is raised).
    """
    if size < 1:
        raise ValueError(f"A preview needs a size of at least 1 pixel, not {size}")
    headers = {"Accept": IMAGE_TYPE}
    params = {"viewport": f"{size},{size}"}
    try:
        response = http.get(f"{instance_url}/rendered", params=params, headers=headers)
    except ServerError as error:
        if error.status not in _NOT_THERE:
            raise
        logger.info("%s/rendered answered %d; asking for /thumbnail", instance_url, error.status)
        try:
            response = http.get(f"{instance_url}/thumbnail", params=params, headers=headers)
        except ServerError:
            raise error from None
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip() or "image/jpeg"
    return RenderedImage(response.content, content_type)


class WadoRS(HTTPDownloader):
    """Fetches studies, series and instances over WADO-RS.

    Parameters
    ----------
    session, url, transfer_syntax, workers, timeout, retry, spill_threshold, use_async, max_workers
        As for :class:`~dicomtrolley._http_downloader.HTTPDownloader`. ``url``
        is the DICOMweb root, e.g. ``https://pacs.example/dicom-web``;
        ``transfer_syntax`` is ``"*"`` (default) for the bytes as stored, or a
        transfer syntax UID to ask the server to transcode (what arrives is
        checked against it); ``workers`` (default 4) counts the targets,
        studies or series, fetched at once.
    """

    default_transfer_syntax = AS_STORED
    default_workers = 4

    @staticmethod
    def _endpoint(url: str) -> str:
        return url.rstrip("/")

    def describe(self) -> ProfileParts:
        """``downloader = "wado-rs"`` at this DICOMweb root; see :meth:`Downloader.describe`."""
        return self._described(downloader="wado-rs", url=self.url)

    @property
    def accept(self) -> str:
        """The Accept header the next retrieve sends: ``type`` quoted, ``transfer-syntax`` outside the quotes.

        As stored, it starts as ``transfer-syntax=*``; a server that refuses
        that (406 or 400) is asked with the next of :data:`AS_STORED_FORMS`,
        and the form it takes is kept for this downloader.
        """
        return self._accept_forms.current

    def prefer_accept(self, form: str) -> None:
        """Start retrieves with ``form`` (one a probe found the server takes); the others stay behind it."""
        forms = self._accept_forms.forms
        self._accept_forms = AcceptForms([form, *(f for f in forms if f != form)])

    @functools.cached_property
    def _accept_forms(self) -> AcceptForms:
        if self.transfer_syntax == AS_STORED:
            return AcceptForms(AS_STORED_FORMS)
        return AcceptForms([f'{_MULTIPART_DICOM}; transfer-syntax={self.transfer_syntax}'])

    def wado_rs_instance_uri(self, target: Reference) -> str:
        """4.x's name for :meth:`url_for`."""
        return self.url_for(target)

    def url_for(self, target: Reference) -> str:
        """The WADO-RS URL of a study, series or instance."""
        url = f"{self.url}/studies/{target.study_uid}"
        if isinstance(target, (SeriesReference, InstanceReference)):
            url += f"/series/{target.series_uid}"
        if isinstance(target, InstanceReference):
            url += f"/instances/{target.instance_uid}"
        return url

    def metadata_json(self, targets: Sequence[Reference]) -> Iterator[JSONObject]:
        """The DICOM JSON of every instance under ``targets`` from ``/metadata``, streamed; no pixel data.

        Targets are requested ``workers`` at a time: a server builds metadata
        from its files, so several series at once finish sooner than one
        study. Instances come in the order they arrive.
        """
        return interleave(
            [partial(stream_metadata, self.http, f"{self.url_for(target)}/metadata") for target in targets],
            workers=self.workers, depth=METADATA_DEPTH,
        )

    def rendered(self, instance: InstanceReference, size: int) -> RenderedImage:
        """The server's rendering of one instance, fitted to ``size`` x ``size`` pixels."""
        return fetch_rendered(self.http, self.url_for(instance), size)

    def _fetch_one(self, target: Reference, sink: PartSink) -> None:
        url = self.url_for(target)
        response = self._accept_forms.get(self.http, url, {"Accept-Encoding": "identity"})
        # Closed however the body ends, also when its Content-Type is unusable
        # and the body is never read: a streamed response holds its connection.
        with response:
            count = self._receive(response, target, sink, url)
        if response.status_code == 206:
            # The server says it sent only some of what was asked for; the
            # trolley lists what is missing, but without a searcher only this says so.
            logger.warning("%s answered 206 Partial Content: %d instance(s) received, others missing", url, count)
        logger.debug("Received %d instance(s) from %s", count, url)

    def _receive(self, response: requests.Response, target: Reference, sink: PartSink, url: str) -> int:
        """Hand every instance of the body to ``sink``; return how many there were."""
        content_type = response.headers.get("Content-Type", "")
        media_type, _ = parse_content_type(content_type)
        known = target if isinstance(target, InstanceReference) else None
        if media_type == "application/dicom":
            # A single instance without multipart framing (allowed by CP 2040, sent by Google).
            body, size = spool(iter_body(response), self.spill_threshold)
            self._deliver(InstancePart(body, size, content_type, target, known), sink, url)
            return 1
        if is_multipart(media_type):
            count = 0
            parts = iter_parts(iter_body(response), boundary_of(content_type), spill_threshold=self.spill_threshold)
            # Read on this thread: the socket's buffer reads ahead already, and a reading
            # thread per request only fights the others for the GIL (measured: no faster, more CPU).
            with contextlib.closing(parts):
                for part in parts:
                    instance = InstancePart(
                        part.body, part.size, part.content_type or "application/dicom", target, known,
                        headers=part.headers,
                    )
                    self._deliver(instance, sink, url)
                    count += 1
            return count
        raise MalformedResponseError(
            f"{url} answered with Content-Type {content_type!r}, "
            "expected multipart/related (or mixed, or form-data) or application/dicom"
        )

    def _deliver(self, part: InstancePart, sink: PartSink, url: str) -> None:
        try:
            received = part.transfer_syntax
            if self.transfer_syntax != AS_STORED and received and received != self.transfer_syntax:
                raise MalformedResponseError(
                    f"{url} sent transfer syntax {received}, but {self.transfer_syntax} was asked for"
                )
            sink(part)
        finally:
            part.close()


class WadoRSMetaData(WadoRS):
    """WADO-RS for metadata only (dicomtrolley 4.x's class): ``datasets()`` yields headers without pixel data.

    Prefer :meth:`~dicomtrolley.trolley.Trolley.metadata`, which also gives
    typed rows and DataFrames. As a trolley's downloader this class still
    downloads whole instances; only :meth:`datasets` is metadata.
    """

    def datasets(self, objects: Downloadable | Iterable[Downloadable]) -> Iterator[Dataset]:
        """A pydicom Dataset per instance from ``/metadata``; bulk data URIs in ``dataset.bulk_data_uris``."""
        return (dataset_from_json(obj) for obj in self.metadata_json([to_reference(o) for o in as_list(objects)]))
