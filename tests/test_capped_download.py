"""Downloads and exports through a server that cuts its search answers at a cap.

A download lists a study's instances with the searcher when something is on
disk already (to resume) or when its downloader fetches instance by instance.
A server that cuts that listing at its cap, and cannot be paged past, names
three of a series' 300 instances without a word. A listing as long as the
searcher's cap (learned from a Warning header, or saved by the probe as a
profile's ``search_cap``) is checked against the series' counts (a
series-level search), and a series named short is fetched whole, or
reported when it cannot be. Against the real Orthanc, behind the quirk
server (QIDO-RS) and a C-FIND server that stops at three matches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dicomtrolley import QidoRS, Trolley, WadoRS
from dicomtrolley.dicom_qr import DICOMQR
from dicomtrolley.dimse_retrieve import DICOMCGet
from dicomtrolley.exceptions import SearchCutError
from dicomtrolley.export import export
from dicomtrolley.wado_uri import WadoURI
from tests.support.capped_find_scp import CappedFindSCP
from tests.support.orthanc import OrthancServer
from tests.support.quirk_server import QuirkServer

pytestmark = pytest.mark.integration

CAP = 3
TEMPLATE = "{SOPInstanceUID}.dcm"


@pytest.fixture(params=[True, False], ids=["with-warning", "silent"])
def capped_server(request: pytest.FixtureRequest, orthanc: OrthancServer) -> Iterator[QuirkServer]:
    with QuirkServer(orthanc.base_url, qido_cap=CAP, cap_warning=request.param, ignore_offset=True) as quirks:
        yield quirks


@pytest.fixture
def capped_find(orthanc: OrthancServer) -> Iterator[CappedFindSCP]:
    with CappedFindSCP("127.0.0.1", orthanc.dicom_port, orthanc.aet, cap=CAP) as scp:
        yield scp


def qido_rs_at(server: QuirkServer) -> QidoRS:
    """A searcher of ``server``: it learns the cap from a Warning header, or is told it, as a probe saved it."""
    searcher = QidoRS(requests.Session(), f"{server.url}/dicom-web")
    if not server.cap_warning:
        searcher.result_cap = CAP
    return searcher


def c_find_at(scp: CappedFindSCP) -> DICOMQR:
    searcher = DICOMQR("127.0.0.1", scp.port, aec=scp.aet)
    searcher.result_cap = CAP  # as a probe saved it: a C-FIND says nothing of a cap
    return searcher


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm") if p.is_file())


def download_half_then_resume(trolley: Trolley, study_uid: str, folder: Path) -> int:
    """Download a study, delete every other file, download again; the files deleted."""
    assert trolley.download([study_uid], folder, template=TEMPLATE, progress=False).ok
    deleted = files_in(folder)[::2]
    for path in deleted:
        path.unlink()
    return len(deleted)


def test_a_resumed_download_fetches_whole_the_series_a_qido_rs_cap_cut_the_listing_of(
    orthanc: OrthancServer, capped_server: QuirkServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomtrolley")
    study = orthanc.sample.large_study
    trolley = Trolley(qido_rs_at(capped_server), WadoRS(requests.Session(), f"{capped_server.url}/dicom-web"))
    download_half_then_resume(trolley, study.uid, tmp_path)
    summary = trolley.download([study.uid], tmp_path, template=TEMPLATE, progress=False)
    assert summary.ok
    assert len(files_in(tmp_path)) == len(study.instances)
    assert f"the search named {CAP} of its {len(study.instances)} instances" in caplog.text
    assert "fetching the whole series" in caplog.text


def test_a_resumed_download_fetches_whole_the_series_a_c_find_cap_cut_the_listing_of(
    orthanc: OrthancServer, capped_find: CappedFindSCP, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomtrolley")
    study = orthanc.sample.large_study
    trolley = Trolley(c_find_at(capped_find), DICOMCGet("127.0.0.1", orthanc.dicom_port, aec=orthanc.aet))
    download_half_then_resume(trolley, study.uid, tmp_path)
    summary = trolley.download([study.uid], tmp_path, template=TEMPLATE, progress=False)
    assert summary.ok
    assert len(files_in(tmp_path)) == len(study.instances)
    assert f"the search named {CAP} of its {len(study.instances)} instances" in caplog.text


def test_an_export_of_a_date_range_through_a_c_find_cap_finds_every_study_and_says_it_split(
    orthanc: OrthancServer, capped_find: CappedFindSCP, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomtrolley")
    worklist = tmp_path / "worklist.csv"
    worklist.write_text("StudyDate\n20190101-20221231\n", encoding="utf-8")
    wanted = {s.uid for s in orthanc.sample.studies if s.study_date <= "20221231"}
    trolley = Trolley(c_find_at(capped_find), DICOMCGet("127.0.0.1", orthanc.dicom_port, aec=orthanc.aet))
    report = export(trolley, worklist, tmp_path / "out", progress=False,
                    template="{StudyInstanceUID}/{SOPInstanceUID}.dcm")
    assert report.ok
    assert {p.parent.name for p in files_in(tmp_path / "out")} == wanted
    assert len(wanted) > CAP
    assert "as many as the server's cap; searching" in caplog.text


def test_a_download_instance_by_instance_through_a_cut_listing_fails_naming_the_series(
    orthanc: OrthancServer, capped_server: QuirkServer, tmp_path: Path
) -> None:
    study = orthanc.sample.large_study
    trolley = Trolley(qido_rs_at(capped_server), WadoURI(requests.Session(), f"{capped_server.url}/wado"))
    summary = trolley.download([study.uid], tmp_path, template=TEMPLATE, progress=False, on_error="collect")
    assert not summary.ok
    cut = [failure for failure in summary.failures if isinstance(failure.error, SearchCutError)]
    assert len(cut) == 1
    assert f"only some of its {len(study.instances)} instances" in str(cut[0].error)
