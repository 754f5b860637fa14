"""The worker pool of pseudonymisation: answers, errors, a worker that dies, and stopping."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from dicomtrolley._processes import PendingCall, WorkerPool, WorkerStoppedError, process_context


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
    processes = [worker.process for worker in workers._workers]
    workers.close()
    assert [process.exitcode for process in processes] == [0, 0]


def slow_reversed(data: bytes) -> bytes:
    time.sleep(0.002)
    return data[::-1]


def test_calls_from_many_threads_each_get_their_own_answer() -> None:
    workers = WorkerPool(2, process_context("fork"), slow_reversed, initializer=nothing)
    answers: dict[bytes, bytes] = {}

    def calls(thread: int) -> None:
        for number in range(40):
            data = f"thread {thread} call {number}".encode()
            answers[data] = workers.call(data)

    try:
        threads = [threading.Thread(target=calls, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        workers.close()
    assert len(answers) == 240
    assert all(answer == data[::-1] for data, answer in answers.items())


GATE = multiprocessing.get_context("fork").Event()
"""Holds a call of :func:`waits_at_gate` in its worker until the test opens it (inherited by forked workers)."""


def waits_at_gate(data: bytes) -> bytes:
    if data == b"first":
        GATE.wait(10)
    return data


def test_a_busy_worker_is_sent_its_next_call_before_it_answers_the_first() -> None:
    GATE.clear()
    workers = WorkerPool(1, process_context("fork"), waits_at_gate, initializer=nothing, queued=2)
    answers: list[bytes] = []
    try:
        first = threading.Thread(target=lambda: answers.append(workers.call(b"first")))
        first.start()
        while not workers._workers[0].pending:
            time.sleep(0.001)
        second = threading.Thread(target=lambda: answers.append(workers.call(b"second")))
        second.start()
        deadline = time.monotonic() + 10
        while len(workers._workers[0].pending) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        both_sent = len(workers._workers[0].pending) == 2  # the first still unanswered: the gate is shut
        GATE.set()
        first.join(10)
        second.join(10)
    finally:
        GATE.set()
        workers.close()
    assert both_sent
    assert answers == [b"first", b"second"]


def test_every_call_a_dying_worker_held_fails_and_the_next_call_is_served() -> None:
    workers = WorkerPool(1, process_context("fork"), exits_on_exit, initializer=nothing, queued=3)
    errors: list[BaseException] = []

    def call(data: bytes) -> None:
        try:
            workers.call(data)
        except WorkerStoppedError as error:
            errors.append(error)

    try:
        threads = [threading.Thread(target=call, args=(data,)) for data in (b"exit", b"pid", b"pid")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in threads)
        assert errors
        assert all("exit code -9" in str(error) for error in errors)
        assert workers.call(b"pid") != os.getpid()
    finally:
        workers.close()


def test_answers_submitted_by_one_thread_are_taken_in_order_by_another() -> None:
    workers = WorkerPool(2, process_context("fork"), slow_reversed, initializer=nothing, queued=2)
    sent: queue.Queue[tuple[bytes, PendingCall] | None] = queue.Queue()
    taken: list[tuple[bytes, bytes]] = []

    def take() -> None:
        while (item := sent.get()) is not None:
            taken.append((item[0], workers.result(item[1])))

    taker = threading.Thread(target=take)
    taker.start()
    try:
        for number in range(60):  # more than the workers hold: submit waits for room, never for a taker's turn
            data = f"call {number}".encode()
            sent.put((data, workers.submit(data)))
        sent.put(None)
        taker.join(10)
    finally:
        workers.close()
    assert [answer for _, answer in taken] == [data[::-1] for data, _ in taken]
    assert [data for data, _ in taken] == [f"call {number}".encode() for number in range(60)]


def test_a_submitted_call_fails_in_result_when_its_worker_dies() -> None:
    workers = WorkerPool(1, process_context("fork"), exits_on_exit, initializer=nothing)
    try:
        doomed = workers.submit(b"exit")
        with pytest.raises(WorkerStoppedError, match="exit code -9"):
            workers.result(doomed)
        assert workers.result(workers.submit(b"pid")) != os.getpid()
    finally:
        workers.close()
