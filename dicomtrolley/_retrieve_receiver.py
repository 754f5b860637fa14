"""The receiving end of a C-GET or C-MOVE: C-STORE sub-operations handed to the sink.

A retrieve's instances arrive as C-STORE requests: on the association the
client opened (C-GET) or on associations the server opens to the client's
Storage SCP (C-MOVE). :class:`Receiver` turns each into an
:class:`~dicomtrolley.core.InstancePart` of the bytes as sent (the file meta
information pynetdicom builds, then the dataset, never decoded and
re-encoded) and answers the server for the sink; :func:`accept_senders_syntax`
makes a move destination take every SOP class in the syntax it is sent in.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING

from dicomtrolley._part10 import encode_element, padded, with_group_length
from dicomtrolley.core import InstancePart, InstanceReference, PartSink, Reference, SeriesReference
from dicomtrolley.exceptions import DICOMTrolleyError, OutputFolderError

if TYPE_CHECKING:
    from pynetdicom.events import Event

logger = logging.getLogger(__name__)

STORE_FAILED = 0x0110
"""The C-STORE status we answer when the sink could not take an instance (Processing Failure)."""


@dataclass(frozen=True)
class Taken:
    """What the receiver saw of one target: instances the sink took, its errors, connections to us."""

    received: int
    errors: list[Exception]
    connections: int


class Receiver:
    """Takes the C-STORE sub-operations of a retrieve and hands each instance to the sink.

    For C-GET it runs in the thread that called ``fetch`` (pynetdicom serves
    the C-STOREs while it waits for C-GET responses); for C-MOVE in one
    pynetdicom thread per association the server opens to us. Its state
    therefore sits behind a lock.
    """

    def __init__(self, sink: PartSink, stop_on_failure: bool) -> None:
        self.sink = sink
        self.stop_on_failure = stop_on_failure
        self.lock = threading.Lock()
        self.target: Reference | None = None
        self.received = 0
        self.errors: list[Exception] = []
        self.connections = 0
        self.closed = False
        self.delivered: set[str] = set()
        """SOPInstanceUIDs of the current target the sink took, kept across :meth:`again`."""

    def start(self, target: Reference) -> None:
        """Begin a new target: count and record errors afresh."""
        with self.lock:
            self.target = target
            self.received = 0
            self.errors = []
            self.connections = 0
            self.delivered = set()

    def again(self) -> None:
        """Retrieve the current target once more: count afresh, but what the sink took already is not sent to it twice.

        A C-GET tried on an association that lacked a context for some of the
        study's instances brought the others; the second try brings them all.
        """
        with self.lock:
            self.received = 0
            self.errors = []
            self.connections = 0

    def taken(self) -> Taken:
        """A snapshot of what arrived for the current target."""
        with self.lock:
            return Taken(self.received, list(self.errors), self.connections)

    def close(self) -> None:
        """Take no more instances: whatever arrives after the fetch is refused."""
        with self.lock:
            self.closed = True

    def on_connection(self, _event: Event) -> None:
        """Count the associations the server opens to us (C-MOVE)."""
        with self.lock:
            self.connections += 1

    def on_store(self, event: Event) -> int:
        """Hand one instance to the sink; answer 0x0000, or a failure if the sink raised."""
        with self.lock:
            target = self.target
            fatal = any(ends_retrieve(error) for error in self.errors)
            refuse = self.closed or fatal or (self.stop_on_failure and bool(self.errors))
        if refuse:
            return STORE_FAILED
        instance_uid = str(event.request.AffectedSOPInstanceUID)  # type: ignore[union-attr]
        with self.lock:
            if instance_uid in self.delivered:  # taken on an earlier try of this target
                self.received += 1
                return 0x0000
        stream = part10(event)
        part = InstancePart(
            BytesIO(stream),
            len(stream),
            f"application/dicom; transfer-syntax={event.context.transfer_syntax}",
            source=target,
            reference=_known_reference(target, instance_uid),
        )
        try:
            self.sink(part)
        except Exception as error:  # noqa: BLE001 - recorded, answered with a failure, raised to the caller
            logger.info("Could not take instance %s: %s", instance_uid, error)
            with self.lock:
                self.errors.append(error)
            return STORE_FAILED
        finally:
            part.close()
        with self.lock:
            self.received += 1
            self.delivered.add(instance_uid)
        return 0x0000


def part10(event: Event) -> bytes:
    """The instance of a C-STORE request as a Part-10 file, byte for byte what ``event.encoded_dataset()`` gives.

    The preamble, the file meta information pynetdicom would write, then the
    dataset as sent; the meta elements are encoded here rather than by
    pydicom's writer, which costs more per small instance than the rest of its way to disk.
    """
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

    request = event.request
    meta = file_meta_information(
        str(request.AffectedSOPClassUID),
        str(request.AffectedSOPInstanceUID),  # type: ignore[union-attr]
        str(event.context.transfer_syntax),
        str(PYNETDICOM_IMPLEMENTATION_UID),
        PYNETDICOM_IMPLEMENTATION_VERSION,
    )
    return b"".join((bytes(128), b"DICM", meta, request.DataSet.getvalue()))  # type: ignore[union-attr]


def file_meta_information(
    sop_class: str, sop_instance: str, transfer_syntax: str, implementation_uid: str, implementation_version: str
) -> bytes:
    """The File Meta Information group (PS3.10 7.1), explicit VR little endian, group length first."""
    elements = b"".join((
        encode_element(0x00020001, "OB", b"\x00\x01"),
        encode_element(0x00020002, "UI", padded(sop_class)),
        encode_element(0x00020003, "UI", padded(sop_instance)),
        encode_element(0x00020010, "UI", padded(transfer_syntax)),
        encode_element(0x00020012, "UI", padded(implementation_uid)),
        encode_element(0x00020013, "SH", padded(implementation_version, b" ")),
    ))
    return with_group_length(elements, 0x00020000, "UL")


def ends_retrieve(error: Exception) -> bool:
    """A bug (not a DICOMTrolleyError), or an output folder that takes nothing more: the retrieve is aborted."""
    return not isinstance(error, DICOMTrolleyError) or isinstance(error, OutputFolderError)


def _known_reference(target: Reference | None, instance_uid: str) -> InstanceReference | None:
    """The instance's reference when the target names its series; a study target would need the dataset."""
    if isinstance(target, InstanceReference):
        return target
    if isinstance(target, SeriesReference):
        return InstanceReference(target.study_uid, target.series_uid, instance_uid)
    return None


def accept_senders_syntax(event: Event) -> None:
    """Make a Storage SCP take every SOP class offered, each in the first transfer syntax offered that it reads.

    pynetdicom accepts the first syntax of the acceptor's own list that the
    requestor offers, so a sender offering [explicit LE, explicit BE, implicit LE]
    would be made to transcode to implicit LE; and it refuses a SOP class the
    acceptor does not list (a retired or private one), so the instance would be
    lost. A move destination asked for these instances: handled on
    ``EVT_REQUESTED``, before negotiation, the supported contexts become what
    the sender offers, in its order, within the transfer syntaxes supported.
    """
    from pynetdicom import build_context

    acceptor = event.assoc.acceptor
    readable = {str(syntax) for context in acceptor.supported_contexts for syntax in context.transfer_syntax}
    order: dict[str, list[str]] = {}
    for context in event.assoc.requestor.primitive.presentation_context_definition_list:  # type: ignore[union-attr]
        if not _served_as_storage(str(context.abstract_syntax)):
            continue
        listed = order.setdefault(str(context.abstract_syntax), [])
        listed += [s for s in map(str, context.transfer_syntax) if s in readable and s not in listed]
    if any(order.values()):
        acceptor.supported_contexts = [build_context(sop, syntaxes) for sop, syntaxes in order.items() if syntaxes]


def _served_as_storage(sop_class: str) -> bool:
    """True when pynetdicom takes C-STOREs of ``sop_class``; a class it does not know
    (retired, private) is registered as a storage class first, as its docs advise,
    since it would otherwise abort the association at the first such instance."""
    from pynetdicom.service_class import ServiceClass, StorageServiceClass
    from pynetdicom.sop_class import register_uid, uid_to_service_class

    service = uid_to_service_class(sop_class)
    if service is ServiceClass:
        register_uid(sop_class, "DicomtrolleyStorage" + sop_class.replace(".", "_"), StorageServiceClass)
        return True
    return service is StorageServiceClass
