"""The upload benchmark runs every client on tiny data, checks each arrival and fills its table."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import data
from benchmarks.upload_bench import run_all, table

pytestmark = pytest.mark.integration


def test_every_upload_client_runs_and_the_destination_holds_every_instance_after_each(tmp_path: Path) -> None:
    rows, count, size = run_all(1, data.Sizes.quick(), reference=False, work=tmp_path)
    assert count == data.Sizes.quick().ct_instances
    assert [len(row.samples) for row in rows] == [1] * 7  # run_all raises when an arrival is short
    text = table(rows, count, size)
    assert "| dicomtrolley StowRS.send (4 workers) |" in text
    assert "| dcmtk storescu (one association) |" in text
