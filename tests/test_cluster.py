"""Running an export on a Dask cluster: the address given, the shared output folder checked.

The clusters here are real ``distributed`` clusters of worker processes on this
machine, so every task and probe crosses a process boundary as on many machines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from dicomtrolley.exceptions import DICOMTrolleyError, SharedFolderError
from dicomtrolley.export.cluster import (
    PROBE_PREFIX,
    DaskSpec,
    check_shared_folder,
    dashboard_link,
    dask_client,
)
from tests.support.dask_cluster import local_cluster, worker_without_folder
from tests.support.orthanc import free_ports


@pytest.fixture(scope="module")
def cluster() -> Iterator[Client]:
    """Two worker processes, shared by the tests of this module that leave them as they found them."""
    with local_cluster(2) as client:
        yield client


# ------------------------------------------------------------ --dask


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("tcp://scheduler:8786", DaskSpec(address="tcp://scheduler:8786")),
        ("tls://10.0.0.5:8786", DaskSpec(address="tls://10.0.0.5:8786")),
        ("scheduler.example:8786", DaskSpec(address="scheduler.example:8786")),
        ("local:3", DaskSpec(local_workers=3)),
    ],
)
def test_dask_option_names_a_scheduler_or_a_local_cluster(text: str, spec: DaskSpec) -> None:
    assert DaskSpec.parse(text) == spec


def test_dask_local_without_a_number_starts_one_worker_per_core() -> None:
    assert DaskSpec.parse("local") == DaskSpec(local_workers=os.cpu_count())


@pytest.mark.parametrize("text", ["local:0", "local:x", "scheduler", "http//scheduler:8786", ""])
def test_a_dask_option_that_is_neither_is_refused_with_its_text(text: str) -> None:
    with pytest.raises(DICOMTrolleyError, match="--dask"):
        DaskSpec.parse(text)


def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    (port,) = free_ports(1)
    with pytest.raises(DICOMTrolleyError, match=f"Cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"), \
            dask_client(f"tcp://127.0.0.1:{port}", timeout=1):
        pass


def test_a_client_of_a_running_scheduler_reaches_its_workers_and_dashboard(cluster: Client) -> None:
    with dask_client(cluster.scheduler.address) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        assert dashboard_link(client) == dashboard_link(cluster)
    link = dashboard_link(cluster)
    assert link is not None
    assert link.startswith("http://127.0.0.1:")


# ------------------------------------------------------------ the shared folder


def test_a_folder_every_worker_shares_passes_and_keeps_no_probe_file(cluster: Client, tmp_path: Path) -> None:
    out = tmp_path / "out"

    check_shared_folder(cluster, out)

    assert out.is_dir()
    assert list(out.iterdir()) == []


def test_a_folder_one_worker_does_not_see_is_refused_naming_that_worker(cluster: Client, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with worker_without_folder(cluster, out), pytest.raises(SharedFolderError) as raised:
        check_shared_folder(cluster, out)

    message = str(raised.value)
    assert f"The output folder {out} is not shared with every Dask worker" in message
    assert "does not see the probe file" in message
    assert message.count("\n  ") == 1  # the one isolated worker, not the two that share it
    assert not [p for p in out.iterdir() if p.name.startswith(PROBE_PREFIX)]
