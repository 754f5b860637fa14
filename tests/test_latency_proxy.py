"""The latency proxy the cluster benchmark puts in front of Orthanc: every request late, every answer intact."""

from __future__ import annotations

import time

import pytest
import requests

from tests.support.latency_proxy import LatencyProxy
from tests.support.orthanc import OrthancServer

DELAY = 0.1


@pytest.mark.integration
def test_each_request_on_a_kept_alive_connection_arrives_late(orthanc: OrthancServer) -> None:
    with LatencyProxy("127.0.0.1", orthanc.http_port, delay=DELAY) as proxy, requests.Session() as session:
        for _ in range(3):
            started = time.perf_counter()
            session.get(f"{proxy.url}/system", timeout=10).raise_for_status()
            assert time.perf_counter() - started >= DELAY

        assert proxy.requests == 3


@pytest.mark.integration
def test_a_streamed_answer_that_ends_at_connection_close_passes_through_unchanged(orthanc: OrthancServer) -> None:
    study = orthanc.sample.small_studies[0]
    path = f"/dicom-web/studies/{study.uid}"
    accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    direct = requests.get(orthanc.base_url + path, headers=accept, timeout=10)

    with LatencyProxy("127.0.0.1", orthanc.http_port, delay=DELAY) as proxy:
        proxied = requests.get(proxy.url + path, headers=accept, timeout=10)

    assert proxied.status_code == 200
    assert len(proxied.content) == len(direct.content) > sum(i.size for i in study.instances)
