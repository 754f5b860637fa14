"""Download over WADO-URI (DICOM PS3.18 9): one GET per instance.

WADO-URI knows only single instances, so a study is fetched as many small
requests; a bounded pool of workers keeps several in flight on keep-alive
connections, and each body is streamed to a file object that stays in memory
only while small.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dicomtrolley._http import iter_body, spool
from dicomtrolley._http_downloader import HTTPDownloader
from dicomtrolley.core import (
    DICOMObjectLevels,
    FetchFailure,
    InstancePart,
    InstanceReference,
    PartSink,
    Reference,
)
from dicomtrolley.exceptions import DICOMTrolleyError

logger = logging.getLogger(__name__)


class WadoURI(HTTPDownloader):
    """Fetches instances over WADO-URI, several at a time.

    Parameters
    ----------
    session, url, transfer_syntax, workers, timeout, retry, spill_threshold
        As for :class:`~dicomtrolley._http_downloader.HTTPDownloader`. ``url``
        is the WADO-URI endpoint, e.g. ``https://pacs.example/wado``;
        ``transfer_syntax`` ``None`` (default) leaves the choice to the server
        (the standard says Explicit VR Little Endian); ``workers`` defaults to 8.
    """

    finest_level_needed = DICOMObjectLevels.INSTANCE
    default_workers = 8

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

    def fetch(
        self, targets: Sequence[Reference], sink: PartSink, *, stop_on_failure: bool = True
    ) -> list[FetchFailure]:
        """Fetch each instance with its own request; see :meth:`Downloader.fetch`.

        Raises
        ------
        DICOMTrolleyError
            A target is a study or series: WADO-URI cannot list what they hold,
            so resolve them to instances first (a Trolley with a searcher does).
        """
        coarse = [t for t in targets if not isinstance(t, InstanceReference)]
        if coarse:
            raise DICOMTrolleyError(
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
