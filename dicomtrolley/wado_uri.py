"""Download over WADO-URI (DICOM PS3.18 9): one GET per instance.

WADO-URI knows only single instances, so a study is fetched as many small
requests; a bounded pool of workers keeps several in flight on keep-alive
connections, and each body is streamed to a file object that stays in memory
only while small.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

from pydicom.dataset import Dataset

from dicomtrolley._compat import warn_parallelism_moved
from dicomtrolley._http import iter_body, spool
from dicomtrolley._http_downloader import HTTPDownloader
from dicomtrolley.core import (
    DICOMObjectLevels,
    Downloadable,
    FetchFailure,
    InstancePart,
    InstanceReference,
    PartSink,
    Reference,
)
from dicomtrolley.exceptions import NonInstanceParameterError
from dicomtrolley.roles import ProfileParts

logger = logging.getLogger(__name__)


class WadoURI(HTTPDownloader):
    """Fetches instances over WADO-URI, several at a time.

    Parameters
    ----------
    session, url, timeout, retry, spill_threshold, use_async, max_workers
        As for :class:`~dicomtrolley._http_downloader.HTTPDownloader`. ``url``
        is the WADO-URI endpoint, e.g. ``https://pacs.example/wado``.
    transfer_syntax
        A transfer syntax UID to ask for (``transferSyntax=``); ``None`` (the
        default) leaves the choice to the server (the standard says Explicit VR Little Endian).
    workers
        Requests in flight at once (default 8): WADO-URI asks for one instance per
        request, so several keep the connection busy. The connection pool is sized to match.
    """

    finest_level_needed = DICOMObjectLevels.INSTANCE
    default_workers = 8

    def describe(self) -> ProfileParts:
        """``downloader = "wado-uri"`` at this endpoint; see :meth:`Downloader.describe`."""
        return self._described(downloader="wado-uri", wado_uri_url=self.url)

    def params_for(self, instance: InstanceReference) -> dict[str, str]:
        """The query parameters that ask for one instance as DICOM."""
        params = {
            "requestType": "WADO",
            "studyUID": instance.study_uid,
            "seriesUID": instance.series_uid,
            "objectUID": instance.instance_uid,
            "contentType": "application/dicom",
        }
        if self.transfer_syntax:
            params["transferSyntax"] = self.transfer_syntax
        return params

    def datasets_async(self, objects: Downloadable | Iterable[Downloadable]) -> Iterator[Dataset]:
        """4.x's parallel :meth:`datasets`, kept with a DeprecationWarning: :meth:`datasets` is parallel."""
        warn_parallelism_moved("WadoURI.datasets_async")
        return self.datasets(objects)

    def fetch(
        self, targets: Sequence[Reference], sink: PartSink, *, stop_on_failure: bool = True
    ) -> list[FetchFailure]:
        """Fetch each instance with its own request; see :meth:`Downloader.fetch`.

        Raises
        ------
        NonInstanceParameterError
            A target is a study or series: WADO-URI cannot list what they hold,
            so resolve them to instances first (a Trolley with a searcher does).
        """
        coarse = [t for t in targets if not isinstance(t, InstanceReference)]
        if coarse:
            raise NonInstanceParameterError(
                f"WADO-URI fetches single instances; {coarse[0]} must first be resolved to its "
                "instances (give the Trolley a searcher)"
            )
        return super().fetch(targets, sink, stop_on_failure=stop_on_failure)

    def _fetch_one(self, instance: Reference, sink: PartSink) -> None:
        assert isinstance(instance, InstanceReference)  # fetch() let only instances through
        response = self.http.get(
            self.url,
            params=self.params_for(instance),
            headers={"Accept": "application/dicom", "Accept-Encoding": "identity"},
            stream=True,
        )
        content_type = response.headers.get("Content-Type", "application/dicom")
        body, size = spool(iter_body(response), self.spill_threshold)
        part = InstancePart(body, size, content_type, instance, instance)
        try:
            sink(part)
        finally:
            part.close()
