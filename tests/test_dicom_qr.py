"""DIMSE query/retrieve against the real Orthanc's DICOM port: C-FIND, C-GET, C-MOVE.

What "byte-identical" means here: over DIMSE the server sends the dataset
only; the file meta information (group 0002) in front of it is written by
the receiver (pynetdicom), so its Implementation Class UID differs from the
uploaded file's. The tests compare everything after the file meta, which
Orthanc sends exactly as it was uploaded.
"""

from __future__ import annotations

import _thread
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom.association import Association

from dicomtrolley._associations import close_all
from dicomtrolley.core import (
    Downloader,
    FetchFailure,
    InstancePart,
    InstanceReference,
    Query,
    QueryLevels,
    Reference,
    SeriesReference,
    StudyReference,
)
from dicomtrolley.dicom_qr import DICOMQR, find_identifier
from dicomtrolley.dimse_retrieve import (
    MAX_PRESENTATION_CONTEXTS,
    DICOMCGet,
    DICOMCMove,
    SubOperations,
    accept_senders_syntax,
    get_storage_contexts,
)
from dicomtrolley.exceptions import DICOMTrolleyError, DIMSEError, StorageError, UnSupportedParameterError
from dicomtrolley.trolley import Trolley
from tests.support.orthanc import OrthancFactory, OrthancServer
from tests.support.sample_data import SampleData, SampleSeries, SampleStudy

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


# ---------------------------------------------------------------- helpers


@pytest.fixture
def sample(orthanc: OrthancServer) -> SampleData:
    return orthanc.sample


@pytest.fixture
def searcher(orthanc: OrthancServer) -> DICOMQR:
    return DICOMQR(HOST, orthanc.dicom_port, aec=orthanc.aet)


@pytest.fixture
def cget(orthanc: OrthancServer) -> DICOMCGet:
    return DICOMCGet(HOST, orthanc.dicom_port, aec=orthanc.aet)


@pytest.fixture
def cmove(orthanc: OrthancServer) -> DICOMCMove:
    destination_aet, destination_port = orthanc.move_destination
    return DICOMCMove(
        HOST, orthanc.dicom_port, aec=orthanc.aet,
        destination_aet=destination_aet, destination_port=destination_port, listen_address=HOST,
    )


@pytest.fixture
def doe_ct(sample: SampleData) -> SampleStudy:
    """A small study: 3 series, 9 instances."""
    return next(s for s in sample.small_studies if s.description == "CT THORAX")


def dataset_bytes(part10: bytes) -> bytes:
    """Everything after the preamble, 'DICM' and the file meta group of a DICOM file."""
    assert part10[128:132] == b"DICM"
    assert part10[132:136] == b"\x02\x00\x00\x00"  # (0002,0000) File Meta Information Group Length first
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length:]


class Collector:
    """A sink that keeps what it receives, keyed by SOPInstanceUID."""

    def __init__(self) -> None:
        self.parts: dict[str, bytes] = {}
        self.references: dict[str, InstanceReference | None] = {}
        self.sources: set[Reference | None] = set()
        self.lock = threading.Lock()

    def __call__(self, part: InstancePart) -> None:
        data = part.body.read()
        assert len(data) == part.size
        uid = str(part.dataset().SOPInstanceUID)
        with self.lock:
            self.parts[uid] = data
            self.references[uid] = part.reference
            self.sources.add(part.source)


def fetch_all(downloader: Downloader, targets: list[Reference]) -> tuple[Collector, list[FetchFailure]]:
    sink = Collector()
    failures = downloader.fetch(targets, sink)
    return sink, failures


def assert_uploaded_bytes(sink: Collector, instances: list[Path], uids: list[str]) -> None:
    assert sorted(sink.parts) == sorted(uids)
    for uid, path in zip(uids, instances, strict=True):
        assert dataset_bytes(sink.parts[uid]) == dataset_bytes(path.read_bytes()), uid


def live_associations() -> list[Association]:
    """pynetdicom associations whose threads still run (each association is a thread).

    The idle associations the pools keep for reuse are released first: what is
    left is what an operation left open.
    """
    close_all()
    deadline = time.monotonic() + 5
    while True:
        alive = [t for t in threading.enumerate() if isinstance(t, Association) and t.is_alive()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def study_uids(studies: list[SampleStudy]) -> list[str]:
    return sorted(s.uid for s in studies)


# ---------------------------------------------------------------- C-FIND


def test_find_by_patient_id_returns_that_patients_studies(searcher: DICOMQR, sample: SampleData) -> None:
    studies = searcher.find_studies(Query(PatientID="PAT001"))

    assert sorted(s.uid for s in studies) == study_uids(sample.studies_of_patient("PAT001"))
    assert {str(s.data.PatientName) for s in studies} == {"DOE^JOHN"}
    assert all(s.series == [] for s in studies)


def test_find_with_wildcard_patient_name_matches_every_doe(searcher: DICOMQR, sample: SampleData) -> None:
    studies = searcher.find_studies(Query(PatientName="DOE*"))

    expected = [s for s in sample.studies if s.patient_name.startswith("DOE")]
    assert sorted(s.uid for s in studies) == study_uids(expected)


def test_find_with_non_ascii_patient_name_matches(searcher: DICOMQR, sample: SampleData) -> None:
    studies = searcher.find_studies(Query(PatientName="Müller*"))

    expected = [s for s in sample.studies if s.patient_name.startswith("Müller")]
    assert [s.uid for s in studies] == study_uids(expected)
    assert str(studies[0].data.PatientName) == "Müller^Jürgen"


def test_find_with_closed_date_range_returns_studies_inside_it(searcher: DICOMQR, sample: SampleData) -> None:
    studies = searcher.find_studies(Query(min_study_date=date(2020, 1, 1), max_study_date=date(2021, 12, 31)))

    expected = [s for s in sample.studies if "20200101" <= s.study_date <= "20211231"]
    assert len(expected) >= 2
    assert sorted(s.uid for s in studies) == study_uids(expected)
    assert all("20200101" <= s.data.StudyDate <= "20211231" for s in studies)


def test_find_with_open_date_range_returns_studies_after_it(searcher: DICOMQR, sample: SampleData) -> None:
    studies = searcher.find_studies(Query(min_study_date=date(2023, 1, 1)))

    assert sorted(s.uid for s in studies) == study_uids([s for s in sample.studies if s.study_date >= "20230101"])


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        pytest.param("2020-01-01-20211231", "20200101", "20211231", id="closed-mixed-forms"),
        pytest.param("-20201231", "00010101", "20201231", id="open-low"),
        pytest.param("2022-01-01-", "20220101", "99991231", id="open-high-iso"),
    ],
)
def test_find_with_study_date_written_as_text_returns_studies_inside_it(
    searcher: DICOMQR, sample: SampleData, text: str, first: str, last: str
) -> None:
    studies = searcher.find_studies(Query(StudyDate=text))

    expected = [s for s in sample.studies if first <= s.study_date <= last]
    assert expected
    assert sorted(s.uid for s in studies) == study_uids(expected)


def test_find_series_by_modality_returns_matching_series_under_their_studies(
    searcher: DICOMQR, sample: SampleData
) -> None:
    studies = searcher.find_studies(Query(PatientID="PAT001", Modality="MR", query_level=QueryLevels.SERIES))

    expected = {
        series.uid: study.uid
        for study in sample.studies_of_patient("PAT001")
        for series in study.series
        if series.modality == "MR"
    }
    found = {series.uid: study.uid for study in studies for series in study.series}
    assert found == expected
    assert {s.data.Modality for study in studies for s in study.series} == {"MR"}
    assert {str(study.data.PatientID) for study in studies} == {"PAT001"}


def test_find_at_instance_level_builds_the_whole_tree_of_a_study(
    searcher: DICOMQR, doe_ct: SampleStudy
) -> None:
    study = searcher.find_study_by_id(doe_ct.uid, QueryLevels.INSTANCE)

    assert study.uid == doe_ct.uid
    assert sorted(s.uid for s in study.series) == sorted(s.uid for s in doe_ct.series)
    for series in doe_ct.series:
        found = study.get(series.uid)
        assert sorted(i.uid for i in found.instances) == sorted(i.uid for i in series.instances)
        assert str(found.data.SeriesDescription) == series.description
    assert study.data.AccessionNumber == doe_ct.accession
    assert "SOPInstanceUID" not in study.data
    instance = study.series[0].instances[0]
    assert instance.reference() == InstanceReference(doe_ct.uid, study.series[0].uid, instance.uid)


def test_include_fields_are_asked_for_and_returned(searcher: DICOMQR, doe_ct: SampleStudy) -> None:
    study = searcher.find_study(Query(StudyInstanceUID=doe_ct.uid, include_fields=["ReferringPhysicianName"]))

    assert str(study.data.ReferringPhysicianName) == "REFERRER^A"


def test_find_that_matches_nothing_returns_an_empty_list(searcher: DICOMQR) -> None:
    assert searcher.find_studies(Query(PatientID="NOBODY")) == []


@pytest.mark.parametrize(
    ("query", "named"),
    [
        (Query(Modality="CT"), "Modality"),
        (Query(SOPInstanceUID="1.2.3", query_level=QueryLevels.SERIES), "SOPInstanceUID"),
        (Query(PatientID="PAT001", limit=10), "limit"),
        (Query(PatientID="PAT001", offset=5), "offset"),
        (Query(PatientID="PAT001", include_fields=["all"]), "all"),
    ],
)
def test_a_field_cfind_cannot_send_is_refused(searcher: DICOMQR, query: Query, named: str) -> None:
    with pytest.raises(UnSupportedParameterError, match=named):
        searcher.find_studies(query)


def test_failure_status_raises_instead_of_returning_nothing(searcher: DICOMQR) -> None:
    identifier = find_identifier(Query(PatientID="PAT001"))
    identifier.QueryRetrieveLevel = "NONSENSE"

    with pytest.raises(DIMSEError, match=r"0xC000 \(Unable to Process\)") as caught:
        searcher.c_find(identifier)

    assert caught.value.status == 0xC000


def test_a_capped_answer_raises_instead_of_returning_part_of_the_matches(
    orthanc_factory: OrthancFactory,
) -> None:
    server = orthanc_factory(LimitFindResults=2)
    searcher = DICOMQR(HOST, server.dicom_port, aec=server.aet)

    with pytest.raises(DIMSEError, match="incomplete") as caught:
        searcher.find_studies(Query())

    assert caught.value.status == 0xFE00


def test_rejected_association_raises_naming_the_called_ae_title(orthanc_factory: OrthancFactory) -> None:
    # Orthanc closes the connection right after its A-ASSOCIATE-RJ; on a loaded machine pynetdicom
    # may see the close before it reads the rejection, so either wording is the server's answer.
    # Both must name the called AE title the server did not know and say what to check.
    server = orthanc_factory(load=False, DicomCheckCalledAet=True)
    searcher = DICOMQR(HOST, server.dicom_port, aec="NOT-ORTHANC")

    with pytest.raises(DIMSEError) as caught:
        searcher.find_studies(Query())
    message = str(caught.value)
    assert "NOT-ORTHANC" in message
    assert re.search(r"(rejected|did not accept) the association", message)
    assert "check the called ae title" in message.lower()
    assert live_associations() == []


def test_nothing_listening_raises_cannot_connect() -> None:
    searcher = DICOMQR(HOST, free_port(), aec="ORTHANC", acse_timeout=5)

    with pytest.raises(DIMSEError, match="Cannot connect"):
        searcher.find_studies(Query())


def test_without_pynetdicom_the_modules_import_and_say_what_to_install() -> None:
    code = (
        "import sys; sys.modules['pynetdicom'] = None\n"
        "import dicomtrolley, dicomtrolley.dicom_qr as qr, dicomtrolley.dimse_retrieve\n"
        "try:\n    qr.DICOMQR('127.0.0.1', 104)\n"
        "except dicomtrolley.exceptions.DICOMTrolleyError as error:\n    print(error)\n"
    )

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert "pip install 'dicomtrolley[dimse]'" in result.stdout


def test_an_invalid_ae_title_is_refused_before_connecting() -> None:
    with pytest.raises(DICOMTrolleyError, match="AE title"):
        DICOMQR(HOST, 104, aet="THIS-TITLE-IS-FAR-TOO-LONG")


# ---------------------------------------------------------------- C-GET and C-MOVE, every level


LEVELS = ["study", "series", "instance"]


def targets_at(level: str, study: SampleStudy) -> tuple[list[Reference], list[Path], list[str]]:
    """A target of ``study`` at ``level``, and the files and UIDs it should bring."""
    series: SampleSeries = study.series[1]
    if level == "study":
        instances = study.instances
        return [StudyReference(study.uid)], [i.path for i in instances], [i.uid for i in instances]
    if level == "series":
        return (
            [SeriesReference(study.uid, series.uid)],
            [i.path for i in series.instances],
            [i.uid for i in series.instances],
        )
    one = series.instances[2]
    return [InstanceReference(study.uid, series.uid, one.uid)], [one.path], [one.uid]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("retrieve", ["cget", "cmove"])
def test_a_dimse_retrieve_delivers_the_uploaded_dataset_bytes(
    retrieve: str, level: str, doe_ct: SampleStudy, request: pytest.FixtureRequest
) -> None:
    downloader: DICOMCGet | DICOMCMove = request.getfixturevalue(retrieve)
    targets, paths, uids = targets_at(level, doe_ct)

    sink, failures = fetch_all(downloader, targets)

    assert failures == []
    assert_uploaded_bytes(sink, paths, uids)
    assert sink.sources == set(targets)
    assert downloader.last_suboperations == SubOperations(completed=len(uids))


def test_parts_carry_their_reference_when_the_target_names_the_series(
    cget: DICOMCGet, doe_ct: SampleStudy
) -> None:
    series = doe_ct.series[0]

    sink, _ = fetch_all(cget, [SeriesReference(doe_ct.uid, series.uid)])

    assert sink.references == {
        i.uid: InstanceReference(doe_ct.uid, series.uid, i.uid) for i in series.instances
    }


def test_parts_of_a_study_target_leave_the_reference_to_storage(cget: DICOMCGet, doe_ct: SampleStudy) -> None:
    sink, _ = fetch_all(cget, [StudyReference(doe_ct.uid)])

    assert set(sink.references.values()) == {None}


def test_several_targets_share_one_fetch_and_sum_their_counts(cget: DICOMCGet, sample: SampleData) -> None:
    studies = sample.small_studies[:3]

    sink, failures = fetch_all(cget, [StudyReference(s.uid) for s in studies])

    assert failures == []
    assert len(sink.parts) == sum(len(s.instances) for s in studies)
    assert cget.last_suboperations.completed == len(sink.parts)


def test_datasets_yields_each_instance_parsed(cget: DICOMCGet, doe_ct: SampleStudy) -> None:
    series = doe_ct.series[1]

    datasets = list(cget.datasets([SeriesReference(doe_ct.uid, series.uid)]))

    assert all(isinstance(ds, Dataset) for ds in datasets)
    assert sorted(str(ds.SOPInstanceUID) for ds in datasets) == sorted(i.uid for i in series.instances)
    assert {str(ds.SeriesDescription) for ds in datasets} == {series.description}


def test_datasets_with_cmove_raises_the_failure_after_what_arrived(cmove: DICOMCMove, doe_ct: SampleStudy) -> None:
    series = doe_ct.series[0]
    received: list[str] = []

    def consume() -> None:
        for ds in cmove.datasets([SeriesReference(doe_ct.uid, series.uid), StudyReference("1.2.3.4.404")]):
            received.append(str(ds.SOPInstanceUID))

    with pytest.raises(DIMSEError, match="0xC000"):
        consume()

    assert sorted(received) == sorted(i.uid for i in series.instances)


# ---------------------------------------------------------------- retrieve failures


@pytest.mark.parametrize("make", ["cget", "cmove"])
def test_an_unknown_study_is_a_failure_not_an_empty_success(
    request: pytest.FixtureRequest, make: str
) -> None:
    downloader: DICOMCGet | DICOMCMove = request.getfixturevalue(make)
    target = StudyReference("1.2.3.4.404")

    sink, failures = fetch_all(downloader, [target])

    assert sink.parts == {}
    assert [f.target for f in failures] == [target]
    assert isinstance(failures[0].error, DIMSEError)
    assert failures[0].error.status == 0xC000


def test_stop_on_failure_false_goes_on_after_a_failed_target(cget: DICOMCGet, doe_ct: SampleStudy) -> None:
    missing = StudyReference("1.2.3.4.404")
    sink = Collector()

    failures = cget.fetch([missing, StudyReference(doe_ct.uid)], sink, stop_on_failure=False)

    assert [f.target for f in failures] == [missing]
    assert len(sink.parts) == len(doe_ct.instances)


def test_unknown_move_destination_says_what_to_configure(orthanc: OrthancServer, doe_ct: SampleStudy) -> None:
    unknown = DICOMCMove(
        HOST, orthanc.dicom_port, aec=orthanc.aet,
        destination_aet="UNKNOWN-AE", destination_port=free_port(), listen_address=HOST,
    )

    _, failures = fetch_all(unknown, [StudyReference(doe_ct.uid)])

    message = str(failures[0].error)
    assert "'UNKNOWN-AE'" in message
    assert "must list the move destination AE title" in message
    assert "DicomModalities" in message


def test_cmove_on_a_port_in_use_raises(orthanc: OrthancServer, doe_ct: SampleStudy) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        mover = DICOMCMove(
            HOST, orthanc.dicom_port, aec=orthanc.aet,
            destination_port=taken.getsockname()[1], listen_address=HOST,
        )
        with pytest.raises(DIMSEError, match="Cannot listen for C-MOVE"):
            mover.fetch([StudyReference(doe_ct.uid)], Collector())


def test_unreachable_server_fails_every_target(doe_ct: SampleStudy) -> None:
    downloader = DICOMCGet(HOST, free_port(), aec="ORTHANC", acse_timeout=5)
    targets: list[Reference] = [StudyReference(doe_ct.uid), StudyReference("1.2.3")]

    failures = downloader.fetch(targets, Collector(), stop_on_failure=False)

    assert [f.target for f in failures] == targets
    assert all(isinstance(f.error, DIMSEError) and "Cannot connect" in str(f.error) for f in failures)


def test_rejected_cget_association_fails_with_the_reason(
    orthanc_factory: OrthancFactory, doe_ct: SampleStudy
) -> None:
    server = orthanc_factory(DicomCheckCalledAet=True)
    downloader = DICOMCGet(HOST, server.dicom_port, aec="NOT-ORTHANC")

    failures = downloader.fetch([StudyReference(doe_ct.uid)], Collector())

    # Orthanc answers A-ASSOCIATE-RJ and closes at once; with C-GET's large request the close
    # sometimes resets the connection before the rejection is read, which reads as an abort.
    assert isinstance(failures[0].error, DIMSEError)
    assert re.search(r"rejected the association|check the called AE title", str(failures[0].error))


# ---------------------------------------------------------------- the association is always closed


def failing_sink(error: BaseException) -> Callable[[InstancePart], None]:
    calls: list[InstancePart] = []

    def sink(part: InstancePart) -> None:
        calls.append(part)
        raise error

    sink.calls = calls  # type: ignore[attr-defined]
    return sink


@pytest.mark.parametrize("make", ["cget", "cmove"])
def test_sink_error_fails_the_target_and_the_association_is_released(
    request: pytest.FixtureRequest, make: str, doe_ct: SampleStudy, searcher: DICOMQR
) -> None:
    downloader: DICOMCGet | DICOMCMove = request.getfixturevalue(make)
    cause = StorageError("disk full")
    sink = failing_sink(cause)

    failures = downloader.fetch([StudyReference(doe_ct.uid), StudyReference(doe_ct.uid)], sink)

    assert len(failures) == 1  # stop_on_failure: the second target never started
    error = failures[0].error
    assert isinstance(error, DIMSEError)
    assert "disk full" in str(error)
    assert error.__cause__ is cause
    assert len(sink.calls) == 1  # type: ignore[attr-defined]  # the rest were refused without the sink
    assert live_associations() == []
    assert searcher.find_study_by_id(doe_ct.uid).uid == doe_ct.uid


def test_cget_counts_refused_instances_as_failed_suboperations(cget: DICOMCGet, doe_ct: SampleStudy) -> None:
    failures = cget.fetch([StudyReference(doe_ct.uid)], failing_sink(StorageError("disk full")))

    assert failures[0].error.status == 0xA702  # type: ignore[attr-defined]  # every sub-operation failed
    assert cget.last_suboperations == SubOperations(failed=len(doe_ct.instances))


def test_one_refused_instance_fails_the_target_and_the_rest_arrive(cget: DICOMCGet, doe_ct: SampleStudy) -> None:
    kept = Collector()
    refused: list[str] = []

    def sink(part: InstancePart) -> None:
        if not refused:
            refused.append(str(part.dataset().SOPInstanceUID))
            raise StorageError("one bad file")
        kept(part)

    failures = cget.fetch([StudyReference(doe_ct.uid)], sink, stop_on_failure=False)

    assert failures[0].error.status == 0xB000  # type: ignore[attr-defined]  # warning: some sub-operations failed
    assert "one bad file" in str(failures[0].error)
    assert cget.last_suboperations == SubOperations(completed=len(doe_ct.instances) - 1, failed=1)
    assert sorted([*kept.parts, *refused]) == sorted(i.uid for i in doe_ct.instances)


def test_a_bug_in_the_sink_propagates_and_the_association_is_closed(
    cget: DICOMCGet, doe_ct: SampleStudy, searcher: DICOMQR
) -> None:
    with pytest.raises(ZeroDivisionError):
        cget.fetch([StudyReference(doe_ct.uid)], failing_sink(ZeroDivisionError("bug")))

    assert live_associations() == []
    assert searcher.find_study_by_id(doe_ct.uid).uid == doe_ct.uid


@pytest.mark.parametrize("make", ["cget", "cmove"])
def test_ctrl_c_during_a_retrieve_aborts_the_association(
    request: pytest.FixtureRequest, make: str, doe_ct: SampleStudy, searcher: DICOMQR
) -> None:
    downloader: DICOMCGet | DICOMCMove = request.getfixturevalue(make)
    threads_before = set(threading.enumerate())
    # A process started in the background by a non-interactive shell (as CI may be)
    # ignores SIGINT, and then interrupt_main() does nothing: handle it as Python does.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))

    def sink(part: InstancePart) -> None:
        _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the main thread
        time.sleep(0.5)

    with pytest.raises(KeyboardInterrupt):
        downloader.fetch([StudyReference(doe_ct.uid)], sink)

    assert live_associations() == []
    time.sleep(0.2)
    assert {t for t in threading.enumerate() if t.is_alive()} <= threads_before  # the C-MOVE SCP stopped too
    assert searcher.find_study_by_id(doe_ct.uid).uid == doe_ct.uid


# ---------------------------------------------------------------- what C-GET proposes


def test_cget_proposes_compressed_syntaxes_within_one_association() -> None:
    contexts = get_storage_contexts()

    assert len(contexts) + 1 <= MAX_PRESENTATION_CONTEXTS  # the C-GET context counts too
    ct = [c.transfer_syntax for c in contexts if c.abstract_syntax == "1.2.840.10008.5.1.4.1.1.2"]
    syntaxes = {syntax for listed in ct for syntax in listed}
    assert {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90"} <= syntaxes


def test_default_proposal_covers_waveforms_retired_classes_and_every_syntax_within_the_limit() -> None:
    contexts = get_storage_contexts()
    classes = {str(c.abstract_syntax) for c in contexts}
    assert {
        "1.2.840.10008.5.1.4.1.1.9.1.1",  # 12-lead ECG
        "1.2.840.10008.5.1.4.1.1.6",  # US (retired)
        "1.2.840.10008.5.1.4.1.1.3",  # US multi-frame (retired)
    } <= classes
    us = {s for c in contexts if c.abstract_syntax == "1.2.840.10008.5.1.4.1.1.6" for s in c.transfer_syntax}
    assert {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.51"} <= us
    assert len(contexts) <= MAX_PRESENTATION_CONTEXTS - 1


def test_each_syntax_of_a_known_class_gets_a_context_of_its_own() -> None:
    contexts = get_storage_contexts(["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.88.33"])
    assert all(len(c.transfer_syntax) == 1 for c in contexts)
    sr = [c.transfer_syntax[0] for c in contexts if c.abstract_syntax == "1.2.840.10008.5.1.4.1.1.88.33"]
    assert sr[:2] == ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]  # an implicit-VR SR arrives implicit


def test_many_classes_share_the_budget_and_none_is_left_out() -> None:
    classes = [f"1.2.3.{n}" for n in range(60)]
    contexts = get_storage_contexts(classes)
    assert len(contexts) == MAX_PRESENTATION_CONTEXTS - 1
    assert {str(c.abstract_syntax) for c in contexts} == set(classes)


@pytest.mark.parametrize("handler", [True, False], ids=["with-handler", "pynetdicom-default"])
def test_move_destination_accepts_the_senders_first_supported_syntax(handler: bool) -> None:
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_context, evt

    ct = "1.2.840.10008.5.1.4.1.1.2"
    offered = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2"]  # explicit LE, BE, implicit
    scp = AE(ae_title="DEST")
    scp.supported_contexts = [build_context(ct, ALL_TRANSFER_SYNTAXES)]
    port = free_port()
    handlers = [(evt.EVT_REQUESTED, accept_senders_syntax)] if handler else []
    server = scp.start_server((HOST, port), block=False, evt_handlers=handlers)
    try:
        sender = AE(ae_title="SENDER")
        sender.add_requested_context(ct, offered)
        assoc = sender.associate(HOST, port, ae_title="DEST")
        try:
            (accepted,) = assoc.accepted_contexts
        finally:
            assoc.release()
    finally:
        server.shutdown()
    assert accepted.transfer_syntax[0] == (offered[0] if handler else "1.2.840.10008.1.2")


def test_trolley_with_cfind_and_cget_downloads_two_series_with_one_search(
    searcher: DICOMQR, cget: DICOMCGet, doe_ct: SampleStudy, tmp_path: Path
) -> None:
    wanted = doe_ct.series[:2]
    trolley = Trolley(searcher, cget)
    summary = trolley.download([SeriesReference(doe_ct.uid, s.uid) for s in wanted], tmp_path, progress=False)
    assert summary.ok
    assert summary.expected == summary.written == sum(len(s.instances) for s in wanted)
    assert summary.downloader_report == {"completed": summary.written, "failed": 0, "warning": 0}
    again = trolley.download([SeriesReference(doe_ct.uid, s.uid) for s in wanted], tmp_path, progress=False)
    assert again.written == 0
    assert again.skipped == summary.written
