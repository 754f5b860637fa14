"""Searches a server cut at its cap, split by date until no part is cut.

Archives cap their answers: a C-FIND that stops at 500 matches, a QIDO-RS
server that ignores ``offset`` and so cannot be paged past its first page.
Such an answer looks complete. :func:`find_uncapped` takes an answer with as
many studies as the searcher's known cap (:attr:`Searcher.result_cap
<dicomtrolley.roles.Searcher.result_cap>`), or, when none is known, exactly
one of the round numbers servers cap at (:data:`ROUND_CAPS`), as cut; a search
over a StudyDate range is then split in two halves, each searched (and split)
the same way, so that a worklist row such as ``StudyDate=20210101-20211231``
finds every study. A part that is still cut when it spans one day is
reported: the log says how many studies it holds and that more may be
missing, and :class:`SearchCapped` records it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta

from dicomtrolley.core import Query, Study
from dicomtrolley.roles import Searcher

logger = logging.getLogger(__name__)

ROUND_CAPS = frozenset({100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000})
"""Answer sizes taken as a cap when the searcher knows none: the defaults archives ship with."""

EARLIEST = date(1900, 1, 1)
"""Where an open-ended range starts when it is split."""


@dataclass(frozen=True)
class SearchCapped:
    """A part of a search that stayed cut at the server's cap: it cannot be split further.

    Attributes
    ----------
    query
        The part, as sent.
    found
        Studies it found: as many as the cap; more may be missing.
    """

    query: Query
    found: int


def find_uncapped(searcher: Searcher, query: Query, capped: list[SearchCapped] | None = None) -> list[Study]:
    """Every study matching ``query``, splitting a date range the server cut at its cap.

    Parameters
    ----------
    searcher
        Asks the server.
    query
        The search.
    capped
        Where to record the parts that stayed cut, if anywhere.
    """
    studies = searcher.find_studies(query)
    if not _is_cut(searcher, query, len(studies)):
        return studies
    halves = split_dates(query)
    if halves is None:
        logger.warning(
            "%s found %d studies, as many as the server's cap, and has no StudyDate range of more than one day "
            "to split: studies beyond the cap may be missing (%d found; narrow the search to find the rest)",
            query.to_short_string(), len(studies), len(studies),
        )
        if capped is not None:
            capped.append(SearchCapped(query, len(studies)))
        return studies
    logger.warning(
        "%s found %d studies, as many as the server's cap; searching %s and %s apart",
        query.to_short_string(), len(studies), halves[0].study_date_range(), halves[1].study_date_range(),
    )
    found = find_uncapped(searcher, halves[0], capped)
    seen = {study.uid for study in found}
    found += [study for study in find_uncapped(searcher, halves[1], capped) if study.uid not in seen]
    return found[: query.limit] if query.limit is not None else found


def split_dates(query: Query) -> tuple[Query, Query] | None:
    """``query`` over the two halves of its StudyDate range, or None when it has none longer than a day.

    An open end stays open in its half; the split point is taken as if it
    were :data:`EARLIEST` or today.
    """
    if query.min_study_date is None and query.max_study_date is None:
        return None
    low = query.min_study_date or EARLIEST
    high = query.max_study_date or max(date.today(), low)
    if high <= low:
        return None
    middle = low + timedelta(days=(high - low).days // 2)
    first = query.model_copy(update={"max_study_date": middle, "offset": 0})
    second = query.model_copy(update={"min_study_date": middle + timedelta(days=1), "offset": 0})
    return first, second


def _is_cut(searcher: Searcher, query: Query, count: int) -> bool:
    """Whether an answer of ``count`` studies looks cut at the server's cap (not at the query's own limit)."""
    if query.limit is not None and count >= query.limit:
        return False
    cap = searcher.result_cap
    return count >= cap if cap is not None else count in ROUND_CAPS
