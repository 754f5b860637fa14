"""How a probe finds out whether a server cuts its search answers at a cap, cheaply and read-only.

Archives stop an answer at a cap (a C-FIND at 500 matches, a QIDO-RS answer
at 100 results) and often say nothing. The probe asks for up to
:data:`CEILING` studies once; an answer that stops short of it is either
every study the archive holds or a cut one. :func:`check_cap` tells the two
apart with at most two more small searches: the StudyDates of the answer are
split in two halves with :func:`~dicomtrolley.capped.split_dates`, the split a
capped search makes, and each half (its outer end left open) is searched for
one study more than the answer holds in it. A complete answer holds every
study of each half, so a half that finds one more proves the answer was cut,
at as many studies as it held: the number saved as a profile's ``search_cap``
(:attr:`Searcher.result_cap <dicomtrolley.roles.Searcher.result_cap>`), with
which later searches over a date range are split without paging first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime

from dicomtrolley.capped import ROUND_CAPS, split_dates
from dicomtrolley.core import Query

CEILING = 1000
"""The most studies a probe asks for at once: a cap above it is not seen (and not asked for)."""

Ask = Callable[[str, int], "set[str] | None"]
"""Search for the studies in a StudyDate range (``-YYYYMMDD`` or ``YYYYMMDD-``), reading at most
so many: their UIDs, or None when the search was refused."""


@dataclass(frozen=True)
class CapCheck:
    """What one check found.

    Attributes
    ----------
    cut
        True: the answer was cut at ``found`` studies; False: it was not (or
        it reached the ceiling); None: it cannot be told.
    found
        Studies in the answer.
    detail
        How it was told, for the probe's table.
    """

    cut: bool | None
    found: int
    detail: str


def check_cap(answer: Mapping[str, str], ask: Ask, *, told: str = "", ceiling: int = CEILING) -> CapCheck:
    """Whether ``answer``, a search for up to ``ceiling`` studies, was cut at the server's cap.

    Parameters
    ----------
    answer
        The studies found, as StudyInstanceUID to StudyDate (``YYYYMMDD``; empty when not given).
    ask
        Searches the server again within a StudyDate range.
    told
        What the server said of more results (a QIDO-RS ``Warning``), if it said so: then no more is asked.
    ceiling
        How many studies the answer was asked for.
    """
    found = len(answer)
    if found >= ceiling:
        return CapCheck(False, found, f"no cap seen up to {ceiling} studies")
    if told:
        return CapCheck(True, found, f"capped at {found}: {told}")
    dated = {uid: day for uid, day in ((uid, _date(text)) for uid, text in answer.items()) if day is not None}
    halves = _halves(set(dated.values()))
    if halves is None:
        round_number = f"; {found} is a round number archives cap at: searches take it as cut" \
            if found in ROUND_CAPS else ""
        return CapCheck(None, found, f"{found} studies answered; cannot tell whether that is all "
                                     f"(fewer than two StudyDates to split at){round_number}")
    for low, high in halves:
        inside = {uid for uid, day in dated.items() if (low is None or day >= low) and (high is None or day <= high)}
        date_range = Query(min_study_date=low, max_study_date=high).study_date_range()
        more = ask(date_range, len(inside) + 1)
        if more is None:
            return CapCheck(None, found, f"{found} studies answered; StudyDate={date_range} was refused, "
                                         "so whether that is all cannot be told")
        if more - set(answer):
            return CapCheck(True, found, f"capped at {found}: StudyDate={date_range} finds studies the answer lacks")
    return CapCheck(False, found, f"no cap seen: all {found} studies answered")


def _halves(days: set[date]) -> tuple[tuple[date | None, date | None], ...] | None:
    """The two halves of the span of ``days``, outer ends open; None with fewer than two days."""
    if len(days) < 2:
        return None
    split = split_dates(Query(min_study_date=min(days), max_study_date=max(days)))
    if split is None:
        return None
    first, second = split
    return (None, first.max_study_date), (second.min_study_date, None)


def _date(text: str) -> date | None:
    try:
        return datetime.strptime(text.strip(), "%Y%m%d").date()
    except ValueError:
        return None
