"""The transfer benchmark runs every client on a few studies, checks each arrival and fills its table."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.transfer_bench import DOWNLOAD, TRANSFER, UPLOAD, run_all, table

pytestmark = pytest.mark.integration


def test_every_transfer_client_runs_and_the_destination_holds_every_instance_after_each(tmp_path: Path) -> None:
    rows, count, size = run_all(3, 2, 1, work=tmp_path)
    assert count == 8 + 16 + 24  # the shapes of studies 0, 1 and 2; run_all raises on a short arrival
    assert [row.client for row in rows][:3] == [DOWNLOAD, UPLOAD, TRANSFER]
    assert [len(row.samples) for row in rows] == [1] * 4
    text = table(rows, count, size, 3)
    assert f"| {TRANSFER} |" in text
    assert "transfer / (download + upload), from the medians:" in text
