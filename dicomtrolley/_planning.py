"""Deciding what to fetch: which instances exist, which are already on disk, which requests to send.

The trolley asks its searcher once per study for the instances it is about to
download. That instance list serves three ends: resume (instances already
complete on disk are not fetched again), request shape (a series with nothing
on disk is fetched with one request, a half-done series instance by
instance), and completeness (what arrived is compared with what exists).

When nothing is on disk yet and whole studies or series are wanted, resume
has nothing to skip and each target is fetched as asked (a study with one
request), so a series-level search suffices: it lists the series and how
many instances each holds (NumberOfSeriesRelatedInstances). Completeness is
then checked by count, and only a series that comes up short is searched
instance by instance, to name what is missing. An instance-level search
costs the server far more (see docs/performance.md). A study whose
instance list is as long as a cap could make it is checked with one
series-level search: a server that cuts its answers at a cap names a large
series short, and that series is fetched whole.

Planning does not touch the disk itself: it is told what is there by a
callable (:data:`OnDisk`) and which attributes name a file (the template's
fields), so it can be tested, and reused, without a storage.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydicom.dataset import Dataset

from dicomtrolley._values import whole_number
from dicomtrolley.capped import ROUND_CAPS
from dicomtrolley.core import (
    UID_KEYWORDS,
    DICOMObjectLevels,
    FetchFailure,
    Instance,
    InstanceReference,
    Query,
    QueryLevels,
    Reference,
    SeriesReference,
    Study,
    StudyReference,
    reference_key,
    uid_attributes,
)
from dicomtrolley.exceptions import DICOMTrolleyError, NoQueryResultsError, SearchCutError
from dicomtrolley.roles import Searcher

logger = logging.getLogger(__name__)

OnDisk = Callable[[Mapping[str, Any] | Dataset], bool]
"""True when the instance with these attributes is already complete on disk."""


@dataclass(frozen=True)
class Plan:
    """What a download will fetch, and what it expects to receive.

    Parameters
    ----------
    fetch
        The requests to send: a whole study or series with one request where nothing of it is on disk.
    counts
        Instances per series, as the search said; empty without a searcher.
    listed
        The instances the search named. Empty when a series-level search
        sufficed: then only a series that comes up short of its count is
        listed, after the fetch (:meth:`named_expected`).
    complete
        Instances already complete on disk, which are not fetched again.
    not_found
        Targets the search found nothing for, or whose search failed.
    """

    fetch: tuple[Reference, ...]
    counts: Mapping[SeriesReference, int] = field(default_factory=dict)
    listed: frozenset[InstanceReference] = frozenset()
    complete: frozenset[InstanceReference] = frozenset()
    not_found: tuple[FetchFailure, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts", MappingProxyType(dict(self.counts)))

    @property
    def expected_count(self) -> int:
        """How many instances the search said exist under the targets."""
        return sum(self.counts.values())

    def named_expected(
        self, searcher: Searcher, received: Collection[InstanceReference]
    ) -> tuple[set[InstanceReference], list[FetchFailure]]:
        """Every instance expected by name: those listed, and those of unlisted series that came up short.

        Searches the short series instance by instance. Returns the
        instances, and the series whose search failed (what they miss cannot be named).
        """
        arrived: Counter[SeriesReference] = Counter(r.series_reference for r in set(received) | self.complete)
        listed_series = {r.series_reference for r in self.listed}
        short = [s for s, count in self.counts.items() if s not in listed_series and arrived[s] < count]
        failures: list[FetchFailure] = []
        if not short:
            return set(self.listed), failures
        logger.info("%d series came up short of their instance count; listing their instances", len(short))
        found = find_instances(searcher, short, include_fields=(), failures=failures)
        return set(self.listed) | {instance.reference() for instance in found}, failures


def covers(target: Reference, reference: InstanceReference | SeriesReference) -> bool:
    """True when fetching ``target`` fetches the instance or the whole series of ``reference``."""
    if target.study_uid != reference.study_uid:
        return False
    if isinstance(target, StudyReference):
        return True
    if isinstance(target, SeriesReference):
        return target.series_uid == reference.series_uid
    return target == reference


def _search_each_study(
    searcher: Searcher,
    targets: Sequence[Reference],
    level: QueryLevels,
    include_fields: Iterable[str],
    failures: list[FetchFailure] | None,
) -> Iterator[tuple[list[Reference], list[Study]]]:
    """One search per study of ``targets`` down to ``level``: yields each study's targets and what was found.

    A study asked for whole is searched whole; a study of which only some
    series (or instances) are wanted is searched for those series only.
    With ``failures`` given, a study whose search fails is listed there (each
    of its targets, with the error) and the other studies are still searched;
    without it, the error is raised.
    """
    by_study: dict[str, list[Reference]] = defaultdict(list)
    for target in targets:
        by_study[target.study_uid].append(target)
    for study_uid, wanted in by_study.items():
        query = Query(StudyInstanceUID=study_uid, query_level=level, include_fields=sorted(include_fields))
        if not any(isinstance(t, StudyReference) for t in wanted):
            series = {t.series_uid for t in wanted if isinstance(t, (SeriesReference, InstanceReference))}
            query.SeriesInstanceUID = ",".join(sorted(series))
        try:
            studies = searcher.find_studies(query)
        except DICOMTrolleyError as error:
            if failures is None:
                raise
            logger.info("Searching study %s failed: %s", study_uid, error)  # told again in the summary
            failures.extend(FetchFailure(target, error) for target in wanted)
            continue
        yield wanted, studies


def find_instances(
    searcher: Searcher,
    targets: Sequence[Reference],
    include_fields: Iterable[str],
    failures: list[FetchFailure] | None = None,
) -> list[Instance]:
    """Every instance under ``targets``, with one search per study (see :func:`_search_each_study`)."""
    fields = set(UID_KEYWORDS) | set(include_fields)
    found: list[Instance] = []
    for wanted, studies in _search_each_study(searcher, targets, QueryLevels.INSTANCE, fields, failures):
        for study in studies:
            found.extend(
                instance for instance in study.all_instances()
                if any(covers(t, instance.reference()) for t in wanted)
            )
    return found


def count_series(
    searcher: Searcher,
    targets: Sequence[Reference],
    failures: list[FetchFailure],
) -> dict[SeriesReference, int] | None:
    """Instances per series under study and series ``targets``, from one series-level search per study.

    ``None`` when the searcher's answer lacks a count for some series (the
    attribute is optional), so that only an instance-level search can tell.
    A study whose search fails is listed in ``failures``.
    """
    counts: dict[SeriesReference, int] = {}
    searches = _search_each_study(searcher, targets, QueryLevels.SERIES, ["NumberOfSeriesRelatedInstances"], failures)
    for wanted, studies in searches:
        for series in (s for study in studies for s in study.all_series()):
            reference = series.reference()
            if not any(covers(t, reference) for t in wanted):
                continue
            # From the JSON (no Dataset built); a count that is missing or no whole number tells nothing.
            count = whole_number(series.first_value("NumberOfSeriesRelatedInstances"))
            if count is None:
                return None
            counts[reference] = count
    return counts


def plan_download(
    targets: Sequence[Reference],
    searcher: Searcher | None,
    finest_level_needed: DICOMObjectLevels,
    *,
    on_disk: OnDisk | None,
    fields: Collection[str],
) -> Plan:
    """Decide which requests fetch ``targets``, skipping what is on disk.

    Parameters
    ----------
    on_disk
        Tells whether an instance is complete on disk; ``None`` when the
        output folder is missing or empty, so nothing can be.
    fields
        The attributes that name an instance's file (the storage template's fields).
    """
    if searcher is None:
        return Plan(fetch=tuple(targets))
    if on_disk is None and finest_level_needed > DICOMObjectLevels.INSTANCE and all(
        isinstance(t, (StudyReference, SeriesReference)) for t in targets
    ):
        plan = _plan_by_counts(targets, searcher)
        if plan is not None:
            return plan
        return _plan_by_instances(targets, searcher, finest_level_needed, on_disk, fields, counted=False)
    return _plan_by_instances(targets, searcher, finest_level_needed, on_disk, fields, counted=True)


def _plan_by_instances(
    targets: Sequence[Reference],
    searcher: Searcher,
    finest_level_needed: DICOMObjectLevels,
    on_disk: OnDisk | None,
    fields: Collection[str],
    *,
    counted: bool,
) -> Plan:
    """Name every instance under ``targets``; fetch those not on disk, whole series where nothing of one is.

    A series the search named fewer instances of than its count (the server
    cut the answer at its cap, :func:`_cut_series`) is fetched whole, what
    is on disk included; a downloader that cannot fetch a series lists it
    as a failure instead: the instances left unnamed cannot be asked for.
    ``counted`` is False when a series-level search has just given no
    counts: then there is nothing to compare with.
    """
    not_found: list[FetchFailure] = []
    instances = find_instances(searcher, targets, fields, not_found)
    not_found += _unfound(targets, not_found, lambda t: any(covers(t, i.reference()) for i in instances))
    whole_fetch = finest_level_needed > DICOMObjectLevels.INSTANCE
    cut = _cut_series(targets, searcher, instances, whole_fetch) if counted else {}
    kept = [i for i in instances if i.reference().series_reference not in cut] if whole_fetch else instances
    listed = frozenset(instance.reference() for instance in kept)
    complete = frozenset(_complete(kept, on_disk, fields))
    whole = {
        i.series_reference for i in listed
        if any(isinstance(t, (StudyReference, SeriesReference)) and covers(t, i) for t in targets)
    }
    if complete:
        logger.info("%d of %d instances are already on disk; skipping them", len(complete), len(listed))
    fetch = requests_for(listed - complete, listed, whole, finest_level_needed)
    if whole_fetch:
        fetch += sorted(cut, key=reference_key)
    else:
        not_found += [FetchFailure(series, SearchCutError(f"{series}: the search named only some of its {count} "
                                                          "instances, and the others cannot be fetched one by one"))
                      for series, count in cut.items()]
    return Plan(
        fetch=tuple(fetch),
        counts={**Counter(r.series_reference for r in listed), **cut},
        listed=listed,
        complete=complete,
        not_found=tuple(not_found),
    )


def _cut_series(
    targets: Sequence[Reference], searcher: Searcher, instances: Sequence[Instance], whole_fetch: bool
) -> dict[SeriesReference, int]:
    """The series wanted whole that the instance search named fewer instances of than their count, with the count.

    A server that cuts its answers at a cap, and cannot be paged past it,
    cuts the instance listing of a large series without a word. A study
    whose listing could have been cut (as many instances as the searcher's
    known cap or, when none is known, as the smallest cap archives ship
    with) is searched once more at series level for the counts. ``whole_fetch``
    says whether the downloader can fetch such a series whole (the log says what is done).
    """
    cap = searcher.result_cap if searcher.result_cap is not None else min(ROUND_CAPS)
    per_study = Counter(instance.reference().study_uid for instance in instances)
    wholes = [t for t in targets if isinstance(t, (StudyReference, SeriesReference)) and per_study[t.study_uid] >= cap]
    counts = count_series(searcher, wholes, []) if wholes else None  # a failed count search: nothing to compare
    named = Counter(instance.reference().series_reference for instance in instances)
    cut = {series: count for series, count in (counts or {}).items() if named[series] < count}
    for series, count in cut.items():
        logger.warning("%s: the search named %d of its %d instances (the server cuts its answers at a cap); %s",
                       series, named[series], count,
                       "fetching the whole series" if whole_fetch else "the others cannot be fetched one by one")
    return cut


def _complete(
    instances: Iterable[Instance], on_disk: OnDisk | None, fields: Collection[str]
) -> Iterator[InstanceReference]:
    """The instances already complete on disk."""
    if on_disk is None:
        return
    # The default layouts name files by UIDs alone, which the reference holds:
    # no need to build the instance's pydicom Dataset from the search's JSON to find its path.
    uids_suffice = set(fields) <= set(UID_KEYWORDS)
    for instance in instances:
        reference = instance.reference()
        if on_disk(uid_attributes(reference) if uids_suffice else instance.data):
            yield reference


def _plan_by_counts(targets: Sequence[Reference], searcher: Searcher) -> Plan | None:
    """Each target with one request, as asked, checked by count; ``None`` when the search gives no counts.

    Nothing is on disk, so nothing needs to be left out: a study is fetched
    with one request for the whole study. One stream per study is also the
    fastest shape where the client's disk is the bottleneck; several studies
    still download in parallel.
    """
    not_found: list[FetchFailure] = []
    all_counts = count_series(searcher, targets, not_found)
    if all_counts is None:
        logger.debug("The series-level search gave no instance counts; searching instance by instance")
        return None
    counts = {series: count for series, count in all_counts.items() if count > 0}
    unsearched = {failure.target for failure in not_found}
    wanted = [t for t in dict.fromkeys(targets) if t not in unsearched]
    not_found += _unfound(wanted, not_found, lambda t: any(covers(t, series) for series in counts))
    unfound = {failure.target for failure in not_found}
    return Plan(fetch=tuple(t for t in wanted if t not in unfound), counts=counts, not_found=tuple(not_found))


def _unfound(
    targets: Iterable[Reference], failed: list[FetchFailure], found: Callable[[Reference], bool]
) -> list[FetchFailure]:
    """A failure for each target whose search succeeded (it is not in ``failed``) but found nothing."""
    unsearched = {failure.target for failure in failed}
    return [
        FetchFailure(target, NoQueryResultsError(f"The searcher found no instances for {target}"))
        for target in targets
        if target not in unsearched and not found(target)
    ]


def requests_for(
    missing: set[InstanceReference] | frozenset[InstanceReference],
    expected: set[InstanceReference] | frozenset[InstanceReference],
    whole_series: set[SeriesReference],
    finest_level_needed: DICOMObjectLevels = DICOMObjectLevels.STUDY,
) -> list[Reference]:
    """The fewest requests that fetch ``missing``.

    A series is fetched with one request when all of it is wanted
    (``whole_series``) and none of it is on disk; otherwise instance by instance.
    """
    if finest_level_needed == DICOMObjectLevels.INSTANCE:
        return sorted(missing, key=reference_key)
    per_series: dict[SeriesReference, set[InstanceReference]] = defaultdict(set)
    for instance in expected:
        per_series[instance.series_reference].add(instance)
    requests: list[Reference] = []
    for series, members in sorted(per_series.items(), key=lambda item: reference_key(item[0])):
        todo = members & missing
        if todo == members and series in whole_series:
            requests.append(series)
        else:
            requests.extend(sorted(todo, key=reference_key))
    return requests
