"""The C-GET / C-MOVE receiver: what it hands the sink when a target is retrieved a second time.

A server such as Orthanc stops a C-GET at the first instance it cannot send,
so which instances came before is up to it: the events are built here.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from dicomtrolley._retrieve_receiver import Receiver
from dicomtrolley.core import InstancePart, StudyReference

EXPLICIT_LE = "1.2.840.10008.1.2.1"


def store_event(instance_uid: str) -> Any:
    """What a C-STORE sub-operation gives the handler, as far as the receiver reads it."""
    return SimpleNamespace(
        request=SimpleNamespace(AffectedSOPInstanceUID=instance_uid),
        context=SimpleNamespace(transfer_syntax=EXPLICIT_LE),
        encoded_dataset=lambda: f"bytes of {instance_uid}".encode(),
    )


class Kept:
    """A sink that keeps the bytes of every part it is given, in order."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def __call__(self, part: InstancePart) -> None:
        self.parts.append(part.body.read())


def test_a_target_retrieved_again_hands_the_sink_only_what_it_did_not_take_before() -> None:
    sink = Kept()
    receiver = Receiver(sink, stop_on_failure=True)
    receiver.start(StudyReference("1.2.3"))
    assert receiver.on_store(store_event("1.2.3.1")) == 0x0000

    receiver.again()
    answers = [receiver.on_store(store_event(uid)) for uid in ("1.2.3.1", "1.2.3.2")]

    assert answers == [0x0000, 0x0000]
    assert sink.parts == [b"bytes of 1.2.3.1", b"bytes of 1.2.3.2"]
    assert receiver.taken().received == 2  # this retrieve's count: both arrived, one was taken before


def test_a_new_target_hands_the_sink_every_instance_again() -> None:
    sink = Kept()
    receiver = Receiver(sink, stop_on_failure=True)
    receiver.start(StudyReference("1.2.3"))
    receiver.on_store(store_event("1.2.3.1"))

    receiver.start(StudyReference("1.2.3"))
    receiver.on_store(store_event("1.2.3.1"))

    assert sink.parts == [b"bytes of 1.2.3.1"] * 2
