"""A C-STORE request written straight onto an association's socket, its data set the file's own bytes.

pynetdicom sends a message by handing each P-DATA-TF PDU to its DUL thread
through two queues and its state machine. Orthanc takes PDUs of at most
16 KB, so a 263 MB study is 16,000 PDUs, and that hand-over cost the sender
five times storescu's CPU. Here one worker thread writes a whole request:

- the command set (PS3.7 9.3.1.1) is encoded here, in Implicit VR Little
  Endian, as PS3.7 6.3.1 requires;
- the data set is the file's bytes after its meta (PS3.10 7.1), never decoded:
  what the peer receives is byte for byte what is stored, whatever the
  transfer syntax (deflated data sets are already deflated in the file);
- both are cut into P-DATA-TF PDUs (PS3.8 9.3.5) no longer than the peer's
  Maximum Length (PS3.8 D.1), a block of about 1 MB per ``sendall``, so
  memory stays flat whatever the size of the instance.

pynetdicom still does everything else: it opened the association, its DUL
thread receives and decodes the response, and its DIMSE queue hands it over.
While a request is written, the association's own reactor is paused as
pynetdicom's ``send_c_store`` pauses it (``_reactor_checkpoint``), so that
the response is not taken off the queue by it. Nothing global is touched:
other pynetdicom code in the process is unaffected.

Only the sending worker writes on the socket while a request is in flight: a
pooled association is lent to one operation at a time, and the DUL thread
sends nothing of its own while established except to end the association
(an abort, a release reply), after which the request fails anyway.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import IO, TYPE_CHECKING

from pydicom.dataset import Dataset

from dicomtrolley._part10 import encode_element, padded, with_group_length

if TYPE_CHECKING:
    from pynetdicom.association import Association

BLOCK_BYTES = 1 << 20
"""About how much of the data set is read, cut into PDUs and sent at once."""

_PDU_HEADER = struct.Struct(">BBIIBB")
"""PDU type 04H, reserved, PDU length, PDV item length, presentation context ID, message control header."""

_COMMAND_LAST = 0x03
_DATA = 0x00
_DATA_LAST = 0x02

_STORE_RQ = 0x0001
_MEDIUM_PRIORITY = 0x0000
_DATA_SET_PRESENT = 0x0001


def command_set(sop_class_uid: str, sop_instance_uid: str, message_id: int) -> bytes:
    """The C-STORE-RQ command set (PS3.7 9.3.1.1), Implicit VR Little Endian, group length first."""
    elements = b"".join((
        encode_element(0x00000002, None, padded(sop_class_uid)),
        encode_element(0x00000100, None, _STORE_RQ.to_bytes(2, "little")),
        encode_element(0x00000110, None, message_id.to_bytes(2, "little")),
        encode_element(0x00000700, None, _MEDIUM_PRIORITY.to_bytes(2, "little")),
        encode_element(0x00000800, None, _DATA_SET_PRESENT.to_bytes(2, "little")),
        encode_element(0x00001000, None, padded(sop_instance_uid)),
    ))
    return with_group_length(elements, 0x00000000, None)


def pdus(payload: bytes, context_id: int, fragment: int, *, command: bool, last: bool) -> list[bytes | memoryview]:
    """``payload`` as P-DATA-TF PDUs of one PDV each, at most ``fragment`` bytes of it per PDU.

    The final fragment is marked last when ``last`` (the payload ends the command or data set).
    """
    view = memoryview(payload)
    parts: list[bytes | memoryview] = []
    for start in range(0, max(len(view), 1), fragment):
        piece = view[start:start + fragment]
        final = last and start + fragment >= len(view)
        control = (_COMMAND_LAST if final else 0x01) if command else (_DATA_LAST if final else _DATA)
        parts.append(_PDU_HEADER.pack(0x04, 0x00, len(piece) + 6, len(piece) + 2, context_id, control))
        parts.append(piece)
    return parts


def fragment_size(assoc: Association) -> int:
    """Data set bytes per PDU: the peer's Maximum Length less the PDV item header (6 bytes); 0 means no limit."""
    maximum = int(assoc.acceptor.maximum_length or 0)
    return maximum - 6 if maximum else BLOCK_BYTES


def send_store(assoc: Association, context_id: int, command: bytes, source: IO[bytes], length: int, *,
               trailer: bytes = b"") -> Dataset:
    """Write one C-STORE request, its data set ``length`` bytes read from ``source``, and wait for the answer.

    ``trailer`` is sent after the data set's bytes, in its last PDU (the NUL
    that pads a deflated data set of odd length, PS3.5 A.5).

    Returns
    -------
    Dataset
        The response's Status and ErrorComment / OffendingElement when the
        peer sent them, as pynetdicom's ``send_c_store`` returns it; empty
        when no answer came within the DIMSE timeout or the association ended.

    Raises
    ------
    OSError
        ``source`` could not be read to the end of the data set: the request
        was cut short, and the association cannot carry another.
    """
    connection = assoc.dul.socket
    sock = connection.socket if connection is not None else None
    if sock is None:
        return Dataset()
    fragment = fragment_size(assoc)
    per_block = max(BLOCK_BYTES // fragment, 1) * fragment
    _pause(assoc)
    try:
        _write(sock, pdus(command, context_id, fragment, command=True, last=True))
        left = length
        while left > 0:
            block = source.read(min(per_block, left))
            if not block:
                raise OSError(f"the file ended {left} bytes before its data set")
            left -= len(block)
            _write(sock, pdus(block + trailer if left == 0 else block, context_id, fragment, command=False,
                              last=left == 0))
        _, response = assoc.dimse.get_msg(block=True)
    except _ConnectionLostError:
        response = None
    finally:
        assoc._reactor_checkpoint.set()
    return _status(response)


class _ConnectionLostError(Exception):
    """The socket failed under a request: the peer closed or reset the connection, or it stalled past the timeout."""


def _write(sock: socket.socket, parts: list[bytes | memoryview]) -> None:
    """Send ``parts`` joined, in as few system calls as the socket takes."""
    try:
        sock.sendall(b"".join(parts))
    except OSError as error:
        raise _ConnectionLostError(str(error)) from error


def _pause(assoc: Association) -> None:
    """Hold the association's reactor at its checkpoint, as pynetdicom does around its own requests."""
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)


def _status(response: object) -> Dataset:
    """The status elements of a C-STORE response; an empty dataset for no (or no valid) response."""
    status = Dataset()
    if response is None or getattr(response, "Status", None) is None:
        return status
    status.Status = response.Status  # type: ignore[attr-defined]
    for keyword in ("ErrorComment", "OffendingElement"):
        value = getattr(response, keyword, None)
        if value is not None:
            setattr(status, keyword, value)
    return status
