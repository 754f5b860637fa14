"""Bounded concurrency for downloads: a worker pool, and read-ahead of a stream.

Downloaders hand their targets (series, instances) to :func:`run_targets`,
which runs them on a fixed number of threads and keeps only a few more
targets queued than there are workers, so a study of 10,000 instances never
becomes 10,000 pending futures.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from dicomtrolley.core import FetchFailure, Handoff, Reference
from dicomtrolley.exceptions import DICOMTrolleyError

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=Reference)
U = TypeVar("U")


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


class _End:
    """Marks the end of a prefetched iterator, or carries the error that ended it."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def prefetch(items: Iterator[U], *, depth: int, discard: Callable[[U], None]) -> Iterator[U]:
    """Iterate ``items`` on a background thread, at most ``depth`` items ahead.

    A download's stream is read and split into instances on one thread while
    the consumer writes the previous instances to disk on another, so network
    and disk work overlap. When the consumer stops early, items read ahead are
    passed to ``discard`` (to free them) and the source iterator is closed.
    """
    ready: Handoff[U | _End] = Handoff(depth)

    def produce() -> None:
        try:
            for item in items:
                if not ready.offer(item):
                    discard(item)
                    break
            else:
                ready.offer(_End())
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, re-raised there
            ready.offer(_End(error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name="dicomtrolley-prefetch", daemon=True)
    producer.start()
    try:
        while True:
            item = ready.take()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        ready.stop()
        producer.join()
        for leftover in ready.leftovers():
            if not isinstance(leftover, _End):
                discard(leftover)


def interleave(sources: Sequence[Callable[[], Iterator[U]]], *, workers: int, depth: int) -> Iterator[U]:
    """The items of several iterators, each run on a pool thread, in the order they arrive.

    At most ``workers`` sources run at once and at most ``depth`` items wait
    for the consumer, so memory stays bounded. The first error of any source
    is raised to the consumer once the items before it were taken; when the
    consumer stops early, the running sources stop at their next item.
    """
    if len(sources) <= 1 or workers <= 1:
        for source in sources:
            yield from source()
        return
    ready: Handoff[U | _End] = Handoff(depth)

    def drain(source: Callable[[], Iterator[U]]) -> None:
        items: Iterator[U] | None = None
        try:
            items = source()
            for item in items:
                if not ready.offer(item):
                    return
            ready.offer(_End())
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, re-raised there
            ready.offer(_End(error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    pool = ThreadPoolExecutor(max_workers=min(workers, len(sources)), thread_name_prefix="dicomtrolley-merge")
    for source in sources:
        pool.submit(drain, source)
    finished = 0
    try:
        while finished < len(sources):
            item = ready.take()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                finished += 1
                continue
            yield item
    finally:
        ready.stop()
        pool.shutdown(wait=True, cancel_futures=True)
