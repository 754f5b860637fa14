"""The core model: levels, references, the study tree, the query, and what a download moves.

Everything else in the package depends on this module; it depends on no
protocol and on no other module of the package but the exceptions. A
searcher (:mod:`dicomtrolley.roles`) turns a :class:`Query` into a tree of
:class:`Study`, :class:`Series` and :class:`Instance` objects; a downloader
turns references into :class:`InstancePart` objects, the bytes of one
instance as the server sent them.

``Searcher`` and ``Downloader`` live in :mod:`dicomtrolley.roles`; importing
them from here still works, for scripts written against 4.x.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import Enum, IntEnum
from typing import IO, TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import pydicom
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomtrolley._values import (
    dicom_date_range,
    lenient_dataset,
    normalise_date_criterion,
    parse_date,
    parse_date_range,
)
from dicomtrolley.exceptions import (
    DICOMTrolleyError,
    MalformedResponseError,
    NoReferencesFoundError,
    UnSupportedParameterError,
)
from dicomtrolley.exceptions import NonInstanceParameterError as NonInstanceParameterError
from dicomtrolley.exceptions import NonSeriesParameterError as NonSeriesParameterError

if TYPE_CHECKING:  # 4.x imported the roles from here; see lend_roles() at the end
    from dicomtrolley.roles import Downloader as Downloader
    from dicomtrolley.roles import Searcher as Searcher

UID_KEYWORDS: tuple[str, str, str] = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
"""The keywords of the three UIDs that place an instance in the tree, study first."""


class DICOMObjectLevels(IntEnum):
    """Where an object sits in the study -> series -> instance hierarchy.

    Ordered: ``STUDY > SERIES > INSTANCE``, so ``level >= SERIES`` reads as
    "series or coarser".
    """

    STUDY = 2
    SERIES = 1
    INSTANCE = 0

    @classmethod
    def from_query_level(cls, level: QueryLevels) -> DICOMObjectLevels:
        """The object level a query level returns (4.x name; see :attr:`QueryLevels.object_level`)."""
        return QueryLevels(level).object_level


class QueryLevels(str, Enum):
    """How deep a search goes: which objects it returns."""

    STUDY = "STUDY"
    SERIES = "SERIES"
    INSTANCE = "INSTANCE"

    @classmethod
    def _missing_(cls, value: object) -> QueryLevels | None:
        """A level written in any case (``"series"``), or as C-FIND names the finest one (``"IMAGE"``)."""
        if not isinstance(value, str):
            return None
        name = value.strip().upper()
        return cls.__members__.get("INSTANCE" if name == "IMAGE" else name)

    @property
    def object_level(self) -> DICOMObjectLevels:
        """The object level this query level returns."""
        return DICOMObjectLevels[self.name]

    @classmethod
    def from_object_level(cls, level: DICOMObjectLevels) -> QueryLevels:
        """The query level that returns objects of ``level``."""
        return cls[DICOMObjectLevels(level).name]


# ---------------------------------------------------------------- references


_R = TypeVar("_R", bound="_Referencing")


class _Referencing:
    """What every reference offers, so references and tree objects can be used alike."""

    study_uid: str
    level: ClassVar[DICOMObjectLevels]

    def reference(self: _R) -> _R:
        """Return self: a reference is its own reference."""
        return self

    @property
    def study_reference(self) -> StudyReference:
        """The study this reference belongs to."""
        return StudyReference(self.study_uid)

    def contained_references(self, max_level: DICOMObjectLevels) -> tuple[Reference, ...]:
        """This reference, when it is at ``max_level`` or finer.

        Raises
        ------
        NoReferencesFoundError
            ``max_level`` is finer than the reference: only a search can say
            which series or instances it holds.
        """
        if max_level < self.level:
            raise NoReferencesFoundError(
                f"{self} holds no {max_level.name.lower()} references without a search"
            )
        return (self.reference(),)  # type: ignore[return-value]  # each subclass is a Reference


@dataclass(frozen=True)
class StudyReference(_Referencing):
    """Everything needed to fetch one study: its StudyInstanceUID."""

    study_uid: str
    level: ClassVar[DICOMObjectLevels] = DICOMObjectLevels.STUDY


@dataclass(frozen=True)
class SeriesReference(_Referencing):
    """Everything needed to fetch one series."""

    study_uid: str
    series_uid: str
    level: ClassVar[DICOMObjectLevels] = DICOMObjectLevels.SERIES


@dataclass(frozen=True)
class InstanceReference(_Referencing):
    """Everything needed to fetch one instance (one SOP instance, usually one image)."""

    study_uid: str
    series_uid: str
    instance_uid: str
    level: ClassVar[DICOMObjectLevels] = DICOMObjectLevels.INSTANCE

    @property
    def series_reference(self) -> SeriesReference:
        """The series this instance belongs to."""
        return SeriesReference(self.study_uid, self.series_uid)


Reference = StudyReference | SeriesReference | InstanceReference


def uid_attributes(reference: InstanceReference) -> dict[str, str]:
    """The instance's three UIDs by keyword, as a template or a storage reads attributes."""
    return dict(zip(UID_KEYWORDS, (reference.study_uid, reference.series_uid, reference.instance_uid), strict=True))


def reference_key(reference: Reference) -> tuple[str, ...]:
    """The UIDs of a reference, coarsest first: sorts references by study, then series, then instance."""
    return tuple(vars(reference).values())


# ---------------------------------------------------------------- the tree


_Child = TypeVar("_Child", bound="DICOMObject", covariant=True)


class Children(tuple[_Child, ...]):
    """The objects one level down in the tree: a tuple that can also be called.

    4.x had ``children()`` as a method; here it is a property. Calling the
    tuple returns it, so both spellings work.
    """

    def __call__(self) -> Children[_Child]:
        return self


class DICOMObject:
    """A study, series or instance found by a search; base of the tree classes.

    ``data`` holds what the server said about the object, as a pydicom
    Dataset. Trees can be large (a QIDO-RS answer of tens of thousands of
    instances), so the Dataset is built from the server's DICOM JSON only when
    it is first read.

    Equality, ``repr`` and :meth:`to_dict` look down the tree, never up, so
    they terminate on any object of a tree.
    """

    level: ClassVar[DICOMObjectLevels]
    json_source = ""
    """Where the DICOM JSON came from (a URL), named when it turns out malformed."""

    def __init__(
        self,
        uid: str,
        data: Dataset | None = None,
        *,
        json_data: Mapping[str, Any] | None = None,
    ) -> None:
        if not uid:
            raise DICOMTrolleyError(f"A {type(self).__name__} needs a uid, got {uid!r}")
        self.uid = uid
        self._data = data
        self._json = json_data

    @property
    def data(self) -> Dataset:
        """The attributes the server returned for this object.

        Raises
        ------
        MalformedResponseError
            The server's answer is not DICOM JSON at all (a key that is no tag). An
            attribute whose value breaks its type (a number that is none, a sequence
            of strings) is kept as text instead, with a warning naming it.
        """
        if self._data is None:
            where = f"The result for {type(self).__name__} {self.uid} from {self.json_source or 'a search'}"
            self._data = lenient_dataset(self._json, where) if self._json else Dataset()
            self._json = None
        return self._data

    @data.setter
    def data(self, value: Dataset) -> None:
        self._data = value
        self._json = None

    def first_value(self, keyword: str) -> Any:
        """The first value of an attribute (a person name's alphabetic form), or ``None``.

        Read from the server's JSON while the Dataset is not built yet, so
        that sorting or filtering thousands of objects costs microseconds each.
        """
        if self._json is not None:
            tag = tag_for_keyword(keyword)
            element = self._json.get(f"{tag:08X}") if tag is not None else None
            if not element or not (values := element.get("Value")):
                return None
            first = values[0] if isinstance(values, list) else None
            if first is not None and not isinstance(first, dict):
                return first
            if isinstance(first, dict) and element.get("vr") == "PN":
                return first.get("Alphabetic", "")
            # A sequence, or a value that breaks its type: as the Dataset reads it (see ``data``).
        value = self.data.get(keyword)
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            return value[0] if len(value) else None
        return value

    @property
    def children(self) -> Children[DICOMObject]:
        """The objects one level down (empty for an instance); ``children()`` works too, as in 4.x."""
        return Children()

    def reference(self) -> Reference:
        """A small, hashable reference that a downloader can fetch."""
        raise NotImplementedError

    def all_instances(self) -> list[Instance]:
        """Every instance at or below this object."""
        return [i for child in self.children for i in child.all_instances()]

    def all_series(self) -> list[Series]:
        """Every series at or below this object."""
        return [s for child in self.children for s in child.all_series()]

    def root(self) -> DICOMObject:
        """The top of this object's tree: its study (or the object itself, without a parent)."""
        node: DICOMObject = self
        while (parent := getattr(node, "parent", None)) is not None:
            node = parent
        return node

    def max_object_depth(self) -> DICOMObjectLevels:
        """The finest level this object's tree reaches: INSTANCE once a search found instances."""
        return min((child.max_object_depth() for child in self.children), default=self.level)

    def contained_references(self, max_level: DICOMObjectLevels) -> tuple[Reference, ...]:
        """References at ``max_level`` or finer covering everything this object holds.

        A study splits into its series or instances, a series into its
        instances, as far as the search that found them went.

        Raises
        ------
        NoReferencesFoundError
            Some part of the tree stops above ``max_level`` (a study from a
            study-level search has no series): a search must fill it in first.
        """
        if max_level >= self.level:
            return (self.reference(),)
        series = self.all_series()
        if not series or (max_level is DICOMObjectLevels.INSTANCE and not all(s.instances for s in series)):
            raise NoReferencesFoundError(
                f"{self} was found without all its {max_level.name.lower()} objects; search at that level first"
            )
        below = series if max_level is DICOMObjectLevels.SERIES else self.all_instances()
        return tuple(one.reference() for one in below)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this object and everything below it."""
        out: dict[str, Any] = {"level": self.level.name, "uid": self.uid}
        out["data"] = dict(self._json) if self._json is not None else self.data.to_json_dict()
        if self.children:
            out["children"] = [c.to_dict() for c in self.children]
        return out

    def _data_for_eq(self) -> Any:
        return self._json if self._json is not None else self.data.to_json_dict()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, DICOMObject)
        return (
            self.uid == other.uid
            and self._data_for_eq() == other._data_for_eq()
            and list(self.children) == list(other.children)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: compare, don't hash

    def __str__(self) -> str:
        return f"{type(self).__name__} {self.uid}"


class Instance(DICOMObject):
    """One instance (SOP instance) found by a search."""

    level = DICOMObjectLevels.INSTANCE

    def __init__(
        self,
        uid: str,
        data: Dataset | None = None,
        parent: Series | None = None,
        *,
        json_data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(uid, data, json_data=json_data)
        self.parent = parent

    def reference(self) -> InstanceReference:
        """The reference a downloader needs; requires a parent series and study."""
        series = self._require_parent()
        return InstanceReference(series.reference().study_uid, series.uid, self.uid)

    def _require_parent(self) -> Series:
        if self.parent is None:
            raise DICOMTrolleyError(f"{self} has no parent series, so it cannot be referenced")
        return self.parent

    def all_instances(self) -> list[Instance]:
        """This instance, in a list."""
        return [self]

    def all_series(self) -> list[Series]:
        """The series this instance belongs to, as in 4.x (empty without a parent)."""
        return [self.parent] if self.parent is not None else []

    def __repr__(self) -> str:
        return f"Instance({self.uid!r})"


_C = TypeVar("_C", bound=DICOMObject)


_B = TypeVar("_B", bound="_Branch[Any]")


class _Branch(DICOMObject, Generic[_C]):
    """What a study and a series share: the objects one level down, in the order found."""

    _child_name: ClassVar[str]

    def __init__(
        self,
        uid: str,
        data: Dataset | None,
        children: Iterable[_C],
        *,
        json_data: Mapping[str, Any] | None,
    ) -> None:
        super().__init__(uid, data, json_data=json_data)
        self._children: list[_C] = []
        for child in children:
            self.add(child)

    def add(self, child: _C) -> _C:
        """Attach ``child`` one level below this object and return it."""
        self._adopt(child)
        self._children.append(child)
        return child

    @property
    def children(self) -> Children[_C]:
        """The objects one level down."""
        return Children(self._children)

    def without_children(self: _B) -> _B:
        """A copy with the same uid, data and parent, and no children yet: for a narrowed answer."""
        copied = copy.copy(self)
        copied._children = []
        return copied

    def get(self, uid: str) -> _C:
        """The child with this uid; ``KeyError`` if the search did not return it."""
        for child in self._children:
            if child.uid == uid:
                return child
        raise KeyError(f"{self} has no {self._child_name} {uid}")

    __getitem__ = get

    def _adopt(self, child: _C) -> None:
        """Make this object ``child``'s parent."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uid!r}, {self._child_name}={len(self._children)})"


class Series(_Branch[Instance]):
    """One series found by a search, with the instances the search returned (``instances``)."""

    level = DICOMObjectLevels.SERIES
    _child_name = "instances"

    def __init__(
        self,
        uid: str,
        data: Dataset | None = None,
        parent: Study | None = None,
        instances: Iterable[Instance] = (),
        *,
        json_data: Mapping[str, Any] | None = None,
    ) -> None:
        self.parent = parent
        super().__init__(uid, data, instances, json_data=json_data)

    @property
    def instances(self) -> list[Instance]:
        """The instances of this series."""
        return self._children

    @instances.setter
    def instances(self, value: Iterable[Instance]) -> None:
        # 4.x scripts assign the instances of a series they build.
        self._children = []
        for one in value:
            self.add(one)

    def _adopt(self, child: Instance) -> None:
        child.parent = self

    def reference(self) -> SeriesReference:
        """The reference a downloader needs; requires a parent study."""
        if self.parent is None:
            raise DICOMTrolleyError(f"{self} has no parent study, so it cannot be referenced")
        return SeriesReference(self.parent.uid, self.uid)

    def all_series(self) -> list[Series]:
        """This series, in a list."""
        return [self]


class Study(_Branch[Series]):
    """One study found by a search, with the series the search returned (``series``)."""

    level = DICOMObjectLevels.STUDY
    _child_name = "series"

    def __init__(
        self,
        uid: str,
        data: Dataset | None = None,
        series: Iterable[Series] = (),
        *,
        json_data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(uid, data, series, json_data=json_data)

    @property
    def series(self) -> list[Series]:
        """The series of this study."""
        return self._children

    @series.setter
    def series(self, value: Iterable[Series]) -> None:
        # 4.x scripts assign the series of a study they build.
        self._children = []
        for one in value:
            self.add(one)

    def _adopt(self, child: Series) -> None:
        child.parent = self

    def reference(self) -> StudyReference:
        """The reference a downloader needs."""
        return StudyReference(self.uid)


Downloadable = str | Reference | DICOMObject
"""Anything :meth:`Trolley.download` accepts: a StudyInstanceUID, a reference, a tree object."""


def as_list(objects: Downloadable | Iterable[Downloadable]) -> list[Downloadable]:
    """``objects`` as a list: one UID, reference or tree object becomes a list of one."""
    if isinstance(objects, (str, bytes)) or not isinstance(objects, Iterable):
        return [objects]
    return list(objects)


def to_reference(obj: Downloadable) -> Reference:
    """Turn a StudyInstanceUID string, a reference or a tree object into a reference."""
    if isinstance(obj, str):
        if not obj.strip():
            raise DICOMTrolleyError("An empty string is not a StudyInstanceUID")
        return StudyReference(obj.strip())
    if isinstance(obj, (StudyReference, SeriesReference, InstanceReference, DICOMObject)):
        return obj.reference()
    raise DICOMTrolleyError(
        f"Cannot download {obj!r}: expected a UID string, a reference or a Study/Series/Instance"
    )


# ---------------------------------------------------------------- the query


_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")


def is_hex_tag(name: str) -> bool:
    """True for a tag written as 8 hex digits (``"00100020"``), as DICOM JSON and queries name them."""
    return _HEX_TAG.fullmatch(name) is not None


def is_known_attribute(name: str) -> bool:
    """True for a DICOM keyword in pydicom's dictionary or an 8-hex-digit tag."""
    return is_hex_tag(name) or tag_for_keyword(name) is not None


class Query(BaseModel):
    """A search that every searcher understands.

    DICOM attributes use their DICOM keywords (``PatientID``); settings of the
    search itself use snake_case. A searcher that cannot send a parameter to
    its server raises :class:`~dicomtrolley.exceptions.UnSupportedParameterError`
    rather than widening the search silently.

    Dates are read by one set of rules, also for worklists and the command
    line: ``min_study_date`` and ``max_study_date`` take a ``date`` or text
    (``"20200101"``, ``"2020-01-01"``); ``StudyDate`` takes a DICOM day or
    range (``"A-B"``, ``"-B"``, ``"A-"``) and sets both. ``query_level`` is
    read in any case (``"series"``).

    Examples
    --------
    >>> Query(PatientName="DOE*", query_level="series").query_level.value
    'SERIES'
    >>> Query(StudyDate="2020-01-01-").study_date_range()
    '20200101-'
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    StudyInstanceUID: str = ""
    AccessionNumber: str = ""
    PatientName: str = ""
    PatientID: str = ""
    ModalitiesInStudy: str = ""
    SeriesInstanceUID: str = ""
    SOPInstanceUID: str = ""
    Modality: str = ""
    StudyDescription: str = ""
    SeriesDescription: str = ""
    PatientBirthDate: str = ""
    PatientSex: str = ""
    InstitutionName: str = ""

    query_level: QueryLevels = QueryLevels.STUDY
    min_study_date: date | None = None
    max_study_date: date | None = None
    include_fields: list[str] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=1)
    offset: int = Field(default=0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _study_date(cls, values: Any) -> Any:
        # StudyDate="A-B", as a worklist and DICOM write it, is the range min_study_date..max_study_date.
        if not isinstance(values, dict) or "StudyDate" not in values:
            return values
        values = dict(values)
        text = values.pop("StudyDate")
        if values.get("min_study_date") or values.get("max_study_date"):
            raise ValueError("give StudyDate or min_study_date/max_study_date, not both")
        if text:
            values["min_study_date"], values["max_study_date"] = parse_date_range(text)
        return values

    @field_validator("min_study_date", "max_study_date", mode="before")
    @classmethod
    def _date_only(cls, value: Any) -> Any:
        # "20200101" and "2020-01-01" alike; pydantic alone reads the first as seconds since 1970.
        return None if value is None or value == "" else parse_date(value)

    @field_validator("PatientBirthDate", mode="before")
    @classmethod
    def _dicom_date(cls, value: Any) -> Any:
        # 4.x took a date here; a DICOM DA string (or range) is what goes to the server.
        return normalise_date_criterion(value) if isinstance(value, (str, date)) else value

    @field_validator("include_fields")
    @classmethod
    def _known_fields(cls, fields: list[str]) -> list[str]:
        for name in fields:
            if name != "all" and not is_known_attribute(name):
                raise ValueError(f"include_fields: {name!r} is not a DICOM keyword or 8-hex-digit tag")
        return fields

    @model_validator(mode="after")
    def _date_order(self) -> Query:
        if self.min_study_date and self.max_study_date and self.min_study_date > self.max_study_date:
            raise ValueError(
                f"min_study_date {self.min_study_date} is after max_study_date {self.max_study_date}"
            )
        return self

    def attributes(self) -> dict[str, str]:
        """The DICOM attributes this query matches on (keyword -> value), empty ones left out."""
        keywords = {name for name in type(self).model_fields if name[0].isupper()}
        return {name: value for name, value in self.model_dump(include=keywords).items() if value}

    def study_date_range(self) -> str:
        """The StudyDate criterion as a DICOM range (``YYYYMMDD-YYYYMMDD``; either end open), or ''."""
        return dicom_date_range(self.min_study_date, self.max_study_date)

    @classmethod
    def init_from_query(cls: type[_Q], query: Query) -> _Q:
        """This kind of query with the parameters ``query`` sets (4.x's conversion between query kinds).

        Raises
        ------
        UnSupportedParameterError
            ``query`` sets a parameter this kind of query does not have, so
            converting it would drop the parameter.
        """
        try:
            return cls(**query.model_dump(exclude_defaults=True))
        except ValueError as error:
            raise UnSupportedParameterError(
                f"{query.to_short_string()} cannot become a {cls.__name__} without losing a parameter: {error}"
            ) from error

    def to_short_string(self) -> str:
        """One line with the parameters that are set, for messages and logs."""
        set_fields = {
            key: value
            for key, value in self.model_dump(exclude_defaults=True).items()
        }
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in set_fields.items())})"


DICOM_QUERY_KEYWORDS: tuple[str, ...] = tuple(
    name for name in Query.model_fields if name[0].isupper()
)

_Q = TypeVar("_Q", bound=Query)


# ---------------------------------------------------------------- downloading


@dataclass
class InstancePart:
    """The bytes of one instance as a server sent them, and what is known about them.

    Parameters
    ----------
    body
        A seekable binary file positioned at 0 (in memory, or a temporary
        file for large instances). The receiver closes it via :meth:`close`.
    size
        Length of ``body`` in bytes.
    content_type
        The part's Content-Type header, transfer-syntax parameter included.
    source
        What was requested to get this part (a study, series or instance).
    reference
        The instance, when the downloader knew it before the bytes arrived.
    """

    body: IO[bytes]
    size: int
    content_type: str = "application/dicom"
    source: Reference | None = None
    reference: InstanceReference | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def transfer_syntax(self) -> str | None:
        """The transfer-syntax parameter of the Content-Type, if the server sent one."""
        match = re.search(r'transfer-syntax\s*=\s*"?([0-9.]+)"?', self.content_type, re.I)
        return match.group(1) if match else None

    def dataset(self) -> Dataset:
        """Parse the bytes into a pydicom Dataset.

        Raises
        ------
        MalformedResponseError
            The bytes are not a DICOM instance (no SOPInstanceUID anywhere).
        """
        self.body.seek(0)
        try:
            dataset = pydicom.dcmread(self.body, force=True)
        except (InvalidDicomError, ValueError, EOFError, OSError) as error:
            raise MalformedResponseError(f"{self.size} bytes from {self.source} are not DICOM: {error}") from error
        file_meta = getattr(dataset, "file_meta", None)
        if not dataset.get("SOPInstanceUID") and not (file_meta and file_meta.get("MediaStorageSOPInstanceUID")):
            raise MalformedResponseError(
                f"{self.size} bytes from {self.source} are not a DICOM instance: no SOPInstanceUID"
            )
        return dataset

    def close(self) -> None:
        """Release the memory or temporary file that holds the bytes."""
        self.body.close()


@dataclass(frozen=True)
class FetchFailure:
    """One thing a downloader was asked for and could not deliver, and why."""

    target: Reference
    error: Exception

    def __str__(self) -> str:
        return f"{self.target}: {type(self.error).__name__}: {self.error}"


@dataclass(frozen=True)
class Quarantined:
    """One instance held back from the output folder by pseudonymisation, and why.

    Burned-in annotations cannot be cleaned from headers, so such instances are
    not written; a person decides what to do with them.
    """

    reference: InstanceReference
    reason: str

    def __str__(self) -> str:
        return f"{self.reference.instance_uid}: {self.reason}"


PartSink = Callable[[InstancePart], None]
"""Receives each part as it completes; called from worker threads, so it must be thread-safe."""


_LENT: dict[str, Any] = {}
"""Names of other modules that 4.x scripts import from here (``Searcher``, ``Downloader``), lent by them."""


def lend_roles(searcher: type, downloader: type) -> None:
    """Let 4.x scripts import ``Searcher`` and ``Downloader`` from this module, where 4.x defined them.

    :mod:`dicomtrolley.roles` lends them when it loads, which importing any
    part of the package does (the package root loads it), so this module never
    imports the roles that build on it.
    """
    _LENT.update(Searcher=searcher, Downloader=downloader)


if not TYPE_CHECKING:  # type checkers read the imports at the top instead

    def __getattr__(name: str) -> Any:
        """``Searcher`` and ``Downloader`` for 4.x imports; they live in :mod:`dicomtrolley.roles`."""
        try:
            return _LENT[name]
        except KeyError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


# ---------------------------------------------------------------- 4.x names
# What dicomtrolley 4.x scripts import from this module, kept so they run unchanged.


class ExtendedQuery(Query):
    """A :class:`Query` with 4.x's extra matching field for DICOM-QR and MINT.

    Every other field 4.x added here (InstitutionName, PatientSex,
    StudyDescription, SeriesDescription, PatientBirthDate) is part of
    :class:`Query` itself now.
    """

    InstitutionalDepartmentName: str = ""


DICOMObjectReference = Reference
"""4.x's name for any reference (a study, series or instance reference)."""

DICOMDownloadable = Downloadable
"""4.x's name for anything a download accepts."""


def to_references(objects: Iterable[_Referencing | DICOMObject], max_level: DICOMObjectLevels) -> list[Reference]:
    """References at ``max_level`` or finer for everything in ``objects``, taken from the objects alone.

    Raises
    ------
    NoReferencesFoundError
        An object cannot be split that far without a search.
    """
    return [ref for obj in objects for ref in obj.contained_references(max_level)]


def to_series_level_refs(objects: Iterable[_Referencing | DICOMObject]) -> list[Reference]:
    """Series and instance references for everything in ``objects``, without a search.

    Raises
    ------
    NonSeriesParameterError
        A study reference, or a study found without its series.
    """
    try:
        return to_references(objects, DICOMObjectLevels.SERIES)
    except NoReferencesFoundError as error:
        raise NonSeriesParameterError(f"Cannot obtain series references: {error}") from error


def to_instance_refs(objects: Iterable[_Referencing | DICOMObject]) -> list[Reference]:
    """Instance references for everything in ``objects``, without a search.

    Raises
    ------
    NonInstanceParameterError
        A study or series reference, or an object found without its instances.
    """
    try:
        return to_references(objects, DICOMObjectLevels.INSTANCE)
    except NoReferencesFoundError as error:
        raise NonInstanceParameterError(f"Cannot obtain instance references: {error}") from error
