"""What a dicomtrolley 4.x script relies on, one promise per test.

4.x import paths, names and calls keep working (see docs/coming-from-4x.md).
Behaviour runs against the real Orthanc; only what a server cannot show (a
body that is not DICOM) is mocked.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
import responses
from pydantic import ValidationError
from pydicom import examples
from pydicom.dataset import Dataset

from dicomtrolley import mint
from dicomtrolley.auth import VitreaAuth, create_session
from dicomtrolley.core import (
    DICOMObjectLevels,
    ExtendedQuery,
    Instance,
    InstancePart,
    InstanceReference,
    NonInstanceParameterError,
    NonSeriesParameterError,
    Query,
    QueryLevels,
    Searcher,
    Series,
    SeriesReference,
    Study,
    StudyReference,
    to_instance_refs,
    to_series_level_refs,
)
from dicomtrolley.dicom_qr import DICOMQR, DICOMQuery
from dicomtrolley.exceptions import (
    DICOMTrolleyError,
    NoQueryResultsError,
    NoReferencesFoundError,
    StorageError,
    UnSupportedParameterError,
    XDSMissingDocumentError,
)
from dicomtrolley.mint import Mint, MintStudy, parse_mint_studies_response
from dicomtrolley.qido_rs import HierarchicalQuery, QidoRS, RelationalQuery
from dicomtrolley.rad69 import Rad69
from dicomtrolley.servers import VitreaConnection
from dicomtrolley.storage import DICOMDiskStorage, FlatStorageDir, SavedInstance, StorageDir, make_writable
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI
from tests.support.orthanc import OrthancServer
from tests.support.sample_data import SampleStudy
from tests.support.vitrea_server import VitreaServer

HOST = "127.0.0.1"


def small_study(server: OrthancServer) -> SampleStudy:
    assert server.sample is not None
    return next(s for s in server.sample.small_studies if s.patient_id == "PAT002")


def wado_uri_trolley(server: OrthancServer, **storage: Any) -> Trolley:
    session = requests.Session()
    # 4.x's argument order: downloader first.
    return Trolley(WadoURI(session, server.wado_url), QidoRS(session, server.dicomweb_url), **storage)


def tree() -> Study:
    """A study built the way 4.x scripts build one: keywords, parents passed in."""
    study = Study(uid="1.1", data=Dataset(), series=[])
    series = Series(uid="1.1.1", data=Dataset(), parent=study, instances=[])
    series.instances = [Instance(uid=f"1.1.1.{n}", data=Dataset(), parent=series) for n in (1, 2)]
    study.series = [series]
    return study


def instance_dataset(study: str = "1.1", series: str = "1.1.1", sop: str = "1.1.1.1") -> Dataset:
    """pydicom's example CT with our UIDs: a complete instance, file meta included."""
    ds = examples.ct
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    return ds


class RecordingStorage(DICOMDiskStorage):
    """A 4.x-style storage: it is handed parsed datasets and the output folder."""

    def __init__(self) -> None:
        self.saved: list[tuple[str, Any]] = []

    def save(self, dataset: Dataset, path: Any = None) -> None:
        self.saved.append((dataset.SOPInstanceUID, path))


class SearchMustNotRun(Searcher):
    def find_studies(self, query: Query) -> list[Study]:
        raise AssertionError(f"no search was needed, but {query.to_short_string()} was sent")


# ---------------------------------------------------------------- trolley


@pytest.mark.integration
def test_download_takes_use_async_and_max_workers_with_a_warning_that_parallelism_is_set_on_the_downloader(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    study = small_study(orthanc)

    moved = r"parallelism is set on the downloader, e\.g\. WadoURI\(session, url, workers=8\)"
    with pytest.warns(DeprecationWarning, match=moved):
        summary = wado_uri_trolley(orthanc).download(study.uid, tmp_path, use_async=True, max_workers=4)

    assert summary.written == len(study.instances)


@pytest.mark.integration
def test_fetch_all_datasets_yields_every_instance_of_a_study_as_a_dataset(orthanc: OrthancServer) -> None:
    study = small_study(orthanc)

    datasets = list(wado_uri_trolley(orthanc).fetch_all_datasets(StudyReference(study.uid)))

    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(i.uid for i in study.instances)


def test_obtain_references_splits_a_study_found_with_its_instances_without_searching() -> None:
    trolley = Trolley(searcher=SearchMustNotRun())

    references = trolley.obtain_references([tree()], DICOMObjectLevels.INSTANCE)

    assert references == [InstanceReference("1.1", "1.1.1", "1.1.1.1"), InstanceReference("1.1", "1.1.1", "1.1.1.2")]


@pytest.mark.integration
def test_obtain_references_searches_the_instances_of_a_study_reference(orthanc: OrthancServer) -> None:
    study = small_study(orthanc)

    references = wado_uri_trolley(orthanc).obtain_references([StudyReference(study.uid)], DICOMObjectLevels.INSTANCE)

    assert sorted(r.instance_uid for r in references if isinstance(r, InstanceReference)) == sorted(
        i.uid for i in study.instances
    )
    assert len(references) == len(study.instances)


@pytest.mark.integration
def test_obtain_references_splits_a_series_into_its_own_instances_not_its_whole_study(orthanc: OrthancServer) -> None:
    study = small_study(orthanc)
    series = study.series[1]

    references = wado_uri_trolley(orthanc).obtain_references(
        SeriesReference(study.uid, series.uid), DICOMObjectLevels.INSTANCE
    )

    assert sorted(references, key=str) == sorted(
        (InstanceReference(study.uid, series.uid, i.uid) for i in series.instances), key=str
    )


@pytest.mark.integration
def test_obtain_references_at_series_level_lists_the_series_of_a_study(orthanc: OrthancServer) -> None:
    study = small_study(orthanc)

    references = wado_uri_trolley(orthanc).obtain_references(study.uid, DICOMObjectLevels.SERIES)

    assert sorted(references, key=str) == sorted((SeriesReference(study.uid, s.uid) for s in study.series), key=str)


@pytest.mark.integration
def test_find_study_that_matches_nothing_raises_an_error_a_4x_script_catches(orthanc: OrthancServer) -> None:
    trolley = wado_uri_trolley(orthanc)

    with pytest.raises(DICOMTrolleyError) as caught:
        trolley.find_study(Query(PatientID="NOBODY"))

    assert isinstance(caught.value, NoQueryResultsError)


# ---------------------------------------------------------------- core


def test_extended_query_takes_4x_fields_and_a_birth_date_as_a_date() -> None:
    query = ExtendedQuery(
        InstitutionName="Hospital",
        InstitutionalDepartmentName="Radiology",
        PatientSex="F",
        StudyDescription="A study",
        SeriesDescription="A series",
        PatientBirthDate=date(1990, 1, 1),
        min_study_date=datetime(2020, 3, 1),
        max_study_date=datetime(2020, 3, 5),
        query_level="INSTANCE",
    )

    assert query.PatientBirthDate == "19900101"
    assert query.attributes()["InstitutionalDepartmentName"] == "Radiology"
    assert query.study_date_range() == "20200301-20200305"


def test_query_levels_and_object_levels_convert_both_ways() -> None:
    assert QueryLevels.from_object_level(DICOMObjectLevels.SERIES) is QueryLevels.SERIES
    assert DICOMObjectLevels.from_query_level(QueryLevels.INSTANCE) is DICOMObjectLevels.INSTANCE


def test_tree_objects_know_their_root_their_instances_and_series_and_look_up_children_by_uid() -> None:
    study = tree()
    series = study["1.1.1"]
    instance = series["1.1.1.2"]

    assert instance.root() is study
    assert series.root() is study
    assert study.root() is study
    assert [i.uid for i in study.all_instances()] == ["1.1.1.1", "1.1.1.2"]
    assert study.all_series() == [series]
    assert instance.all_series() == [series]
    assert study.get("1.1.1") is series
    assert series.get("1.1.1.1").uid == "1.1.1.1"
    assert study.max_object_depth() is DICOMObjectLevels.INSTANCE
    assert study.children() == (series,)
    assert study.children == (series,)
    with pytest.raises(KeyError):
        study["unknown"]


def test_series_and_instances_can_be_assigned_as_4x_scripts_do() -> None:
    study = Study("1.1")
    series = Series("1.1.1", parent=study)
    series.instances = (Instance("1.1.1.1", parent=series),)
    study.series = (series,)

    assert [i.uid for i in study.all_instances()] == ["1.1.1.1"]
    assert study["1.1.1"]["1.1.1.1"].reference() == InstanceReference("1.1", "1.1.1", "1.1.1.1")


def test_a_reference_holds_itself_and_nothing_finer() -> None:
    series = SeriesReference("1.1", "1.1.1")

    assert series.contained_references(DICOMObjectLevels.STUDY) == (series,)
    assert series.contained_references(DICOMObjectLevels.SERIES) == (series,)
    with pytest.raises(NoReferencesFoundError):
        series.contained_references(DICOMObjectLevels.INSTANCE)


def test_a_study_found_without_series_cannot_be_split_without_a_search() -> None:
    study = Study("1.1")

    assert study.contained_references(DICOMObjectLevels.STUDY) == (StudyReference("1.1"),)
    with pytest.raises(NoReferencesFoundError):
        study.contained_references(DICOMObjectLevels.SERIES)


def test_a_study_with_a_series_lacking_instances_is_not_split_into_a_partial_list() -> None:
    study = tree()
    study.add(Series("1.1.2"))

    assert len(study.contained_references(DICOMObjectLevels.SERIES)) == 2
    with pytest.raises(NoReferencesFoundError):
        study.contained_references(DICOMObjectLevels.INSTANCE)


def test_to_instance_refs_and_to_series_level_refs_raise_4x_errors_when_a_search_is_needed() -> None:
    assert len(to_instance_refs([tree()])) == 2
    assert to_series_level_refs([tree(), InstanceReference("2", "2.1", "2.1.1")]) == [
        SeriesReference("1.1", "1.1.1"), InstanceReference("2", "2.1", "2.1.1"),
    ]
    with pytest.raises(NonInstanceParameterError):
        to_instance_refs([SeriesReference("1.1", "1.1.1")])
    with pytest.raises(NonSeriesParameterError):
        to_series_level_refs([StudyReference("1.1")])


def test_init_from_query_converts_between_query_kinds_unless_a_parameter_would_be_lost() -> None:
    converted = DICOMQuery.init_from_query(Query(StudyInstanceUID="1.1", query_level=QueryLevels.SERIES))

    assert isinstance(converted, DICOMQuery)
    assert (converted.StudyInstanceUID, converted.query_level) == ("1.1", QueryLevels.SERIES)
    with pytest.raises(UnSupportedParameterError):
        Query.init_from_query(DICOMQuery(StudyID="7"))


def test_a_4x_style_searcher_that_implements_find_studies_gets_find_study_and_find_study_by_id() -> None:
    class OneStudy(Searcher):
        def find_studies(self, query: Query) -> list[Study]:
            return [Study(query.StudyInstanceUID)]

    assert OneStudy().find_study_by_id("1.1", QueryLevels.SERIES).uid == "1.1"


# ---------------------------------------------------------------- searchers


@pytest.mark.integration
def test_hierarchical_and_relational_queries_search_the_real_server(orthanc: OrthancServer) -> None:
    study = small_study(orthanc)
    series = study.series[0]
    qido = QidoRS(requests.Session(), orthanc.dicomweb_url)

    found_series = qido.find_studies(HierarchicalQuery(StudyInstanceUID=study.uid, query_level=QueryLevels.SERIES))
    found_instances = qido.find_studies(
        RelationalQuery(StudyInstanceUID=study.uid, SeriesInstanceUID=series.uid, query_level=QueryLevels.INSTANCE)
    )

    assert {s.uid for s in found_series[0].series} == {s.uid for s in study.series}
    assert {i.uid for i in found_instances[0].all_instances()} == {i.uid for i in series.instances}


def test_a_hierarchical_query_with_a_series_uid_but_no_study_uid_is_refused_when_built() -> None:
    with pytest.raises(ValidationError, match="needs its StudyInstanceUID"):
        HierarchicalQuery(SeriesInstanceUID="1.1.1")


def test_dicom_query_renders_its_4x_fields_into_the_c_find_identifier() -> None:
    identifier = DICOMQuery(
        StudyID="12345", ProtocolName="A protocol", Modality="MR", query_level=QueryLevels.SERIES,
        include_fields=["NumberOfStudyRelatedInstances"],
    ).as_dataset()

    assert (identifier.StudyID, identifier.ProtocolName, identifier.Modality) == ("12345", "A protocol", "MR")
    assert identifier.QueryRetrieveLevel == "SERIES"
    assert "NumberOfStudyRelatedInstances" in identifier


@pytest.mark.integration
def test_send_c_find_and_parse_c_find_response_give_the_tree_in_two_steps(orthanc: OrthancServer) -> None:
    study = small_study(orthanc)
    searcher = DICOMQR(HOST, orthanc.dicom_port, aec=orthanc.aet)

    rows = searcher.send_c_find(DICOMQuery(StudyInstanceUID=study.uid, query_level=QueryLevels.INSTANCE))
    studies = DICOMQR.parse_c_find_response(rows)

    assert len(rows) == len(study.instances)
    assert [s.uid for s in studies] == [study.uid]
    assert {i.uid for i in studies[0].all_instances()} == {i.uid for i in study.instances}


# ---------------------------------------------------------------- downloaders


@pytest.mark.integration
def test_wado_uri_get_dataset_returns_one_instance(orthanc: OrthancServer) -> None:
    study = small_study(orthanc)
    series = study.series[0]
    instance = series.instances[0]
    wado = WadoURI(requests.Session(), orthanc.wado_url)

    dataset = wado.get_dataset(InstanceReference(study.uid, series.uid, instance.uid))

    assert dataset.SOPInstanceUID == instance.uid
    assert dataset.PatientID == pydicom.dcmread(instance.path).PatientID


@responses.activate
def test_wado_uri_get_dataset_of_bytes_that_are_not_dicom_raises() -> None:
    responses.get("http://pacs.test/wado", body=bytes(1234), content_type="application/dicom")
    wado = WadoURI(requests.Session(), "http://pacs.test/wado")

    with pytest.raises(DICOMTrolleyError, match="not a DICOM instance"):
        wado.get_dataset(InstanceReference("1", "1.1", "1.1.1"))


def test_wado_uri_takes_4x_use_async_and_max_workers_with_a_warning_and_uses_max_workers() -> None:
    with pytest.warns(DeprecationWarning, match="set on the downloader"):
        wado = WadoURI(requests.Session(), "http://pacs.test/wado", use_async=True, max_workers=3)

    assert wado.workers == 3


@pytest.mark.integration
def test_wado_uri_datasets_async_warns_and_yields_the_datasets(orthanc: OrthancServer) -> None:
    study = small_study(orthanc)
    series = study.series[0]
    wado = WadoURI(requests.Session(), orthanc.wado_url)
    wanted = [InstanceReference(study.uid, series.uid, i.uid) for i in series.instances]

    with pytest.warns(DeprecationWarning, match="datasets_async"):
        datasets = list(wado.datasets_async(wanted))

    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(i.uid for i in series.instances)


@pytest.mark.integration
def test_datasets_takes_a_single_object_as_well_as_a_list(orthanc: OrthancServer) -> None:
    study = small_study(orthanc)
    series = study.series[1]
    wado = WadoRS(requests.Session(), orthanc.dicomweb_url)

    datasets = list(wado.datasets(SeriesReference(study.uid, series.uid)))

    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(i.uid for i in series.instances)


def test_wado_rs_builds_the_4x_urls_under_its_old_method_name() -> None:
    wado = WadoRS(requests.Session(), "http://pacs.test/dicom-web/")

    assert wado.wado_rs_instance_uri(SeriesReference("1", "2")) == "http://pacs.test/dicom-web/studies/1/series/2"


def test_downloaders_can_be_built_without_touching_the_session() -> None:
    WadoRS(session=None, url="prot://test/")  # type: ignore[arg-type]  # 4.x tests build them so
    WadoURI(session=None, url="prot://test/")  # type: ignore[arg-type]


def test_wado_uri_given_a_study_asks_for_instances_with_the_4x_error() -> None:
    wado = WadoURI(requests.Session(), "http://pacs.test/wado")

    with pytest.raises(NonInstanceParameterError):
        list(wado.datasets(StudyReference("1.1")))


# ---------------------------------------------------------------- storage


@pytest.mark.integration
def test_a_4x_disk_storage_given_to_the_trolley_is_fed_parsed_datasets_and_the_output_folder(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    study = small_study(orthanc)
    storage = RecordingStorage()

    summary = wado_uri_trolley(orthanc, storage=storage).download(study.uid, tmp_path)

    assert sorted(uid for uid, _ in storage.saved) == sorted(i.uid for i in study.instances)
    assert {path for _, path in storage.saved} == {tmp_path}
    assert summary.written == len(study.instances)


@pytest.mark.integration
def test_a_storage_dir_subclass_overriding_save_gets_datasets_as_in_4x(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = small_study(orthanc)
    saved: list[Dataset] = []

    class NoSaveStorageDir(StorageDir):
        def save(self, dataset: Any, path: Any = None) -> Any:
            saved.append(dataset)

    wado_uri_trolley(orthanc, storage=NoSaveStorageDir(tmp_path)).download(study.uid, tmp_path)

    assert len(saved) == len(study.instances)
    assert all(isinstance(ds, Dataset) for ds in saved)
    assert not any(tmp_path.iterdir())


@pytest.mark.integration
def test_a_storage_dir_subclass_overriding_generate_path_chooses_the_paths_as_in_4x(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    study = small_study(orthanc)

    class ByPatient(StorageDir):
        def generate_path(self, dataset: Any) -> Path:
            return Path(dataset.PatientID) / f"{dataset.SOPInstanceUID}.dcm"

    wado_uri_trolley(orthanc, storage=ByPatient(tmp_path)).download(study.uid, tmp_path)

    assert sorted(p.name for p in (tmp_path / "PAT002").iterdir()) == sorted(f"{i.uid}.dcm" for i in study.instances)


@pytest.mark.integration
def test_a_storage_dir_subclass_whose_save_takes_instance_bytes_is_fed_the_bytes(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    study = small_study(orthanc)
    seen: list[InstancePart] = []

    class Counting(StorageDir):
        def save(self, part: InstancePart) -> SavedInstance:
            seen.append(part)
            return super().save(part)

    wado_uri_trolley(orthanc, storage=Counting(tmp_path)).download(study.uid, tmp_path)

    assert len(seen) == len(study.instances)
    assert all(isinstance(part, InstancePart) for part in seen)


def test_storage_dir_saves_a_pydicom_dataset_in_the_4x_layout(tmp_path: Path) -> None:
    StorageDir(tmp_path).save(instance_dataset("1.2", "1.2.3", "1.2.3.4"))

    written = tmp_path / "1_2" / "1_2_3" / "1_2_3_4"
    assert pydicom.dcmread(written).PatientName == "CompressedSamples^CT1"


def test_storage_dir_save_dataset_takes_4x_output_folder_argument(tmp_path: Path) -> None:
    FlatStorageDir(tmp_path / "default").save_dataset(instance_dataset(sop="9.9"), tmp_path / "elsewhere")

    assert (tmp_path / "elsewhere" / "9_9").is_file()
    assert not (tmp_path / "default").exists()


def test_storage_dir_generate_path_is_relative_and_names_missing_uids_unknown() -> None:
    partial = Dataset()
    partial.StudyInstanceUID, partial.SeriesInstanceUID = "1.2", "1.2.3"

    assert StorageDir("/anywhere").generate_path(partial) == Path("1_2/1_2_3/unknown")


def test_storage_dir_refuses_a_dataset_it_cannot_encode_with_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="Could not encode"):
        StorageDir(tmp_path).save(Dataset())  # no transfer syntax: pydicom cannot tell how to encode it


def test_make_writable_gives_a_search_result_file_meta_so_it_can_be_saved(tmp_path: Path) -> None:
    from_json = Dataset.from_json(
        {"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
         "00080018": {"vr": "UI", "Value": ["1.2.3"]}}
    )

    make_writable(from_json).save_as(tmp_path / "x.dcm", enforce_file_format=True)

    assert pydicom.dcmread(tmp_path / "x.dcm").SOPInstanceUID == "1.2.3"


# ---------------------------------------------------------------- servers


def test_vitrea_connection_warns_and_hands_out_a_session_that_logs_in_with_vitrea_auth() -> None:
    with pytest.warns(DeprecationWarning, match="create_session"):
        connection = VitreaConnection(login_url="https://vitrea/login")

    session = connection.log_in(user="user", password="secret", realm="realm")

    assert isinstance(session.auth, VitreaAuth)
    assert (session.auth.user, session.auth.realm, session.auth.login_url) == ("user", "realm", "https://vitrea/login")



def test_vitrea_connection_builds_4x_mint_trolley_that_searches_with_mint_and_downloads_with_wado_uri(
    orthanc: OrthancServer, vitrea: VitreaServer, tmp_path: Path
) -> None:
    study = _study_of(orthanc, "PAT003")
    with pytest.warns(DeprecationWarning, match="create_session"):
        connection = VitreaConnection(vitrea.login_url)

    trolley = connection.get_mint_trolley(
        vitrea.user, vitrea.password, "DefaultSystemRealm", wado_url=orthanc.wado_url, mint_url=vitrea.mint_url
    )
    trolley.download(trolley.find_studies(Query(PatientID="PAT003")), tmp_path)

    assert isinstance(trolley.searcher, Mint)
    assert isinstance(trolley.downloader, WadoURI)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        i.uid.replace(".", "_") for i in study.instances
    )


# ---------------------------------------------------------------- mint


def test_mint_finds_4x_mint_studies_with_their_mint_id_and_modification_time(
    vitrea: VitreaServer, orthanc: OrthancServer
) -> None:
    study = _study_of(orthanc, "PAT003")
    with create_session(vitrea.login_url, vitrea.user, vitrea.password) as session:
        [found] = Mint(session, vitrea.mint_url).find_studies(Query(PatientID="PAT003"))

    assert isinstance(found, MintStudy)
    assert found.mint_uuid == str(uuid.uuid5(uuid.NAMESPACE_OID, study.uid))
    assert found.last_modified == "2024-01-01T00:00:00.000Z"


def test_parse_mint_studies_response_reads_a_finished_answer_as_find_studies_does(vitrea: VitreaServer) -> None:
    with create_session(vitrea.login_url, vitrea.user, vitrea.password) as session:
        response = session.get(f"{vitrea.mint_url}/studies", params={"PatientID": "PAT002", "QueryLevel": "INSTANCE"})
        query = Query(PatientID="PAT002", query_level=QueryLevels.INSTANCE)
        searched = Mint(session, vitrea.mint_url).find_studies(query)

    parsed = parse_mint_studies_response(response)

    assert parsed == searched
    assert all(isinstance(s, MintStudy) for s in parsed)


def test_mint_study_dump_content_shows_every_level(vitrea: VitreaServer) -> None:
    with create_session(vitrea.login_url, vitrea.user, vitrea.password) as session:
        query = Query(PatientID="PAT003", query_level=QueryLevels.INSTANCE)
        [study] = Mint(session, vitrea.mint_url).find_studies(query)
    assert isinstance(study, MintStudy)

    dump = study.dump_content()

    assert "PAT003" in dump
    assert study.series[0].uid in dump
    assert study.series[0].instances[0].uid in dump


def test_query_levels_import_from_mint_as_4x_examples_do() -> None:
    assert mint.QueryLevels is QueryLevels


# ---------------------------------------------------------------- rad69


def test_rad69_takes_4x_use_async_and_max_workers_with_a_warning_and_max_workers_sets_workers() -> None:
    with pytest.warns(DeprecationWarning, match="parallelism is set on the downloader"):
        rad69 = Rad69(requests.Session(), "http://vitrea.test/rids", use_async=True, max_workers=3)

    assert rad69.workers == 3


def test_rad69_takes_request_per_series_positionally_as_4x_did(
    orthanc: OrthancServer, vitrea: VitreaServer, tmp_path: Path
) -> None:
    study = _study_of(orthanc, "PAT002")
    with create_session(vitrea.login_url, vitrea.user, vitrea.password) as session:
        rad69 = Rad69(session, vitrea.rad69_url, False)
        Trolley(Mint(session, vitrea.mint_url), rad69).download(study.uid, tmp_path, progress=False)

    assert rad69.request_per_series is False
    assert len(vitrea.retrieves) == 1


def test_rad69_errors_to_ignore_skips_those_errors_as_4x_did(orthanc: OrthancServer, vitrea: VitreaServer) -> None:
    study = _study_of(orthanc, "PAT002")
    lost = study.series[0]
    vitrea.switches.missing_documents = {i.uid for i in lost.instances}
    wanted = [InstanceReference(study.uid, s.uid, i.uid) for s in study.series for i in s.instances]
    with create_session(vitrea.login_url, vitrea.user, vitrea.password) as session:
        rad69 = Rad69(session, vitrea.rad69_url, errors_to_ignore=[XDSMissingDocumentError])
        received = {ds.SOPInstanceUID for ds in rad69.datasets(wanted)}

    assert received == {i.uid for i in study.instances} - {i.uid for i in lost.instances}


def test_rad69_without_errors_to_ignore_raises_them() -> None:
    assert Rad69(requests.Session(), "http://vitrea.test/rids").errors_to_ignore == ()


def _study_of(orthanc: OrthancServer, patient_id: str) -> SampleStudy:
    assert orthanc.sample is not None
    return orthanc.sample.studies_of_patient(patient_id)[0]


def test_parse_mint_studies_response_reads_the_text_of_a_test_double_as_4x_did() -> None:
    class Answer:  # what 4.x's own tests pass: text only, its declared encoding moot
        url, status_code, content = "http://vitrea/MINTApi/studies", 200, b""
        text = (
            "<?xml version='1.0' encoding='UTF-3'?><studySearchResults xmlns='http://medical.nema.org/mint'>"
            "<study studyUUID='u'><attr tag='0020000D' vr='UI' val='1.2'/></study></studySearchResults>"
        )

    [study] = parse_mint_studies_response(Answer())  # type: ignore[arg-type]

    assert (study.uid, study.mint_uuid) == ("1.2", "u")


@pytest.mark.parametrize("downloader", [WadoURI, Rad69])
def test_4x_parallelism_warning_of_a_downloader_points_at_the_line_that_built_it(
    downloader: type[WadoURI | Rad69],
) -> None:
    with pytest.warns(DeprecationWarning, match=f"{downloader.__name__}\\(\\)") as caught:
        downloader(requests.Session(), "http://pacs.test/x", max_workers=2)

    assert [Path(w.filename).name for w in caught] == [Path(__file__).name]
