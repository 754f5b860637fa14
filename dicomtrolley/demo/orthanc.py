"""A local Orthanc, started and stopped by Python: the demo server, and the test suite's.

:func:`running_orthanc` starts a private Orthanc (Debian's ``orthanc`` and
``orthanc-dicomweb`` packages) on loopback ports with its storage in a folder of
its own, so that runs never interfere, and stops it afterwards. A real server is
where the quirks live (query strings that are not percent-decoded, multipart
bodies that end at connection close, gzip on by default), so the tests use it
rather than mocks, and ``python -m dicomtrolley.demo serve`` loads it with the
sample studies of :mod:`dicomtrolley.demo.sample_data`.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from dicomtrolley.demo.sample_data import SampleData
from dicomtrolley.exceptions import DICOMTrolleyError

logger = logging.getLogger(__name__)

ORTHANC_BINARY = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
APT_PACKAGES = ("orthanc", "orthanc-dicomweb")
"""What Debian calls the server and its DICOMweb plugin."""
ORTHANC_AET = "ORTHANC"
MOVE_DESTINATION_AET = "DICOMTROLLEY"
MOVE_DESTINATION_NAME = "dicomtrolley"
"""Name of the C-MOVE destination in Orthanc's ``DicomModalities``."""

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
START_ATTEMPTS = 3
LOG_NAME = "orthanc.log"
_PORT_IN_USE = "already in use"
"""What Orthanc 1.10 logs when its HTTP or DICOM port is taken."""
UPLOAD_THREADS = 4


class DemoServerError(DICOMTrolleyError):
    """The local Orthanc could not be found, started or loaded with data."""


class OrthancNotInstalledError(DemoServerError):
    """Orthanc or its DICOMweb plugin is not installed; the message says how to install them."""


class OrthancExitedError(DemoServerError):
    """Orthanc exited before it answered, e.g. because a port was taken or the config is wrong."""


class PortInUseError(OrthancExitedError):
    """A port asked for is taken by another program; the message names it, in one line."""


# --- installation ------------------------------------------------------------------------


def find_dicomweb_plugin() -> Path | None:
    """Return the path of the DICOMweb plugin library, or None if it is not installed."""
    if DICOMWEB_PLUGIN.is_file():
        return DICOMWEB_PLUGIN
    if shutil.which("dpkg") is None:
        return None
    listing = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=False)
    for line in listing.stdout.splitlines():
        if line.endswith(".so") and "DicomWeb" in line and Path(line).is_file():
            return Path(line)
    return None


def find_orthanc() -> Path:
    """The DICOMweb plugin library, once Orthanc and the plugin are known to be installed.

    Raises
    ------
    OrthancNotInstalledError
        Either is missing: the message is the one line that installs them.
    """
    plugin = find_dicomweb_plugin()
    if plugin is None or not ORTHANC_BINARY.is_file():
        raise OrthancNotInstalledError(
            f"Orthanc and its DICOMweb plugin are not installed: apt-get install {' '.join(APT_PACKAGES)}"
        )
    return plugin


# --- a running server ----------------------------------------------------------------------


@dataclass
class OrthancServer:
    """Where a running Orthanc answers, and how to load it with data.

    Attributes
    ----------
    base_url
        ``http://127.0.0.1:<http_port>``, the REST API.
    dicomweb_url
        ``base_url + "/dicom-web"``: QIDO-RS, WADO-RS, STOW-RS root.
    wado_url
        ``base_url + "/wado"``: the WADO-URI endpoint.
    dicom_port, aet
        Where Orthanc's DIMSE server listens, and its AE title.
    move_destination
        ``(aet, port)`` registered in Orthanc's DicomModalities: a C-MOVE test
        listens there with that AE title.
    auth
        ``(user, password)`` when the server was started with authentication.
    sample
        Manifest of the sample data the fixture that made the server uploaded
        (empty if it uploaded none).
    """

    base_url: str
    http_port: int
    dicom_port: int
    aet: str
    move_destination: tuple[str, int]
    workdir: Path
    log_path: Path
    config: dict[str, Any]
    auth: tuple[str, str] | None = None
    sample: SampleData = field(default_factory=SampleData)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root, without a trailing slash."""
        return f"{self.base_url}/dicom-web"

    @property
    def wado_url(self) -> str:
        """The WADO-URI endpoint."""
        return f"{self.base_url}/wado"

    def session(self) -> requests.Session:
        """A new session for the REST API, with this server's credentials if it has any."""
        session = requests.Session()
        if self.auth is not None:
            session.auth = self.auth
        return session

    def upload(self, paths: Iterable[Path]) -> list[str]:
        """Store DICOM files in Orthanc with ``POST /instances``, a few at a time.

        Parameters
        ----------
        paths
            DICOM Part 10 files.

        Returns
        -------
        list[str]
            Orthanc's instance IDs, in the order of ``paths``.

        Raises
        ------
        DemoServerError
            If Orthanc refuses any file; the message names the file and Orthanc's answer.
        """
        local = threading.local()

        def store(path: Path) -> str:
            if not hasattr(local, "session"):
                local.session = self.session()
            with path.open("rb") as body:
                response = local.session.post(
                    f"{self.base_url}/instances",
                    data=body,
                    headers={"Content-Type": "application/dicom", "Accept-Encoding": "identity"},
                    timeout=60,
                )
            if response.status_code != 200:
                raise DemoServerError(f"upload of {path} failed: {response.status_code} {response.text}")
            answer = response.json()
            if answer.get("Status") not in ("Success", "AlreadyStored"):
                raise DemoServerError(f"upload of {path} failed: {answer}")
            return str(answer["ID"])

        with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
            return list(pool.map(store, list(paths)))

    def clear(self) -> None:
        """Delete every patient stored in this Orthanc."""
        with self.session() as session:
            response = session.get(f"{self.base_url}/patients", timeout=30)
            response.raise_for_status()
            for patient_id in response.json():
                session.delete(f"{self.base_url}/patients/{patient_id}", timeout=60).raise_for_status()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of Orthanc's log, to explain a failure."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that are free on the loopback interface right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def check_port_free(port: int) -> None:
    """Refuse a port another program listens on (0, a free one chosen later, passes).

    Raises
    ------
    PortInUseError
        The port is taken; the message names it, in one line.
    """
    if not port:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As a server binds: a port whose last connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise PortInUseError(f"Port {port} is in use by another program ({error.strerror})") from None


def merge_config(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``overrides`` into ``base``: nested dicts merge key by key, anything else replaces.

    So ``DicomWeb={"StudiesMetadata": "Full"}`` keeps the other DicomWeb keys.
    """
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def orthanc_config(workdir: Path, plugin: Path, http_port: int, dicom_port: int, move_port: int) -> dict[str, Any]:
    """The configuration the harness gives every Orthanc before overrides.

    Loopback only, no authentication, DIMSE open to every AE, DICOMweb and
    WADO-URI enabled, and no ``DicomWeb.Host`` (which would make Orthanc write
    RetrieveURLs without the port).
    """
    return {
        "Name": f"dicomtrolley-demo-{os.getpid()}-{http_port}",
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": ORTHANC_AET,
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SaveJobs": False,
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado"},
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomAlwaysAllowStore": True,
        "DicomModalities": {MOVE_DESTINATION_NAME: [MOVE_DESTINATION_AET, "127.0.0.1", move_port]},
    }


def _die_with_parent() -> None:
    """In the child before exec: have Linux kill Orthanc if the process that started it dies.

    Without this, a test run killed with SIGKILL (or a crashed demo) leaves an
    Orthanc holding its ports. Nobody is left to wait for a clean stop, so SIGKILL.
    """
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


@contextmanager
def running_orthanc(
    workdir: Path, *, stop_timeout: float = STOP_TIMEOUT, config: Mapping[str, Any] | None = None
) -> Iterator[OrthancServer]:
    """Start an Orthanc with its storage in ``workdir``; stop it on exit.

    Parameters
    ----------
    workdir
        An empty directory (e.g. from ``tmp_path_factory``) for the config, database,
        files and ``orthanc.log``.
    stop_timeout
        Seconds to let Orthanc stop after SIGTERM before it is killed. A clean stop
        takes Orthanc 1.10 about 3.5 s; test fixtures, whose storage is thrown away,
        pass a fraction of a second.
    config
        Orthanc configuration keys merged over :func:`orthanc_config`, e.g.
        ``{"LimitFindResults": 2}``, ``{"HttpCompressionEnabled": False}``,
        ``{"AuthenticationEnabled": True, "RegisteredUsers": {"user": "secret"}}``.

    Yields
    ------
    OrthancServer
        Answering on HTTP and DIMSE.

    Raises
    ------
    OrthancNotInstalledError
        Orthanc or its DICOMweb plugin is missing.
    PortInUseError
        ``HttpPort`` or ``DicomPort`` was given and another program holds it.
    DemoServerError
        If Orthanc does not answer within 30 s, or exits while starting (three
        times, when the harness chose the ports); the message has its log tail.
    """
    plugin = find_orthanc()
    config_overrides = config or {}
    for key in ("HttpPort", "DicomPort"):
        check_port_free(int(config_overrides.get(key) or 0))
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # Another suite on this machine may take a port between free_ports() and Orthanc's bind.
    own_ports = not {"HttpPort", "DicomPort"} & config_overrides.keys()
    attempts = START_ATTEMPTS if own_ports else 1
    log_path = workdir / LOG_NAME
    for attempt in range(1, attempts + 1):
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        server = _launch(workdir, plugin, config_overrides)
        try:
            _wait_until_ready(server, log_offset)
            break
        except OrthancExitedError:
            if attempt == attempts:
                raise
            logger.warning("Orthanc exited while starting (port taken?); retrying with other ports")
    assert server.process is not None
    logger.info("Orthanc pid %s ready at %s", server.process.pid, server.base_url)
    try:
        yield server
    finally:
        _stop(server.process, stop_timeout)


def _launch(workdir: Path, plugin: Path, config_overrides: Mapping[str, Any]) -> OrthancServer:
    """Write the config for free ports and start the Orthanc process, without waiting for it."""
    http_port, dicom_port, move_port = free_ports(3)
    config = merge_config(orthanc_config(workdir, plugin, http_port, dicom_port, move_port), config_overrides)
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    server = OrthancServer(
        base_url=f"http://127.0.0.1:{config['HttpPort']}",
        http_port=int(config["HttpPort"]),
        dicom_port=int(config["DicomPort"]),
        aet=str(config["DicomAet"]),
        move_destination=_move_destination(config),
        workdir=workdir,
        log_path=workdir / LOG_NAME,
        config=config,
        auth=_first_user(config),
    )
    with server.log_path.open("ab") as log:
        server.process = subprocess.Popen(
            [str(ORTHANC_BINARY), str(config_path)],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # only calls prctl: safe after fork
        )
    return server


def _move_destination(config: Mapping[str, Any]) -> tuple[str, int]:
    aet, _host, port = config["DicomModalities"][MOVE_DESTINATION_NAME][:3]
    return str(aet), int(port)


def _first_user(config: Mapping[str, Any]) -> tuple[str, str] | None:
    users = config.get("RegisteredUsers") or {}
    if not config.get("AuthenticationEnabled") or not users:
        return None
    user, password = next(iter(users.items()))
    return str(user), str(password)


def _wait_until_ready(server: OrthancServer, log_offset: int) -> None:
    """Poll ``GET /system`` until it names this server and the DICOM port accepts connections.

    Checking the Name matters when another suite's Orthanc holds the port we
    chose. A port already in use makes Orthanc 1.10 log it at once but take
    1.5 s to exit; the log (from ``log_offset``, where this attempt began) is
    watched so that such a start is abandoned right away.
    """
    assert server.process is not None
    deadline = time.monotonic() + START_TIMEOUT
    with server.session() as session:
        while time.monotonic() < deadline:
            port_taken = _PORT_IN_USE in _read_from(server.log_path, log_offset)
            if port_taken:
                _stop(server.process, 0)
                raise PortInUseError(
                    f"Orthanc could not listen on port {server.http_port} or {server.dicom_port}: "
                    "another program holds it"
                )
            if server.process.poll() is not None:
                _stop(server.process, 0)
                raise OrthancExitedError(
                    f"Orthanc exited with {server.process.returncode} while starting; "
                    f"log {server.log_path}:\n{server.log_tail()}"
                )
            try:
                if _answers_as(session, server) and _accepts_connections(server.dicom_port):
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.05)
    _stop(server.process, STOP_TIMEOUT)
    raise DemoServerError(
        f"Orthanc did not answer on {server.base_url}/system within {START_TIMEOUT:.0f} s; "
        f"log {server.log_path}:\n{server.log_tail()}"
    )


def _answers_as(session: requests.Session, server: OrthancServer) -> bool:
    """True if the HTTP port answers ``/system`` with this server's Name, not some other server's."""
    response = session.get(f"{server.base_url}/system", timeout=(0.5, 1.0))
    return response.status_code == 200 and response.json().get("Name") == server.config["Name"]


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Terminate Orthanc by its PID, and kill it if it has not exited within ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        logger.info("Orthanc pid %s still stopping after %.1f s; killing it", process.pid, timeout)
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)
