"""A C-FIND SCP in front of Orthanc that stops at a cap, as archives that end a C-FIND at 500 matches do.

Each C-FIND it receives is asked of the upstream (Orthanc's DICOM port) on an
association of its own; the first ``cap`` matches are passed on, then the
search ends with Success, as if there were no more. Nothing says it was cut.
It answers C-ECHO too, as such archives do.

Usage::

    with CappedFindSCP("127.0.0.1", orthanc.dicom_port, orthanc.aet, cap=3) as scp:
        searcher = DICOMQR("127.0.0.1", scp.port, aec=scp.aet)
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

PENDING = 0xFF00
SUCCESS = 0x0000


class CappedFindSCP:
    """Answer C-FIND (study root) with at most ``cap`` of the upstream's matches.

    Parameters
    ----------
    upstream_host, upstream_port, upstream_aet
        The real C-FIND SCP behind.
    cap
        Matches passed on per search.
    """

    aet = "CAPPED"

    def __init__(self, upstream_host: str, upstream_port: int, upstream_aet: str, *, cap: int) -> None:
        self.upstream = (upstream_host, upstream_port, upstream_aet)
        self.cap = cap
        self.searches = 0
        self._ae = AE(ae_title=self.aet)
        self._ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self._ae.add_supported_context(Verification)
        self._ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        self._server: Any = None

    @property
    def port(self) -> int:
        """The port it listens on (a free one, chosen at start)."""
        return int(self._server.server_address[1])

    def start(self) -> CappedFindSCP:
        self._server = self._ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, self._on_find)]
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> CappedFindSCP:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        self.searches += 1
        passed = 0
        for status, identifier in self._ask_upstream(event.identifier):
            if status == PENDING and passed < self.cap:
                passed += 1
                yield PENDING, identifier
        yield SUCCESS, None

    def _ask_upstream(self, identifier: Dataset) -> Iterator[tuple[int, Dataset | None]]:
        host, port, aet = self.upstream
        association = self._ae.associate(host, port, ae_title=aet)
        if not association.is_established:
            yield 0xA700, None
            return
        try:
            for status, found in association.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
                if status is not None and "Status" in status:
                    yield int(status.Status), found
        finally:
            association.release()
