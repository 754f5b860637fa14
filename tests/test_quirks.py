"""Quirks of real archives, handled without the user's help: Accept refusals and 429s with Retry-After.

Against the real Orthanc behind :class:`~tests.support.quirk_server.QuirkServer`,
each quirk switched on alone; a download and an export succeed through it,
and the log says what was adapted.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dicomtrolley import QidoRS, Trolley, WadoRS
from dicomtrolley._accept import AcceptForms
from dicomtrolley._http import RetryPolicy
from dicomtrolley.exceptions import ServerError
from dicomtrolley.export import export
from dicomtrolley.wado_rs import AS_STORED_FORMS
from tests.support.orthanc import OrthancServer
from tests.support.quirk_server import QuirkServer

pytestmark = pytest.mark.integration


@pytest.fixture
def picky(orthanc: OrthancServer) -> Iterator[QuirkServer]:
    with QuirkServer(orthanc.base_url, refuse_any_syntax=True) as quirks:
        yield quirks


def trolley_at(server: QuirkServer, retry: RetryPolicy | None = None) -> Trolley:
    session = requests.Session()
    url = f"{server.url}/dicom-web"
    return Trolley(QidoRS(session, url), WadoRS(session, url, retry=retry, workers=2))


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.dcm") if p.is_file()]


def test_a_refused_accept_is_tried_again_with_the_next_form_once_and_then_kept(
    orthanc: OrthancServer, picky: QuirkServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomtrolley")
    study = orthanc.sample.small_studies[0]
    trolley = trolley_at(picky)
    summary = trolley.download([study.uid], tmp_path, template="{SOPInstanceUID}.dcm", progress=False)
    assert summary.ok
    assert len(files_in(tmp_path)) == len(study.instances)
    assert picky.statuses().count(406) == 1
    assert trolley.downloader.accept == AS_STORED_FORMS[1]  # type: ignore[union-attr]
    assert "keeping it for this session" in caplog.text
    assert "refused Accept" in caplog.text


def test_an_export_through_a_server_that_refuses_any_syntax_succeeds_and_says_so_once(
    orthanc: OrthancServer, picky: QuirkServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomtrolley")
    studies = orthanc.sample.small_studies[:6]
    report = export(trolley_at(picky), [s.uid for s in studies], tmp_path / "out", progress=False,
                    template="{StudyInstanceUID}/{SOPInstanceUID}.dcm")
    assert report.ok
    assert len(files_in(tmp_path / "out")) == sum(len(s.instances) for s in studies)
    # Only requests already on their way when the first refusal came back are refused.
    assert 1 <= picky.statuses().count(406) <= 4
    assert caplog.text.count("keeping it for this session") == 1


def test_when_every_form_is_refused_the_last_refusal_is_raised(picky: QuirkServer) -> None:
    forms = AcceptForms(['multipart/related; type="application/dicom"; transfer-syntax=*'])
    http = WadoRS(requests.Session(), f"{picky.url}/dicom-web").http
    with pytest.raises(ServerError, match="406"):
        forms.get(http, f"{picky.url}/dicom-web/studies/1.2.3", {})


def test_accept_forms_pickle_starting_at_the_form_that_worked() -> None:
    forms = AcceptForms(AS_STORED_FORMS)
    forms._keep(1)
    copy = pickle.loads(pickle.dumps(forms))  # noqa: S301 - our own bytes
    assert copy.current == AS_STORED_FORMS[1]


def test_429s_with_retry_after_are_waited_out_in_a_download_and_an_export(
    orthanc: OrthancServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomtrolley")
    studies = orthanc.sample.small_studies[:3]
    with QuirkServer(orthanc.base_url, throttle_every=4, retry_after=1) as busy:
        trolley = trolley_at(busy)
        summary = trolley.download([studies[0].uid], tmp_path / "one", template="{SOPInstanceUID}.dcm",
                                   progress=False)
        report = export(trolley, [s.uid for s in studies[1:]], tmp_path / "batch", progress=False,
                        template="{StudyInstanceUID}/{SOPInstanceUID}.dcm")
        throttled = busy.statuses().count(429)
    assert summary.ok
    assert report.ok
    assert len(files_in(tmp_path / "one")) == len(studies[0].instances)
    assert len(files_in(tmp_path / "batch")) == sum(len(s.instances) for s in studies[1:])
    assert throttled >= 1
    assert caplog.text.count("answered 429") == throttled
