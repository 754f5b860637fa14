"""QIDO-RS: find studies, series and instances over DICOMweb (DICOM PS3.18 10.6).

:class:`QidoRS` turns a :class:`~dicomtrolley.core.Query` into QIDO-RS
requests and the DICOM JSON answers into the study tree.

Which resource a query goes to
------------------------------
PS3.18 lets each resource match on attributes of certain levels only (patient
attributes count as study attributes):

- ``/studies``: study attributes;
- ``/studies/{study}/series``: series attributes;
- ``/series``: study and series attributes;
- ``/studies/{study}/series/{series}/instances``: instance attributes;
- ``/studies/{study}/instances``: series and instance attributes;
- ``/instances``: study, series and instance attributes.

A plain :class:`~dicomtrolley.core.Query` goes to the narrowest resource
that can honour every attribute it sets: a series search with one
StudyInstanceUID and only series attributes goes to
``/studies/{study}/series``, one that also matches PatientID goes to
``/series``. :class:`HierarchicalQuery` and :class:`RelationalQuery` force one
kind of resource. An attribute finer than the query level (a SOPInstanceUID in
a study search) cannot be matched by any resource and raises
:class:`~dicomtrolley.exceptions.UnSupportedParameterError`, as does
ModalitiesInStudy below study level (Orthanc then matches nothing; use
Modality). Nothing is dropped silently.

Matching values go out through :func:`~dicomtrolley._http.encode_query`:
wildcards (``*``, ``?``) and comma-separated UID lists as written; spaces,
reserved characters and non-ASCII percent-encoded, and ``^`` too (requests and
urllib3 escape it, as RFC 3986 requires). Orthanc 1.10 does not decode
percent-escapes, so there a value with a space, a ``^`` or a non-ASCII letter
only matches through wildcards (``DOE*``, ``M*LLER*``).

Paging
------
Servers cap their answers. Paging goes on with ``limit``/``offset`` until the
server has nothing more to give:

- a ``Warning: 299 ... additional results`` header asks for another page;
- with ``page_size`` set, every request asks for ``limit=page_size`` and a page
  shorter than that is the last. Choose a page size no larger than the
  server's own cap; then no extra request is needed;
- without ``page_size``, the size of the first page is taken as the server's
  possible cap and one more page is asked for; paging stops at an empty page
  or one shorter than the largest seen. So a server that caps silently costs
  pages, never results; an uncapped answer costs one extra, empty request.

A ``limit`` in the query stops the search when that many objects are found;
``offset`` skips objects as the server orders them. Orthanc 1.10's own caps
(``LimitFindResults``, ``LimitFindInstances``) cannot be paged past: it cuts
the result to cap + 1 objects before applying ``offset``, and says nothing.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from pydantic import model_validator

from dicomtrolley._http import (
    QueryValue,
    read_bounded,
    redact_url,
)
from dicomtrolley._http_searcher import HTTPSearcher
from dicomtrolley._tree import attribute_level, gc_paused, tree_from_json
from dicomtrolley.core import DICOMObjectLevels, Query, QueryLevels, Study
from dicomtrolley.exceptions import MalformedResponseError, UnSupportedParameterError

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"

DEFAULT_INCLUDE_FIELDS: dict[QueryLevels, tuple[str, ...]] = {
    QueryLevels.STUDY: (
        "StudyDescription",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    QueryLevels.SERIES: (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
        "PatientID",
        "StudyDate",
        "StudyDescription",
        "AccessionNumber",
    ),
    QueryLevels.INSTANCE: (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        "SeriesNumber",
        "Modality",
        "PatientID",
        "StudyDate",
    ),
}
"""Fields asked for at each level besides the query's ``include_fields``: the
UIDs the study tree needs, and what a user looks at first. Servers add their
own defaults (PS3.18 table 10.6.3-3)."""

DEFAULT_MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""The largest QIDO-RS answer (after decompression) read by default: about 50,000 results."""

_READ_CHUNK = 8 * 1024  # compressed bytes per read: one read inflates to at most ~8 MB

MORE_RESULTS_WARNING = re.compile(r"\b299\b.*\badditional\s+results?\b", re.IGNORECASE | re.DOTALL)
"""A QIDO-RS Warning header (code 299) saying more results exist than were answered: searches and the probe read it."""


class HierarchicalQuery(Query):
    """A query sent to the hierarchical resources only.

    ``/studies``, ``/studies/{study}/series`` and
    ``/studies/{study}/series/{series}/instances``: a series search needs one
    StudyInstanceUID, an instance search one StudyInstanceUID and one
    SeriesInstanceUID, and each may match only attributes of its own level.
    A plain :class:`~dicomtrolley.core.Query` picks these resources by itself
    whenever they fit; this class is for servers that support nothing else.

    A combination no hierarchical resource can take (a SeriesInstanceUID
    without its StudyInstanceUID, say) is refused when the query is built,
    with a ``pydantic.ValidationError`` (a ``ValueError``), as in 4.x.
    """

    @model_validator(mode="after")
    def _fits_a_hierarchical_resource(self) -> HierarchicalQuery:
        problem = _hierarchical_problem(self)
        if problem:
            raise ValueError(problem)
        return self


class RelationalQuery(Query):
    """A series or instance query sent to the relational resources.

    ``/series`` for series; ``/studies/{study}/instances`` (with one
    StudyInstanceUID and no other study attribute) or ``/instances`` for
    instances. They may match attributes of any level down to the query level.
    A study-level RelationalQuery is refused when it is built.
    """

    @model_validator(mode="after")
    def _below_study_level(self) -> RelationalQuery:
        if self.query_level is QueryLevels.STUDY:
            raise ValueError(
                "A RelationalQuery searches series or instances; use Query or HierarchicalQuery for studies"
            )
        return self


@dataclass(eq=False, repr=False, kw_only=True)
class QidoRS(HTTPSearcher):
    """Searches a DICOMweb server with QIDO-RS.

    Parameters
    ----------
    session
        The ``requests.Session`` to send on (authentication, certificates,
        proxies as the user set them up); may be shared with a downloader.
    url
        The DICOMweb root, e.g. ``https://server/dicom-web`` (``/studies`` is appended).
    timeout
        Seconds to connect and to wait for data, as ``(connect, read)`` or one number.
    retry
        When to retry a failed request; the package default if None.
    page_size
        Ask for at most this many results per request. Paging then needs no
        extra request after the last page; set it at or below the server's
        cap. None: one request for everything, plus one to check that the
        server did not cut the answer short.
    max_answer_bytes
        The largest answer (one page, decompressed) read; a larger one raises
        :class:`~dicomtrolley.exceptions.ResponseTooLargeError` once that much
        has arrived, so a runaway answer or a gzip bomb cannot exhaust memory.
        Narrow the query, or set ``page_size``, rather than raising it far.

    Examples
    --------
    >>> searcher = QidoRS(requests.Session(), "http://localhost:8042/dicom-web")  # doctest: +SKIP
    >>> searcher.find_studies(Query(PatientID="PAT001"))  # doctest: +SKIP
    [Study('1.2.826...', series=0), ...]
    """

    page_size: int | None = None
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES

    profile_fields = ("qido-rs", "url")

    def __post_init__(self) -> None:
        if self.page_size is not None and self.page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {self.page_size}")
        if self.max_answer_bytes < 1:
            raise ValueError(f"max_answer_bytes must be at least 1, got {self.max_answer_bytes}")
        super().__post_init__()

    def find_studies(self, query: Query) -> list[Study]:
        """Every study matching ``query``, with series and instances down to its query level.

        Raises
        ------
        UnSupportedParameterError
            The query matches on an attribute that no QIDO-RS resource at its
            level can match (see the module documentation).
        ServerError
            The server answered 4xx or 5xx.
        MalformedResponseError
            The answer is not DICOM JSON, or a result lacks a UID the tree needs.
        ConnectionFailedError
            The server could not be reached.
        """
        plan = _plan_request(query)
        url = self.url + plan.path
        rows = self._all_rows(url, plan, query)
        with gc_paused():
            return tree_from_json(
                rows,
                query.query_level,
                source=redact_url(url),
                study_uid=plan.study_uid,
                series_uid=plan.series_uid,
            )

    # ------------------------------------------------------------ paging

    def _all_rows(self, url: str, plan: _Plan, query: Query) -> list[Any]:
        rows: list[Any] = []
        offset = query.offset
        largest_page = 0
        first_row: Any = None
        more_known = False  # the next page is asked for because the server said, or a full page showed, there is more
        while True:
            ask = _smallest(self.page_size, None if query.limit is None else query.limit - len(rows))
            params = dict(plan.params)
            if ask is not None:
                params["limit"] = ask
            if offset:
                params["offset"] = offset
            page, more = self._page(url, params)
            if not page:
                break
            if first_row is not None and page[0] == first_row:
                # Incomplete results are worth a warning; a probe past a first page that was all there is is not.
                logger.log(
                    logging.WARNING if more_known else logging.DEBUG,
                    "QIDO-RS %s ignores offset (the page at %d repeats the first); stopping%s (the server may cap "
                    "its answers at %d)",
                    redact_url(url),
                    offset,
                    ": results after the first page are missing" if more_known else "",
                    offset - query.offset,
                )
                # What cannot be paged past may be a cap: a search over dates that finds as many
                # is then split (capped.py). The largest such page is the likeliest cap.
                self.result_cap = max(self.result_cap or 0, offset - query.offset)
                break
            if first_row is None:
                first_row = page[0]
            rows.extend(page)
            offset += len(page)
            if query.limit is not None and len(rows) >= query.limit:
                del rows[query.limit :]
                break
            more_known = more or (ask is not None and len(page) >= ask)
            if more_known:
                continue
            if self.page_size is not None or len(page) < largest_page or _names_one_object(query):
                break
            largest_page = max(largest_page, len(page))
        logger.debug("QIDO-RS %s: %d result(s)", redact_url(url), len(rows))
        return rows

    def _page(self, url: str, params: dict[str, QueryValue]) -> tuple[list[Any], bool]:
        """One request: its results, and whether the server said more are available."""
        # stream=True: HTTPClient can then quote the body of an error response.
        response = self.http.get(url, params=params, headers={"Accept": DICOM_JSON}, stream=True)
        where = redact_url(response.url or url)
        with response:
            more = _warns_of_more(response, where)
            if response.status_code == 204:
                return [], more
            too_large = (
                f"QIDO-RS answer from {where} is larger than {self.max_answer_bytes} bytes "
                "(max_answer_bytes); narrow the query or set page_size"
            )
            body = read_bounded(response.iter_content(_READ_CHUNK), self.max_answer_bytes, too_large)
        if not body.strip():
            return [], more
        try:
            with gc_paused():
                rows = json.loads(body)
        except (ValueError, RecursionError) as error:
            reason = "nested too deep" if isinstance(error, RecursionError) else str(error)
            raise MalformedResponseError(
                f"QIDO-RS answer from {where} is not JSON ({reason}): {body[:200]!r}"
            ) from None
        if not isinstance(rows, list):
            raise MalformedResponseError(
                f"QIDO-RS answer from {where} is not a list of DICOM JSON objects: {body[:200]!r}"
            )
        return rows, more


def _smallest(*limits: int | None) -> int | None:
    given = [one for one in limits if one is not None]
    return min(given) if given else None


def _warns_of_more(response: requests.Response, where: str) -> bool:
    """Read the Warning header: True if it says more results can be requested."""
    warning = response.headers.get("Warning")
    if not warning:
        return False
    if MORE_RESULTS_WARNING.search(warning):
        logger.info("QIDO-RS %s: %s; asking for the next page", where, warning)
        return True
    logger.warning("QIDO-RS %s warns: %s", where, warning)
    return False


# ---------------------------------------------------------------- planning


_UNIQUE_KEYS = {
    QueryLevels.STUDY: "StudyInstanceUID",
    QueryLevels.SERIES: "SeriesInstanceUID",
    QueryLevels.INSTANCE: "SOPInstanceUID",
}


def _names_one_object(query: Query) -> bool:
    """True when ``query`` matches the unique key of its level to one UID (no list, no wildcard).

    Its answer is one object (Orthanc may list a study twice under two PatientIDs), far below
    any server's cap, so the empty page that looks for a silent cap is not asked for.
    """
    value = query.attributes().get(_UNIQUE_KEYS.get(query.query_level, ""), "")
    return bool(value) and not any(mark in value for mark in ",*?\\")


@dataclass(frozen=True)
class _Plan:
    """Where a query goes: the resource path, its matching parameters (no paging), the UIDs in the path."""

    path: str
    params: dict[str, QueryValue]
    study_uid: str | None = None
    series_uid: str | None = None


def _plan_request(query: Query) -> _Plan:
    """Choose the resource for ``query`` and build its matching parameters.

    Raises
    ------
    UnSupportedParameterError
        No resource at the query's level can honour every attribute it sets.
    """
    level = query.query_level
    depth = level.object_level
    attributes = query.attributes()
    date_range = query.study_date_range()
    if date_range:
        attributes["StudyDate"] = date_range
    levels = {name: attribute_level(name) for name in attributes}
    for name, attribute in levels.items():
        if attribute < depth:
            raise UnSupportedParameterError(
                f"{name} is a {attribute.name} attribute: a {level.value}-level QIDO-RS search cannot "
                f"match on it; search at {attribute.name} level"
            )
    if "ModalitiesInStudy" in attributes and level is not QueryLevels.STUDY:
        raise UnSupportedParameterError(
            f"ModalitiesInStudy can only be matched by a STUDY-level search, not {level.value}; "
            "use Modality to match series"
        )
    forced_hierarchical = isinstance(query, HierarchicalQuery)
    forced_relational = isinstance(query, RelationalQuery)
    study = _single_uid(attributes.get("StudyInstanceUID", ""))
    series = _single_uid(attributes.get("SeriesInstanceUID", ""))
    study_attributes = [
        name for name, at in levels.items() if at is DICOMObjectLevels.STUDY and name != "StudyInstanceUID"
    ]
    series_attributes = [
        name for name, at in levels.items() if at is DICOMObjectLevels.SERIES and name != "SeriesInstanceUID"
    ]

    # A HierarchicalQuery or RelationalQuery was checked when it was built:
    # it fits the resources it is forced to.
    if level is QueryLevels.STUDY:
        return _plan("/studies", attributes, query)

    if level is QueryLevels.SERIES:
        if forced_hierarchical or (not forced_relational and study and not study_attributes):
            return _plan(f"/studies/{_path(study)}/series", attributes, query, study_uid=study)
        return _plan("/series", attributes, query)

    coarse = study_attributes + series_attributes
    if forced_hierarchical or (not forced_relational and study and series and not coarse):
        return _plan(
            f"/studies/{_path(study)}/series/{_path(series)}/instances",
            attributes,
            query,
            study_uid=study,
            series_uid=series,
        )
    if study and not study_attributes:
        return _plan(f"/studies/{_path(study)}/instances", attributes, query, study_uid=study)
    return _plan("/instances", attributes, query)


def _hierarchical_problem(query: Query) -> str:
    """Why no hierarchical resource can take ``query`` ('' when one can).

    A UID needs its parent's (a series is found within one study); below study
    level the path needs one UID per level above, and only attributes of the
    query level can be matched.
    """
    attributes = query.attributes()
    if query.study_date_range():
        attributes["StudyDate"] = query.study_date_range()
    for child, parent in (("SeriesInstanceUID", "StudyInstanceUID"), ("SOPInstanceUID", "SeriesInstanceUID")):
        if attributes.get(child) and not attributes.get(parent):
            return (
                f"A hierarchical QIDO-RS query with a {child} needs its {parent} too; "
                "add it, or use Query or RelationalQuery"
            )
    level = query.query_level
    if level is QueryLevels.STUDY:
        return ""
    path = ["StudyInstanceUID"] + (["SeriesInstanceUID"] if level is QueryLevels.INSTANCE else [])
    if not all(_single_uid(attributes.get(name, "")) for name in path):
        needed = " and ".join(f"one {name}" for name in path)
        return (
            f"A hierarchical {level.value}-level QIDO-RS search needs {needed} (no list, no wildcard); "
            "use Query or RelationalQuery to search without"
        )
    coarse = sorted(
        name for name in attributes if name not in path and attribute_level(name) > level.object_level
    )
    if coarse:
        return (
            f"A hierarchical {level.value}-level QIDO-RS search matches {level.value} attributes only, "
            f"not {', '.join(coarse)}; use Query or RelationalQuery"
        )
    return ""


def _plan(
    path: str,
    attributes: dict[str, str],
    query: Query,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> _Plan:
    in_path = {"StudyInstanceUID"} if study_uid else set()
    if series_uid:
        in_path.add("SeriesInstanceUID")
    params: dict[str, QueryValue] = {k: v for k, v in attributes.items() if k not in in_path}
    params["includefield"] = _include_fields(query)
    return _Plan(path, params, study_uid, series_uid)


def _include_fields(query: Query) -> QueryValue:
    """The query's include_fields and the level's defaults, for ``includefield``.

    Named fields go as one comma-separated value (short URLs); ``all`` goes as
    an ``includefield`` of its own, so a server that ignores it (Orthanc)
    still returns the named fields the tree needs.
    """
    names = [name for name in query.include_fields if name != "all"]
    named = ",".join(dict.fromkeys([*DEFAULT_INCLUDE_FIELDS[query.query_level], *names]))
    return ["all", named] if "all" in query.include_fields else named


def _single_uid(value: str) -> str:
    """``value`` if it names exactly one UID (no list, no wildcard), else ''."""
    value = value.strip()
    if not value or any(char in value for char in ",\\*?"):
        return ""
    return value


def _path(uid: str) -> str:
    return quote(uid, safe="")
