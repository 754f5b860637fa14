"""The C-GET / C-MOVE receiver: what it hands the sink when a target is retrieved a second time.

A server such as Orthanc stops a C-GET at the first instance it cannot send,
so which instances came before is up to it: the events are built here.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import build_context, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from dicomtrolley._retrieve_receiver import Receiver, part10
from dicomtrolley.core import InstancePart, StudyReference
from dicomtrolley.dimse_retrieve import DICOMCGet

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def store_event(instance_uid: str, syntax: str = EXPLICIT_LE, dataset: bytes | None = None) -> Event:
    """The event of a C-STORE sub-operation, as pynetdicom hands it to the handler."""
    request = C_STORE()
    request.AffectedSOPClassUID = CT
    request.AffectedSOPInstanceUID = instance_uid
    request.DataSet = BytesIO(dataset if dataset is not None else f"bytes of {instance_uid}".encode())
    context = build_context(CT, syntax)
    context.context_id = 1
    return Event(SimpleNamespace(), evt.EVT_C_STORE, {"request": request, "context": context.as_tuple})  # type: ignore[arg-type]


class Kept:
    """A sink that keeps the bytes of every part it is given, in order."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def __call__(self, part: InstancePart) -> None:
        self.parts.append(part.body.read())


def written(*instance_uids: str) -> list[bytes]:
    """The files the sink is given for these instances."""
    return [part10(store_event(uid)) for uid in instance_uids]


def test_a_target_retrieved_again_hands_the_sink_only_what_it_did_not_take_before() -> None:
    sink = Kept()
    receiver = Receiver(sink, stop_on_failure=True)
    receiver.start(StudyReference("1.2.3"))
    assert receiver.on_store(store_event("1.2.3.1")) == 0x0000

    receiver.again()
    answers = [receiver.on_store(store_event(uid)) for uid in ("1.2.3.1", "1.2.3.2")]

    assert answers == [0x0000, 0x0000]
    assert sink.parts == written("1.2.3.1", "1.2.3.2")
    assert receiver.taken().received == 2  # this retrieve's count: both arrived, one was taken before


class _ServedTwice(DICOMCGet):
    """A C-GET whose server sends the first instance on the try and both on the retry (no network)."""

    def __init__(self, receiver: Receiver) -> None:
        super().__init__("127.0.0.1", 9)
        self.receiver = receiver
        self.tries = 0

    def _send(self, assoc: Any, identifier: Dataset) -> Iterator[tuple[Dataset, Dataset | None]]:
        self.tries += 1
        for uid in ("1.2.3.1", "1.2.3.2")[: self.tries]:
            self.receiver.on_store(store_event(uid))
        final = Dataset()
        final.Status = 0x0000
        yield final, None


def test_a_target_tried_then_retrieved_again_reaches_the_sink_once_per_instance() -> None:
    sink = Kept()
    receiver = Receiver(sink, stop_on_failure=True)
    cget = _ServedTwice(receiver)
    target = StudyReference("1.2.3")
    receiver.start(target)

    cget._retrieve(None, target=target, receiver=receiver)  # type: ignore[arg-type]  # the try
    receiver.again()
    cget._retrieve(None, target=target, receiver=receiver)  # type: ignore[arg-type]  # the retrieve that stands

    assert sink.parts == written("1.2.3.1", "1.2.3.2")


def test_a_new_target_hands_the_sink_every_instance_again() -> None:
    sink = Kept()
    receiver = Receiver(sink, stop_on_failure=True)
    receiver.start(StudyReference("1.2.3"))
    receiver.on_store(store_event("1.2.3.1"))

    receiver.start(StudyReference("1.2.3"))
    receiver.on_store(store_event("1.2.3.1"))

    assert sink.parts == written("1.2.3.1", "1.2.3.1")


@pytest.mark.parametrize(
    ("instance_uid", "syntax"),
    [
        ("1.2.3.4", EXPLICIT_LE),  # even lengths
        ("1.2.3.45", "1.2.840.10008.1.2"),  # odd: padded
        ("1.2.826.0.1.3680043.8.498.1" * 2, "1.2.840.10008.1.2.4.90"),
    ],
)
def test_an_instance_is_written_as_pynetdicom_would_write_it(instance_uid: str, syntax: str) -> None:
    event = store_event(instance_uid, syntax, dataset=b"\x08\x00\x18\x00UI\x02\x001\x00")

    assert part10(event) == event.encoded_dataset()
