"""A bounded pool of workers for downloads.

Downloaders hand their targets (series, instances) to :func:`run_targets`,
which runs them on a fixed number of threads and keeps only a few more
targets queued than there are workers, so a study of 10,000 instances never
becomes 10,000 pending futures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from dicomtrolley.core import FetchFailure, Reference
from dicomtrolley.exceptions import DICOMTrolleyError

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=Reference)


def run_targets(
    targets: Iterable[T],
    work: Callable[[T], None],
    *,
    workers: int,
    stop_on_failure: bool,
) -> list[FetchFailure]:
    """Run ``work(target)`` for each target on at most ``workers`` threads.

    Parameters
    ----------
    targets
        What to fetch; consumed lazily.
    work
        Fetches one target. A :class:`~dicomtrolley.exceptions.DICOMTrolleyError`
        it raises becomes a :class:`FetchFailure`; any other exception is a bug
        and propagates once the running work has finished.
    workers
        Threads in the pool; at most ``2 * workers`` targets are pending at once.
    stop_on_failure
        Start no new target after the first failure.

    Returns
    -------
    list[FetchFailure]
        One entry per target that failed.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    failures: list[FetchFailure] = []
    pending: dict[Future[None], T] = {}
    queue = iter(targets)
    exhausted = False

    def collect(done: Iterable[Future[None]]) -> None:
        for future in done:
            target = pending.pop(future)
            error = future.exception()
            if error is None:
                continue
            if not isinstance(error, DICOMTrolleyError):
                raise error
            logger.warning("Fetching %s failed: %s", target, error)
            failures.append(FetchFailure(target, error))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dicomtrolley") as pool:
        try:
            while True:
                while not exhausted and len(pending) < 2 * workers and not (stop_on_failure and failures):
                    target = next(queue, None)
                    if target is None:
                        exhausted = True
                        break
                    pending[pool.submit(work, target)] = target
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
        finally:
            for future in pending:
                future.cancel()
            done, _ = wait(pending)
            collect(future for future in done if not future.cancelled())
    return failures
