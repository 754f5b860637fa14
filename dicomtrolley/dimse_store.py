"""C-STORE (DICOM PS3.4 Annex B, PS3.7 9.1.1): store instances in an archive over DIMSE.

:class:`DICOMCStore` proposes presentation contexts from the instances
themselves: one per (SOP class, transfer syntax) pair found in their file
meta, so every instance goes out in the syntax it is stored in, never
transcoded. More than 128 pairs (the most an association carries) are sent
over several associations in turn. An instance whose pair the peer refused
fails alone, with that reason; the others go on.

Each instance is sent as it is stored: its data set is the file's bytes after
its meta, never decoded, written onto the association's socket by
:mod:`dicomtrolley._store_wire` (pynetdicom's own path cost five times
storescu's CPU for the same files). A data set of odd length, which only an
element of odd length gives (PS3.5 7.1.1 forbids them), fails alone before
it is sent, since a peer may wait for the missing byte until its timeout
(Orthanc does); a deflated one is padded with a NUL, as PS3.5 A.5 says.

Needs pynetdicom (``pip install dicomtrolley[dimse]``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import IO, TYPE_CHECKING

from dicomtrolley._associations import Proposal
from dicomtrolley._dimse import (
    DEFAULT_ACSE_TIMEOUT,
    DEFAULT_AEC,
    DEFAULT_AET,
    DEFAULT_DIMSE_TIMEOUT,
    DEFAULT_NETWORK_TIMEOUT,
    DIMSEPeer,
    status_category,
    status_text,
)
from dicomtrolley._get_contexts import MAX_PRESENTATION_CONTEXTS
from dicomtrolley._store_wire import command_set, send_store
from dicomtrolley.exceptions import ConnectionFailedError, DIMSEError
from dicomtrolley.sending import META_BYTES, InstanceSender, SendItem, Tally, dataset_offset

if TYPE_CHECKING:
    from pynetdicom.association import Association

logger = logging.getLogger(__name__)

ASSOCIATION_ATTEMPTS = 3
"""Associations a worker opens in all when the peer ends one before every instance was answered."""

DEFLATED = "1.2.840.10008.1.2.1.99"
"""Deflated Explicit VR Little Endian: a data set of odd length is padded with a NUL (PS3.5 A.5)."""

Pair = tuple[str, str]
"""(SOP class UID, transfer syntax UID): what one presentation context proposes."""


def context_groups(items: Sequence[SendItem], limit: int = MAX_PRESENTATION_CONTEXTS) -> list[list[SendItem]]:
    """``items`` in groups whose (SOP class, transfer syntax) pairs fit in one association each.

    Pairs are taken in the order they first appear; the items keep their order within a group.
    """
    group_of: dict[Pair, int] = {}
    groups: list[list[SendItem]] = []
    for item in items:
        pair = (item.sop_class_uid, item.transfer_syntax)
        if pair not in group_of:
            group_of[pair] = len(group_of) // limit
            if group_of[pair] == len(groups):
                groups.append([])
        groups[group_of[pair]].append(item)
    return groups


def _shards(items: Sequence[SendItem], count: int) -> Iterator[list[SendItem]]:
    """``items`` in ``count`` runs of about equal length (fewer when there are fewer items)."""
    size, extra = divmod(len(items), count)
    start = 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        if end > start:
            yield list(items[start:end])
        start = end


class DICOMCStore(DIMSEPeer, InstanceSender):
    """Send instances to a Storage SCP with C-STORE, on ``workers`` associations at once.

    Parameters
    ----------
    host, port
        The peer's DICOM address.
    aet
        Our (calling) AE title.
    called_aet
        The peer's AE title.
    workers
        Associations open at once, each sending its share of the instances.
    acse_timeout, dimse_timeout, network_timeout
        Seconds to have the association accepted, to wait for each C-STORE
        response, and an association may stay silent (see :class:`~dicomtrolley._dimse.DIMSEPeer`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        aet: str = DEFAULT_AET,
        called_aet: str = DEFAULT_AEC,
        workers: int = 2,
        acse_timeout: float = DEFAULT_ACSE_TIMEOUT,
        dimse_timeout: float | None = DEFAULT_DIMSE_TIMEOUT,
        network_timeout: float | None = DEFAULT_NETWORK_TIMEOUT,
    ) -> None:
        super().__init__(host, port, aet, called_aet, acse_timeout=acse_timeout, dimse_timeout=dimse_timeout,
                         network_timeout=network_timeout)
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.workers = workers

    def __repr__(self) -> str:
        return f"DICOMCStore({self.address!r}, aet={self.aet!r}, workers={self.workers})"

    @property
    def destination(self) -> str:
        """``AEC@host:port``."""
        return self.address

    def send_items(self, items: Sequence[SendItem], tally: Tally) -> None:
        """Send every group of items on :attr:`workers` associations; each instance ends in ``tally``.

        Every association of a group proposes the whole group's contexts, so
        which worker sends an instance never decides whether it can go.
        """
        for group in context_groups(items):
            pairs = list(dict.fromkeys((item.sop_class_uid, item.transfer_syntax) for item in group))
            shards = list(_shards(group, self.workers))
            if len(shards) == 1:
                self._send_shard(shards[0], pairs, tally)
                continue
            with ThreadPoolExecutor(max_workers=len(shards), thread_name_prefix="dicomtrolley-cstore") as pool:
                for _ in pool.map(self._send_shard, shards, [pairs] * len(shards), [tally] * len(shards)):
                    pass

    def _send_shard(self, items: list[SendItem], pairs: list[Pair], tally: Tally) -> None:
        """Send ``items`` in order on a pooled association proposing ``pairs`` (or more).

        When the peer ends the association before answering (an abort, a
        timeout, a server that closes idle associations), another is opened
        for the instance without an answer and those after it, up to
        :data:`ASSOCIATION_ATTEMPTS` associations in all; storing an instance
        twice stores it once. A pooled association the peer had dropped before
        the first instance does not count.
        """
        proposal = Proposal(tuple((sop_class, (syntax,)) for sop_class, syntax in pairs))
        left = items
        for attempt in range(1, ASSOCIATION_ATTEMPTS + 1):
            try:
                left = self.run_pooled(proposal, partial(self._send_on, items=left, tally=tally),
                                       answered=partial(_answered_any, left))
            except DIMSEError as error:
                for item in left:
                    tally.failed(item, str(error), unreachable=isinstance(error, ConnectionFailedError))
                return
            if not left:
                return
            logger.warning("%s ended the association with %d instances left; %s", self.address, len(left),
                           "opening another" if attempt < ASSOCIATION_ATTEMPTS else "giving up")
        for item in left:
            tally.failed(item, f"{self.address} ended the association {ASSOCIATION_ATTEMPTS} times "
                               "before this instance was stored")

    def _send_on(self, assoc: Association, *, items: list[SendItem], tally: Tally) -> list[SendItem]:
        """Send ``items`` on one association; return those left when the association ended first."""
        contexts = {(str(c.abstract_syntax), str(c.transfer_syntax[0])): int(c.context_id or 0)
                    for c in assoc.accepted_contexts}
        for number, item in enumerate(items):
            if not (assoc.is_established and self._send_one(assoc, item, contexts, number, tally)):
                # Over, though pynetdicom may not say so yet: aborted now, it never goes back to the pool
                # (lent again, it would wait the whole DIMSE timeout for an answer that cannot come).
                assoc.abort()
                return items[number:]
        return []

    def _send_one(self, assoc: Association, item: SendItem, contexts: dict[Pair, int], number: int,
                  tally: Tally) -> bool:
        """C-STORE one instance as it is stored and file the peer's answer; False when no answer came."""
        context_id = contexts.get((item.sop_class_uid, item.transfer_syntax))
        if context_id is None:
            tally.failed(item, f"{self.address} accepted no presentation context for SOP class "
                               f"{item.sop_class_uid} in transfer syntax {item.transfer_syntax}")
            return True
        command = command_set(item.sop_class_uid, item.sop_instance_uid, number % 0xFFFF + 1)
        try:
            with _data_set(item) as (file, length):
                status = send_store(assoc, context_id, command, file, length, trailer=b"\0" * (length % 2))
        except _UnsendableError as error:
            tally.failed(item, str(error))
            return True
        except OSError:  # the file failed midway: the request is cut short and the association unusable
            return False
        if "Status" not in status:  # no answer within the DIMSE timeout, or the association ended
            return False
        category = status_category(int(status.Status))
        if category == "Success":
            tally.delivered(item)
        elif category == "Warning":
            tally.delivered(item, status_text(status, "store"))
        else:
            tally.failed(item, status_text(status, "store"))
        return True


class _UnsendableError(Exception):
    """The file cannot be read or sent as it is stored; the instance fails alone, with this reason."""


def _answered_any(sent: list[SendItem], left: list[SendItem]) -> bool:
    """True when the association took at least one of the items ``sent`` on it before it ended."""
    return len(left) < len(sent)


@contextmanager
def _data_set(item: SendItem) -> Iterator[tuple[IO[bytes], int]]:
    """The instance's file, open at the start of its data set, and the data set's length in bytes.

    Raises
    ------
    _UnsendableError
        Before anything is sent: the file cannot be read, its file meta not
        walked to its end, or its data set is empty or of odd length (only an
        element of odd length gives one, which PS3.5 7.1.1 forbids; a peer
        may wait for the missing byte until its timeout, as Orthanc does).
        A deflated data set of odd length is padded instead (PS3.5 A.5).
    """
    try:
        file = item.open()
    except OSError as error:
        raise _UnsendableError(f"cannot be read: {error.strerror or error}") from error
    with file:
        length = _skip_meta(file)
        if length % 2 and item.transfer_syntax != DEFLATED:
            raise _UnsendableError(f"cannot be sent as stored: its data set is {length} bytes long, an odd number "
                                   "(an element has an odd length, which PS3.5 7.1.1 forbids)")
        yield file, length


def _skip_meta(file: IO[bytes]) -> int:
    """Leave ``file`` at the start of its data set; return the data set's length in bytes.

    Raises
    ------
    _UnsendableError
        The file cannot be read, its file meta not walked to its end, or it holds no data set.
    """
    try:
        head = file.read(META_BYTES)
        end = file.seek(0, io.SEEK_END)
        if len(head) < end and dataset_offset(head) is None:  # a file meta longer than the usual head
            file.seek(0)
            head = file.read()
        offset = dataset_offset(head)
        file.seek(offset or 0)
    except OSError as error:
        raise _UnsendableError(f"cannot be read: {error.strerror or error}") from error
    if offset is None:
        raise _UnsendableError("cannot be read: its file meta cannot be read to its end")
    if offset >= end:
        raise _UnsendableError("cannot be read: it holds no data set after its file meta")
    return end - offset
