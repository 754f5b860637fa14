"""An export to another archive sends its instances in batches, and still answers for each instance alone.

The destination is a second Orthanc, or the fault server where the archive must misbehave (a 202 refusing
one instance of a body, a 413). The archive is made slow on purpose (each request waits a moment before it
goes), with one request at a time, so that instances gather into batches while a request is out.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import requests
from pydicom import dcmread

from dicomtrolley.destination import Destination
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.export.runner import ON_THIS_PROCESS_ONLY
from dicomtrolley.profiles import ServerProfile
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.sending import SendItem, Tally
from dicomtrolley.stow_rs import StowRS
from dicomtrolley.trolley import Trolley
from tests.support.fault_server import Fault, FaultServer, Route
from tests.support.orthanc import OrthancFactory, OrthancServer, stored_files
from tests.support.sample_data import SampleStudy

pytestmark = pytest.mark.integration


class SlowRecordingStowRS(StowRS):
    """STOW-RS that waits a moment before each request, and records the SOPInstanceUIDs of each."""

    def __init__(self, url: str) -> None:
        super().__init__(requests.Session(), url)
        self.requests: list[list[str]] = []
        self._lock = threading.Lock()

    def send_items(self, items: Sequence[SendItem], tally: Tally) -> None:
        with self._lock:
            self.requests.append([item.sop_instance_uid for item in items])
        time.sleep(0.1)
        super().send_items(items, tally)


def trolley_for(server: OrthancServer) -> Trolley:
    return ServerProfile(url=server.dicomweb_url).trolley()


def slow_destination(url: str) -> tuple[SlowRecordingStowRS, Destination]:
    sender = SlowRecordingStowRS(url)
    return sender, Destination(sender, QidoRS(requests.Session(), url), workers=1)


def uids(files: Sequence[bytes]) -> set[str]:
    return {str(dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID) for data in files}


@pytest.fixture
def studies(orthanc: OrthancServer) -> list[SampleStudy]:
    return orthanc.sample.small_studies


def test_a_batched_transfer_arrives_equal_in_fewer_requests_than_instances(
    orthanc: OrthancServer, orthanc_factory: OrthancFactory, studies: list[SampleStudy], tmp_path: Path
) -> None:
    archive = orthanc_factory(load=False)
    sender, destination = slow_destination(archive.dicomweb_url)
    report = trolley_for(orthanc).export([s.uid for s in studies], destination, state_dir=tmp_path, progress=False)
    instances = [i for s in studies for i in s.instances]
    assert report.ok
    assert report.studies_done == len(studies)
    assert sum(len(r) for r in sender.requests) == len(instances)
    assert len(sender.requests) < len(instances)
    assert max(len(r) for r in sender.requests) <= sender.batch_limits.instances
    arrived = stored_files(archive)
    assert set(arrived) == {i.uid for i in instances}
    assert all(arrived[i.uid] == i.path.read_bytes() for i in instances)


def test_an_instance_refused_in_a_batch_fails_alone_named_with_the_archive_reason(
    orthanc: OrthancServer, studies: list[SampleStudy]
) -> None:
    with FaultServer([]) as archive:
        archive.add_fault(Fault.REFUSE, route=Route.STOW_RS, after_parts=1, status=0xA700)  # the first of each body
        sender, destination = slow_destination(archive.dicomweb_url)
        summary = trolley_for(orthanc).download([s.uid for s in studies], destination, on_error="collect",
                                                progress=False)
        stored = uids(archive.stored)
    refused = {request[0] for request in sender.requests}
    assert any(len(request) > 1 for request in sender.requests)  # a batch whose other instances were stored
    assert summary.written == len(stored) == sum(len(s.instances) for s in studies) - len(refused)
    assert not refused & stored
    messages = [str(failure.error) for failure in summary.failures]
    assert len(messages) == len(refused)
    assert {uid for uid in refused if any(uid in m and "0xA700 (out of resources)" in m for m in messages)} == refused


def test_a_413_splits_the_batch_and_every_instance_is_stored(
    orthanc: OrthancServer, studies: list[SampleStudy]
) -> None:
    with FaultServer([]) as archive:
        archive.add_fault(Fault.TOO_LARGE, route=Route.STOW_RS, after_parts=2)  # at most 2 instances a body
        sender, destination = slow_destination(archive.dicomweb_url)
        summary = trolley_for(orthanc).download([s.uid for s in studies], destination, on_error="collect",
                                                progress=False)
        refused = [seen for seen in archive.seen if seen.route is Route.STOW_RS and seen.fault is Fault.TOO_LARGE]
        stored = uids(archive.stored)
    assert any(len(request) > 2 for request in sender.requests)
    assert refused
    assert summary.ok
    assert stored == {i.uid for s in studies for i in s.instances}


def test_a_rerun_of_a_batched_transfer_sends_nothing(
    orthanc: OrthancServer, orthanc_factory: OrthancFactory, studies: list[SampleStudy], tmp_path: Path
) -> None:
    archive = orthanc_factory(load=False)
    first, destination = slow_destination(archive.dicomweb_url)
    trolley_for(orthanc).export([s.uid for s in studies], destination, state_dir=tmp_path / "a", progress=False)
    again, destination = slow_destination(archive.dicomweb_url)
    report = trolley_for(orthanc).export([s.uid for s in studies], destination, state_dir=tmp_path / "b",
                                         progress=False)
    assert any(len(request) > 1 for request in first.requests)
    assert report.ok
    assert report.studies_done == len(studies)
    assert again.requests == []


def test_an_export_to_an_archive_on_an_executor_of_other_processes_is_refused_naming_why(
    orthanc: OrthancServer, studies: list[SampleStudy], tmp_path: Path
) -> None:
    sender = SlowRecordingStowRS("http://127.0.0.1:9/dicom-web")  # discard port: nothing listens
    with ProcessPoolExecutor(1) as executor, pytest.raises(DICOMTrolleyError) as refused:
        trolley_for(orthanc).export([studies[0].uid], sender, state_dir=tmp_path, executor=executor, progress=False)
    assert "not on an executor that ships tasks elsewhere (Dask)" in str(refused.value)
    assert ON_THIS_PROCESS_ONLY in str(refused.value)
    assert "\n" not in str(refused.value)
    assert sender.requests == []

