"""The test suite's Orthanc: the package's demo server, installed with apt when it is missing.

:mod:`dicomtrolley.demo.orthanc` starts and stops the server; what only the tests
need lives here: installing Orthanc, its DICOMweb plugin and dcmtk (the DIMSE
tests' tools) with apt on first use, and the type of the ``orthanc_factory`` fixture.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from pydicom import dcmread

from dicomtrolley.demo.orthanc import (
    ORTHANC_BINARY,
    STOP_TIMEOUT,
    DemoServerError,
    OrthancServer,
    find_dicomweb_plugin,
    find_orthanc,
    free_ports,
)
from dicomtrolley.demo.orthanc import running_orthanc as _running_orthanc

__all__ = ["APT_PACKAGES", "OrthancFactory", "OrthancHarnessError", "OrthancServer", "ensure_installed",
           "free_ports", "running_orthanc", "stored_files"]

logger = logging.getLogger(__name__)

APT_PACKAGES = ("orthanc", "orthanc-dicomweb", "dcmtk")
"""The demo server's packages, and dcmtk for the DIMSE tests."""

OrthancHarnessError = DemoServerError
"""The suite's older name for what the demo server raises."""


class OrthancFactory(Protocol):
    """Type of the ``orthanc_factory`` fixture: starts an extra server for one test."""

    def __call__(self, *, load: bool = True, **config_overrides: Any) -> OrthancServer:
        """Start an Orthanc with these config overrides, loaded with the small sample unless ``load=False``."""
        ...


def _installed() -> bool:
    return (
        ORTHANC_BINARY.is_file()
        and find_dicomweb_plugin() is not None
        and shutil.which("getscu") is not None
        and shutil.which("echoscu") is not None
    )


def ensure_installed() -> Path:
    """Install Orthanc, its DICOMweb plugin and dcmtk with apt if any is missing.

    Returns
    -------
    Path
        The DICOMweb plugin library, to put in Orthanc's ``Plugins`` list.

    Raises
    ------
    OrthancHarnessError
        If apt cannot install them (no root, no network): the message has apt's output.
    """
    if not _installed():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        commands = [
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES],
        ]
        for command in commands:
            logger.info("running %s", " ".join(command))
            try:
                result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            except FileNotFoundError as exc:
                raise OrthancHarnessError(
                    f"Orthanc is not installed and apt-get is missing; install {', '.join(APT_PACKAGES)}"
                ) from exc
            if result.returncode != 0:
                raise OrthancHarnessError(
                    f"`{' '.join(command)}` failed ({result.returncode}); install {', '.join(APT_PACKAGES)} "
                    f"by hand.\n{(result.stdout + result.stderr)[-3000:]}"
                )
    return find_orthanc()


@contextmanager
def running_orthanc(
    workdir: Path, *, stop_timeout: float = STOP_TIMEOUT, **config_overrides: Any
) -> Iterator[OrthancServer]:
    """:func:`dicomtrolley.demo.orthanc.running_orthanc`, after installing what is missing.

    Orthanc configuration keys are keyword arguments here (``HttpCompressionEnabled=False``).
    """
    ensure_installed()
    with _running_orthanc(workdir, stop_timeout=stop_timeout, config=config_overrides) as server:
        yield server


def stored_files(server: OrthancServer) -> dict[str, bytes]:
    """Every file the server holds, by SOPInstanceUID, as its REST API returns it."""
    with server.session() as session:
        files = {}
        for orthanc_id in session.get(f"{server.base_url}/instances", timeout=30).json():
            data = session.get(f"{server.base_url}/instances/{orthanc_id}/file", timeout=30).content
            files[str(dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
        return files
