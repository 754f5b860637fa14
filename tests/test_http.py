"""dicomtrolley._http: query encoding, redaction, retries with backoff and Retry-After, bodies.

Unit tests with ``responses`` mocks (no server): they pin down how one request
goes out and what happens when it fails. The same behaviours against a real
(misbehaving) server are in test_faults.py.
"""

from __future__ import annotations

import email.utils
import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
import urllib3
from requests.adapters import HTTPAdapter

from dicomtrolley._http import (
    USER_AGENT,
    HTTPClient,
    RetryPolicy,
    encode_query,
    ensure_pool_size,
    iter_body,
    raise_for_status,
    redact_url,
    spool,
)
from dicomtrolley.exceptions import ConnectionFailedError, ServerError
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI

URL = "http://pacs.example/dicom-web/studies"
SECRET_URL = "http://alice:s3cret-pw@pacs.example/dicom-web/studies"


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every wait between tries, recorded instead of slept."""
    waited: list[float] = []
    monkeypatch.setattr(time, "sleep", waited.append)
    return waited


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def client(**policy: Any) -> HTTPClient:
    return HTTPClient(requests.Session(), timeout=(1, 1), retry=RetryPolicy(**policy))


# --- encode_query ------------------------------------------------------------------------


def test_encode_query_keeps_wildcards_carets_slashes_commas_and_colons() -> None:
    assert encode_query({"PatientName": "DOE^J*", "x": "a/b,c:d?"}) == "PatientName=DOE^J*&x=a/b,c:d?"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(" ", "%20"), ("%", "%25"), ("&", "%26"), ("#", "%23"), ("+", "%2B"), ("=", "%3D")],
)
def test_encode_query_escapes_what_would_change_the_meaning(value: str, encoded: str) -> None:
    assert encode_query({"PatientID": f"a{value}b"}) == f"PatientID=a{encoded}b"


def test_encode_query_writes_non_ascii_as_utf8_percent_escapes() -> None:
    assert encode_query({"PatientName": "Müller"}) == "PatientName=M%C3%BCller"


def test_encode_query_repeats_the_key_for_a_sequence_and_writes_numbers() -> None:
    assert encode_query({"includefield": ["00100010", "StudyDate"], "limit": 10}) == (
        "includefield=00100010&includefield=StudyDate&limit=10"
    )


def test_query_goes_out_exactly_as_encoded(mocked: responses.RequestsMock) -> None:
    mocked.get(URL, body="[]")

    client().get(URL, params={"PatientName": "DOE*", "StudyDate": "20200101-"})

    assert mocked.calls[0].request.url == URL + "?PatientName=DOE*&StudyDate=20200101-"


# --- redaction ---------------------------------------------------------------------------


def test_redact_url_drops_user_and_password_and_keeps_the_rest() -> None:
    assert redact_url("https://alice:pw@pacs.example:8443/dicom-web?PatientID=1") == (
        "https://pacs.example:8443/dicom-web?PatientID=1"
    )


def test_redact_url_leaves_a_url_without_credentials_alone() -> None:
    assert redact_url(URL + "?a=b") == URL + "?a=b"


def test_error_for_a_url_with_credentials_names_the_url_without_them(mocked: responses.RequestsMock) -> None:
    mocked.get(SECRET_URL, status=404, body="no such study")

    with pytest.raises(ServerError) as raised:
        client().get(SECRET_URL)

    assert raised.value.url == URL
    assert "s3cret-pw" not in str(raised.value)


def test_connection_error_and_retry_logs_never_carry_the_password(
    mocked: responses.RequestsMock, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    mocked.get(SECRET_URL, body=requests.ConnectionError("refused"))
    caplog.set_level(logging.DEBUG, logger="dicomtrolley")

    with pytest.raises(ConnectionFailedError) as raised:
        client(attempts=3).get(SECRET_URL)

    assert "s3cret-pw" not in str(raised.value)
    assert len(caplog.records) == 2
    assert all("s3cret-pw" not in r.getMessage() for r in caplog.records)


# --- retries -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_status_is_tried_again_and_the_second_answer_returned(
    status: int, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(URL, status=status)
    mocked.get(URL, body="[]")

    response = client().get(URL)

    assert response.text == "[]"
    assert len(mocked.calls) == 2
    assert len(sleeps) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 406, 500])
def test_other_error_status_is_not_retried(status: int, mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    mocked.get(URL, status=status, body="refused")

    with pytest.raises(ServerError) as raised:
        client().get(URL)

    assert raised.value.status == status
    assert len(mocked.calls) == 1
    assert sleeps == []


def test_retryable_status_that_persists_fails_after_the_configured_attempts(
    mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(URL, status=503, body="busy")

    with pytest.raises(ServerError) as raised:
        client(attempts=5).get(URL)

    assert raised.value.status == 503
    assert raised.value.server_message == "busy"
    assert len(mocked.calls) == 5
    assert len(sleeps) == 4


def test_one_attempt_switches_retrying_off(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    mocked.get(URL, status=503)

    with pytest.raises(ServerError):
        client(attempts=1).get(URL)

    assert len(mocked.calls) == 1


def test_retry_after_in_seconds_replaces_the_backoff(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    mocked.get(URL, status=503, headers={"Retry-After": "7"})
    mocked.get(URL, body="ok")

    client(backoff=0.01).get(URL)

    assert len(sleeps) == 1
    assert 7.0 <= sleeps[0] <= 7.0 * 1.25


def test_clients_told_the_same_retry_after_do_not_come_back_in_lockstep() -> None:
    answer = requests.Response()
    answer.status_code = 429
    answer.headers["Retry-After"] = "4"
    waits = [RetryPolicy().delay(1, answer) for _ in range(20)]
    assert min(waits) >= 4.0
    assert max(waits) <= 5.0
    assert len(set(waits)) > 15


def test_retry_after_as_an_http_date_is_waited_until(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    mocked.get(URL, status=429, headers={"Retry-After": when})
    mocked.get(URL, body="ok")

    client(backoff=0.01).get(URL)

    assert 18.0 <= sleeps[0] <= 20.0 * 1.25


def test_retry_after_is_capped_by_max_backoff(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    mocked.get(URL, status=503, headers={"Retry-After": "3600"})
    mocked.get(URL, body="ok")

    client(max_backoff=2.0).get(URL)

    assert sleeps == [2.0]


@pytest.mark.parametrize("value", ["soon", "-5", ""])
def test_unreadable_retry_after_falls_back_to_the_backoff(
    value: str, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(URL, status=503, headers={"Retry-After": value})
    mocked.get(URL, body="ok")

    client(backoff=0.2).get(URL)

    assert 0.1 <= sleeps[0] < 0.3


def test_backoff_doubles_with_jitter_between_half_and_one_and_a_half_times(
    mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(URL, body=requests.ConnectionError("refused"))

    for _ in range(50):
        with pytest.raises(ConnectionFailedError):
            client(attempts=4, backoff=1.0, max_backoff=100.0).get(URL)

    for index, base in enumerate([1.0, 2.0, 4.0]):
        waits = sleeps[index::3]
        assert all(0.5 * base <= w < 1.5 * base for w in waits)
        assert len(set(waits)) > 1  # jitter: retries from many clients do not line up


def test_backoff_never_exceeds_max_backoff(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    mocked.get(URL, body=requests.ConnectionError("refused"))

    with pytest.raises(ConnectionFailedError):
        client(attempts=8, backoff=1.0, max_backoff=3.0).get(URL)

    assert len(sleeps) == 7
    assert max(sleeps) <= 3.0


@pytest.mark.parametrize(
    "error",
    [requests.ConnectionError("reset"), requests.ReadTimeout("slow"), requests.ConnectTimeout("unreachable")],
    ids=["connection-error", "read-timeout", "connect-timeout"],
)
def test_connection_problem_is_retried_and_the_next_answer_returned(
    error: Exception, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(URL, body=error)
    mocked.get(URL, body="ok")

    assert client().get(URL).text == "ok"
    assert len(mocked.calls) == 2


def test_connection_problem_that_persists_fails_after_the_attempts_with_connection_failed(
    mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(URL, body=requests.ConnectionError("Connection refused"))

    with pytest.raises(ConnectionFailedError) as raised:
        client(attempts=3).get(URL)

    assert "Connection refused" in str(raised.value)
    assert URL in str(raised.value)
    assert len(mocked.calls) == 3


def test_tls_failure_is_not_retried(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    mocked.get(URL, body=requests.exceptions.SSLError("certificate verify failed"))

    with pytest.raises(ConnectionFailedError):
        client().get(URL)

    assert len(mocked.calls) == 1
    assert sleeps == []


def test_every_retry_is_logged_with_its_reason_and_count(
    mocked: responses.RequestsMock, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    mocked.get(URL, body=requests.ConnectionError("reset"))
    mocked.get(URL, status=503)
    mocked.get(URL, body="ok")
    caplog.set_level(logging.WARNING, logger="dicomtrolley._http")

    client(attempts=3).get(URL)

    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "failed (ConnectionError); try 2 of 3" in messages[0]
    assert "answered 503; try 3 of 3" in messages[1]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_default_policy_tries_four_times_on_the_usual_statuses() -> None:
    policy = RetryPolicy()
    assert policy.attempts == 4
    assert policy.statuses == frozenset({429, 502, 503, 504})


# --- what goes out -----------------------------------------------------------------------


def test_user_agent_is_set_and_the_callers_headers_kept(mocked: responses.RequestsMock) -> None:
    mocked.get(URL, body="ok")

    client().get(URL, headers={"Accept": "application/dicom+json"})

    sent = mocked.calls[0].request.headers
    assert sent["User-Agent"] == USER_AGENT
    assert sent["Accept"] == "application/dicom+json"


def test_timeout_goes_out_with_every_request(mocked: responses.RequestsMock) -> None:
    mocked.get(URL, body="ok")

    HTTPClient(requests.Session(), timeout=(3.0, 42.0)).get(URL)

    assert mocked.calls[0].request.req_kwargs["timeout"] == (3.0, 42.0)  # type: ignore[attr-defined]


def test_tls_verification_is_on_by_default_and_left_on(mocked: responses.RequestsMock) -> None:
    mocked.get(URL.replace("http:", "https:"), body="ok")
    session = requests.Session()

    HTTPClient(session).get(URL.replace("http:", "https:"))

    assert session.verify is True
    assert mocked.calls[0].request.req_kwargs["verify"] not in (False, None)  # type: ignore[attr-defined]


def test_the_sessions_ca_file_wins_over_the_environments(
    mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/environment-bundle.pem")
    mocked.get(URL, body="ok")
    session = requests.Session()
    session.verify = "/etc/ssl/my-pacs-ca.pem"

    HTTPClient(session).get(URL)

    assert mocked.calls[0].request.req_kwargs["verify"] == "/etc/ssl/my-pacs-ca.pem"  # type: ignore[attr-defined]


def test_proxies_from_the_environment_are_used(mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    mocked.get(URL, body="ok")

    client().get(URL)

    assert mocked.calls[0].request.req_kwargs["proxies"]["http"] == "http://proxy.example:3128"  # type: ignore[attr-defined]


def test_proxies_are_those_requests_would_use_for_each_host_and_session_setting(
    mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "pacs.example")
    other = "http://other.example/dicom-web/studies"
    mocked.get(URL, body="ok")
    mocked.get(other, body="ok")
    session = requests.Session()
    http = HTTPClient(session)
    expected = []

    for url, session_proxies in [(URL, {}), (URL, {"http": "http://mine.example:8080"}), (other, {})]:
        session.proxies = session_proxies
        http.get(url)
        expected.append(session.merge_environment_settings(url, {}, None, None, None)["proxies"].get("http"))

    sent = [call.request.req_kwargs["proxies"].get("http") for call in mocked.calls]  # type: ignore[attr-defined]
    assert sent == expected == [None, "http://mine.example:8080", "http://proxy.example:3128"]


# --- raise_for_status --------------------------------------------------------------------


def test_server_error_names_url_status_reason_and_the_start_of_the_body(mocked: responses.RequestsMock) -> None:
    mocked.get(URL, status=400, body="  Bad\n  query:\tPatientName  ")

    with pytest.raises(ServerError) as raised:
        client().get(URL)

    error = raised.value
    assert (error.url, error.status, error.reason, error.server_message) == (
        URL, 400, "Bad Request", "Bad query: PatientName"
    )
    assert str(error) == f"400 Bad Request from {URL}: Bad query: PatientName"


def test_server_message_is_cut_to_500_characters(mocked: responses.RequestsMock) -> None:
    mocked.get(URL, status=500, body="x" * 100_000)

    with pytest.raises(ServerError) as raised:
        client().get(URL)

    assert raised.value.server_message == "x" * 500


def test_raise_for_status_lets_success_and_partial_content_pass(mocked: responses.RequestsMock) -> None:
    mocked.get(URL, status=206, body="part")
    response = requests.get(URL, timeout=1)

    raise_for_status(response)

    assert response.text == "part"


# --- bodies ------------------------------------------------------------------------------


class _BreakingSocketFile(io.RawIOBase):
    """A socket file that has ``data`` ready, then breaks as a reset connection does."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.data:
            raise ConnectionResetError(104, "Connection reset by peer")
        size = min(len(buffer), len(self.data))
        buffer[:size] = self.data[:size]
        self.data = self.data[size:]
        return size


def breaking_response(data: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response.url = URL
    response.raw = urllib3.HTTPResponse(
        body=io.BufferedReader(_BreakingSocketFile(data)), preload_content=False, status=200
    )
    return response


def test_iter_body_hands_on_what_arrived_before_the_connection_broke() -> None:
    response = breaking_response(b"two whole instances")
    chunks = iter_body(response, chunk_size=1 << 20)

    assert next(chunks) == b"two whole instances"  # not held back to fill a 1 MiB chunk
    with pytest.raises(ConnectionFailedError) as raised:
        next(chunks)

    assert "Connection reset by peer" in str(raised.value)
    assert response.raw.closed


def test_iter_body_yields_the_whole_body_and_closes_the_response(mocked: responses.RequestsMock) -> None:
    mocked.get(URL, body=b"0123456789" * 1000)
    response = requests.get(URL, stream=True, timeout=1)

    assert b"".join(iter_body(response, chunk_size=64)) == b"0123456789" * 1000
    assert response.raw.closed


def test_spool_keeps_a_small_body_in_memory_and_rewinds_it() -> None:
    body, size = spool([b"abc", b"def"], threshold=100)

    assert (body.read(), size) == (b"abcdef", 6)
    assert body.in_memory  # type: ignore[attr-defined]


def test_spool_moves_a_large_body_to_a_temporary_file() -> None:
    body, size = spool([b"a" * 60, b"b" * 60], threshold=100)

    assert size == 120
    assert not body.in_memory  # type: ignore[attr-defined]
    assert body.read() == b"a" * 60 + b"b" * 60


def test_spool_with_threshold_zero_keeps_nothing_in_memory() -> None:
    """As for multipart parts, a threshold of 0 means on disk at once (not, as for tempfile, never)."""
    body, size = spool([b"abc"], threshold=0)

    assert size == 3
    assert not body.in_memory  # type: ignore[attr-defined]
    assert body.read() == b"abc"


def test_spool_passes_a_broken_body_on() -> None:
    def chunks() -> Iterator[bytes]:
        yield b"abc"
        raise ConnectionFailedError("broken")

    with pytest.raises(ConnectionFailedError):
        spool(chunks())


# --- connection pool ---------------------------------------------------------------------


def test_pool_grows_to_the_number_of_workers_and_keeps_the_adapters_retries() -> None:
    session = requests.Session()
    session.mount("https://", HTTPAdapter(max_retries=2))

    ensure_pool_size(session, 32)

    adapter = session.get_adapter("https://pacs.example")
    assert isinstance(adapter, HTTPAdapter)
    assert adapter._pool_maxsize == 32  # type: ignore[attr-defined]
    assert adapter.max_retries.total == 2


def test_pool_leaves_an_adapter_the_user_mounted_alone() -> None:
    class Custom(HTTPAdapter):
        pass

    session = requests.Session()
    mine = Custom()
    session.mount("https://", mine)

    ensure_pool_size(session, 32)

    assert session.get_adapter("https://pacs.example") is mine


@pytest.mark.parametrize("downloader", [WadoRS, WadoURI])
def test_http_downloader_repr_hides_credentials_in_the_url(downloader: type[WadoRS] | type[WadoURI]) -> None:
    text = repr(downloader(requests.Session(), "https://user:secret@pacs.example/dicom-web"))
    assert "secret" not in text
    assert "pacs.example/dicom-web" in text
