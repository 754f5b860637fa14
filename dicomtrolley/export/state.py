"""The state of an export: one SQLite database (in the output folder, or a state folder), and the folder's lock.

The database records every worklist row, the studies each row matched, and for
each study its status, attempts, counts, bytes, transfer syntaxes, error and
times, plus one line per instance file written (the index). It runs in WAL
mode and every change is one transaction, so a process killed at any moment
leaves it as it was after the last change: the next run reads it and goes on.

Only the process that holds the folder's lock (:class:`FolderLock`) writes it,
and within that process only the thread that drives the export.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from dicomtrolley.exceptions import ExportLockedError, OutputFolderError

if TYPE_CHECKING:
    from dicomtrolley.export.tasks import StudyOutcome

DATABASE_NAME = ".dicomtrolley-export.sqlite"
"""The state database, in the state folder (the output folder unless the export says otherwise)."""

LOCK_NAME = ".dicomtrolley-export.lock"
"""The lock file, in the output folder; it holds the pid and host of the export using the folder."""

PENDING, RUNNING, DONE, FAILED, NOT_FOUND, BAD_ROW = "pending", "running", "done", "failed", "not found", "bad row"
"""The statuses of rows and studies."""

INDEX_COLUMNS: tuple[str, ...] = (
    "path", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID", "StudyDate",
    "Modality", "SeriesNumber", "InstanceNumber", "TransferSyntaxUID", "size",
)
"""The columns of the instance index, in order."""


class IndexRow(NamedTuple):
    """One file in the instance index: the :data:`INDEX_COLUMNS`, in order (a tuple, as the database takes it)."""

    path: str
    """Relative to the output folder, folders separated by ``/``."""
    study_uid: str
    series_uid: str
    sop_uid: str
    patient_id: str
    study_date: str
    modality: str
    series_number: str
    instance_number: str
    transfer_syntax: str
    size: int

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    key TEXT PRIMARY KEY, line INTEGER NOT NULL, query TEXT NOT NULL,
    resolved INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'pending', error TEXT NOT NULL DEFAULT '',
    seen INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS row_studies (
    row_key TEXT NOT NULL, study_uid TEXT NOT NULL, PRIMARY KEY (row_key, study_uid)
);
CREATE TABLE IF NOT EXISTS studies (
    uid TEXT PRIMARY KEY, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    expected INTEGER, written INTEGER NOT NULL DEFAULT 0, skipped INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0, transfer_syntaxes TEXT NOT NULL DEFAULT '{}',
    error TEXT NOT NULL DEFAULT '', started TEXT NOT NULL DEFAULT '', finished TEXT NOT NULL DEFAULT '',
    quarantined INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS instances (
    path TEXT PRIMARY KEY, study_uid TEXT NOT NULL, series_uid TEXT, sop_uid TEXT, patient_id TEXT,
    study_date TEXT, modality TEXT, series_number TEXT, instance_number TEXT, transfer_syntax TEXT,
    size INTEGER
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances (study_uid);
"""


def now() -> str:
    """The time for the database and the report: ISO 8601 in UTC, to the second."""
    return _iso_second(int(time.time()))


@lru_cache(maxsize=4)
def _iso_second(second: int) -> str:
    """A second since the epoch as ISO 8601 in UTC; formatted once however many studies end in it."""
    return datetime.fromtimestamp(second, timezone.utc).isoformat()


@dataclass(frozen=True)
class StudyState:
    """One study's line in the database."""

    uid: str
    status: str
    attempts: int
    expected: int | None
    written: int
    skipped: int
    bytes: int
    transfer_syntaxes: dict[str, int]
    error: str
    started: str
    finished: str
    quarantined: int = 0


@dataclass(frozen=True)
class RowState:
    """One worklist row's line in the database."""

    key: str
    line: int
    query: str
    resolved: bool
    status: str
    error: str


class FolderLock:
    """An exclusive lock on an output folder, held for the length of an export.

    The operating system releases it when the process ends, however it ends,
    so a killed export never leaves a stale lock behind.

    Raises
    ------
    ExportLockedError
        On :meth:`acquire`, when another process holds the lock; the message names it.
    OutputFolderError
        On :meth:`acquire`, when the lock file cannot be opened (the message says why).
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._file: Any = None

    def acquire(self) -> None:
        """Take the lock or raise at once; never waits."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            file = self.path.open("a+", encoding="utf-8")
        except OSError as error:
            raise OutputFolderError(f"cannot open the export's lock file {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise ExportLockedError(
                f"{self.path.parent} is in use by another export ({holder}); wait for it or choose another folder"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()} on {os.uname().nodename} since {now()}\n")
        file.flush()
        self._file = file

    def release(self) -> None:
        """Give the lock up (also done by the OS when the process ends)."""
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class StateDatabase:
    """The export's record; see the module documentation.

    Parameters
    ----------
    folder
        The state folder (the output folder unless the export keeps its state
        elsewhere); the database is :data:`DATABASE_NAME` in it.
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / DATABASE_NAME
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._transaction():
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(statement)
            columns = {column[1] for column in self._db.execute("PRAGMA table_info(studies)")}
            if "quarantined" not in columns:  # a database from a version before pseudonymised exports
                self._db.execute("ALTER TABLE studies ADD COLUMN quarantined INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        """Checkpoint and close the database."""
        self._db.close()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Make every change inside the block one transaction: one commit for many small changes.

        Either all of them are recorded or, when the process dies first, none.
        """
        with self._transaction():
            yield

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self._db.in_transaction:  # inside a batch: part of its transaction
            yield self._db
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------ rows

    def add_rows(self, rows: Iterable[tuple[str, int, str]], *, refresh: bool) -> None:
        """Record the worklist's rows as ``(key, line, query)``; rows known from a run before keep their studies.

        With ``refresh``, rows that needed a search are searched again.
        Rows of earlier runs that are no longer in the worklist are kept out of this run's report.
        """
        with self._transaction() as db:
            db.execute("UPDATE rows SET seen = 0")
            db.executemany(
                "INSERT INTO rows (key, line, query) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET line = excluded.line, seen = 1",
                rows,
            )
            if refresh:
                db.execute("UPDATE rows SET resolved = 0 WHERE seen = 1 AND status != ?", (BAD_ROW,))

    def add_bad_row(self, line: int, error: str) -> None:
        """Record a row that could not be read (reported, never exported)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO rows (key, line, query, resolved, status, error) VALUES (?, ?, '', 1, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET line = excluded.line, error = excluded.error, seen = 1",
                (f"bad row {line}", line, BAD_ROW, error),
            )

    def unresolved_rows(self) -> list[RowState]:
        """This run's rows whose studies are not known yet."""
        return [self._row(r) for r in self._db.execute("SELECT * FROM rows WHERE seen = 1 AND resolved = 0")]

    def resolve_rows(self, resolved: Iterable[tuple[str, list[str]]], max_attempts: int) -> list[str]:
        """Record what rows matched, as ``(row key, StudyInstanceUIDs)``, in one transaction.

        A row with no studies is not found. Returns the studies among them that
        still have to run (not done, attempts left), each once.
        """
        runnable: list[str] = []
        with self._transaction() as db:
            for key, study_uids in resolved:
                db.execute("DELETE FROM row_studies WHERE row_key = ?", (key,))
                db.execute(
                    "UPDATE rows SET resolved = 1, status = ?, error = '' WHERE key = ?",
                    (PENDING if study_uids else NOT_FOUND, key),
                )
                db.executemany("INSERT OR IGNORE INTO studies (uid) VALUES (?)", ((uid,) for uid in study_uids))
                db.executemany(
                    "INSERT INTO row_studies (row_key, study_uid) VALUES (?, ?)", ((key, uid) for uid in study_uids)
                )
                runnable.extend(
                    uid for uid in study_uids
                    if db.execute(
                        "SELECT 1 FROM studies WHERE uid = ? AND status IN (?, ?, ?) AND attempts < ?",
                        (uid, PENDING, RUNNING, FAILED, max_attempts),
                    ).fetchone()
                )
        return list(dict.fromkeys(runnable))

    def fail_row(self, key: str, error: str) -> None:
        """A row's search failed: it is searched again on the next run."""
        self._db.execute("UPDATE rows SET resolved = 1, status = ?, error = ? WHERE key = ?", (FAILED, error, key))

    def unresolve_failed_rows(self) -> None:
        """Rows whose search failed in a run before are searched again."""
        self._db.execute("UPDATE rows SET resolved = 0 WHERE seen = 1 AND status = ?", (FAILED,))

    # ------------------------------------------------------------ studies
    # A single statement is a transaction of its own (autocommit): no BEGIN/COMMIT needed.

    def studies_to_run(self, max_attempts: int) -> list[tuple[str, str]]:
        """``(uid, status)`` of this run's studies that are unfinished and have attempts left, in worklist order."""
        cursor = self._db.execute(
            "SELECT s.uid, s.status FROM studies s JOIN row_studies rs ON rs.study_uid = s.uid "
            "JOIN rows r ON r.key = rs.row_key WHERE r.seen = 1 AND s.status IN (?, ?, ?) AND s.attempts < ? "
            "GROUP BY s.uid ORDER BY MIN(r.line)",
            (PENDING, RUNNING, FAILED, max_attempts),
        )
        return [(uid, status) for uid, status in cursor]

    def start_study(self, uid: str) -> None:
        """A study is starting: one more attempt, status running."""
        self._db.execute(
            "UPDATE studies SET status = ?, attempts = attempts + 1, started = ?, finished = '' WHERE uid = ?",
            (RUNNING, now(), uid),
        )

    def attempts(self, uid: str) -> int:
        """The attempts a study has had, in this run and the runs before."""
        row = self._db.execute("SELECT attempts FROM studies WHERE uid = ?", (uid,)).fetchone()
        return int(row[0]) if row else 0

    def interrupt_study(self, uid: str) -> None:
        """A study stopped by Ctrl-C: pending again, the attempt not counted."""
        self._db.execute(
            "UPDATE studies SET status = ?, attempts = MAX(attempts - 1, 0) WHERE uid = ?", (PENDING, uid)
        )

    def finish_study(self, outcome: StudyOutcome, instances: Iterable[IndexRow]) -> None:
        """Record how a study's attempt ended and the files it wrote, in one transaction.

        Counts, bytes and transfer syntaxes are the last attempt's: what it
        wrote, and what it found complete on disk.
        """
        with self._transaction() as db:
            db.execute(
                "UPDATE studies SET status = ?, expected = ?, written = ?, skipped = ?, bytes = ?, "
                "transfer_syntaxes = ?, error = ?, finished = ?, quarantined = ? WHERE uid = ?",
                (
                    outcome.status, outcome.expected, outcome.written, outcome.skipped, outcome.bytes_written,
                    json.dumps(outcome.transfer_syntaxes), outcome.error, now(), outcome.quarantined,
                    outcome.study_uid,
                ),
            )
            db.executemany(
                f"INSERT OR REPLACE INTO instances VALUES ({', '.join('?' * len(INDEX_COLUMNS))})", instances
            )

    # ------------------------------------------------------------ reading

    def report_lines(self) -> Iterator[tuple[RowState, StudyState | None]]:
        """This run's rows, each with each study it matched (``None`` for a row that matched none), by line.

        Streamed from one query: a worklist of any length costs the same memory.
        """
        cursor = self._db.execute(
            "SELECT r.*, s.* FROM rows r LEFT JOIN row_studies rs ON rs.row_key = r.key "
            "LEFT JOIN studies s ON s.uid = rs.study_uid WHERE r.seen = 1 ORDER BY r.line, s.uid"
        )
        width = len(RowState.__dataclass_fields__) + 1  # the rows table also has ``seen``
        for raw in cursor:
            row, study = raw[:width], raw[width:]
            yield self._row(row), (self._study(study) if study[0] is not None else None)

    def index_rows(self) -> Iterator[IndexRow]:
        """Every instance file written by this export."""
        for raw in self._db.execute("SELECT * FROM instances ORDER BY study_uid, series_uid, sop_uid"):
            yield IndexRow(*raw)

    @staticmethod
    def _row(raw: tuple[Any, ...]) -> RowState:
        key, line, query, resolved, status, error, _seen = raw
        return RowState(key, line, query, bool(resolved), status, error)

    @staticmethod
    def _study(raw: tuple[Any, ...]) -> StudyState:
        uid, status, attempts, expected, written, skipped, size, syntaxes, error, started, finished, held = raw
        return StudyState(
            uid, status, attempts, expected, written, skipped, size, json.loads(syntaxes), error, started, finished,
            held,
        )
