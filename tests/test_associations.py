"""DIMSE associations are reused: counted at a TCP proxy in front of the real Orthanc.

Every association is one TCP connection, so the proxy's connection count is
the number of associations the client opened; the proxy can also drop the
connections open now, as a server that dropped an idle association would.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dicomtrolley._associations import AssociationPool, Proposal
from dicomtrolley._dimse import DIMSEPeer
from dicomtrolley.core import InstancePart, Query, StudyReference
from dicomtrolley.dicom_qr import DICOMQR
from dicomtrolley.dimse_retrieve import ANY_GET_PROPOSAL, DICOMCGet, SubOperations, get_proposal, takes_each_class_whole
from dicomtrolley.dimse_store import DICOMCStore
from dicomtrolley.exceptions import DIMSEError
from tests.support.capped_find_scp import CappedFindSCP
from tests.support.latency_proxy import LatencyProxy
from tests.support.orthanc import OrthancServer
from tests.support.sample_data import SampleData, SampleStudy

HOST = "127.0.0.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
PET = "1.2.840.10008.5.1.4.1.1.128"
SR = "1.2.840.10008.5.1.4.1.1.88.22"


@pytest.fixture
def proxy(orthanc: OrthancServer) -> Iterator[LatencyProxy]:
    with LatencyProxy(HOST, orthanc.dicom_port, delay=0) as running:
        yield running


def close_after(peer: DIMSEPeer, request: pytest.FixtureRequest) -> None:
    request.addfinalizer(peer.close)


@pytest.fixture
def sample(orthanc: OrthancServer) -> SampleData:
    return orthanc.sample


@pytest.fixture
def doe_ct(sample: SampleData) -> SampleStudy:
    """A small CT study: 3 series, 9 instances."""
    return next(s for s in sample.small_studies if s.description == "CT THORAX")


@pytest.fixture
def cget(proxy: LatencyProxy, orthanc: OrthancServer, request: pytest.FixtureRequest) -> DICOMCGet:
    downloader = DICOMCGet(HOST, proxy.port, aec=orthanc.aet)
    close_after(downloader, request)
    return downloader


@pytest.fixture
def searcher(proxy: LatencyProxy, orthanc: OrthancServer, request: pytest.FixtureRequest) -> DICOMQR:
    finder = DICOMQR(HOST, proxy.port, aec=orthanc.aet)
    close_after(finder, request)
    return finder


class Counter:
    """A sink that counts the instances of each study."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.instances: dict[str, int] = {}

    def __call__(self, part: InstancePart) -> None:
        assert part.source is not None
        with self.lock:
            self.instances[part.source.study_uid] = self.instances.get(part.source.study_uid, 0) + 1


def fetch_each(downloader: DICOMCGet, studies: list[SampleStudy], sink: Counter) -> None:
    """One fetch per study, as an export downloads them."""
    for study in studies:
        assert downloader.fetch([StudyReference(study.uid)], sink) == []


def recording_opens(pool: AssociationPool) -> list[object]:
    """Keep every association the pool opens from now on."""
    opened: list[object] = []
    opener = pool.opener

    def record(proposal: Proposal) -> object:
        association = opener(proposal)
        opened.append(association)
        return association

    pool.opener = record  # type: ignore[assignment]
    return opened


def wait_for(condition: Callable[[], bool], seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------- which association fits which operation


def test_a_cget_association_for_more_classes_covers_a_study_of_a_subset_of_them() -> None:
    assert get_proposal([CT, PET]).covers(get_proposal([CT]))
    assert get_proposal([CT, SR]).covers(get_proposal([SR]))


def test_a_cget_association_for_fewer_classes_does_not_cover_a_study_of_more() -> None:
    assert not get_proposal([CT]).covers(get_proposal([CT, PET]))


def test_a_cget_association_does_not_carry_a_cstore_of_a_class_it_takes_in_the_scp_role() -> None:
    store_ct = Proposal(((CT, ("1.2.840.10008.1.2.1",)),))

    assert (CT, ("1.2.840.10008.1.2.1",)) in get_proposal([CT]).contexts
    assert not get_proposal([CT]).covers(store_ct)


def test_the_broad_default_proposal_does_not_cover_a_study_it_would_give_fewer_contexts_per_class() -> None:
    from dicomtrolley._get_contexts import DEFAULT_STORAGE_CLASSES

    # 45 classes share 127 contexts, so CT has not a context of its own for each syntax any more
    assert not get_proposal(DEFAULT_STORAGE_CLASSES).covers(get_proposal([CT]))


def test_an_association_of_classes_each_with_its_own_contexts_may_take_any_study_on_trial() -> None:
    assert takes_each_class_whole(get_proposal([CT, PET, SR]))


def test_the_broad_default_proposal_is_never_tried_without_the_study_classes() -> None:
    from dicomtrolley._get_contexts import DEFAULT_STORAGE_CLASSES

    # a JPEG 2000 CT would arrive transcoded there, where an association of its own takes it as stored
    assert not takes_each_class_whole(get_proposal(DEFAULT_STORAGE_CLASSES))


# ---------------------------------------------------------------- reuse, counted at the proxy


def test_downloading_studies_one_fetch_each_opens_one_association_per_kind_not_per_study(
    cget: DICOMCGet, proxy: LatencyProxy, sample: SampleData
) -> None:
    studies = sample.small_studies * 3  # 18 fetches of CT, MR and PET-CT studies
    sink = Counter()

    fetch_each(cget, studies, sink)

    assert sink.instances == {s.uid: 3 * len(s.instances) for s in sample.small_studies}
    # a C-FIND association for the first SOPClassesInStudy; then C-GET associations (carrying the
    # C-FINDs too) for CT, CT+MR and CT+MR+PET, each replacing the one before; it carries the rest
    assert proxy.connections == 4
    assert cget.associations.idle == 1


def test_with_keep_zero_every_operation_opens_its_own_association(
    cget: DICOMCGet, proxy: LatencyProxy, sample: SampleData
) -> None:
    cget.associations.keep = 0

    fetch_each(cget, sample.small_studies, Counter())

    assert proxy.connections == 2 * len(sample.small_studies)  # a C-FIND and a C-GET each
    assert wait_for(lambda: proxy.open_connections == 0)


def test_a_new_association_makes_way_for_itself_by_releasing_the_longest_idle(
    cget: DICOMCGet, searcher: DICOMQR, proxy: LatencyProxy, doe_ct: SampleStudy
) -> None:
    opened = recording_opens(cget.associations)
    searcher.find_study_by_id(doe_ct.uid)  # a C-FIND association, then idle

    fetch_each(cget, [doe_ct], Counter())  # its C-FIND reuses it; its C-GET needs a new one

    assert [a.is_released for a in opened] == [True, False]  # type: ignore[attr-defined]
    assert cget.associations.idle == 1


def test_searches_reuse_one_association(searcher: DICOMQR, proxy: LatencyProxy, sample: SampleData) -> None:
    for study in sample.small_studies:
        assert searcher.find_study_by_id(study.uid).uid == study.uid

    assert proxy.connections == 1


def test_the_searcher_and_the_downloader_of_one_server_share_the_pool(
    cget: DICOMCGet, searcher: DICOMQR, proxy: LatencyProxy, doe_ct: SampleStudy
) -> None:
    searcher.find_studies(Query(StudyInstanceUID=doe_ct.uid))
    fetch_each(cget, [doe_ct], Counter())

    assert cget.associations is searcher.associations
    assert proxy.connections == 2  # the C-GET's own C-FIND found the searcher's association, the C-GET its own


# ---------------------------------------------------------------- dropped, idle, closed


def test_a_search_succeeds_on_a_fresh_association_when_the_server_dropped_the_reused_one(
    searcher: DICOMQR, proxy: LatencyProxy, doe_ct: SampleStudy
) -> None:
    searcher.find_study_by_id(doe_ct.uid)
    proxy.drop_on_next_request()

    assert searcher.find_study_by_id(doe_ct.uid).uid == doe_ct.uid
    assert proxy.connections == 2


def test_a_cget_succeeds_on_a_fresh_association_when_the_server_dropped_the_reused_one(
    cget: DICOMCGet, proxy: LatencyProxy, doe_ct: SampleStudy
) -> None:
    sink = Counter()
    fetch_each(cget, [doe_ct], sink)
    proxy.drop_on_next_request()

    fetch_each(cget, [doe_ct], sink)

    assert sink.instances == {doe_ct.uid: 2 * len(doe_ct.instances)}
    assert proxy.connections == 4  # the C-FIND and the C-GET association, twice


def test_an_association_orthanc_aborted_while_idle_is_replaced(
    orthanc_factory: Callable[..., OrthancServer], request: pytest.FixtureRequest
) -> None:
    server = orthanc_factory(DicomScpTimeout=1)  # Orthanc drops an association idle for 1 s
    searcher = DICOMQR(HOST, server.dicom_port, aec=server.aet)
    close_after(searcher, request)
    opened = recording_opens(searcher.associations)
    study = server.sample.small_studies[0]
    searcher.find_study_by_id(study.uid)

    assert wait_for(lambda: not opened[0].is_established)  # type: ignore[attr-defined]
    assert searcher.find_study_by_id(study.uid).uid == study.uid
    assert len(opened) == 2


def test_an_idle_association_is_released_after_the_idle_timeout(
    cget: DICOMCGet, proxy: LatencyProxy, doe_ct: SampleStudy
) -> None:
    cget.associations.idle_timeout = 0.3
    opened = recording_opens(cget.associations)
    fetch_each(cget, [doe_ct], Counter())

    assert wait_for(lambda: proxy.open_connections == 0)
    assert cget.associations.idle == 0
    assert [a.is_released for a in opened] == [True, True]  # type: ignore[attr-defined]  # A-RELEASE, no abort


def test_closing_a_peer_releases_its_idle_associations(
    cget: DICOMCGet, proxy: LatencyProxy, doe_ct: SampleStudy
) -> None:
    opened = recording_opens(cget.associations)
    fetch_each(cget, [doe_ct], Counter())

    cget.close()

    assert [a.is_released for a in opened] == [True, True]  # type: ignore[attr-defined]
    assert wait_for(lambda: proxy.open_connections == 0)


def test_an_association_whose_operation_raised_is_aborted_not_reused(
    cget: DICOMCGet, proxy: LatencyProxy, doe_ct: SampleStudy
) -> None:
    def broken(_part: InstancePart) -> None:
        raise RuntimeError("a bug in the sink")

    with pytest.raises(RuntimeError, match="a bug in the sink"):
        cget.fetch([StudyReference(doe_ct.uid)], broken)
    sink = Counter()
    fetch_each(cget, [doe_ct], sink)

    assert sink.instances == {doe_ct.uid: len(doe_ct.instances)}
    assert proxy.connections == 4  # the C-GET association was aborted: a C-FIND and a C-GET one again


# ---------------------------------------------------------------- a C-GET tried on an idle association


def counting_class_searches(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record each C-FIND for SOPClassesInStudy a DICOMCGet makes from now on."""
    asked: list[object] = []
    original = DICOMCGet._sop_classes_of

    def record(self: DICOMCGet, targets: list[StudyReference]) -> list[str]:
        asked.append(targets)
        return original(self, targets)

    monkeypatch.setattr(DICOMCGet, "_sop_classes_of", record)
    return asked


def test_studies_of_the_classes_an_idle_association_takes_are_retrieved_without_asking_for_their_classes(
    cget: DICOMCGet, proxy: LatencyProxy, sample: SampleData, monkeypatch: pytest.MonkeyPatch
) -> None:
    ct_studies = [s for s in sample.small_studies if s.description.startswith("CT ")]
    asked = counting_class_searches(monkeypatch)
    sink = Counter()

    fetch_each(cget, ct_studies * 2, sink)

    assert sink.instances == {s.uid: 2 * len(s.instances) for s in ct_studies}
    assert len(asked) == 1  # the first study's, before any association was open
    assert proxy.connections == 2  # the C-FIND's association, then the C-GET's, which carried every study


def test_a_study_of_a_class_the_idle_association_lacks_arrives_whole_once_on_one_that_takes_it(
    cget: DICOMCGet, proxy: LatencyProxy, sample: SampleData, doe_ct: SampleStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    pet_ct = next(s for s in sample.small_studies if "PT" in s.modalities)
    sink = Counter()
    fetch_each(cget, [doe_ct], sink)
    asked = counting_class_searches(monkeypatch)

    fetch_each(cget, [pet_ct], sink)  # tried on the CT association: Orthanc fails the PET instances there

    assert sink.instances == {doe_ct.uid: len(doe_ct.instances), pet_ct.uid: len(pet_ct.instances)}
    assert len(asked) == 1
    # only the retrieve that stands is counted, not the one tried
    assert cget.last_suboperations == SubOperations(completed=len(pet_ct.instances))
    fetch_each(cget, [pet_ct], sink)  # the new association takes PET and CT: no question asked again
    assert len(asked) == 1
    assert proxy.connections == 3


def test_an_idle_lease_opens_nothing_when_no_association_waits(cget: DICOMCGet, proxy: LatencyProxy) -> None:
    with cget.associations.lease_idle(ANY_GET_PROPOSAL, lambda _proposal: True) as lease:
        assert lease is None

    assert proxy.connections == 0
    assert cget.associations.opened == 0


def test_an_idle_lease_skips_associations_whose_proposal_does_not_fit(
    cget: DICOMCGet, proxy: LatencyProxy, doe_ct: SampleStudy
) -> None:
    fetch_each(cget, [doe_ct], Counter())

    with cget.associations.lease_idle(ANY_GET_PROPOSAL, lambda proposal: SR in proposal.scp_roles) as lease:
        assert lease is None
    with cget.associations.lease_idle(ANY_GET_PROPOSAL, lambda proposal: CT in proposal.scp_roles) as lease:
        assert lease is not None
        assert lease.reused
    assert cget.associations.idle == 1  # back in the pool


# ---------------------------------------------------------------- threads


def test_workers_share_the_pool_and_every_instance_arrives(
    cget: DICOMCGet, proxy: LatencyProxy, sample: SampleData
) -> None:
    ct_studies = [s for s in sample.small_studies if s.description.startswith("CT ")]
    studies = ct_studies * 6
    sink = Counter()

    with ThreadPoolExecutor(4) as workers:
        for failures in workers.map(lambda s: cget.fetch([StudyReference(s.uid)], sink), studies):
            assert failures == []

    assert sink.instances == {s.uid: 6 * len(s.instances) for s in ct_studies}
    # at most a C-FIND association and then a C-GET one per worker, never one per study
    assert proxy.connections <= 2 * 4
    assert cget.associations.idle <= 4


# ---------------------------------------------------------------- C-STORE


def test_sending_instance_by_instance_reuses_one_association(
    orthanc_factory: Callable[..., OrthancServer], request: pytest.FixtureRequest, doe_ct: SampleStudy
) -> None:
    server = orthanc_factory(load=False)
    with LatencyProxy(HOST, server.dicom_port, delay=0) as proxy:
        sender = DICOMCStore(HOST, proxy.port, called_aet=server.aet, workers=1)
        close_after(sender, request)
        paths: list[Path] = [instance.path for instance in doe_ct.instances]

        for path in paths:  # as a destination archive sends: one call per instance
            assert sender.send(path).sent == 1

        assert proxy.connections == 1


# ---------------------------------------------------------------- what the peer accepted


def test_a_cget_from_a_server_that_accepts_cfind_but_not_cget_fails_naming_it(
    orthanc: OrthancServer, doe_ct: SampleStudy, request: pytest.FixtureRequest
) -> None:
    with CappedFindSCP(HOST, orthanc.dicom_port, orthanc.aet, cap=100) as finder_only:
        downloader = DICOMCGet(HOST, finder_only.port, aec=finder_only.aet)
        close_after(downloader, request)

        failures = downloader.fetch([StudyReference(doe_ct.uid)], Counter())

        assert len(failures) == 1
        assert isinstance(failures[0].error, DIMSEError)
        assert "accepted the association but not Study Root Query/Retrieve Information Model - GET" in str(
            failures[0].error
        )
        assert downloader.associations.idle == 0  # the refused one is not kept (the C-FIND one made way for it)


def test_a_script_that_searched_over_dimse_exits_at_once_not_when_its_idle_association_is_released(
    orthanc: OrthancServer, sample: SampleData,
) -> None:
    script = (
        "from dicomtrolley.core import Query\n"
        "from dicomtrolley.dicom_qr import DICOMQR\n"
        f"print(len(DICOMQR(host='127.0.0.1', port={orthanc.dicom_port}, aet='EXIT', aec='{orthanc.aet}')"
        ".find_studies(Query())))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert int(process.stdout.readline()) == len(sample.studies)  # searched: its association now idles in the pool
    found = time.monotonic()
    assert process.wait(timeout=30) == 0
    assert time.monotonic() - found < 2.5  # the pool releases an idle association after 5 s


# ---------------------------------------------------------------- pynetdicom's message logging


def message_loggers(association: object) -> list[str]:
    from pynetdicom import evt

    bound = association.get_handlers(evt.EVT_DIMSE_RECV)  # type: ignore[attr-defined]
    return [handler.__name__ for handler, _args in bound if handler.__module__.startswith("pynetdicom.")]


def test_an_association_drops_pynetdicom_message_logging_that_its_logger_would_drop(cget: DICOMCGet) -> None:
    from dicomtrolley.dicom_qr import FIND_PROPOSAL

    association = cget.open_for(FIND_PROPOSAL)
    try:
        assert message_loggers(association) == []
    finally:
        cget.close_association(association, clean=True)


def test_an_association_keeps_pynetdicom_message_logging_while_its_logger_shows_debug(
    cget: DICOMCGet, caplog: pytest.LogCaptureFixture
) -> None:
    from dicomtrolley.dicom_qr import FIND_PROPOSAL

    caplog.set_level("DEBUG", logger="pynetdicom")
    association = cget.open_for(FIND_PROPOSAL)
    try:
        assert message_loggers(association) == ["standard_dimse_recv_handler"]
    finally:
        cget.close_association(association, clean=True)
