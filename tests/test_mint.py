"""MINT: searches through the Vitrea-like vitrea, answered from the real Orthanc's data.

Each integration test logs in through the Vitrea gateway and searches with
:class:`~dicomtrolley.mint.Mint`; the server turns the MINT request into a
QIDO-RS search of the session's Orthanc and answers in MINT XML. Malformed
answers are switched on in the server; the parser's own rules (chunks of any
size, DTDs refused) are checked on bytes directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from dicomtrolley.auth import create_session
from dicomtrolley.core import Query, QueryLevels, Study
from dicomtrolley.exceptions import MalformedResponseError, UnSupportedParameterError
from dicomtrolley.mint import EARLIEST_DATE, LATEST_DATE, Mint, MintQuery, MintReader, mint_parameters
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from tests.support.orthanc import OrthancServer
from tests.support.sample_data import SampleData
from tests.support.vitrea_server import VitreaServer


@pytest.fixture
def mint(vitrea: VitreaServer) -> Iterator[Mint]:
    with create_session(vitrea.login_url, vitrea.user, vitrea.password) as session:
        yield Mint(session, vitrea.mint_url)


def sample(orthanc: OrthancServer) -> SampleData:
    assert orthanc.sample is not None
    return orthanc.sample


def shape(studies: list[Study]) -> dict[str, dict[str, set[str]]]:
    return {s.uid: {series.uid: {i.uid for i in series.instances} for series in s.series} for s in studies}


# --- what a search finds ---------------------------------------------------------------------


@pytest.mark.integration
def test_study_search_finds_the_patients_studies_with_their_attributes(mint: Mint, orthanc: OrthancServer) -> None:
    expected = sample(orthanc).studies_of_patient("PAT001")
    studies = mint.find_studies(Query(PatientID="PAT001"))
    assert {s.uid for s in studies} == {s.uid for s in expected}
    for study in studies:
        known = sample(orthanc).study(study.uid)
        assert study.data.StudyDate == known.study_date
        assert study.data.AccessionNumber == known.accession
        assert str(study.data.PatientName) == known.patient_name
        assert study.series == []


@pytest.mark.integration
def test_instance_search_gives_the_same_tree_as_qido_rs(mint: Mint, orthanc: OrthancServer) -> None:
    query = Query(PatientID="PAT002", query_level=QueryLevels.INSTANCE)
    from_qido = QidoRS(requests.Session(), orthanc.dicomweb_url).find_studies(query)
    assert shape(mint.find_studies(query)) == shape(from_qido)
    assert len(shape(from_qido)) == 2


@pytest.mark.integration
def test_series_search_gives_each_series_with_its_own_attributes(mint: Mint, orthanc: OrthancServer) -> None:
    known = sample(orthanc).studies_of_patient("PAT002")[0]
    study = mint.find_study(Query(StudyInstanceUID=known.uid, query_level=QueryLevels.SERIES))
    assert [(s.uid, s.data.SeriesDescription) for s in sorted(study.series, key=lambda s: s.data.SeriesNumber)] == [
        (s.uid, s.description) for s in known.series
    ]
    assert all(series.instances == [] for series in study.series)


@pytest.mark.integration
def test_instances_know_their_study_and_patient_attributes(mint: Mint, orthanc: OrthancServer) -> None:
    known = sample(orthanc).studies_of_patient("PAT002")[0]
    study = mint.find_study(Query(StudyInstanceUID=known.uid, query_level=QueryLevels.INSTANCE))
    instance = study.all_instances()[0]
    assert instance.data.StudyInstanceUID == known.uid
    assert instance.data.PatientID == "PAT002"
    assert instance.data.SeriesInstanceUID == instance.parent.uid  # type: ignore[union-attr]


@pytest.mark.integration
def test_non_ascii_names_arrive_intact(mint: Mint) -> None:
    study = mint.find_study(Query(PatientID="PAT003"))
    assert str(study.data.PatientName) == "Müller^Jürgen"


@pytest.mark.integration
def test_multi_valued_attributes_are_split(mint: Mint, orthanc: OrthancServer) -> None:
    petct = next(s for s in sample(orthanc).studies_of_patient("PAT001") if s.description.startswith("PET"))
    study = mint.find_study(Query(StudyInstanceUID=petct.uid))
    assert list(study.data.ModalitiesInStudy) == ["CT", "PT"]


@pytest.mark.integration
def test_attributes_get_the_dictionary_vr_and_numbers_become_numbers(mint: Mint, orthanc: OrthancServer) -> None:
    known = sample(orthanc).studies_of_patient("PAT002")[0]
    study = mint.find_study(
        Query(StudyInstanceUID=known.uid, include_fields=["NumberOfStudyRelatedInstances"])
    )
    assert study.data["StudyDate"].VR == "DA"
    assert study.data["NumberOfStudyRelatedInstances"].VR == "IS"
    assert study.data.NumberOfStudyRelatedInstances == len(known.instances)


# --- what a query sends ------------------------------------------------------------------------


@pytest.mark.integration
def test_an_open_date_range_is_sent_closed_and_matches(mint: Mint) -> None:
    urls: list[str] = []
    mint.http.session.hooks["response"].append(lambda response, *args, **kwargs: urls.append(response.url))
    studies = mint.find_studies(Query(PatientID="PAT001", min_study_date=date(2021, 1, 1)))
    assert sorted(s.data.StudyDate for s in studies) == ["20210602", "20230120"]
    sent = parse_qs(urlsplit(urls[-1]).query)
    assert (sent["min_study_date"], sent["max_study_date"]) == (["20210101"], [LATEST_DATE])


def test_a_study_date_range_written_as_text_is_sent_as_both_ends() -> None:
    params = mint_parameters(Query(StudyDate="-2020-12-31"))
    assert (params["min_study_date"], params["max_study_date"]) == (EARLIEST_DATE, "20201231")


def test_open_date_ends_are_filled_in() -> None:
    params = mint_parameters(Query(min_study_date=date(2021, 1, 1)))
    assert (params["min_study_date"], params["max_study_date"]) == ("20210101", LATEST_DATE)


def test_query_level_include_fields_and_limit_become_mint_parameters() -> None:
    params = mint_parameters(
        Query(PatientName="DOE*", query_level=QueryLevels.SERIES, include_fields=["Modality", "BodyPartExamined"],
              limit=5)
    )
    assert params == {"PatientName": "DOE*", "QueryLevel": "SERIES", "IncludeFields": "Modality,BodyPartExamined",
                      "limit": 5}


@pytest.mark.integration
def test_limit_caps_the_studies_found(mint: Mint) -> None:
    assert len(mint.find_studies(Query(PatientID="PAT001", limit=1))) == 1


@pytest.mark.parametrize(
    "query", [Query(offset=5), Query(include_fields=["all"])], ids=["offset", "all fields"]
)
def test_what_mint_cannot_express_is_refused(query: Query) -> None:
    with pytest.raises(UnSupportedParameterError):
        mint_parameters(query)


def test_mint_query_of_4x_scripts_still_works() -> None:
    query = MintQuery(PatientID="PAT*", limit=0, PatientBirthDate=date(1965, 3, 12),
                      InstitutionalDepartmentName="Radiology")
    assert query.as_parameters() == {
        "PatientID": "PAT*", "PatientBirthDate": "19650312", "InstitutionalDepartmentName": "Radiology",
        "QueryLevel": "STUDY",
    }



def test_mint_query_refuses_include_fields_below_its_level_as_4x_did() -> None:
    with pytest.raises(ValueError, match="below the query level STUDY"):
        MintQuery(include_fields=["BitsAllocated"], query_level=QueryLevels.STUDY)


def test_mint_query_takes_include_fields_of_its_level_and_above() -> None:
    query = MintQuery(include_fields=["PatientName", "Modality", "BitsAllocated"], query_level=QueryLevels.INSTANCE)
    assert query.as_parameters()["IncludeFields"] == "PatientName,Modality,BitsAllocated"
@pytest.mark.integration
def test_search_logs_in_again_when_the_session_expired(mint: Mint, vitrea: VitreaServer) -> None:
    mint.find_studies(Query(PatientID="PAT002"))
    logins = vitrea.gateway.login_count  # type: ignore[union-attr]
    vitrea.gateway.expire_sessions()  # type: ignore[union-attr]
    assert len(mint.find_studies(Query(PatientID="PAT002"))) == 2
    assert vitrea.gateway.login_count == logins + 1  # type: ignore[union-attr]


# --- answers that are not MINT -------------------------------------------------------------------


MINT_NS = 'xmlns="http://medical.nema.org/mint"'
BAD_ANSWERS = {
    "plain text": b"Internal error: database unavailable",
    "empty": b"",
    "other namespace": b'<studySearchResults xmlns="http://example.com/other"><study/></studySearchResults>',
    "no namespace": b"<studySearchResults><study/></studySearchResults>",
    "study without uid": (
        f'<studySearchResults {MINT_NS}><study studyUUID="x"><attr tag="00100020" vr="LO" val="P1"/></study>'
        "</studySearchResults>"
    ).encode(),
    "instance without uid": (
        f'<studySearchResults {MINT_NS}><study><attr tag="0020000D" vr="UI" val="1.2"/><series>'
        '<attr tag="0020000E" vr="UI" val="1.2.3"/><instance><attr tag="00200013" vr="IS" val="1"/></instance>'
        "</series></study></studySearchResults>"
    ).encode(),
    "bad tag": f'<studySearchResults {MINT_NS}><study><attr tag="PatientID" val="1"/></study></studySearchResults>'
    .encode(),
    "truncated": f'<studySearchResults {MINT_NS}><study><attr tag="0020000D" vr="UI" val="1.2"/>'.encode(),
}


@pytest.mark.integration
@pytest.mark.parametrize("body", BAD_ANSWERS.values(), ids=BAD_ANSWERS.keys())
def test_an_answer_that_is_not_mint_names_url_status_and_body(mint: Mint, vitrea: VitreaServer, body: bytes) -> None:
    vitrea.switches.mint_body = body
    with pytest.raises(MalformedResponseError) as raised:
        mint.find_studies(Query(PatientID="PAT001"))
    message = str(raised.value)
    assert f"{vitrea.mint_url}/studies" in message
    assert "status 200" in message
    assert repr(body[:30])[2:-1] in message


@pytest.mark.integration
def test_an_html_page_with_status_200_is_an_error(mint: Mint, vitrea: VitreaServer) -> None:
    vitrea.switches.html_page = True
    with pytest.raises(MalformedResponseError, match=r"status 200.*<!DOCTYPE html>"):
        mint.find_studies(Query(PatientID="PAT001"))


def test_entity_declarations_are_refused_before_expansion() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        b'<studySearchResults xmlns="http://medical.nema.org/mint">&lol2;</studySearchResults>'
    )
    reader = MintReader("http://vitrea/MINTApi/studies", 200)
    with pytest.raises(MalformedResponseError, match="DTD"):
        reader.feed(bomb)


def test_an_answer_fed_byte_by_byte_parses_like_one_fed_whole() -> None:
    document = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<studySearchResults {MINT_NS}><study studyUUID="u" lastModified="t">'
        '<attr tag="0020000D" vr="UI" val="1.2"/><attr tag="00100010" vr="PN" val="Müller^Jürgen"/>'
        '<series><attr tag="0020000E" vr="UI" val="1.2.3"/><attr tag="00080060" vr="CS" val="MR"/>'
        '<instance><attr tag="00080018" vr="UI" val="1.2.3.4"/><attr tag="00280030" vr="DS" val="0.5\\0.25"/>'
        '<attr tag="00200013" vr="IS" val="7"/></instance></series></study></studySearchResults>'
    ).encode()
    reader = MintReader("http://vitrea/MINTApi/studies", 200)
    for index in range(len(document)):
        reader.feed(document[index : index + 1])
    [study] = reader.close()
    instance = study.series[0].instances[0]
    assert str(study.data.PatientName) == "Müller^Jürgen"
    assert instance.data.PixelSpacing == [0.5, 0.25]
    assert instance.data.InstanceNumber == 7
    assert instance.data.Modality == "MR"


def test_attrs_written_after_the_children_as_vitrea_does_give_the_same_tree() -> None:
    document = (
        f'<studySearchResults {MINT_NS}><study studyUUID="u" lastModified="t">'
        '<series><instance><attr tag="00080018" vr="UI" val="1.2.3.4"/></instance>'
        '<attr tag="0020000e" vr="UI" val="1.2.3"/><attr tag="00080060" vr="CS" val="MR"/></series>'
        '<attr tag="0020000d" vr="UI" val="1.2"/><attr tag="00100020" vr="LO" val="PAT9"/></study></studySearchResults>'
    ).encode()
    reader = MintReader("http://vitrea/MINTApi/studies", 200)
    reader.feed(document)
    [study] = reader.close()
    instance = study.series[0].instances[0]
    assert (study.uid, study.series[0].uid, instance.uid) == ("1.2", "1.2.3", "1.2.3.4")
    assert (instance.data.PatientID, instance.data.Modality) == ("PAT9", "MR")


@pytest.mark.parametrize("chunk_size", [1, 7, 10_000], ids=["byte-by-byte", "small-chunks", "one-chunk"])
def test_an_answer_declaring_an_unknown_encoding_is_read_as_utf8(chunk_size: int) -> None:
    document = (
        f"<?xml version='1.0' encoding='UTF-3'?><studySearchResults {MINT_NS}><study>"
        '<attr tag="0020000d" vr="UI" val="1.2"/><attr tag="00100010" vr="PN" val="Müller^Jürgen"/>'
        "</study></studySearchResults>"
    ).encode()
    reader = MintReader("http://vitrea/MINTApi/studies", 200)
    for start in range(0, len(document), chunk_size):
        reader.feed(document[start : start + chunk_size])
    [study] = reader.close()
    assert (study.uid, str(study.data.PatientName)) == ("1.2", "Müller^Jürgen")


def test_an_unknown_encoding_declared_after_a_huge_prolog_is_malformed() -> None:
    reader = MintReader("http://vitrea/MINTApi/studies", 200)
    with pytest.raises(MalformedResponseError, match="encoding"):
        reader.feed(b"<?xml version='1.0' encoding='UTF-3'?>" + b" " * 100_000)


def test_a_text_value_in_a_number_attribute_is_malformed() -> None:
    reader = MintReader("http://vitrea/MINTApi/studies", 200)
    with pytest.raises(MalformedResponseError, match="not a number"):
        reader.feed(f'<studySearchResults {MINT_NS}><study><attr tag="00201208" vr="IS" val="many"/>'.encode())


@pytest.mark.integration
def test_mint_plans_a_wado_rs_download_by_series_counts(mint: Mint, orthanc: OrthancServer, tmp_path: Path) -> None:
    known = sample(orthanc).studies_of_patient("PAT002")[0]
    urls: list[str] = []
    mint.http.session.hooks["response"].append(lambda response, *args, **kwargs: urls.append(response.url))
    trolley = Trolley(mint, WadoRS(requests.Session(), orthanc.dicomweb_url))
    summary = trolley.download(known.uid, tmp_path, progress=False)
    assert summary.ok
    assert summary.expected == summary.written == len(known.instances)
    levels = [parse_qs(urlsplit(url).query)["QueryLevel"] for url in urls]
    assert levels == [["SERIES"]]  # the instance counts sufficed: no instance-level search
