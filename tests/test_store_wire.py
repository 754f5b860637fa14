"""The bytes of a C-STORE request as written onto the socket: its command set and its P-DATA-TF PDUs."""

from __future__ import annotations

from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset

from dicomtrolley._store_wire import command_set, pdus


def _pdu_fields(pdu_header: bytes) -> tuple[int, int, int, int, int]:
    """PDU type, PDU length, PDV item length, presentation context ID, message control header."""
    return (pdu_header[0], int.from_bytes(pdu_header[2:6], "big"), int.from_bytes(pdu_header[6:10], "big"),
            pdu_header[10], pdu_header[11])


def test_the_command_set_reads_back_as_a_c_store_request_with_its_group_length() -> None:
    encoded = command_set("1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", 7)
    command = read_dataset(DicomBytesIO(encoded), is_implicit_VR=True, is_little_endian=True)
    assert command.CommandGroupLength == len(encoded) - 12
    assert command.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert command.AffectedSOPInstanceUID == "1.2.3.45"
    assert (command.CommandField, command.MessageID, command.Priority, command.CommandDataSetType) == (1, 7, 0, 1)


def test_uids_of_odd_length_are_padded_with_a_nul() -> None:
    encoded = command_set("1.2.3", "1.2.34", 1)
    assert b"1.2.3\0" in encoded
    assert len(encoded) % 2 == 0


def test_a_data_set_is_cut_into_pdus_of_at_most_the_fragment_the_last_one_marked() -> None:
    payload = bytes(range(256)) * 10  # 2,560 bytes
    parts = pdus(payload, 3, 1000, command=False, last=True)
    headers, pieces = parts[::2], parts[1::2]
    assert [_pdu_fields(bytes(h)) for h in headers] == [
        (0x04, 1006, 1002, 3, 0x00), (0x04, 1006, 1002, 3, 0x00), (0x04, 566, 562, 3, 0x02)]
    assert b"".join(pieces) == payload


def test_a_block_that_does_not_end_the_data_set_has_no_last_fragment() -> None:
    parts = pdus(b"ab" * 600, 1, 1000, command=False, last=False)
    assert [bytes(h)[11] for h in parts[::2]] == [0x00, 0x00]


def test_a_command_set_is_marked_as_a_command_and_last() -> None:
    parts = pdus(b"\0" * 10, 5, 1000, command=True, last=True)
    assert _pdu_fields(bytes(parts[0])) == (0x04, 16, 12, 5, 0x03)
