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
costs the server far more (Orthanc reads every instance's file to answer it:
a third of a second for 500 instances, longer than fetching them).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from dicomtrolley.core import (
    DICOMObjectLevels,
    FetchFailure,
    Instance,
    InstanceReference,
    Query,
    QueryLevels,
    Reference,
    Searcher,
    SeriesReference,
    Study,
    StudyReference,
)
from dicomtrolley.exceptions import DICOMTrolleyError, NoQueryResultsError
from dicomtrolley.storage import StorageDir

logger = logging.getLogger(__name__)

_TREE_FIELDS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]


@dataclass
class Plan:
    """What a download will fetch.

    Parameters
    ----------
    fetch
        The requests to send: a whole study or series with one request where nothing of it is on disk.
    expected
        Every instance the search said exists under the targets; empty when
        there was no searcher to ask.
    complete
        Instances already complete on disk, which are not fetched again.
    not_found
        Targets the search found nothing for, or whose search failed.
    counts
        Instances per series, when the plan was made from a series-level
        search: ``expected`` then stays empty until :meth:`list_short_series`
        fills it in for the series that came up short.
    """

    fetch: list[Reference]
    expected: set[InstanceReference] = field(default_factory=set)
    complete: set[InstanceReference] = field(default_factory=set)
    not_found: list[FetchFailure] = field(default_factory=list)
    counts: dict[SeriesReference, int] = field(default_factory=dict)

    @property
    def expected_count(self) -> int:
        """How many instances the search said exist under the targets."""
        return sum(self.counts.values()) if self.counts else len(self.expected)

    def short_series(self, received: Iterable[InstanceReference]) -> list[SeriesReference]:
        """Series of a count-based plan of which fewer instances arrived than the search counted."""
        arrived: Counter[SeriesReference] = Counter(r.series_reference for r in set(received))
        return [series for series, count in self.counts.items() if arrived[series] < count]

    def list_short_series(self, searcher: Searcher, received: Iterable[InstanceReference]) -> list[FetchFailure]:
        """Search the short series instance by instance, so ``expected`` names what they hold.

        Returns the series whose search failed, with the error: what they miss cannot be named.
        """
        short = self.short_series(received)
        failures: list[FetchFailure] = []
        if short:
            logger.info("%d series came up short of their instance count; listing their instances", len(short))
            found = find_instances(searcher, short, include_fields=(), failures=failures)
            self.expected = {instance.reference() for instance in found}
        return failures


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
            logger.warning("Searching study %s failed: %s", study_uid, error)
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
    fields = set(_TREE_FIELDS) | set(include_fields)
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
            count = series.data.get("NumberOfSeriesRelatedInstances")
            if count is None or count == "":
                return None
            counts[reference] = int(count)
    return counts


def plan_download(
    targets: Sequence[Reference],
    searcher: Searcher | None,
    storage: StorageDir,
    finest_level_needed: DICOMObjectLevels,
) -> Plan:
    """Decide which requests fetch ``targets`` into ``storage``, skipping what is on disk."""
    if searcher is None:
        return Plan(fetch=list(targets))
    if (
        finest_level_needed > DICOMObjectLevels.INSTANCE
        and all(isinstance(t, (StudyReference, SeriesReference)) for t in targets)
        and not storage.may_hold({t.study_uid for t in targets})
    ):
        plan = _plan_by_counts(targets, searcher)
        if plan is not None:
            return plan
    plan = Plan(fetch=[])
    instances = find_instances(searcher, targets, storage.template.fields, plan.not_found)
    unsearched = {failure.target for failure in plan.not_found}
    for target in targets:
        if target not in unsearched and not any(covers(target, i.reference()) for i in instances):
            plan.not_found.append(
                FetchFailure(target, NoQueryResultsError(f"The searcher found no instances for {target}"))
            )
    # Nothing can be complete where none of the targets' studies is on disk yet: skip the
    # per-instance checks (and the Dataset each would build from the search's JSON).
    anything_on_disk = storage.may_hold({t.study_uid for t in targets})
    uids_suffice = set(storage.template.fields) <= set(_TREE_FIELDS)
    for instance in instances:
        reference = instance.reference()
        plan.expected.add(reference)
        if not anything_on_disk:
            continue
        # The default layouts name files by UIDs alone, which the reference holds:
        # no need to build the instance's pydicom Dataset (0.75 ms each) to find its path.
        attributes = _uid_attributes(reference) if uids_suffice else instance.data
        if storage.has(attributes):
            plan.complete.add(reference)
    whole = {
        i.series_reference for i in plan.expected
        if any(isinstance(t, (StudyReference, SeriesReference)) and covers(t, i) for t in targets)
    }
    plan.fetch = requests_for(plan.expected - plan.complete, plan.expected, whole, finest_level_needed)
    if plan.complete:
        logger.info("%d of %d instances are already on disk; skipping them",
                    len(plan.complete), len(plan.expected))
    return plan


def _plan_by_counts(targets: Sequence[Reference], searcher: Searcher) -> Plan | None:
    """Each target with one request, as asked, checked by count; ``None`` when the search gives no counts.

    Nothing is on disk, so nothing needs to be left out: a study is fetched
    with one request for the whole study. One stream per study is also the
    fastest shape where the client's disk is the bottleneck; several studies
    still download in parallel.
    """
    plan = Plan(fetch=[])
    counts = count_series(searcher, targets, plan.not_found)
    if counts is None:
        logger.debug("The series-level search gave no instance counts; searching instance by instance")
        return None
    plan.counts = {series: count for series, count in counts.items() if count > 0}
    unsearched = {failure.target for failure in plan.not_found}
    for target in dict.fromkeys(targets):
        if target in unsearched:
            continue
        if any(covers(target, series) for series in plan.counts):
            plan.fetch.append(target)
        else:
            plan.not_found.append(
                FetchFailure(target, NoQueryResultsError(f"The searcher found no instances for {target}"))
            )
    return plan


def _uid_attributes(reference: InstanceReference) -> dict[str, str]:
    return {
        "StudyInstanceUID": reference.study_uid,
        "SeriesInstanceUID": reference.series_uid,
        "SOPInstanceUID": reference.instance_uid,
    }


def requests_for(
    missing: set[InstanceReference],
    expected: set[InstanceReference],
    whole_series: set[SeriesReference],
    finest_level_needed: DICOMObjectLevels = DICOMObjectLevels.STUDY,
) -> list[Reference]:
    """The fewest requests that fetch ``missing``.

    A series is fetched with one request when all of it is wanted
    (``whole_series``) and none of it is on disk; otherwise instance by instance.
    """
    if finest_level_needed == DICOMObjectLevels.INSTANCE:
        return sorted(missing, key=_order)
    per_series: dict[SeriesReference, set[InstanceReference]] = defaultdict(set)
    for instance in expected:
        per_series[instance.series_reference].add(instance)
    requests: list[Reference] = []
    for series, members in sorted(per_series.items(), key=lambda item: _order(item[0])):
        todo = members & missing
        if todo == members and series in whole_series:
            requests.append(series)
        else:
            requests.extend(sorted(todo, key=_order))
    return requests


def _order(reference: Reference) -> tuple[str, ...]:
    return tuple(str(v) for v in vars(reference).values())
