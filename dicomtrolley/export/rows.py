"""Worklist rows into studies: what an export still has to search, and what each search found.

A row of only a StudyInstanceUID needs no search: it is resolved at once,
with all such rows in one transaction. Every other row waits here for the
driver to run its search (:func:`~dicomtrolley.export.tasks.find_row_studies`
on the executor); :meth:`RowResolver.record` writes what it found to the state
database and names the studies that are new to run.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from dicomtrolley.core import Query
from dicomtrolley.export.state import RUNNING, StateDatabase
from dicomtrolley.export.worklist import WorklistRow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowSearch:
    """A task of the driver: search the studies of one worklist row."""

    key: str
    query: Query


@dataclass(frozen=True)
class StudyRun:
    """A task of the driver: download one study."""

    uid: str


class RowResolver:
    """The rows of this run still to search, and the studies known to run (each queued once).

    Parameters
    ----------
    state
        The export's database: rows and studies are resolved there.
    rows
        This run's rows, by key (a repeated row is the row where it first stands).
    max_attempts
        Attempts a study gets in all; a study without attempts left is not run again.
    """

    def __init__(self, state: StateDatabase, rows: Mapping[str, WorklistRow], max_attempts: int) -> None:
        self.state = state
        self.max_attempts = max_attempts
        unresolved = state.unresolved_rows()
        # Rows of only a StudyInstanceUID need no search: resolved at once, in one transaction.
        state.resolve_rows(
            [(row.key, [uid]) for row in unresolved if (uid := rows[row.key].study_uid) is not None], max_attempts
        )
        # Only the rows still to search are kept, and each only until its search starts.
        self._waiting: deque[RowSearch] = deque(
            RowSearch(row.key, rows[row.key].query) for row in unresolved if rows[row.key].study_uid is None
        )
        self._queued: set[str] = set()

    def __bool__(self) -> bool:
        """True while a row waits for its search."""
        return bool(self._waiting)

    def studies_to_run(self) -> tuple[deque[str], set[str]]:
        """The studies this run starts with, in worklist order, and those an earlier run left running (it crashed)."""
        runnable = self.state.studies_to_run(self.max_attempts)
        studies = deque(uid for uid, _ in runnable)
        self._queued.update(studies)
        return studies, {uid for uid, status in runnable if status == RUNNING}

    def next_search(self) -> RowSearch:
        """The next row to search (the caller checked that one waits)."""
        return self._waiting.popleft()

    def record(self, search: RowSearch, uids: list[str] | None, error: str | None) -> list[str]:
        """Record what a row's search found (``uids``) or why it failed; return the studies that are new to run."""
        if error is not None or uids is None:
            logger.warning("Worklist row %s: search failed: %s", search.key, error)
            self.state.fail_row(search.key, error or "no answer")
            return []
        if len(uids) > 1:
            logger.info("Worklist row %s matched %d studies; exporting all", search.key, len(uids))
        runnable = self.state.resolve_rows([(search.key, uids)], self.max_attempts)
        new = [uid for uid in runnable if uid not in self._queued]
        self._queued.update(new)
        return new
