"""How a Destination gathers instances saved at the same time into batches, and answers for each alone.

A fake sender stands in for the archive (these are the rules of the batching, not of a protocol): the
tests with real servers are in test_destination_batches.py and test_export_destination.py.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterable
from typing import Literal

import pytest

from dicomtrolley.core import FetchFailure, InstancePart, Query, Study
from dicomtrolley.destination import Destination
from dicomtrolley.exceptions import StorageError
from dicomtrolley.progress import ProgressCallback
from dicomtrolley.roles import BatchLimits, SavedInstance, Searcher, Sender
from dicomtrolley.sending import Sendable, SendFailure, SendSummary, collect
from tests.support.dicom_files import dicom_bytes


class Archive(Sender):
    """Records each call's SOPInstanceUIDs; the first call waits for ``go``; refuses the UIDs in ``refuse``."""

    def __init__(self, refuse: Iterable[str] = (), fail_first: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.go = threading.Event()
        self.refuse = set(refuse)
        self.fail_first = fail_first

    @property
    def batch_limits(self) -> BatchLimits:
        return BatchLimits(instances=8, bytes=1 << 20)

    def send(
        self, items: Sendable | Iterable[Sendable], *, on_error: Literal["raise", "collect"] = "raise",
        progress: bool | ProgressCallback | None = False,
    ) -> SendSummary:
        found = collect(items).items
        self.calls.append([item.sop_instance_uid for item in found])
        if len(self.calls) == 1:
            self.go.wait(5)
            if self.fail_first:
                raise RuntimeError("the sender broke")
        failures = [SendFailure(i.name, i.sop_instance_uid, "refused: 0xA700") for i in found
                    if i.sop_instance_uid in self.refuse]
        return SendSummary(sent=len(found) - len(failures), failures=failures)


class Nothing(Searcher):
    def find_studies(self, query: Query) -> list[Study]:
        return []


def part(number: int) -> InstancePart:
    data = dicom_bytes(f"1.2.3.{number}")
    return InstancePart(io.BytesIO(data), len(data))


def save_at_once(destination: Destination, count: int) -> list[SavedInstance | StorageError]:
    """``count`` instances saved from as many threads; the archive's first request waits until all are queued."""
    outcomes: list[SavedInstance | StorageError] = [StorageError("not saved")] * count

    def save(number: int) -> None:
        try:
            outcomes[number] = destination.save(part(number))
        except StorageError as error:
            outcomes[number] = error

    threads = [threading.Thread(target=save, args=(number,)) for number in range(count)]
    threads[0].start()
    time.sleep(0.2)  # the first instance goes alone, while the request slot is free
    for thread in threads[1:]:
        thread.start()
    time.sleep(0.5)  # the others queue behind the one request slot
    assert isinstance(destination.sender, Archive)
    destination.sender.go.set()
    for thread in threads:
        thread.join(10)
    return outcomes


def test_instances_saved_while_a_request_is_out_go_in_batches_of_the_senders_limits() -> None:
    archive = Archive()
    outcomes = save_at_once(Destination(archive, Nothing(), workers=1), 10)
    assert [len(call) for call in archive.calls] == [1, 8, 1]
    assert sorted(uid for call in archive.calls for uid in call) == sorted(f"1.2.3.{n}" for n in range(10))
    assert all(isinstance(outcome, SavedInstance) for outcome in outcomes)


def test_an_instance_the_archive_refuses_fails_alone_and_its_batch_is_saved() -> None:
    archive = Archive(refuse={"1.2.3.4"})
    outcomes = save_at_once(Destination(archive, Nothing(), workers=1), 10)
    failed = {number: outcome for number, outcome in enumerate(outcomes) if isinstance(outcome, StorageError)}
    assert list(failed) == [4]
    assert "did not store 1.2.1/1.2.1.1/1.2.3.4: refused: 0xA700" in str(failed[4])
    assert any(len(call) > 1 and "1.2.3.4" in call for call in archive.calls)


def test_a_sender_that_raises_gives_its_request_slot_back() -> None:
    archive = Archive(fail_first=True)
    archive.go.set()
    destination = Destination(archive, Nothing(), workers=1)
    with pytest.raises(RuntimeError, match="the sender broke"):
        destination.save(part(1))
    saved = destination.save(part(2))
    assert saved.reference.instance_uid == "1.2.3.2"
    assert archive.calls == [["1.2.3.1"], ["1.2.3.2"]]


def test_the_threads_that_send_handed_over_parts_stop_when_the_last_download_ends() -> None:
    archive = Archive()
    archive.go.set()
    destination = Destination(archive, Nothing(), workers=2)
    failures: list[FetchFailure] = []

    def sending() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name.startswith("dicomtrolley-destination")}

    def save(part: InstancePart) -> None:
        destination.save(part)

    with destination.parallel(save, failures) as first, destination.parallel(save, failures):
        for number in range(6):
            first(part(number))
        assert sending()
    assert not sending()
    assert not failures
    assert sorted(uid for call in archive.calls for uid in call) == sorted(f"1.2.3.{n}" for n in range(6))


def test_a_batch_closes_at_its_count_or_before_an_instance_that_would_overflow_its_bytes() -> None:
    limits = BatchLimits(instances=3, bytes=100)
    assert not limits.closes(0, 0, 500)  # an instance larger than the limit still goes, alone
    assert limits.closes(1, 500, 1)
    assert not limits.closes(2, 60, 40)
    assert limits.closes(2, 60, 41)
    assert limits.closes(3, 3, 1)
    assert BatchLimits().closes(1, 1, 1)  # one instance a request by default
