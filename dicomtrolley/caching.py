"""A search cache: repeated and narrower searches answered from earlier answers.

A researcher searches a patient's studies down to series level, then asks for
one of those studies, then one of its series: each later question is already
answered by the first. :class:`CachedSearcher` wraps any searcher and answers

- the same query again, and
- a *narrower* query: the same kind and level, with the criteria of an earlier
  query plus some that can be checked on its answer exactly (UIDs,
  PatientID, AccessionNumber, Modality, ModalitiesInStudy, a narrower date
  range), include fields that the earlier answer holds, and no
  ``limit``/``offset`` on either. A query naming its studies by UID may drop
  the earlier query's patient and study criteria when the earlier answer
  holds those studies,

from an answer of at most ``expiry`` seconds ago. Anything else goes to the
server, and its answer is cached. Answers are kept least recently used first
out, up to ``max_objects`` studies, series and instances in all; the cache
is safe to share between threads, and a hit costs microseconds.

When the answer may be stale
----------------------------
A cached answer is what the server said when it was asked, up to ``expiry``
seconds before: instances still arriving at the server (a study being
received), objects deleted since, and corrected attributes are not seen until
the entry expires, or :meth:`DICOMObjectCache.clear` is called. A narrower
answer is as old as the wider answer it came from. Choose ``expiry`` by how
fast the archive changes: minutes for a research archive, none for a study
still being acquired. The objects returned are shared between hits: treat
them as read-only.

dicomtrolley 4.x users: ``CachedSearcher(searcher, DICOMObjectCache(expiry_seconds=600))``
still works, and :meth:`DICOMObjectCache.add` / :meth:`DICOMObjectCache.retrieve` are kept.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from dicomtrolley.core import (
    DICOM_QUERY_KEYWORDS,
    DICOMObject,
    DICOMObjectLevels,
    InstanceReference,
    Query,
    Reference,
    Series,
    SeriesReference,
    Study,
    StudyReference,
)
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.roles import Searcher

logger = logging.getLogger(__name__)

DEFAULT_EXPIRY = 600.0
"""Seconds an answer is served from the cache: ten minutes."""

DEFAULT_MAX_OBJECTS = 200_000
"""Studies, series and instances held in all (about 1 KB each as DICOM JSON)."""


class NodeNotFound(DICOMTrolleyError):  # noqa: N818 - dicomtrolley 4.x's name
    """The cache holds no unexpired answer for what was asked."""


# Criteria that can be checked on a cached answer exactly, by the level of the
# object that carries them. Wildcards, person names and free text are left to
# the server, whose matching rules (case, fuzzy matching) the cache cannot know.
_UID_CRITERIA = {
    "StudyInstanceUID": DICOMObjectLevels.STUDY,
    "SeriesInstanceUID": DICOMObjectLevels.SERIES,
    "SOPInstanceUID": DICOMObjectLevels.INSTANCE,
}
_STUDY_LEVEL = frozenset(
    {"PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDescription",
     "ModalitiesInStudy"}
)
"""Criteria that select whole studies: a study an answer holds, it holds with everything below it."""
_EXACT_CRITERIA = {
    "PatientID": DICOMObjectLevels.STUDY,
    "AccessionNumber": DICOMObjectLevels.STUDY,
    "ModalitiesInStudy": DICOMObjectLevels.STUDY,
    "Modality": DICOMObjectLevels.SERIES,
}


@dataclass
class _Entry:
    query: Query | None
    studies: list[Study]
    stored_at: float
    size: int


_Filter = tuple[DICOMObjectLevels, Callable[[DICOMObject], bool]]


class DICOMObjectCache:
    """Search answers kept for ``expiry_seconds``, least recently used out beyond ``max_objects``.

    Parameters
    ----------
    initial_objects
        Studies to hold from the start (as :meth:`add`).
    expiry_seconds
        Seconds an answer stays valid; ``None`` keeps answers until they are pushed out.
    max_objects
        Studies, series and instances held in all; an answer larger than this is not kept.
    """

    def __init__(
        self,
        initial_objects: Iterable[Study] | None = None,
        expiry_seconds: float | timedelta | None = DEFAULT_EXPIRY,
        max_objects: int = DEFAULT_MAX_OBJECTS,
    ) -> None:
        if isinstance(expiry_seconds, timedelta):
            expiry_seconds = expiry_seconds.total_seconds()
        self.expiry = expiry_seconds
        self.max_objects = max_objects
        self._entries: OrderedDict[object, _Entry] = OrderedDict()
        self._size = 0
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self.add_all(initial_objects or [])

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        """Forget every answer: the next searches go to the server."""
        with self._lock:
            self._entries.clear()
            self._size = 0

    # ------------------------------------------------------------ answers to queries

    def store(self, query: Query | None, studies: list[Study]) -> None:
        """Keep ``studies`` as the answer to ``query`` (``None``: objects without a query)."""
        size = sum(_count(study) for study in studies)
        if size > self.max_objects:
            logger.debug("Not caching an answer of %d objects (max_objects=%d)", size, self.max_objects)
            return
        now = time.monotonic()
        with self._lock:
            key = _key(query) if query is not None else ("objects", next(self._numbers))
            for old_key in [k for k, e in self._entries.items() if k == key or not self._fresh(e, now)]:
                self._size -= self._entries.pop(old_key).size
            self._entries[key] = _Entry(query, list(studies), now, size)
            self._size += size
            while self._size > self.max_objects:
                _, evicted = self._entries.popitem(last=False)
                self._size -= evicted.size

    def answer(self, query: Query) -> list[Study] | None:
        """The cached answer to ``query``, or one narrowed from a wider cached answer; ``None`` if neither."""
        key = _key(query)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._fresh(entry, now):
                self._entries.move_to_end(key)
                return list(entry.studies)
            candidates = [e for e in reversed(self._entries.values()) if e.query is not None and self._fresh(e, now)]
        for candidate in candidates:
            assert candidate.query is not None
            how = narrowing(candidate.query, query)
            if how is None or not how.whole_studies <= {study.uid for study in candidate.studies}:
                continue
            narrowed = _narrow(candidate.studies, how.filters, query.query_level.object_level)
            if narrowed is not None:
                return narrowed
        return None

    def _fresh(self, entry: _Entry, now: float) -> bool:
        return self.expiry is None or now - entry.stored_at <= self.expiry

    # ------------------------------------------------------------ dicomtrolley 4.x

    def add(self, obj: Study) -> Study:
        """Hold a study (and what lies below it) for :meth:`retrieve`; return it."""
        self.store(None, [obj])
        return obj

    def add_all(self, objects: Iterable[Study]) -> None:
        """Hold each study of ``objects`` (see :meth:`add`)."""
        if isinstance(objects, DICOMObject):
            raise TypeError("add_all takes a list of studies, not one object")
        for obj in objects:
            self.add(obj)

    def retrieve(self, reference: Reference) -> DICOMObject:
        """The cached study, series or instance of ``reference``, from the newest answer holding it.

        Raises
        ------
        NodeNotFound
            No unexpired answer holds it.
        """
        now = time.monotonic()
        with self._lock:
            entries = [e for e in reversed(self._entries.values()) if self._fresh(e, now)]
        for entry in entries:
            for study in entry.studies:
                found = _find(study, reference)
                if found is not None:
                    return found
        raise NodeNotFound(f"{reference} is not in the cache, or has expired")


class CachedSearcher(Searcher):
    """A searcher that answers repeated and narrower searches from a cache (see the module's notes).

    Parameters
    ----------
    searcher
        The searcher that asks the server.
    cache
        Where answers are kept; a new :class:`DICOMObjectCache` by default.
        Share one between searchers of the same server only.
    expiry
        Seconds (or a timedelta) an answer stays valid, for the new cache.
    max_objects
        Objects the new cache holds at most.

    Examples
    --------
    >>> from dicomtrolley.qido_rs import QidoRS
    >>> import requests
    >>> searcher = CachedSearcher(QidoRS(requests.Session(), "http://localhost:8042/dicom-web"), expiry=300)
    """

    def __init__(
        self,
        searcher: Searcher,
        cache: DICOMObjectCache | None = None,
        *,
        expiry: float | timedelta = DEFAULT_EXPIRY,
        max_objects: int = DEFAULT_MAX_OBJECTS,
    ) -> None:
        self.searcher = searcher
        self.cache = cache if cache is not None else DICOMObjectCache(expiry_seconds=expiry, max_objects=max_objects)
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"CachedSearcher({self.searcher!r}, expiry={self.cache.expiry})"

    def find_studies(self, query: Query) -> list[Study]:
        """The cached answer when there is one (see the module's notes), else the searcher's, then cached."""
        cached = self.cache.answer(query)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        studies = list(self.searcher.find_studies(query))
        self.cache.store(query, studies)
        return studies


# ---------------------------------------------------------------- narrowing


def _key(query: Query) -> object:
    return type(query), query.model_dump_json()


@dataclass(frozen=True)
class Narrowing:
    """How an earlier answer becomes the answer to a narrower query.

    Parameters
    ----------
    filters
        Checks each object of the earlier answer must pass, by the level they apply to.
    whole_studies
        Studies the earlier answer must hold: the narrower query names them by
        UID and drops a study-level criterion of the earlier one (PatientID,
        say), so only a study the earlier answer holds is known in full.
    """

    filters: list[_Filter]
    whole_studies: frozenset[str] = frozenset()


def narrowing(wide: Query, narrow: Query) -> Narrowing | None:
    """How the answer to ``wide`` becomes the answer to ``narrow``; ``None`` if it cannot.

    ``narrow`` must be of the same class and level, ask for no include field
    that ``wide``'s objects lack, and add to ``wide``'s criteria only ones that
    can be checked exactly on what ``wide`` returned. It may drop study-level
    criteria of ``wide`` when it names its studies by UID (see :class:`Narrowing`).
    """
    if type(wide) is not type(narrow) or wide.query_level != narrow.query_level:
        return None
    if wide.limit is not None or narrow.limit is not None or wide.offset or narrow.offset:
        return None
    missing_fields = set() if "all" in wide.include_fields else set(narrow.include_fields) - set(wide.include_fields)
    if "all" in missing_fields:
        return None
    named = _uid_set(narrow.StudyInstanceUID)
    depth = narrow.query_level.object_level
    filters: list[_Filter] = []
    dropped = False
    for name in DICOM_QUERY_KEYWORDS:
        wide_value, narrow_value = getattr(wide, name), getattr(narrow, name)
        if wide_value == narrow_value:
            continue
        if not narrow_value and name in _STUDY_LEVEL and named:
            dropped = True
            continue
        check = _criterion(name, wide_value, narrow_value)
        level = _UID_CRITERIA.get(name, _EXACT_CRITERIA.get(name))
        if check is None or level is None or level < depth:
            return None
        filters.append((level, check))
    dates = _date_filter(wide, narrow)
    if dates is False:
        if not (named and narrow.min_study_date is None and narrow.max_study_date is None):
            return None
        dropped = True
    elif dates is not None:  # a check
        filters.append((DICOMObjectLevels.STUDY, dates))
    for name in sorted(missing_fields):
        # The server may have sent it anyway (its defaults); an object without it makes this a miss.
        filters.append((depth, _holds(name)))
    return Narrowing(filters, frozenset(named) if dropped else frozenset())


def _uid_set(value: str) -> set[str]:
    """The UIDs of a UID criterion; empty for none or a wildcard."""
    if not value or any(c in value for c in "*?"):
        return set()
    return {uid.strip() for uid in value.replace("\\", ",").split(",") if uid.strip()}


def _criterion(name: str, wide_value: str, narrow_value: str) -> Callable[[DICOMObject], bool] | None:
    if not narrow_value or any(c in narrow_value for c in "*?"):
        return None
    if name in _UID_CRITERIA:
        wanted = _uid_set(narrow_value)
        if wide_value and not wanted <= _uid_set(wide_value):
            return None
        return lambda obj: obj.uid in wanted
    if wide_value or name not in _EXACT_CRITERIA:
        return None
    if name == "ModalitiesInStudy":
        return lambda obj: narrow_value in _all_values(obj, name)
    return lambda obj: _known(obj, name) == narrow_value


def _date_filter(wide: Query, narrow: Query) -> Callable[[DICOMObject], bool] | Literal[False] | None:
    """``None`` when the ranges are the same; a check when narrow's is inside wide's; False otherwise."""
    if (wide.min_study_date, wide.max_study_date) == (narrow.min_study_date, narrow.max_study_date):
        return None
    if wide.min_study_date and (not narrow.min_study_date or narrow.min_study_date < wide.min_study_date):
        return False
    if wide.max_study_date and (not narrow.max_study_date or narrow.max_study_date > wide.max_study_date):
        return False
    low = narrow.min_study_date.strftime("%Y%m%d") if narrow.min_study_date else ""
    high = narrow.max_study_date.strftime("%Y%m%d") if narrow.max_study_date else "99999999"
    return lambda study: low <= str(_known(study, "StudyDate")) <= high


def _holds(name: str) -> Callable[[DICOMObject], bool]:
    return lambda obj: _known(obj, name) is not None


class _UnknownError(Exception):
    """A cached object lacks an attribute a check needs: only the server can answer."""


def _known(obj: DICOMObject, name: str) -> Any:
    value = obj.first_value(name)
    if value is None or value == "":
        raise _UnknownError(name)
    return value


def _all_values(obj: DICOMObject, name: str) -> list[str]:
    value = obj.data.get(name)
    if value is None or value == "":
        raise _UnknownError(name)
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def _narrow(studies: list[Study], filters: list[_Filter], depth: DICOMObjectLevels) -> list[Study] | None:
    """Copies of the studies (and series, instances) that pass every filter; ``None`` if one cannot tell."""
    by_level: dict[DICOMObjectLevels, list[Callable[[DICOMObject], bool]]] = {}
    for level, check in filters:
        by_level.setdefault(level, []).append(check)

    def passes(obj: DICOMObject) -> bool:
        return all(check(obj) for check in by_level.get(obj.level, ()))

    try:
        out: list[Study] = []
        for study in studies:
            if not passes(study):
                continue
            if depth == DICOMObjectLevels.STUDY:
                out.append(study)
                continue
            kept = study.without_children()
            for series in study.series:
                if passes(series):
                    copied = _copy_series(series, passes, depth)
                    if depth == DICOMObjectLevels.SERIES or copied.instances:
                        kept.add(copied)
            if kept.series:
                out.append(kept)
        return out
    except _UnknownError as missing:
        logger.debug("A cached answer lacks %s; asking the server", missing)
        return None


def _copy_series(series: Series, passes: Callable[[DICOMObject], bool], depth: DICOMObjectLevels) -> Series:
    copied = series.without_children()
    if depth == DICOMObjectLevels.INSTANCE:
        for instance in series.instances:
            if passes(instance):
                copied.add(copy.copy(instance))
    return copied


def _count(study: Study) -> int:
    return 1 + sum(1 + len(series.instances) for series in study.series)


def _find(study: Study, reference: Reference) -> DICOMObject | None:
    if study.uid != reference.study_uid:
        return None
    if isinstance(reference, StudyReference):
        return study
    assert isinstance(reference, (SeriesReference, InstanceReference))
    for series in study.series:
        if series.uid == reference.series_uid:
            if isinstance(reference, SeriesReference):
                return series
            for instance in series.instances:
                if instance.uid == reference.instance_uid:
                    return instance
    return None

