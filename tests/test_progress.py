"""Progress reporting: a callback, and a tqdm bar only where somebody watches."""

from __future__ import annotations

import io

import pytest

from dicomtrolley.progress import Progress, ProgressReporter


def step(n: int) -> Progress:
    return Progress(instances=n, total=10, bytes_written=n * 1000, elapsed=0.1 * n)


def test_callback_receives_every_update() -> None:
    seen: list[Progress] = []
    with ProgressReporter(seen.append, total=10) as reporter:
        reporter.update(step(1))
        reporter.update(step(2))
    assert [p.instances for p in seen] == [1, 2]


def test_no_bar_when_output_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with ProgressReporter(None, total=10) as reporter:
        assert reporter._bar is None


def test_bar_when_asked_for_shows_instances_done(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    with ProgressReporter(True, total=10) as reporter:
        reporter.update(step(4))
    assert "4/10" in err.getvalue()


def test_false_means_no_bar_and_no_callback() -> None:
    with ProgressReporter(False, total=10) as reporter:
        reporter.update(step(1))
        assert reporter._bar is None
        assert reporter.callback is None
