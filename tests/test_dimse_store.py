"""C-STORE against a pynetdicom Storage SCP that misbehaves on purpose: what a real archive rarely does on cue."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, StoragePresentationContexts, evt

from dicomtrolley.dimse_store import ASSOCIATION_ATTEMPTS, DICOMCStore, context_groups
from dicomtrolley.sending import collect
from tests.support.dicom_files import dicom_bytes
from tests.support.fault_server import make_instances
from tests.support.orthanc import free_ports


class StorageSCP:
    """Stores what it receives; aborts the association at chosen C-STOREs, or answers a chosen status."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}
        self.abort_at: set[int] = set()
        self.status = 0x0000
        self.requests = 0
        self._lock = threading.Lock()

    def handle(self, event: Any) -> int:
        with self._lock:
            self.requests += 1
            number = self.requests
        if number in self.abort_at:
            event.assoc.abort()
            return 0xC000
        if self.status == 0x0000:
            self.stored[str(event.request.AffectedSOPInstanceUID)] = event.encoded_dataset()
        return self.status


@pytest.fixture
def scp() -> Iterator[tuple[StorageSCP, int]]:
    handler = StorageSCP()
    ae = AE("STORESCP")
    ae.supported_contexts = StoragePresentationContexts
    (port,) = free_ports(1)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handler.handle)])
    try:
        yield handler, port
    finally:
        server.shutdown()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for number, instance in enumerate(make_instances(series_sizes=(6,), name="cstore")):
        (tmp_path / f"{number}.dcm").write_bytes(instance.data)
    return tmp_path


def test_an_association_the_peer_aborts_is_opened_again_and_every_instance_arrives(
    scp: tuple[StorageSCP, int], folder: Path
) -> None:
    handler, port = scp
    handler.abort_at = {3}
    summary = DICOMCStore("127.0.0.1", port, called_aet="STORESCP", workers=1).send(folder)
    assert summary.sent == 6
    assert len(handler.stored) == 6


def test_a_peer_that_keeps_aborting_fails_the_rest_after_a_few_associations(
    scp: tuple[StorageSCP, int], folder: Path
) -> None:
    handler, port = scp
    handler.abort_at = {2, 3, 4}
    summary = DICOMCStore("127.0.0.1", port, called_aet="STORESCP", workers=1).send(folder, on_error="collect")
    assert summary.sent == 1
    assert summary.failed == 5
    assert f"ended the association {ASSOCIATION_ATTEMPTS} times" in summary.failures[0].reason


def test_a_failure_status_fails_each_instance_with_its_meaning(scp: tuple[StorageSCP, int], folder: Path) -> None:
    handler, port = scp
    handler.status = 0xA700
    summary = DICOMCStore("127.0.0.1", port, called_aet="STORESCP").send(folder, on_error="collect")
    assert summary.failed == 6
    assert summary.failures[0].reason.startswith("0xA700 (Refused: Out of Resources")


def test_a_warning_status_counts_as_stored_and_keeps_the_warning(scp: tuple[StorageSCP, int], folder: Path) -> None:
    handler, port = scp
    handler.status = 0xB000
    summary = DICOMCStore("127.0.0.1", port, called_aet="STORESCP").send(folder)
    assert summary.sent == 6
    assert summary.warnings[0][1] == "0xB000 (Coercion of Data Elements)"


def test_more_than_128_sop_class_and_syntax_pairs_go_in_several_associations(tmp_path: Path) -> None:
    for number in range(130):
        (tmp_path / f"{number}.dcm").write_bytes(dicom_bytes(f"1.2.3.{number}", sop_class=f"1.2.840.99.{number}"))
    groups = context_groups(collect(tmp_path).items)
    assert [len(group) for group in groups] == [128, 2]
