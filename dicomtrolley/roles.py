"""The roles a download joins: a :class:`Searcher` finds studies, a :class:`Downloader` fetches them,
a :class:`Storage` is where they go; and a :class:`Sender` stores instances in an archive.

A :class:`~dicomtrolley.trolley.Trolley` joins a searcher, a downloader and a
storage and knows nothing else of the protocols behind them; each protocol
module (QIDO-RS, WADO-RS, C-FIND, C-GET, STOW-RS, C-STORE, ...) implements
one role on the model of :mod:`dicomtrolley.core`, and each storage (a
folder, the pseudonymising wrapper, another archive) implements the third.
"""

from __future__ import annotations

import contextlib
import io
from abc import ABC, abstractmethod
from collections.abc import Collection, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias

from pydicom.dataset import Dataset

from dicomtrolley._concurrency import fetch_datasets
from dicomtrolley.core import (
    DICOMObjectLevels,
    Downloadable,
    FetchFailure,
    Instance,
    InstancePart,
    InstanceReference,
    PartSink,
    Query,
    QueryLevels,
    Reference,
    Study,
    as_list,
    lend_roles,
    to_reference,
)
from dicomtrolley.exceptions import (
    AmbiguousQueryError,
    DICOMTrolleyError,
    MalformedResponseError,
    NoQueryResultsError,
    StorageError,
)


@dataclass(frozen=True)
class ProfileParts:
    """What of a :class:`~dicomtrolley.profiles.ServerProfile` builds one searcher or downloader.

    Parameters
    ----------
    fields
        The profile's fields for it: its kind, its address, its settings.
    http
        Its HTTP client (a ``dicomtrolley._http.HTTPClient``), whose login, TLS and
        timeouts the profile describes too; ``None`` for a DIMSE peer.
    """

    fields: Mapping[str, Any]
    http: Any = None


def _refuse_profile(role: str, part: object) -> ProfileParts:
    raise DICOMTrolleyError(f"A profile cannot describe the {role} {type(part).__name__} ({part!r})")

if TYPE_CHECKING:
    from dicomtrolley.progress import ProgressCallback
    from dicomtrolley.sending import Sendable, SendSummary


class Searcher(ABC):
    """Something that finds studies: QIDO-RS, C-FIND, MINT."""

    result_cap: int | None = None
    """The most results the server gives for one search, when known (a server profile's
    ``search_cap``): an answer that large is taken as cut, and a date range is split
    (:mod:`dicomtrolley.capped`). None: the round numbers servers cap at are watched for."""

    @abstractmethod
    def find_studies(self, query: Query) -> list[Study]:
        """Every study matching ``query``, with series and instances down to its query level."""

    def find_study(self, query: Query) -> Study:
        """The one study matching ``query``.

        Raises
        ------
        NoQueryResultsError
            Nothing matched.
        AmbiguousQueryError
            More than one study matched.
        """
        studies = self.find_studies(query)
        if not studies:
            raise NoQueryResultsError(f"No study matches {query.to_short_string()}")
        if len(studies) > 1:
            raise AmbiguousQueryError(
                f"{len(studies)} studies match {query.to_short_string()}, expected exactly one"
            )
        return studies[0]

    def describe(self) -> ProfileParts:
        """The profile fields that build a searcher like this one (what an export ships to other processes).

        Raises
        ------
        DICOMTrolleyError
            A profile cannot describe this searcher, or one of its settings; by default none can.
        """
        return _refuse_profile("searcher", self)

    def find_study_by_id(
        self, study_uid: str, query_level: QueryLevels = QueryLevels.STUDY
    ) -> Study:
        """The study with this StudyInstanceUID, searched down to ``query_level``."""
        return self.find_study(Query(StudyInstanceUID=study_uid, query_level=query_level))


class Downloader(ABC):
    """Something that fetches instances: WADO-RS, WADO-URI, C-GET, C-MOVE.

    Subclasses implement :meth:`fetch`; :meth:`datasets` is built on it.
    """

    finest_level_needed: ClassVar[DICOMObjectLevels] = DICOMObjectLevels.STUDY
    """The finest level the downloader needs references at (WADO-URI needs instances)."""

    @abstractmethod
    def fetch(
        self, targets: Sequence[Reference], sink: PartSink, *, stop_on_failure: bool = True
    ) -> list[FetchFailure]:
        """Fetch ``targets`` and hand every instance to ``sink`` as it arrives.

        Work runs on a bounded pool of workers; ``sink`` is called from them.
        A target that fails is returned as a :class:`FetchFailure` (parts it
        delivered before failing stay delivered). With ``stop_on_failure``
        no new target is started after the first failure.
        """

    def describe(self) -> ProfileParts:
        """As :meth:`Searcher.describe`, for a downloader: WADO-RS, WADO-URI, RAD-69, C-GET and C-MOVE can.

        A downloader of another kind is refused by name (a ``DICOMTrolleyError``).
        """
        return _refuse_profile("downloader", self)

    def report(self) -> dict[str, int]:
        """Counts the protocol itself keeps about the last :meth:`fetch` (C-GET's
        sub-operations, say), for the download summary; none by default."""
        return {}

    def datasets(self, objects: Downloadable | Iterable[Downloadable]) -> Iterator[Dataset]:
        """Yield a pydicom Dataset for every instance in ``objects`` (one object or several).

        Raises the first failure once the parts fetched before it were yielded.
        """
        targets = [to_reference(o) for o in as_list(objects)]
        yield from fetch_datasets(lambda sink: self.fetch(targets, sink, stop_on_failure=True))

    def get_dataset(self, instance: InstanceReference | Instance) -> Dataset:
        """Fetch one instance as a pydicom Dataset (4.x's single-instance call).

        Raises
        ------
        DICOMTrolleyError
            The fetch failed, the bytes are not DICOM, or the server sent nothing.
        """
        datasets = self.datasets(instance)
        try:
            return next(datasets)
        except StopIteration:
            raise MalformedResponseError(f"The server sent no instance for {instance}") from None
        finally:
            if isinstance(datasets, Generator):
                datasets.close()  # ends the fetch now, not when the generator is collected



lend_roles(Searcher, Downloader)  # 4.x imported them from dicomtrolley.core

Attributes: TypeAlias = Mapping[str, Any] | Dataset
"""An instance's attributes by keyword: a search result's, a header's, or a pydicom Dataset."""


@dataclass(frozen=True)
class SavedInstance:
    """One instance a :class:`Storage` saved: what it was, where it went, what its header said."""

    reference: InstanceReference
    path: Path
    size: int
    transfer_syntax: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    """The index keywords and template fields the instance has, as read from its header."""
    relative: str = ""
    """Where it went below the storage's folder, folders separated by ``/``: the text the storage
    rendered, so that an index of the files need not derive it from :attr:`path` again."""


class Storage(ABC):
    """Where fetched instances go: a folder, a pseudonymising wrapper around another storage, another archive.

    A download asks its storage what is already there (:meth:`may_hold`,
    :meth:`has`, which need the attributes :attr:`fields` names), lets it
    choose how parts reach it (:meth:`parallel`), and hands it every part
    that arrives (:meth:`save`); it asks nothing else, so every storage goes
    through the same download, resume rule and summary. Like ``requests``'
    ``BaseAdapter``: a few verbs, several implementations, chosen by type and
    never by inspection. A 4.x storage fed parsed datasets is adapted to this
    once, where the trolley is handed it.
    """

    @property
    @abstractmethod
    def fields(self) -> tuple[str, ...]:
        """The attributes :meth:`has` and :meth:`locate` need of an instance (a path template's fields)."""

    @property
    def folder(self) -> Path | None:
        """The folder files are written under; ``None`` for a storage that writes none (another archive)."""
        return None

    def may_hold(self, study_uids: Collection[str]) -> bool:
        """False when nothing of these studies can be there yet, so :meth:`has` need not be asked.

        True by default: the download then asks :meth:`has` of every instance.
        """
        return True

    @abstractmethod
    def has(self, attributes: Attributes) -> bool:
        """True when the instance with these attributes is already there, complete (a resumed download skips it)."""

    @abstractmethod
    def locate(self, attributes: Attributes) -> str:
        """Where the instance with these attributes goes, as text relative to the storage, folders separated by ``/``.

        Raises
        ------
        StorageError
            The attributes lack what the place needs, or it would be unsafe.
        """

    @abstractmethod
    def save(self, part: InstancePart) -> SavedInstance:
        """Keep one instance's bytes; called from the fetch's worker threads, so it must be thread-safe.

        Raises
        ------
        StorageError
            The bytes cannot be kept (not DICOM, disk full, refused); a failure of this instance alone.
        """

    def save_dataset(self, dataset: Dataset) -> SavedInstance:
        """Encode a pydicom Dataset and :meth:`save` it: slower than keeping the bytes a server sent.

        Raises
        ------
        StorageError
            The dataset cannot be encoded, or not kept.
        """
        body = encode_dataset(dataset)
        return self.save(InstancePart(body, body.getbuffer().nbytes))

    def held(self, study_uid: str) -> int | None:
        """How many instances of this study the storage holds, asked afresh; ``None`` when it cannot say.

        An export to another archive asks it once a study is sent, to check that
        every instance arrived (an archive may answer "stored" and keep nothing).
        A folder does not say (``None``): its files were checked as they were written.
        """
        return None

    def parallel(self, sink: PartSink, failures: list[FetchFailure]) -> AbstractContextManager[PartSink]:
        """How parts reach this storage during one fetch: the parallelism its saves allow.

        By default ``sink`` itself, called in the thread that fetched each part.
        A storage whose saves are slow and can run side by side (pseudonymisation
        on several cores, sending to another archive) gives a sink that hands each
        part to workers and returns; on exit it waits for them, and appends the
        parts whose ``sink`` raised to ``failures``.
        """
        return contextlib.nullcontext(sink)


def encode_dataset(dataset: Dataset) -> io.BytesIO:
    """A pydicom Dataset as bytes: a Part-10 file when its file meta has a transfer syntax, else as it is (as 4.x did).

    Raises
    ------
    StorageError
        pydicom cannot encode it.
    """
    body = io.BytesIO()
    part10 = "TransferSyntaxUID" in getattr(dataset, "file_meta", {})
    try:
        dataset.save_as(body, enforce_file_format=part10)
    except (ValueError, TypeError, AttributeError) as error:
        raise StorageError(f"Could not encode {dataset.get('SOPInstanceUID', 'a dataset')}: {error}") from error
    return body


@dataclass(frozen=True)
class BatchLimits:
    """How many instances, and bytes of them, one request of a :class:`Sender` carries.

    A sender given many instances at once splits them by these limits itself; an export
    to another archive gathers the instances arriving from the source into batches by
    the same limits, so that what it sends is shaped as the sender would shape it.

    Parameters
    ----------
    instances
        At most this many instances in a batch.
    bytes
        A batch closes before an instance that would take it past this many bytes
        (an instance larger than that goes alone).
    """

    instances: int = 1
    bytes: int = 0

    def closes(self, count: int, size: int, next_size: int) -> bool:
        """True when a batch of ``count`` instances and ``size`` bytes must close before one of ``next_size``.

        A batch holds one instance at least, whatever its size.
        """
        return count > 0 and (count >= self.instances or size + next_size > self.bytes)


class Sender(ABC):
    """Something that stores instances in an archive: STOW-RS, C-STORE.

    Implementations build on :class:`dicomtrolley.sending.InstanceSender`,
    which turns what is given into instances and counts what arrived.
    """

    @property
    def batch_limits(self) -> BatchLimits:
        """How many instances one request carries (STOW-RS: a multipart body of several).

        One by default: a protocol that stores one instance per request (C-STORE)
        gains nothing from batches, and is sent each instance as it arrives.
        """
        return BatchLimits()

    @abstractmethod
    def send(
        self,
        items: Sendable | Iterable[Sendable],
        *,
        on_error: Literal["raise", "collect"] = "raise",
        progress: bool | ProgressCallback | None = False,
    ) -> SendSummary:
        """Send files, folders (walked recursively), pydicom Datasets or the bytes of DICOM files.

        A file that is not DICOM is counted as skipped. With
        ``on_error="raise"`` a failure raises
        :class:`~dicomtrolley.exceptions.SendError` carrying the summary, as
        :class:`~dicomtrolley.exceptions.DownloadError` does for downloads.
        """
