"""The Vitrea benchmark keeps working: every case runs once, on tiny data, through the Vitrea-like server."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import data
from benchmarks.run import SERVER_CONFIG
from benchmarks.vitrea import MINT, RAD69, benchmark
from tests.support.orthanc import OrthancFactory


@pytest.mark.integration
def test_every_vitrea_case_runs_checks_its_output_and_judges_the_targets(
    orthanc_factory: OrthancFactory, tmp_path: Path
) -> None:
    server = orthanc_factory(load=False, **SERVER_CONFIG)

    results, tables = benchmark(server, work=tmp_path / "work", sizes=data.Sizes.quick(), runs=1, reference=False)

    assert [(r.client, r.error) for r in results if r.error] == []
    assert {r.group for r in results} == {RAD69, MINT}
    assert {r.role for r in results} == {"current", "curl"}
    for result in results:
        assert len(result.samples) == 1, result.client
        assert result.verified, result.client
    assert "byte-equal" in tables
    assert "RAD-69 study: throughput vs curl posting the same SOAP requests" in tables
