"""The benchmark command keeps working: every case runs once, on tiny data, against a real Orthanc.

The full benchmark (``bash benchmarks/run.sh``) takes minutes and is not part
of the test command; this runs the same code with :meth:`Sizes.quick` data and
without the reference environment, so a change that breaks a client, a check
or the report shows up here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import data, report
from benchmarks.cases import BIG, CGET, MULTIPART, TREE, WADO_RS, WADO_URI
from benchmarks.run import SERVER_CONFIG, benchmark
from tests.support.orthanc import OrthancFactory, OrthancServer
from tests.support.sample_data import SampleData

INTRO = "# Performance\n\nHand-written introduction that the benchmark keeps.\n"


@pytest.mark.integration
def test_every_benchmark_case_runs_checks_its_output_and_fills_the_table(
    orthanc_factory: OrthancFactory, tmp_path: Path
) -> None:
    server = orthanc_factory(load=False, **SERVER_CONFIG)
    page = tmp_path / "performance.md"
    page.write_text(INTRO, encoding="utf-8")

    results = benchmark(
        server, work=tmp_path / "work", sizes=data.Sizes.quick(), runs=1, reference=False, output=page
    )

    assert [(r.client, r.error) for r in results if r.error] == []
    assert {r.group for r in results} == {WADO_RS, WADO_URI, CGET, BIG, TREE, MULTIPART}
    assert {r.role for r in results} == {"current", "curl", "pynetdicom", "getscu", "other"}
    for result in results:
        assert len(result.samples) == 1, result.client
        assert result.verified, result.client
        sample = result.samples[0]
        assert sample.wall > 0, result.client
        assert 1e6 < sample.peak_rss < 1e9, result.client  # a real process's own peak, in bytes
    text = page.read_text(encoding="utf-8")
    assert text.startswith(INTRO)
    assert text.count(report.BEGIN) == 1
    assert text.count(report.END) == 1
    assert "curl, one WADO-RS request, raw body to disk" in text
    assert "byte-equal" in text


def test_regenerating_the_table_replaces_only_the_generated_section(tmp_path: Path) -> None:
    page = tmp_path / "performance.md"
    page.write_text(INTRO + "\n" + report.BEGIN + "\nold table\n" + report.END + "\n\nClosing words.\n")

    report.write_section(page, f"{report.BEGIN}\nnew table\n{report.END}\n")

    assert page.read_text() == INTRO + "\n" + report.BEGIN + "\nnew table\n" + report.END + "\n\nClosing words.\n"


def test_the_export_bookkeeping_probe_runs_and_times_each_study(tmp_path: Path) -> None:
    from benchmarks.export_bench import bookkeeping_probe

    result = bookkeeping_probe(20, tmp_path)
    assert result["rows"] == 20
    assert result["ms_per_study"] > 0
    assert (tmp_path / "report.csv").read_text().count("\n") == 21


@pytest.mark.integration
def test_the_export_steps_each_fetch_every_study_and_time_it(
    orthanc: OrthancServer, sample_data: SampleData, tmp_path: Path
) -> None:
    from benchmarks.export_steps import measure

    studies = sample_data.small_studies[:2]
    figures = measure(orthanc.dicomweb_url, [s.uid for s in studies], step=2, runs=1, scratch=tmp_path)

    assert list(figures) == [
        "requests GET, body dropped", "+ multipart and downloader", "+ files, counts searched",
        "export, 1 in flight", "export, 4 in flight",
    ]
    assert all(wall > 0 and user + system > 0 for wall, user, system in figures.values())
    written = sum(len(s.instances) for s in studies)
    assert len([p for p in (tmp_path / "0-2").rglob("*") if p.is_file()]) == written  # the download step's files
    for export in ("0-3", "0-4"):
        assert (tmp_path / export / "report.csv").read_text().count(",done,") == len(studies)


@pytest.mark.integration
def test_the_research_benchmark_runs_every_row_of_this_package(
    orthanc_factory: OrthancFactory, tmp_path: Path
) -> None:
    from benchmarks.research import benchmark as research_benchmark

    server = orthanc_factory(load=False, **SERVER_CONFIG)
    table = research_benchmark(server, work=tmp_path / "work", sizes=data.Sizes.quick(), runs=1, reference=None)
    assert "| live: this package, typed DataFrame |" in table
    assert "| 200 instances streamed: this package, rows |" in table
    assert "| repeated search, from the cache |" in table


def test_the_audit_benchmark_audits_a_pseudonymised_ct_study_and_times_it(tmp_path: Path) -> None:
    from benchmarks.audit_bench import audit_speed, pseudonymised

    collection = data.ct_study(tmp_path / "data", data.Sizes.quick())
    out = pseudonymised(collection, tmp_path / "out")
    speeds = audit_speed(out, runs=1)
    assert set(speeds) == {"values", "values + header check", "MB"}
    assert speeds["MB"] == pytest.approx(collection.total_bytes / 1e6, rel=0.05)
    assert all(speed > 0 for speed in speeds.values())


def test_the_association_benchmark_exports_with_and_without_reuse(orthanc: OrthancServer, tmp_path: Path) -> None:
    from benchmarks.association_bench import export_once

    studies = orthanc.sample.small_studies
    worklist = tmp_path / "worklist.csv"
    worklist.write_text("StudyInstanceUID\n" + "".join(f"{s.uid}\n" for s in studies))
    instances = sum(len(s.instances) for s in studies)

    fresh = export_once("fresh", orthanc.dicom_port, orthanc.aet, worklist, tmp_path / "fresh", 1)
    reused = export_once("reused", orthanc.dicom_port, orthanc.aet, worklist, tmp_path / "reused", 1)

    assert fresh["files"] == reused["files"] == instances
    assert fresh["associations"] >= 2 * len(studies)  # the SOP classes' C-FIND and the C-GET of each study
    assert reused["associations"] * 2 <= fresh["associations"]  # CT, MR and PET-CT studies: a few kinds
