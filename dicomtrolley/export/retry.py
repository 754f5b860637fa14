"""Another attempt within the run: which failures may pass, and when a failed study goes back in line.

A study whose attempt failed for a reason that may pass (:func:`worth_retrying`)
waits in a :class:`RetryQueue` for a backoff that doubles with each attempt
(jittered, capped), then runs again, until it has had ``max_attempts`` attempts,
counted across runs in the state database. A failure that asking again cannot
mend fails the study at once; the next run still gives it its remaining attempts
(the user may have freed the disk or fixed the login in between).

Worth another attempt within the run:

- the connection was refused, reset, timed out or cut mid-body
  (:class:`~dicomtrolley.exceptions.ConnectionFailedError`);
- a multipart body ended early (:class:`~dicomtrolley.exceptions.TruncatedBodyError`);
- an answer of 408, 429 or any 5xx, 500 included (a 500 is retried here, not within
  the request: the server may be restarting, or the study's next attempt may take another path);
- instances missing from an answer that was otherwise whole;
- DIMSE: an association that broke or was not accepted, or a peer out of resources (0xA7xx).

Not worth it (the study fails at once):

- any other 4xx: 400, 401, 403, 404 (not found), 406;
- a refused login (:class:`~dicomtrolley.exceptions.DICOMTrolleyAuthError`);
- storage: a full disk, an unwritable folder, colliding paths (:class:`~dicomtrolley.exceptions.StorageError`);
- an answer that is not DICOM or not DICOM JSON, other framing errors, a missing pseudonymisation key;
- a task that crashed its worker process (a study that kills workers would kill the next ones too).

A quarantined instance (pseudonymisation held it back) is no failure: the study is done.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dicomtrolley._http import backoff_delay
from dicomtrolley.exceptions import (
    ConnectionFailedError,
    DIMSEError,
    ServerError,
    TruncatedBodyError,
)

RETRY_STATUSES = frozenset({408, 429})
"""Client statuses that say "later", besides every 5xx."""

MAX_RETRY_DELAY = 300.0
"""The longest a failed study waits before its next attempt, in seconds."""


def worth_retrying(error: BaseException) -> bool:
    """True when an attempt that failed with ``error`` may succeed if made again; see the module."""
    if isinstance(error, ServerError):
        return error.status >= 500 or error.status in RETRY_STATUSES
    if isinstance(error, DIMSEError):
        return error.status is None or 0xA700 <= error.status <= 0xA7FF
    return isinstance(error, (ConnectionFailedError, TruncatedBodyError))


def all_worth_retrying(errors: Iterable[BaseException]) -> bool:
    """True when every error may pass: one that cannot would fail the next attempt too."""
    return all(worth_retrying(error) for error in errors)


@dataclass(frozen=True)
class Backoff:
    """How long a failed study waits before its next attempt.

    Parameters
    ----------
    base
        Seconds after the first failed attempt; doubled after each one, jittered
        (0.5 to 1.5 times), so that studies failed together come back apart.
    cap
        The longest wait.
    """

    base: float = 5.0
    cap: float = MAX_RETRY_DELAY

    def delay(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts (counted across runs)."""
        return backoff_delay(attempts, self.base, self.cap) if self.base else 0.0


class RetryQueue:
    """Failed studies waiting for their next attempt, each until its backoff has passed.

    Only the driver's thread uses it. A study waiting here is recorded as failed in
    the state database, its attempts counted: if the process dies, the next run
    takes it up with the attempts it has left.

    Parameters
    ----------
    backoff
        How long each study waits.
    clock
        Monotonic seconds (a test passes its own).
    """

    def __init__(self, backoff: Backoff, clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff
        self._clock = clock
        self._waiting: list[tuple[float, int, str]] = []  # (due, order of arrival, uid): a heap
        self._order = itertools.count()

    def put(self, uid: str, attempts: int) -> float:
        """Queue ``uid`` after its ``attempts``-th failed attempt; returns the seconds it waits."""
        wait = self.backoff.delay(attempts)
        heapq.heappush(self._waiting, (self._clock() + wait, next(self._order), uid))
        return wait

    def due(self) -> list[str]:
        """The studies whose wait is over, taken out of the queue, the longest waiting first."""
        now = self._clock()
        ready: list[str] = []
        while self._waiting and self._waiting[0][0] <= now:
            ready.append(heapq.heappop(self._waiting)[2])
        return ready

    def __len__(self) -> int:
        return len(self._waiting)
