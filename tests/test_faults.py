"""Reliability: what a download does when the server, the network or the disk misbehaves.

Every test talks real HTTP to :class:`~tests.support.fault_server.FaultServer`,
a DICOMweb server on loopback that serves a small generated study (series 1
of three instances, series 2 of two) and breaks its answers on demand. For
each fault the tests pin down the documented outcome: the exception type, or
the recovery (the instances that arrived whole are kept, only the missing
ones are fetched again, one by one), and always: every file under its final
name is byte-equal to what the server holds, no temporary file is left, every
response is closed.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import ssl
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from dicomtrolley._http import RetryPolicy, Timeout
from dicomtrolley.auth import create_session
from dicomtrolley.cli import EXIT_ERROR, EXIT_FAILURES, main
from dicomtrolley.core import (
    FetchFailure,
    InstancePart,
    InstanceReference,
    Query,
    QueryLevels,
    SeriesReference,
    StudyReference,
)
from dicomtrolley.exceptions import (
    ConnectionFailedError,
    DICOMTrolleyAuthError,
    DICOMTrolleyError,
    DownloadError,
    MalformedResponseError,
    MultipartError,
    OutputFolderError,
    ResponseTooLargeError,
    ServerError,
    StorageError,
    TruncatedBodyError,
)
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.storage import TEMPORARY_SUFFIX
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI
from tests.support.fault_server import (
    SESSION_COOKIE,
    Fault,
    FaultServer,
    Route,
    ServedInstance,
    make_instances,
)

FAST_RETRY = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)
"""Three tries, a few milliseconds apart: retries happen, the suite stays fast."""

TIMEOUT: Timeout = (2.0, 2.0)
SHORT_READ: Timeout = (2.0, 0.5)
"""A read timeout the slow drip and the stall outlast."""


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def instances() -> list[ServedInstance]:
    """One study: series 1 of three instances, series 2 of two."""
    return make_instances(series_sizes=(3, 2))


@pytest.fixture
def server(instances: list[ServedInstance]) -> Iterator[FaultServer]:
    with FaultServer(instances) as running:
        yield running


@pytest.fixture
def other_host(instances: list[ServedInstance]) -> Iterator[FaultServer]:
    """The same data on 127.0.0.2: another host, as far as HTTP clients are concerned."""
    with FaultServer(instances, host="127.0.0.2") as running:
        yield running


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as plain:
        yield plain


def record_responses(session: requests.Session) -> list[requests.Response]:
    """Every response the session receives from now on (redirects and retries included)."""
    received: list[requests.Response] = []

    def keep(response: requests.Response, *args: object, **kwargs: object) -> requests.Response:
        received.append(response)
        return response

    session.hooks["response"].append(keep)
    return received


def is_closed(response: requests.Response) -> bool:
    return bool(response.raw.closed)


def make_trolley(
    server: FaultServer, session: requests.Session, *, timeout: Timeout = TIMEOUT, workers: int = 2
) -> Trolley:
    return Trolley(
        QidoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY),
        WadoRS(session, server.dicomweb_url, timeout=timeout, retry=FAST_RETRY, workers=workers),
    )


def series(server: FaultServer, number: int) -> list[ServedInstance]:
    """The instances of series ``number`` (1 or 2), in order."""
    uid = server.series_uids()[number - 1]
    return [i for i in server.instances if i.series_uid == uid]


def series_ref(server: FaultServer, number: int) -> SeriesReference:
    return SeriesReference(server.study_uid(), server.series_uids()[number - 1])


def each_series(server: FaultServer) -> list[SeriesReference]:
    """Both series as download targets: one request each, so a fault can hit one series and not the other.

    (A study UID into an empty folder is fetched with one request for the whole study.)
    """
    return [series_ref(server, 1), series_ref(server, 2)]


def ref(instance: ServedInstance) -> InstanceReference:
    return InstanceReference(instance.study_uid, instance.series_uid, instance.sop_uid)


def check_folder(folder: Path, server: FaultServer) -> set[str]:
    """Assert that no temporary file is left and that every file is byte-equal to its original.

    Returns the SOPInstanceUIDs on disk.
    """
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert [p for p in files if TEMPORARY_SUFFIX in p.name] == []
    found = set()
    for path in files:
        sop_uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert path.read_bytes() == server.by_uid(sop_uid).data, f"{path} differs from the original"
        found.add(sop_uid)
    assert len(found) == len(files)
    return found


def uids(instances: list[ServedInstance]) -> set[str]:
    return {i.sop_uid for i in instances}


# --- a stream that breaks: the error, and what arrived before it ---------------------------

# fault, the error it raises, how many parts of series 1 (three) arrive whole before it.
# Each fault strikes after one whole part (after_parts=1).
STREAM_FAULTS = [
    pytest.param(Fault.TRUNCATE, TruncatedBodyError, 1, id="truncated-mid-part"),
    pytest.param(Fault.SHORT_BODY, ConnectionFailedError, 1, id="shorter-than-content-length"),
    pytest.param(Fault.RESET, ConnectionFailedError, 1, id="connection-reset-mid-part"),
    pytest.param(Fault.SLOW_DRIP, ConnectionFailedError, 1, id="slow-drip-past-read-timeout"),
    pytest.param(Fault.NO_CLOSING_DELIMITER, TruncatedBodyError, 2, id="ends-after-last-content"),
    pytest.param(Fault.UNCLOSED, TruncatedBodyError, 3, id="closing-delimiter-without-dashes"),
    pytest.param(Fault.WRONG_BOUNDARY, MultipartError, 0, id="wrong-boundary"),
    pytest.param(Fault.MISSING_BOUNDARY, MultipartError, 0, id="missing-boundary"),
    pytest.param(Fault.NO_CONTENT_TYPE, MultipartError, 0, id="no-content-type"),
    pytest.param(Fault.HUGE_PART_HEADER, MultipartError, 1, id="part-header-line-of-2MB"),
]


@pytest.mark.parametrize(("fault", "error", "whole"), STREAM_FAULTS)
def test_broken_stream_raises_its_error_after_handing_on_every_whole_part(
    fault: Fault, error: type[DICOMTrolleyError], whole: int, server: FaultServer, session: requests.Session
) -> None:
    server.add_fault(fault, route=Route.WADO_RS_SERIES, after_parts=1)
    responses = record_responses(session)
    received: list[bytes] = []

    def sink(part: InstancePart) -> None:
        received.append(part.body.read())

    wado = WadoRS(session, server.dicomweb_url, timeout=SHORT_READ, retry=FAST_RETRY)
    failures = wado.fetch([series_ref(server, 1)], sink)

    assert [type(f.error) for f in failures] == [error]
    assert received == [i.data for i in series(server, 1)[:whole]]
    assert server.count(Route.WADO_RS_SERIES) == 1  # a broken body is not a reason to resend blindly
    assert responses
    assert all(is_closed(r) for r in responses)


@pytest.mark.parametrize(("fault", "error", "whole"), STREAM_FAULTS)
def test_broken_stream_keeps_the_whole_parts_and_fetches_only_the_missing_ones_one_by_one(
    fault: Fault,
    error: type[DICOMTrolleyError],
    whole: int,
    server: FaultServer,
    session: requests.Session,
    tmp_path: Path,
) -> None:
    broken = series(server, 1)
    server.add_fault(fault, path=server.series_path(broken[0].series_uid), after_parts=1)

    summary = make_trolley(server, session, timeout=SHORT_READ).download(each_series(server), tmp_path, progress=False)

    assert summary.ok, summary.failures
    assert summary.written == 5
    assert sorted(server.paths(Route.WADO_RS_SERIES)) == sorted(server.series_path(s) for s in server.series_uids())
    assert sorted(server.paths(Route.WADO_RS_INSTANCE)) == sorted(server.instance_path(i) for i in broken[whole:])
    assert check_folder(tmp_path, server) == uids(server.instances)


@pytest.mark.parametrize(
    "fault",
    [Fault.PREAMBLE_EPILOGUE, Fault.QUOTED_BOUNDARY, Fault.MULTIPART_MIXED, Fault.FORM_DATA],
    ids=["preamble-and-epilogue", "quoted-boundary", "labelled-multipart-mixed", "labelled-multipart-form-data"],
)
def test_legal_multipart_variants_download_completely_with_one_request_per_series(
    fault: Fault, server: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    server.add_fault(fault, route=Route.WADO_RS_SERIES)

    summary = make_trolley(server, session).download(each_series(server), tmp_path, progress=False)

    assert summary.ok
    assert server.count(Route.WADO_RS_SERIES) == 2
    assert server.count(Route.WADO_RS_INSTANCE) == 0
    assert check_folder(tmp_path, server) == uids(server.instances)


def test_study_into_an_empty_folder_is_one_request_checked_by_the_series_counts(
    server: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    summary = make_trolley(server, session).download(server.study_uid(), tmp_path, progress=False)

    assert summary.ok
    assert (summary.expected, summary.written) == (5, 5)
    assert server.paths(Route.WADO_RS_STUDY) == [server.study_path()]
    assert server.count(Route.WADO_RS_SERIES) + server.count(Route.WADO_RS_INSTANCE) == 0
    assert [r.path for r in server.seen if r.route is Route.QIDO and "/instances" in r.path] == []


def test_broken_study_stream_fetches_only_the_missing_instances_one_by_one(
    server: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    server.add_fault(Fault.RESET, path=server.study_path(), after_parts=2)

    summary = make_trolley(server, session).download(server.study_uid(), tmp_path, progress=False)

    assert summary.ok, summary.failures
    assert sorted(server.paths(Route.WADO_RS_INSTANCE)) == sorted(
        server.instance_path(i) for i in server.instances[2:]
    )
    assert check_folder(tmp_path, server) == uids(server.instances)


def test_study_answer_short_of_the_series_counts_names_the_missing_instance(
    server: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    server.add_fault(Fault.SHORTFALL, path=server.study_path(), after_parts=4)

    with pytest.raises(DownloadError, match="1 instances missing") as raised:
        make_trolley(server, session).download(server.study_uid(), tmp_path, progress=False)

    summary = raised.value.summary
    assert summary is not None
    assert summary.missing == [ref(server.instances[4])]
    assert check_folder(tmp_path, server) == uids(server.instances[:4])


def test_part_that_is_not_dicom_fails_alone_with_storage_error_and_the_rest_of_its_series_is_written(
    server: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    broken = series(server, 1)
    server.add_fault(Fault.NOT_DICOM_PART, path=server.series_path(broken[0].series_uid), after_parts=1)

    summary = make_trolley(server, session).download(
        each_series(server), tmp_path, on_error="collect", progress=False
    )

    assert [(f.target, type(f.error)) for f in summary.failures] == [(series_ref(server, 1), StorageError)]
    assert "not a readable DICOM instance" in str(summary.failures[0].error)
    assert summary.missing == [ref(broken[1])]  # the part that was not DICOM stood in its place
    assert check_folder(tmp_path, server) == uids([broken[0], *broken[2:], *series(server, 2)])


def test_instance_body_that_is_not_dicom_over_wado_uri_is_a_storage_error(
    server: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    bad = series(server, 2)[0]
    server.add_fault(Fault.NOT_DICOM_PART, route=Route.WADO_URI, times=1)
    trolley = Trolley(
        QidoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY),
        WadoURI(session, server.wado_url, timeout=TIMEOUT, retry=FAST_RETRY, workers=1),
    )

    summary = trolley.download(ref(bad), tmp_path, on_error="collect", progress=False)

    assert [(f.target, type(f.error)) for f in summary.failures] == [(ref(bad), StorageError)]
    assert summary.missing == [ref(bad)]
    assert check_folder(tmp_path, server) == set()


@pytest.mark.parametrize(
    "fault", [Fault.TRUNCATE, Fault.RESET], ids=["truncated", "reset"]
)
def test_broken_wado_uri_body_is_a_connection_error_and_leaves_no_file(
    fault: Fault, server: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    target = series(server, 1)[1]
    server.add_fault(fault, route=Route.WADO_URI)
    trolley = Trolley(downloader=WadoURI(session, server.wado_url, timeout=TIMEOUT, retry=FAST_RETRY))

    summary = trolley.download(ref(target), tmp_path, on_error="collect", progress=False)

    assert [(f.target, type(f.error)) for f in summary.failures] == [(ref(target), ConnectionFailedError)]
    assert check_folder(tmp_path, server) == set()


# --- completeness: fewer instances than the search listed ---------------------------------


def test_206_partial_content_is_logged_as_a_warning(
    server: FaultServer, session: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    server.add_fault(Fault.PARTIAL, route=Route.WADO_RS_SERIES, after_parts=1)
    caplog.set_level(logging.WARNING, logger="dicomtrolley")

    failures = WadoRS(session, server.dicomweb_url, timeout=TIMEOUT).fetch([series_ref(server, 1)], InstancePart.close)

    assert failures == []
    assert any(
        r.name == "dicomtrolley.wado_rs" and r.levelno == logging.WARNING and "206" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("fault", [Fault.PARTIAL, Fault.SHORTFALL], ids=["206-partial", "200-with-fewer-parts"])
def test_fewer_instances_than_the_search_listed_are_reported_missing(
    fault: Fault, server: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    broken = series(server, 1)
    server.add_fault(fault, path=server.series_path(broken[0].series_uid), after_parts=1)

    with pytest.raises(DownloadError) as raised:
        make_trolley(server, session).download(each_series(server), tmp_path, progress=False)

    summary = raised.value.summary
    assert summary is not None
    assert summary.expected == 5
    assert summary.written == 3
    assert set(summary.missing) == set(map(ref, broken[1:]))
    assert "2 instances missing" in str(raised.value)
    assert check_folder(tmp_path, server) == uids(broken[:1] + series(server, 2))


# --- error statuses and retries ------------------------------------------------------------


def test_500_is_not_retried_and_fails_with_the_servers_message(
    server: FaultServer, session: requests.Session
) -> None:
    server.add_fault(Fault.STATUS, route=Route.WADO_RS_SERIES, status=500)

    failures = WadoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY).fetch(
        [series_ref(server, 1)], InstancePart.close
    )

    error = failures[0].error
    assert isinstance(error, ServerError)
    assert (error.status, error.server_message) == (500, "fault server: status 500")
    assert server.count(Route.WADO_RS_SERIES) == 1


def test_503_with_retry_after_is_retried_until_the_server_recovers_and_each_retry_is_logged(
    server: FaultServer, session: requests.Session, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.add_fault(Fault.STATUS, route=Route.WADO_RS_SERIES, status=503, retry_after="0", times=2)
    caplog.set_level(logging.WARNING, logger="dicomtrolley._http")
    slow_backoff = RetryPolicy(attempts=3, backoff=10.0)  # Retry-After: 0 must win over it
    trolley = Trolley(
        QidoRS(session, server.dicomweb_url, timeout=TIMEOUT),
        WadoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=slow_backoff, workers=1),
    )

    started = time.monotonic()
    summary = trolley.download(series_ref(server, 1), tmp_path, progress=False)

    assert time.monotonic() - started < 5
    assert summary.ok
    assert server.count(Route.WADO_RS_SERIES) == 3
    retries = [r.getMessage() for r in caplog.records if "answered 503" in r.getMessage()]
    assert len(retries) == 2
    assert "try 2 of 3" in retries[0]
    assert "try 3 of 3" in retries[1]
    assert check_folder(tmp_path, server) == uids(series(server, 1))


def test_retry_after_in_seconds_is_waited_for(server: FaultServer, session: requests.Session) -> None:
    server.add_fault(Fault.STATUS, route=Route.WADO_RS_SERIES, status=503, retry_after="1", times=1)
    wado = WadoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=RetryPolicy(attempts=2, backoff=0.0))

    started = time.monotonic()
    failures = wado.fetch([series_ref(server, 2)], InstancePart.close)
    waited = time.monotonic() - started

    assert failures == []
    assert 0.9 <= waited < 3.0


def test_503_that_never_ends_fails_after_the_configured_attempts(
    server: FaultServer, session: requests.Session
) -> None:
    server.add_fault(Fault.STATUS, route=Route.WADO_RS_SERIES, status=503, retry_after="0")

    failures = WadoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY).fetch(
        [series_ref(server, 1)], InstancePart.close
    )

    error = failures[0].error
    assert isinstance(error, ServerError)
    assert error.status == 503
    assert server.count(Route.WADO_RS_SERIES) == FAST_RETRY.attempts


@pytest.mark.parametrize(
    "fault", [Fault.STALL, Fault.HUGE_HTTP_HEADER], ids=["no-answer-past-read-timeout", "http-header-line-of-2MB"]
)
def test_connection_failures_are_retried_a_bounded_number_of_times_each_logged(
    fault: Fault, server: FaultServer, session: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    server.add_fault(fault, route=Route.WADO_RS_SERIES, duration=1.0)
    caplog.set_level(logging.WARNING, logger="dicomtrolley._http")

    failures = WadoRS(session, server.dicomweb_url, timeout=SHORT_READ, retry=FAST_RETRY).fetch(
        [series_ref(server, 1)], InstancePart.close
    )

    assert [type(f.error) for f in failures] == [ConnectionFailedError]
    assert server.count(Route.WADO_RS_SERIES) == FAST_RETRY.attempts
    logged = [r.getMessage() for r in caplog.records if r.name == "dicomtrolley._http"]
    assert len(logged) == FAST_RETRY.attempts - 1
    assert all("failed" in message for message in logged)


def test_401_forever_with_basic_auth_is_an_error_without_retries(
    server: FaultServer, session: requests.Session
) -> None:
    server.add_fault(Fault.STATUS, status=401)
    session.auth = ("someone", "wrong-password")

    failures = WadoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY).fetch(
        [series_ref(server, 1)], InstancePart.close
    )

    error = failures[0].error
    assert isinstance(error, ServerError)
    assert error.status == 401
    assert "wrong-password" not in str(error)
    assert server.count() == 1


def test_401_forever_after_a_vitrea_login_is_an_auth_error_after_one_login(instances: list[ServedInstance]) -> None:
    with FaultServer(instances, require_login=True) as server:
        server.add_fault(Fault.STATUS, route=Route.WADO_RS_SERIES, status=401)
        session = create_session(server.login_url, server.user, server.password)

        failures = WadoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY).fetch(
            [series_ref(server, 1)], InstancePart.close
        )

        assert [type(f.error) for f in failures] == [DICOMTrolleyAuthError]
        assert server.password not in str(failures[0].error)
        assert server.count(Route.LOGIN) == 1
        assert server.count(Route.WADO_RS_SERIES) == 2  # refused without a session, refused again with one


@pytest.mark.parametrize("status", [500, 503])
def test_failed_login_is_sent_once_and_not_retried(instances: list[ServedInstance], status: int) -> None:
    with FaultServer(instances, require_login=True) as server:
        server.add_fault(Fault.STATUS, route=Route.LOGIN, status=status, retry_after="0")
        session = create_session(server.login_url, server.user, server.password)

        failures = WadoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY).fetch(
            [series_ref(server, 1)], InstancePart.close
        )

        assert [type(f.error) for f in failures] == [DICOMTrolleyAuthError]
        assert server.count(Route.LOGIN) == 1
        assert server.count(Route.WADO_RS_SERIES) == 1


# --- credentials and redirects -------------------------------------------------------------


def test_redirect_to_another_host_does_not_forward_basic_auth_credentials(
    server: FaultServer, other_host: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    server.add_fault(Fault.REDIRECT, location=other_host.url)
    session.auth = ("someone", "basic-secret")

    summary = make_trolley(server, session).download(server.study_uid(), tmp_path, progress=False)

    assert summary.ok
    assert all("authorization" in r.headers for r in server.seen)
    assert other_host.count(Route.QIDO) > 0
    assert other_host.count(Route.WADO_RS_STUDY) == 1
    assert [r.headers["authorization"] for r in other_host.seen if "authorization" in r.headers] == []
    assert check_folder(tmp_path, server) == uids(server.instances)


def test_redirect_to_another_host_forwards_neither_the_vitrea_session_nor_the_password(
    instances: list[ServedInstance], other_host: FaultServer, tmp_path: Path
) -> None:
    with FaultServer(instances, require_login=True) as server:
        server.add_fault(Fault.REDIRECT, route=Route.WADO_RS_STUDY, location=other_host.url)
        session = create_session(server.login_url, server.user, server.password)

        summary = make_trolley(server, session).download(server.study_uid(), tmp_path, progress=False)

        assert summary.ok
        assert server.count(Route.LOGIN) == 1
        assert other_host.count(Route.WADO_RS_STUDY) == 1
        for seen in other_host.seen:
            assert SESSION_COOKIE not in seen.headers.get("cookie", "")
            assert "x-password" not in seen.headers
            assert "x-userid" not in seen.headers
        carrying_password = [(r.method, r.path) for r in server.seen if "x-password" in r.headers]
        assert carrying_password == [("POST", "/login")]


def test_redirect_to_another_host_that_refuses_gets_no_session_and_no_password(
    instances: list[ServedInstance],
) -> None:
    with (
        FaultServer(instances, require_login=True) as server,
        FaultServer(instances, host="127.0.0.2", require_login=True) as elsewhere,
    ):
        server.add_fault(Fault.REDIRECT, route=Route.WADO_RS_SERIES, location=elsewhere.url)
        session = create_session(server.login_url, server.user, server.password)
        session.get(server.dicomweb_url + "/studies", timeout=5).raise_for_status()  # logged in on the first host

        failures = WadoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY).fetch(
            [series_ref(server, 1)], InstancePart.close
        )

        assert [type(f.error) for f in failures] == [DICOMTrolleyAuthError]
        assert elsewhere.count(Route.LOGIN) == 0
        assert elsewhere.count(Route.WADO_RS_SERIES) == 2  # refused, then refused after the (first host's) login
        for seen in elsewhere.seen:
            assert SESSION_COOKIE not in seen.headers.get("cookie", "")
            assert "x-password" not in seen.headers
        assert all(r.path == "/login" for r in server.seen if "x-password" in r.headers)


def test_login_redirected_to_another_host_is_refused_not_followed(
    instances: list[ServedInstance], other_host: FaultServer
) -> None:
    with FaultServer(instances, require_login=True) as server:
        server.add_fault(Fault.REDIRECT, route=Route.LOGIN, location=other_host.url)
        session = create_session(server.login_url, server.user, server.password)

        failures = WadoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY).fetch(
            [series_ref(server, 1)], InstancePart.close
        )

        assert [type(f.error) for f in failures] == [DICOMTrolleyAuthError]
        assert "307" in str(failures[0].error)
        assert other_host.seen == []


# --- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture
def tls_server(instances: list[ServedInstance], self_signed: tuple[Path, Path]) -> Iterator[FaultServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed)
    with FaultServer(instances, tls=context) as running:
        yield running


def test_tls_certificates_are_verified_by_default_and_a_failure_is_not_retried(
    tls_server: FaultServer, session: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomtrolley._http")
    wado = WadoRS(session, tls_server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY)

    failures = wado.fetch([series_ref(tls_server, 1)], InstancePart.close)

    assert session.verify is True
    assert [type(f.error) for f in failures] == [ConnectionFailedError]
    assert "CERTIFICATE_VERIFY_FAILED" in str(failures[0].error)
    assert [r for r in caplog.records if r.name == "dicomtrolley._http"] == []  # no retry
    assert tls_server.seen == []


def test_tls_download_works_with_the_ca_file_the_session_names_even_if_the_environment_names_another(
    tls_server: FaultServer,
    self_signed: tuple[Path, Path],
    session: requests.Session,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ssl.get_default_verify_paths().openssl_cafile)
    session.verify = str(self_signed[0])

    summary = make_trolley(tls_server, session).download(tls_server.study_uid(), tmp_path, progress=False)

    assert summary.ok
    assert check_folder(tmp_path, tls_server) == uids(tls_server.instances)


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_tls_download_trusts_the_ca_file_the_environment_names(
    variable: str,
    tls_server: FaultServer,
    self_signed: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(self_signed[0]))

    summary = make_trolley(tls_server, requests.Session()).download(
        tls_server.study_uid(), tmp_path, progress=False
    )

    assert summary.ok
    assert check_folder(tmp_path, tls_server) == uids(tls_server.instances)


def test_command_line_ca_file_verifies_a_private_certificate_authority(
    tls_server: FaultServer, self_signed: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    status = main(["download", tls_server.dicomweb_url, tls_server.study_uid(), "-o", str(tmp_path),
                   "--no-progress", "--ca-file", str(self_signed[0])])
    assert status == 0
    assert check_folder(tmp_path, tls_server) == uids(tls_server.instances)


# --- search answers that are not DICOM JSON ------------------------------------------------

NOT_DICOM_JSON = [
    pytest.param(b'{"error": "an object, not a list"}', id="object"),
    pytest.param(b'[{"StudyInstanceUID": "1.2.3"}]', id="keywords-not-tags"),
    pytest.param(b'[{"0020000D": "1.2.3"}]', id="bare-value"),
    pytest.param(b"[1, 2, 3]", id="numbers"),
    pytest.param(b"<html><body>Gateway error</body></html>", id="html"),
    pytest.param(b'[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}', id="cut-short"),
    pytest.param(b'[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]', id="no-series-or-instance-uid"),
]


@pytest.mark.parametrize("payload", NOT_DICOM_JSON)
def test_search_answer_that_is_not_dicom_json_is_a_malformed_response(
    payload: bytes, server: FaultServer, session: requests.Session
) -> None:
    server.add_fault(Fault.BODY, route=Route.QIDO, payload=payload)
    searcher = QidoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY)

    with pytest.raises(MalformedResponseError):
        searcher.find_studies(Query(StudyInstanceUID=server.study_uid(), query_level=QueryLevels.INSTANCE))


def test_deeply_nested_search_answer_is_a_malformed_response_naming_the_url(
    server: FaultServer, session: requests.Session
) -> None:
    server.add_fault(Fault.BODY, route=Route.QIDO, payload=b"[" * 100_000 + b"]" * 100_000)
    searcher = QidoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY)

    with pytest.raises(MalformedResponseError, match=r"nested too deep") as raised:
        searcher.find_studies(Query(PatientID="PAT*"))
    assert server.dicomweb_url in str(raised.value)


INVALID_DICOM_JSON = [
    pytest.param({"00081115": {"vr": "SQ", "Value": ["a", "b"]}}, id="sequence-of-strings"),
    pytest.param({"00100010": {"vr": "PN", "Value": [5]}}, id="person-name-number"),
    pytest.param({"00100010": {"vr": "PN", "Value": [{"Alphabetic": 5}]}}, id="person-name-object-of-number"),
    pytest.param({"00280010": {"vr": "US", "Value": ["abc"]}}, id="number-that-is-text"),
    pytest.param({"00100020": {"vr": "LO", "Value": "PAT"}}, id="value-not-a-list"),
    pytest.param({"7FE00010": {"vr": "OB", "InlineBinary": 5}}, id="inline-binary-number"),
]


@pytest.mark.parametrize("attribute", INVALID_DICOM_JSON)
def test_an_attribute_that_breaks_its_type_is_kept_as_text_named_in_a_warning_and_the_rest_read(
    attribute: dict[str, Any],
    server: FaultServer,
    session: requests.Session,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    row = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "00080050": {"vr": "SH", "Value": ["ACC9"]}, **attribute}
    server.add_fault(Fault.BODY, route=Route.QIDO, payload=json.dumps([row]).encode())
    searcher = QidoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY)
    ((tag, element),) = attribute.items()

    (study,) = searcher.find_studies(Query(PatientID="PAT*"))
    with caplog.at_level(logging.WARNING, logger="dicomtrolley"):
        data = study.data

    assert data.AccessionNumber == "ACC9"
    kept = data[int(tag, 16)]
    assert (kept.VR, json.loads(kept.value)) == ("UT", element.get("Value", element.get("InlineBinary")))
    assert f"({tag}) is not valid DICOM JSON" in caplog.text
    assert server.dicomweb_url in caplog.text
    assert main(["search", server.dicomweb_url, "--PatientID", "PAT*"]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert "1.2.3" in out.out


def test_a_result_whose_key_is_no_tag_is_a_malformed_response_naming_url_and_result(
    server: FaultServer, session: requests.Session, capsys: pytest.CaptureFixture[str]
) -> None:
    row = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "ZZZZ": {"vr": "LO", "Value": ["a"]}}
    server.add_fault(Fault.BODY, route=Route.QIDO, payload=json.dumps([row]).encode())
    searcher = QidoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY)

    (study,) = searcher.find_studies(Query(PatientID="PAT*"))
    with pytest.raises(MalformedResponseError, match=r"Study 1\.2\.3 from http://") as raised:
        _ = study.data
    assert server.dicomweb_url in str(raised.value)

    assert main(["search", server.dicomweb_url, "--PatientID", "PAT*"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "is not valid DICOM JSON" in err


@pytest.mark.parametrize(
    "fault", [pytest.param(Fault.HUGE_BODY, id="300-MB-answer"), pytest.param(Fault.GZIP_BOMB, id="gzip-bomb")]
)
def test_an_oversized_search_answer_is_refused_within_bounded_memory(
    fault: Fault, server: FaultServer, session: requests.Session
) -> None:
    server.add_fault(fault, route=Route.QIDO, size=300 * 1024 * 1024)
    searcher = QidoRS(session, server.dicomweb_url, timeout=(2.0, 30.0), retry=FAST_RETRY)

    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLargeError, match="max_answer_bytes"):
            searcher.find_studies(Query(PatientID="PAT*"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 150 * 1024 * 1024


def test_the_answer_cap_is_configurable(server: FaultServer, session: requests.Session) -> None:
    server.add_fault(Fault.HUGE_BODY, route=Route.QIDO, size=3 * 1024 * 1024)
    small = QidoRS(session, server.dicomweb_url, timeout=TIMEOUT, retry=FAST_RETRY, max_answer_bytes=1024 * 1024)
    with pytest.raises(ResponseTooLargeError):
        small.find_studies(Query(PatientID="PAT*"))


def test_download_whose_search_answer_is_not_dicom_json_fetches_and_writes_nothing(
    server: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    server.add_fault(Fault.BODY, route=Route.QIDO, payload=b'{"error": "not DICOM JSON"}')

    with pytest.raises(DICOMTrolleyError, match="DICOM JSON"):
        make_trolley(server, session).download(server.study_uid(), tmp_path, progress=False)

    assert server.count(Route.WADO_RS_SERIES) + server.count(Route.WADO_RS_INSTANCE) == 0
    assert list(tmp_path.iterdir()) == []


def test_collect_goes_on_with_the_other_studies_when_one_studys_search_fails(
    instances: list[ServedInstance], session: requests.Session, tmp_path: Path
) -> None:
    second = make_instances(name="second study")
    with FaultServer(instances + second) as server:
        broken_study = second[0].study_uid
        server.add_fault(Fault.BODY, path=f"/dicom-web/studies/{broken_study}/series", payload=b"[1, 2]")

        summary = make_trolley(server, session).download(
            [server.study_uid(), broken_study], tmp_path, on_error="collect", progress=False
        )

        assert [(f.target, type(f.error)) for f in summary.failures] == [
            (StudyReference(broken_study), MalformedResponseError)
        ]
        assert check_folder(tmp_path, server) == uids(instances)


# --- collect or raise, resume --------------------------------------------------------------


def test_collect_lists_every_failed_item_with_its_reason(
    server: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    one, two = series(server, 1), series(server, 2)
    server.add_fault(Fault.RESET, path=server.series_path(one[0].series_uid), after_parts=1)
    server.add_fault(Fault.STATUS, path=server.instance_path(one[2]), status=500)
    server.add_fault(Fault.STATUS, path=server.series_path(two[0].series_uid), status=503, retry_after="0")

    summary = make_trolley(server, session).download(
        each_series(server), tmp_path, on_error="collect", progress=False
    )

    reasons = {f.target: f.error for f in summary.failures}
    assert set(reasons) == {ref(one[2]), series_ref(server, 2)}
    assert isinstance(reasons[ref(one[2])], ServerError)
    assert "500 Internal Server Error" in str(FetchFailure(ref(one[2]), reasons[ref(one[2])]))
    assert "503 Service Unavailable" in str(reasons[series_ref(server, 2)])
    assert set(summary.missing) == {ref(one[2]), *map(ref, two)}
    assert not summary.ok
    assert check_folder(tmp_path, server) == uids(one[:2])


def test_raise_stops_with_download_error_and_keeps_what_was_written(
    server: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    two = series(server, 2)
    server.add_fault(Fault.STATUS, path=server.series_path(two[0].series_uid), status=500)

    with pytest.raises(DownloadError) as raised:
        make_trolley(server, session, workers=1).download(each_series(server), tmp_path, progress=False)

    summary = raised.value.summary
    assert summary is not None
    assert [(f.target, type(f.error)) for f in summary.failures] == [(series_ref(server, 2), ServerError)]
    assert "500" in str(raised.value)
    assert check_folder(tmp_path, server) == uids(series(server, 1))


def test_run_after_a_failed_run_fetches_only_what_is_missing(
    server: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    one = series(server, 1)
    server.add_fault(Fault.TRUNCATE, path=server.series_path(one[0].series_uid), after_parts=1)
    server.add_fault(Fault.STATUS, route=Route.WADO_RS_INSTANCE, status=500)
    first = make_trolley(server, session).download(each_series(server), tmp_path, on_error="collect", progress=False)
    assert set(first.missing) == set(map(ref, one[1:]))
    server.clear_faults()
    server.reset_log()

    second = make_trolley(server, session).download(server.study_uid(), tmp_path, progress=False)

    assert second.ok
    assert (second.skipped, second.written) == (3, 2)
    assert server.paths(Route.WADO_RS_SERIES) == []
    assert sorted(server.paths(Route.WADO_RS_INSTANCE)) == sorted(server.instance_path(i) for i in one[1:])
    assert check_folder(tmp_path, server) == uids(server.instances)


def test_second_run_of_a_finished_download_makes_no_payload_request(
    server: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    make_trolley(server, session).download(server.study_uid(), tmp_path, progress=False)
    server.reset_log()

    summary = make_trolley(server, session).download(server.study_uid(), tmp_path, progress=False)

    assert (summary.skipped, summary.written) == (5, 0)
    assert {r.route for r in server.seen} == {Route.QIDO}


def test_command_line_exits_non_zero_and_names_each_failure_once_with_its_reason(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add_fault(Fault.STATUS, path=server.study_path(), status=500)

    status = main(["download", server.dicomweb_url, server.study_uid(), "-o", str(tmp_path), "--no-progress"])

    assert status == EXIT_FAILURES
    failed = [line for line in capsys.readouterr().err.splitlines() if server.study_uid() in line]
    assert len(failed) == 1  # the study's instances are lost by that failure, not listed again as missing
    assert failed[0].startswith("failed: ")
    assert "500" in failed[0]
    assert check_folder(tmp_path, server) == set()


def test_command_line_exits_zero_when_everything_arrived(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["download", server.dicomweb_url, server.study_uid(), "-o", str(tmp_path), "--no-progress"])

    assert status == 0
    assert check_folder(tmp_path, server) == uids(server.instances)


def test_command_line_exits_non_zero_when_the_search_answer_is_not_dicom_json(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add_fault(Fault.BODY, route=Route.QIDO, payload=b"[1, 2]")

    status = main(["download", server.dicomweb_url, server.study_uid(), "-o", str(tmp_path), "--no-progress"])

    assert status in (EXIT_FAILURES, EXIT_ERROR)
    assert "not a DICOM JSON object" in capsys.readouterr().err


# --- the disk and the output folder --------------------------------------------------------

HOSTILE_PATIENT_IDS = ["../../x", "..", "/etc/x", "a/../../../x", "..\\..\\x", "x\x00y/.."]


@pytest.mark.parametrize("patient_id", HOSTILE_PATIENT_IDS)
def test_tag_value_that_climbs_stays_inside_the_output_folder(
    patient_id: str, session: requests.Session, tmp_path: Path
) -> None:
    hostile = make_instances(series_sizes=(2,), patient_id=patient_id, name="hostile")
    output = tmp_path / "deep" / "out"
    with FaultServer(hostile) as server:
        summary = make_trolley(server, session).download(
            server.study_uid(), output, template="{PatientID}/{SOPInstanceUID}.dcm", progress=False
        )

        assert summary.ok
        written = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert len(written) == 2
        assert all(p.resolve().is_relative_to(output.resolve()) for p in written)
        assert check_folder(output, server) == uids(hostile)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB file system (tmpfs), unmounted after the test."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_that_fills_up_is_a_storage_error_naming_it_and_leaves_no_partial_file(
    small_disk: Path, session: requests.Session
) -> None:
    big = make_instances(series_sizes=(4,), pixels=128, name="big")  # about 33 KiB each
    with FaultServer(big) as server:
        with pytest.raises(DownloadError) as raised:
            make_trolley(server, session, workers=1).download(server.study_uid(), small_disk, progress=False)

        summary = raised.value.summary
        assert summary is not None
        errors = [f.error for f in summary.failures]
        assert [type(e) for e in errors] == [OutputFolderError]  # a StorageError that stops the download
        assert "the disk is full" in str(errors[0])
        assert isinstance(errors[0].__cause__, OSError)
        assert errors[0].__cause__.errno == errno.ENOSPC
        on_disk = check_folder(small_disk, server)
        assert 1 <= len(on_disk) < 4
        assert summary.written == len(on_disk)
        assert set(summary.missing) == {ref(i) for i in big if i.sop_uid not in on_disk}


# --- the whole series was asked for, part of it is on disk already -------------------------


def test_series_half_on_disk_is_completed_instance_by_instance(
    server: FaultServer, session: requests.Session, tmp_path: Path
) -> None:
    one = series(server, 1)
    make_trolley(server, session).download(ref(one[0]), tmp_path, progress=False)
    server.reset_log()

    summary = make_trolley(server, session).download(series_ref(server, 1), tmp_path, progress=False)

    assert (summary.skipped, summary.written) == (1, 2)
    assert server.paths(Route.WADO_RS_SERIES) == []
    assert sorted(server.paths(Route.WADO_RS_INSTANCE)) == sorted(server.instance_path(i) for i in one[1:])
    assert check_folder(tmp_path, server) == uids(one)

