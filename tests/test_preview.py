"""Previews: small images the server renders, of the size asked for, shown in a row in Jupyter."""

from __future__ import annotations

import io
import sys

import pytest
import requests
import responses
from PIL import Image

from dicomtrolley.core import InstanceReference, Query, QueryLevels, SeriesReference
from dicomtrolley.exceptions import DICOMTrolleyError, ServerError
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI
from tests.support.orthanc import OrthancServer


def trolley_for(orthanc: OrthancServer) -> Trolley:
    session = requests.Session()
    return Trolley(QidoRS(session, orthanc.dicomweb_url), WadoRS(session, orthanc.dicomweb_url))


@pytest.mark.integration
@pytest.mark.parametrize("size", [16, 48, 200])
def test_a_series_preview_is_an_image_of_the_size_asked(orthanc: OrthancServer, size: int) -> None:
    study = orthanc.sample.studies[0]
    image = trolley_for(orthanc).preview(SeriesReference(study.uid, study.series[0].uid), size=size)
    assert isinstance(image, Image.Image)
    assert max(image.size) == size


@pytest.mark.integration
def test_a_series_preview_shows_its_middle_instance(orthanc: OrthancServer) -> None:
    trolley = trolley_for(orthanc)
    study = orthanc.sample.studies[1]
    series = max(study.series, key=lambda s: len(s.instances))
    middle = sorted(series.instances, key=lambda i: i.number)[len(series.instances) // 2]
    of_series = trolley.rendered(SeriesReference(study.uid, series.uid), 32)
    of_middle = trolley.rendered(InstanceReference(study.uid, series.uid, middle.uid), 32)
    assert of_series.data == of_middle.data


@pytest.mark.integration
def test_without_pillow_a_preview_is_the_image_bytes(orthanc: OrthancServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    study = orthanc.sample.studies[0]
    data = trolley_for(orthanc).preview(study.uid, size=24)
    assert isinstance(data, bytes)
    monkeypatch.undo()
    assert Image.open(io.BytesIO(data)).size == (24, 24)


@pytest.mark.integration
def test_found_series_show_a_row_of_previews(orthanc: OrthancServer) -> None:
    trolley = trolley_for(orthanc)
    found = trolley.find_studies(Query(PatientID="PAT001", query_level=QueryLevels.SERIES))
    gallery = found.series().show_previews(size=32)
    html = gallery._repr_html_()
    assert len(gallery) == len(found.series())
    assert html.count("<img ") == len(found.series())
    assert html.count("data:image/jpeg;base64,") == len(found.series())


@pytest.mark.integration
def test_studies_show_a_preview_each(orthanc: OrthancServer) -> None:
    found = trolley_for(orthanc).find_studies(Query(PatientID="PAT002"))
    assert found.show_previews(size=32)._repr_html_().count("<img ") == len(found)


@pytest.mark.integration
def test_a_downloader_that_cannot_render_says_so(orthanc: OrthancServer) -> None:
    session = requests.Session()
    trolley = Trolley(QidoRS(session, orthanc.dicomweb_url), WadoURI(session, orthanc.wado_url))
    with pytest.raises(DICOMTrolleyError, match="cannot render"):
        trolley.preview(orthanc.sample.studies[0].uid)


def test_a_list_not_made_by_a_trolley_cannot_show_previews() -> None:
    from dicomtrolley.results import StudyList

    with pytest.raises(TypeError, match="not made by a Trolley"):
        StudyList().show_previews()


# Orthanc 1.10 has /rendered; the fallback to /thumbnail needs a server without it.
URL = "http://pacs.test/dicom-web"
INSTANCE = InstanceReference("1.2", "1.2.3", "1.2.3.4")
INSTANCE_URL = f"{URL}/studies/1.2/series/1.2.3/instances/1.2.3.4"


def jpeg(size: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (size, size)).save(out, "JPEG")
    return out.getvalue()


@responses.activate
def test_without_rendered_the_thumbnail_is_asked_for() -> None:
    responses.get(f"{INSTANCE_URL}/rendered", status=404)
    responses.get(f"{INSTANCE_URL}/thumbnail", body=jpeg(20), content_type="image/jpeg")
    rendered = WadoRS(requests.Session(), URL).rendered(INSTANCE, 20)
    assert rendered.content_type == "image/jpeg"
    assert responses.calls[-1].request.url == f"{INSTANCE_URL}/thumbnail?viewport=20,20"


@responses.activate
def test_an_image_larger_than_asked_is_scaled_down() -> None:
    responses.get(f"{INSTANCE_URL}/rendered", body=jpeg(100), content_type="image/jpeg")
    trolley = Trolley(downloader=WadoRS(requests.Session(), URL))
    assert trolley.preview(INSTANCE, size=25).size == (25, 25)


@responses.activate
def test_when_neither_resource_renders_the_first_error_is_raised() -> None:
    responses.get(f"{INSTANCE_URL}/rendered", status=406)
    responses.get(f"{INSTANCE_URL}/thumbnail", status=404)
    with pytest.raises(ServerError) as raised:
        WadoRS(requests.Session(), URL).rendered(INSTANCE, 20)
    assert raised.value.status == 406
