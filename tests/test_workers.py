"""The bounded worker pool and the read-ahead of streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from dicomtrolley._concurrency import interleave, run_targets
from dicomtrolley.core import StudyReference
from dicomtrolley.exceptions import ConnectionFailedError, DICOMTrolleyError


def studies(count: int) -> list[StudyReference]:
    return [StudyReference(f"1.{n}") for n in range(count)]


def test_every_target_runs_once() -> None:
    seen: list[StudyReference] = []
    lock = threading.Lock()

    def work(target: StudyReference) -> None:
        with lock:
            seen.append(target)

    assert run_targets(studies(50), work, workers=4, stop_on_failure=True) == []
    assert sorted(seen, key=str) == sorted(studies(50), key=str)


def test_no_more_than_twice_the_workers_are_pending_at_once() -> None:
    pulled = 0
    running = 0
    most = 0
    lock = threading.Lock()

    def source() -> Iterator[StudyReference]:
        nonlocal pulled
        for target in studies(40):
            pulled += 1
            with lock:
                assert pulled - done <= 2 * 3 + 1
            yield target

    done = 0

    def work(target: StudyReference) -> None:
        nonlocal running, most, done
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.002)
        with lock:
            running -= 1
            done += 1

    run_targets(source(), work, workers=3, stop_on_failure=False)
    assert most <= 3
    assert done == 40


def test_failures_are_collected_with_their_target() -> None:
    def work(target: StudyReference) -> None:
        if target.study_uid.endswith("3"):
            raise ConnectionFailedError(f"broke on {target.study_uid}")

    failures = run_targets(studies(10), work, workers=2, stop_on_failure=False)
    assert [f.target for f in failures] == [StudyReference("1.3")]
    assert "broke on 1.3" in str(failures[0])


def test_stop_on_failure_starts_nothing_new() -> None:
    started: list[str] = []

    def work(target: StudyReference) -> None:
        started.append(target.study_uid)
        raise ConnectionFailedError("down")

    failures = run_targets(studies(100), work, workers=1, stop_on_failure=True)
    assert len(started) <= 2
    assert len(failures) == len(started)


def test_a_bug_in_the_work_is_not_swallowed() -> None:
    def work(target: StudyReference) -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_targets(studies(3), work, workers=2, stop_on_failure=False)


def test_one_target_runs_on_the_calling_thread() -> None:
    threads: list[threading.Thread] = []
    assert run_targets(studies(1), lambda _: threads.append(threading.current_thread()), workers=4,
                       stop_on_failure=True) == []
    assert threads == [threading.current_thread()]


def test_one_target_that_fails_is_a_failure_not_an_exception() -> None:
    def work(target: StudyReference) -> None:
        raise ConnectionFailedError(f"refused: {target.study_uid}")

    failures = run_targets(studies(1), work, workers=4, stop_on_failure=True)
    assert [str(f.error) for f in failures] == ["refused: 1.0"]


def test_interleave_yields_every_item_of_every_source() -> None:
    sources = [lambda n=n: iter(range(n * 100, n * 100 + 50)) for n in range(5)]
    expected = sorted(i for n in range(5) for i in range(n * 100, n * 100 + 50))
    assert sorted(interleave(sources, workers=3, depth=4)) == expected


def test_interleave_raises_the_first_error_of_a_source() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise DICOMTrolleyError("broke")

    with pytest.raises(DICOMTrolleyError, match="broke"):
        list(interleave([broken, lambda: iter(range(1000))], workers=2, depth=2))


def test_interleave_stops_its_sources_when_the_reader_stops() -> None:
    closed: list[int] = []

    def endless(number: int) -> Iterator[int]:
        try:
            while True:
                yield number
        finally:
            closed.append(number)

    items = interleave([lambda: endless(1), lambda: endless(2)], workers=2, depth=2)
    next(items)
    items.close()
    assert sorted(closed) == [1, 2]
