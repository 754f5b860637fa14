"""Cloud credentials on a Dask cluster: each worker gets its own token from its own environment.

The workers' environment (not this process's) leads ``DefaultAzureCredential``
to a local managed-identity endpoint; the tasks carry the server's profile
(``auth = "azure"``), never a token, and the driver never asks for one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from dask.distributed import Client
from distributed.protocol import pickle as dask_pickle

from dicomtrolley.export import export
from dicomtrolley.export.cluster import check_worker_secrets
from dicomtrolley.profiles import ServerProfile
from tests.support.cloud_tokens import CloudTokenEndpoints, TokenIssuer
from tests.support.dask_cluster import local_cluster
from tests.support.orthanc import OrthancServer
from tests.support.quirk_server import QuirkServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(lifetime=60, max_uses=25)


@pytest.fixture(scope="module")
def endpoints(issuer: TokenIssuer) -> Iterator[CloudTokenEndpoints]:
    with CloudTokenEndpoints(issuer) as running:
        yield running


@pytest.fixture(scope="module")
def cluster(endpoints: CloudTokenEndpoints) -> Iterator[Client]:
    with local_cluster(2, env=endpoints.azure_environment()) as client:
        yield client


def test_every_worker_finds_a_token_of_its_own_before_the_export(
    cluster: Client, endpoints: CloudTokenEndpoints, issuer: TokenIssuer
) -> None:
    before = issuer.count("azure")
    check_worker_secrets(cluster, ServerProfile(url="http://127.0.0.1:9/dicom-web", auth="azure"))
    assert issuer.count("azure") - before == 2


def test_an_export_on_workers_renews_their_own_tokens_and_ships_none(
    cluster: Client, orthanc: OrthancServer, issuer: TokenIssuer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pickled: list[bytes] = []
    executor = cluster.get_executor()
    submit = executor.submit

    def recording_submit(fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        pickled.append(dask_pickle.dumps((fn, args, kwargs)))
        return submit(fn, *args, **kwargs)

    executor.submit = recording_submit  # type: ignore[method-assign]
    studies = orthanc.sample.studies
    with QuirkServer(orthanc.base_url, issuer=issuer) as server:
        profile = ServerProfile(url=f"{server.url}/dicom-web", auth="azure", downloader="wado-uri")
        before = issuer.count("azure")
        report = export(profile, [s.uid for s in studies], tmp_path / "out", executor=executor, progress=False)
    assert report.ok
    assert report.studies_done == len(studies)
    assert issuer.count("azure") - before >= 2  # the large study alone needs more than 25 requests
    for token in issuer.tokens():
        assert all(token.encode() not in task for task in pickled)
        assert token not in caplog.text
