"""The worker pool of pseudonymisation: answers, errors, a worker that dies, and stopping."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from dicomtrolley._processes import WorkerPool, WorkerStoppedError, process_context


def reversed_bytes(data: bytes) -> bytes:
    return data[::-1]


def fails_on_bad(data: bytes) -> bytes:
    if data == b"bad":
        raise KeyError("no such attribute")
    return data


def exits_on_exit(data: bytes) -> int:
    if data == b"exit":
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def nothing() -> None:
    """An initializer with nothing to prepare."""


@pytest.fixture(params=["fork", "forkserver"])
def pool(request: pytest.FixtureRequest) -> Iterator[WorkerPool]:
    """Two workers running :func:`fails_on_bad`, started by each method the package uses on Linux."""
    workers = WorkerPool(2, process_context(request.param), fails_on_bad, initializer=nothing)
    yield workers
    workers.close()


def test_a_call_returns_what_the_function_returns_in_a_worker() -> None:
    workers = WorkerPool(2, process_context("fork"), reversed_bytes, initializer=nothing)
    try:
        assert [workers.call(data) for data in (b"abc", b"x" * 100_000)] == [b"cba", b"x" * 100_000]
    finally:
        workers.close()


def test_an_error_in_the_worker_is_raised_in_the_caller_with_its_type(pool: WorkerPool) -> None:
    with pytest.raises(KeyError, match="no such attribute"):
        pool.call(b"bad")
    assert pool.call(b"good") == b"good"


def test_empty_bytes_are_refused_before_reaching_a_worker(pool: WorkerPool) -> None:
    with pytest.raises(ValueError, match="no bytes"):
        pool.call(b"")
    assert pool.call(b"still serving") == b"still serving"


def test_a_worker_that_dies_is_named_and_replaced() -> None:
    workers = WorkerPool(1, process_context("fork"), exits_on_exit, initializer=nothing)
    try:
        first = workers.call(b"pid")
        with pytest.raises(WorkerStoppedError, match="exit code -9"):
            workers.call(b"exit")
        assert workers.call(b"pid") not in (first, os.getpid())
    finally:
        workers.close()


def test_close_ends_every_worker() -> None:
    workers = WorkerPool(2, process_context("fork"), exits_on_exit, initializer=nothing)
    processes = [process for process, _ in workers._workers]
    workers.close()
    assert [process.exitcode for process in processes] == [0, 0]
