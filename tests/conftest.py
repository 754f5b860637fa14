"""Fixtures shared by the whole suite: the sample data and a real Orthanc loaded with it.

``orthanc`` is one server per test session; tests must not delete from it or change
its data. A test that needs other settings, or an empty or modified server, starts
its own with ``orthanc_factory`` (small sample data only, stopped after the test).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from dicomtrolley._associations import close_all
from tests.support.identifying_data import IdentifyingData, write_identifying_data
from tests.support.orthanc import OrthancFactory, OrthancServer, running_orthanc
from tests.support.sample_data import SampleData, generate_sample_data
from tests.support.vitrea_server import Switches, VitreaServer

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA_DIR = Path(os.environ.get("DICOMTROLLEY_TEST_DATA", REPO_ROOT / ".data" / "sample"))
"""Where the generated files are cached between runs (``.data/`` is git-ignored)."""

FIXTURE_STOP_TIMEOUT = 0.3
"""Fixture servers' storage is thrown away, so they need not take 3.5 s to stop cleanly."""

logger = logging.getLogger("tests.harness")


@pytest.fixture(autouse=True)
def _nothing_left_for_the_next_test() -> Iterator[None]:
    """Release the DIMSE associations a test left idle in the pools, so none holds a server's
    association slots (Orthanc serves 4 at once) or a reaper thread into the next test; and undo the
    ``gc.freeze()`` of a CLI run in this process, which would keep the garbage of earlier tests (a
    destination's worker threads, say) alive for every later one."""
    yield
    close_all()
    if gc.get_freeze_count():
        gc.unfreeze()
        gc.collect()


@pytest.fixture(scope="session")
def sample_data() -> SampleData:
    """Manifest of every generated sample file: the small studies and the 300-instance study."""
    return generate_sample_data(SAMPLE_DATA_DIR, large=True)


@pytest.fixture(scope="session")
def orthanc(sample_data: SampleData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """One Orthanc for the session, holding all of ``sample_data`` (``orthanc.sample``).

    Installs Orthanc with apt first if it is missing.
    """
    started = time.perf_counter()
    with running_orthanc(tmp_path_factory.mktemp("orthanc"), stop_timeout=FIXTURE_STOP_TIMEOUT) as server:
        ready = time.perf_counter()
        server.upload(sample_data.paths())
        server.sample = sample_data
        logger.info(
            "Orthanc %s started in %.2f s, sample data uploaded in %.2f s",
            server.base_url,
            ready - started,
            time.perf_counter() - ready,
        )
        yield server


@pytest.fixture
def orthanc_factory(sample_data: SampleData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancFactory]:
    """Start extra Orthancs with config overrides, loaded with the small sample; stopped after the test.

    ``orthanc_factory(LimitFindResults=2)`` returns a running :class:`OrthancServer`
    whose ``sample`` is the small data. Pass ``load=False`` for an empty server.
    """
    small = sample_data.small_only()
    with ExitStack() as stack:

        def start(*, load: bool = True, **overrides: Any) -> OrthancServer:
            workdir = tmp_path_factory.mktemp("orthanc-extra")
            server = stack.enter_context(running_orthanc(workdir, stop_timeout=FIXTURE_STOP_TIMEOUT, **overrides))
            if load:
                server.upload(small.paths())
                server.sample = small
            return server

        yield start


@pytest.fixture(scope="session")
def vitrea_server(orthanc: OrthancServer) -> Iterator[VitreaServer]:
    """A Vitrea-like server (login, MINT, RAD-69) over the session's Orthanc; tests use ``vitrea``."""
    with VitreaServer(orthanc.base_url) as server:
        yield server


@pytest.fixture
def vitrea(vitrea_server: VitreaServer) -> Iterator[VitreaServer]:
    """The Vitrea-like server, with every fault switch off again after the test."""
    yield vitrea_server
    vitrea_server.switches = Switches()


@pytest.fixture(scope="module")
def identifying(tmp_path_factory: pytest.TempPathFactory) -> IdentifyingData:
    """The studies full of identifying values (``tests/support/identifying_data.py``), written once per module."""
    return write_identifying_data(tmp_path_factory.mktemp("identifying"))


@pytest.fixture(scope="module")
def identifying_orthanc(
    identifying: IdentifyingData, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OrthancServer]:
    """An Orthanc of the module's own holding only the identifying studies (the session's must not change)."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc-identifying"), stop_timeout=FIXTURE_STOP_TIMEOUT) as server:
        server.upload(identifying.paths)
        yield server
