"""VitreaAuth: session logins through a Vitrea-like gateway in front of the real Orthanc.

Each test sends real HTTP to :class:`~tests.support.vitrea_gateway.VitreaGateway`,
which logs users in and proxies accepted requests to the session's Orthanc.
Two faults no real server produces (a login answer that echoes the password,
a login that sets no cookie) are mocked with ``responses``.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import responses

from dicomtrolley._http import HTTPClient
from dicomtrolley.auth import DICOMTrolleyAuthError, VitreaAuth, create_session
from dicomtrolley.exceptions import ServerError
from tests.support.orthanc import OrthancServer
from tests.support.vitrea_gateway import LOGIN_PATH, SESSION_COOKIE, VitreaGateway

STUDIES = "/dicom-web/studies"
TIMEOUT = 30
THREADS = 8


@pytest.fixture
def gateway(orthanc: OrthancServer) -> Iterator[VitreaGateway]:
    """A gateway in front of the session's Orthanc, with fresh sessions and records."""
    with VitreaGateway(orthanc.base_url) as running:
        yield running


@pytest.fixture
def session(gateway: VitreaGateway) -> Iterator[requests.Session]:
    """A session that logs in to ``gateway`` with the right credentials."""
    with create_session(gateway.login_url, gateway.user, gateway.password) as logged:
        yield logged


def study_uids(response: requests.Response) -> set[str]:
    return {study["0020000D"]["Value"][0] for study in response.json()}


def sample_study_uids(orthanc: OrthancServer) -> set[str]:
    assert orthanc.sample is not None
    return {study.uid for study in orthanc.sample.studies}


def log_in_then_expire(gateway: VitreaGateway, session: requests.Session) -> None:
    """Log ``session`` in with a first request, then make the gateway forget every session it issued."""
    session.get(gateway.url + STUDIES, timeout=TIMEOUT)
    gateway.expire_sessions()


def run_together(count: int, task: Callable[[], requests.Response]) -> list[requests.Response | BaseException]:
    """Run ``task`` in ``count`` threads released at the same moment; return results or errors."""
    start = threading.Barrier(count, timeout=10)

    def run() -> requests.Response | BaseException:
        start.wait()
        try:
            return task()
        except (DICOMTrolleyAuthError, requests.RequestException) as error:
            return error

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: run(), range(count)))


# --- logging in and keeping the session --------------------------------------------------


@pytest.mark.integration
def test_first_request_logs_in_and_returns_the_upstream_answer(
    gateway: VitreaGateway, session: requests.Session, orthanc: OrthancServer
) -> None:
    response = session.get(gateway.url + STUDIES, timeout=TIMEOUT)

    assert response.status_code == 200
    assert study_uids(response) == sample_study_uids(orthanc)
    assert gateway.login_count == 1
    assert [seen.status for seen in gateway.seen_on(STUDIES)] == [401, 200]
    assert [old.status_code for old in response.history] == [401]


@pytest.mark.integration
def test_later_requests_reuse_the_session_without_logging_in_again(
    gateway: VitreaGateway, session: requests.Session
) -> None:
    session.get(gateway.url + STUDIES, timeout=TIMEOUT)
    second = session.get(gateway.url + STUDIES, timeout=TIMEOUT)

    assert second.status_code == 200
    assert second.history == []
    assert gateway.login_count == 1
    last = gateway.seen_on(STUDIES)[-1]
    assert (last.session, last.status) == (gateway.issued_sessions[0], 200)


@pytest.mark.integration
def test_request_after_session_expiry_succeeds_with_one_login_and_the_new_cookie(
    gateway: VitreaGateway, session: requests.Session, orthanc: OrthancServer
) -> None:
    log_in_then_expire(gateway, session)

    response = session.get(gateway.url + STUDIES, timeout=TIMEOUT)

    assert response.status_code == 200
    assert study_uids(response) == sample_study_uids(orthanc)
    assert gateway.login_count == 2
    old, new = gateway.issued_sessions
    refused, resent = gateway.seen_on(STUDIES)[-2:]
    assert (refused.session, refused.status) == (old, 401)
    assert (resent.session, resent.status) == (new, 200)
    assert resent.headers["cookie"] == f"{SESSION_COOKIE}={new}"
    assert [old.status_code for old in response.history] == [401]
    assert response.history[0].content == b"no valid session; log in first"


@pytest.mark.integration
def test_resend_keeps_the_other_cookies_of_the_session(gateway: VitreaGateway, session: requests.Session) -> None:
    session.cookies.set("theme", "dark")
    log_in_then_expire(gateway, session)

    session.get(gateway.url + STUDIES, timeout=TIMEOUT)

    resent = gateway.seen_on(STUDIES)[-1]
    cookies = sorted(pair.strip() for pair in resent.headers["cookie"].split(";"))
    assert cookies == sorted([f"{SESSION_COOKIE}={gateway.issued_sessions[-1]}", "theme=dark"])


@pytest.mark.integration
def test_resent_post_sends_its_file_body_again(
    gateway: VitreaGateway, session: requests.Session, orthanc: OrthancServer
) -> None:
    log_in_then_expire(gateway, session)
    query = json.dumps({"Level": "Study", "Query": {}, "Expand": True}).encode()

    response = session.post(gateway.url + "/tools/find", data=io.BytesIO(query), timeout=TIMEOUT)

    assert response.status_code == 200
    found = {study["MainDicomTags"]["StudyInstanceUID"] for study in response.json()}
    assert found == sample_study_uids(orthanc)
    assert [seen.status for seen in gateway.seen_on("/tools/find")] == [401, 200]


# --- concurrency -------------------------------------------------------------------------


@pytest.mark.integration
def test_concurrent_401s_cause_exactly_one_login_and_every_request_succeeds(
    orthanc: OrthancServer,
) -> None:
    with (
        VitreaGateway(orthanc.base_url, login_delay=0.3) as gateway,
        create_session(gateway.login_url, gateway.user, gateway.password) as session,
    ):
        log_in_then_expire(gateway, session)
        gateway.hold_refusals(THREADS)

        results = run_together(THREADS, lambda: session.get(gateway.url + STUDIES, timeout=TIMEOUT))

        assert [getattr(result, "status_code", result) for result in results] == [200] * THREADS
        assert (gateway.login_attempts, gateway.login_count) == (2, 2)
        after_expiry = gateway.seen_on(STUDIES)[2:]
        assert sorted(seen.status for seen in after_expiry) == [200] * THREADS + [401] * THREADS
        new = gateway.issued_sessions[-1]
        assert all(seen.session == new for seen in after_expiry if seen.status == 200)


@pytest.mark.integration
def test_concurrent_401s_with_a_wrong_password_try_to_log_in_only_once(orthanc: OrthancServer) -> None:
    with (
        VitreaGateway(orthanc.base_url, login_delay=0.3) as gateway,
        create_session(gateway.login_url, gateway.user, "not-the-password") as session,
    ):
        gateway.hold_refusals(THREADS)

        results = run_together(THREADS, lambda: session.get(gateway.url + STUDIES, timeout=TIMEOUT))

        assert all(isinstance(result, DICOMTrolleyAuthError) for result in results)
        assert all("401" in str(result) for result in results)
        assert gateway.login_attempts == 1


# --- failures ------------------------------------------------------------------------------


@pytest.mark.integration
def test_401_right_after_a_login_raises_instead_of_logging_in_again(
    gateway: VitreaGateway, session: requests.Session
) -> None:
    gateway.refuse(STUDIES)

    with pytest.raises(DICOMTrolleyAuthError, match="the credentials were accepted") as raised:
        session.get(gateway.url + STUDIES, timeout=TIMEOUT)

    assert f"GET {gateway.url}{STUDIES}" in str(raised.value)
    assert gateway.login_attempts == 1
    assert [seen.status for seen in gateway.seen_on(STUDIES)] == [401, 401]


@pytest.mark.integration
def test_http_client_passes_the_auth_error_on_without_retrying(
    gateway: VitreaGateway, session: requests.Session
) -> None:
    gateway.refuse(STUDIES)

    with pytest.raises(DICOMTrolleyAuthError, match="the credentials were accepted"):
        HTTPClient(session).get(gateway.url + STUDIES)

    assert gateway.login_attempts == 1


@pytest.mark.integration
@pytest.mark.parametrize(
    ("wrong", "status", "reason", "message"),
    [
        ("password", 401, "Unauthorized", "invalid user name or password"),
        ("realm", 403, "Forbidden", "unknown realm"),
    ],
)
def test_refused_login_raises_with_status_reason_and_login_url(
    gateway: VitreaGateway, wrong: str, status: int, reason: str, message: str
) -> None:
    credentials = {"user": gateway.user, "password": gateway.password, "realm": gateway.realm}
    credentials[wrong] = "wrong"
    session = create_session(gateway.login_url, **credentials)

    with pytest.raises(DICOMTrolleyAuthError) as raised:
        session.get(gateway.url + STUDIES, timeout=TIMEOUT)

    assert str(raised.value) == f"login to {gateway.login_url} failed: {status} {reason}: {message}"
    assert gateway.login_attempts == 1
    assert [seen.status for seen in gateway.seen_on(STUDIES)] == [401]


@pytest.mark.integration
def test_login_that_hangs_times_out_once_for_all_waiting_threads(
    orthanc: OrthancServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dicomtrolley.auth.DEFAULT_TIMEOUT", (5.0, 0.2))
    with (
        VitreaGateway(orthanc.base_url, login_delay=1.0) as gateway,
        create_session(gateway.login_url, gateway.user, gateway.password) as session,
    ):
        gateway.hold_refusals(THREADS)

        results = run_together(THREADS, lambda: session.get(gateway.url + STUDIES, timeout=TIMEOUT))

        assert sum(isinstance(result, requests.ReadTimeout) for result in results) == 1
        waited = [result for result in results if isinstance(result, DICOMTrolleyAuthError)]
        assert len(waited) == THREADS - 1
        assert all(f"login to {gateway.login_url} failed: ReadTimeout" in str(error) for error in waited)
        assert gateway.login_attempts == 1


@responses.activate
def test_login_error_message_blanks_a_password_the_server_echoes() -> None:
    password = "echo-me-9f3c"
    responses.get("http://vitrea.test/studies", status=401)
    responses.post("http://vitrea.test/login", status=401, body=f"password '{password}' is wrong " + "x" * 600)
    session = create_session("http://vitrea.test/login", "someone", password)

    with pytest.raises(DICOMTrolleyAuthError) as raised:
        session.get("http://vitrea.test/studies", timeout=TIMEOUT)

    assert password not in str(raised.value)
    assert "password '***' is wrong" in str(raised.value)


@responses.activate
def test_login_that_sets_no_session_cookie_raises() -> None:
    responses.get("http://vitrea.test/studies", status=401)
    responses.post("http://vitrea.test/login", status=200, json={"token": "abc"})
    session = create_session("http://vitrea.test/login", "someone", "secret")

    with pytest.raises(DICOMTrolleyAuthError, match="set no session cookie"):
        session.get("http://vitrea.test/studies", timeout=TIMEOUT)


# --- keeping the password secret ------------------------------------------------------------


@pytest.mark.integration
def test_password_never_appears_in_log_records(
    gateway: VitreaGateway, session: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "dicomtrolley"):
        caplog.set_level(logging.DEBUG, logger=name)
    wrong = create_session(gateway.login_url, gateway.user, "wrong-Pa55-4d2a")

    log_in_then_expire(gateway, session)
    session.get(gateway.url + STUDIES, timeout=TIMEOUT)
    with pytest.raises(DICOMTrolleyAuthError):
        wrong.get(gateway.url + STUDIES, timeout=TIMEOUT)
    gateway.refuse("/system")
    with pytest.raises(DICOMTrolleyAuthError):
        session.get(gateway.url + "/system", timeout=TIMEOUT)

    logged = "\n".join(f"{record.getMessage()} {record.args!r}" for record in caplog.records)
    assert f"logged in to {gateway.login_url} as {gateway.user}" in caplog.messages
    assert any(record.name.startswith("urllib3") for record in caplog.records)
    assert any(record.levelno == logging.DEBUG and record.name == "dicomtrolley.auth" for record in caplog.records)
    assert gateway.password not in logged
    assert "wrong-Pa55-4d2a" not in logged


@pytest.mark.integration
def test_password_never_appears_in_errors_or_reprs(gateway: VitreaGateway, session: requests.Session) -> None:
    wrong = create_session(gateway.login_url, gateway.user, "wrong-Pa55-4d2a")
    with pytest.raises(DICOMTrolleyAuthError) as refused_login:
        wrong.get(gateway.url + STUDIES, timeout=TIMEOUT)
    gateway.refuse(STUDIES)
    with pytest.raises(DICOMTrolleyAuthError) as refused_resource:
        session.get(gateway.url + STUDIES, timeout=TIMEOUT)

    texts = {
        "login error": f"{refused_login.value} {refused_login.value!r}",
        "resource error": f"{refused_resource.value} {refused_resource.value!r}",
        "auth": f"{session.auth} {session.auth!r} {wrong.auth!r}",
    }
    assert repr(session.auth) == (
        f"VitreaAuth(login_url={gateway.login_url!r}, user={gateway.user!r}, realm='DefaultSystemRealm')"
    )
    for text in texts.values():
        assert gateway.password not in text
        assert "wrong-Pa55-4d2a" not in text


@pytest.mark.integration
def test_credential_headers_reach_only_the_login_path(gateway: VitreaGateway, session: requests.Session) -> None:
    session.get(gateway.url + STUDIES, timeout=TIMEOUT)
    session.get(gateway.url + "/system", timeout=TIMEOUT)
    gateway.expire_sessions()
    session.get(gateway.url + STUDIES, timeout=TIMEOUT)

    logins = gateway.seen_on(LOGIN_PATH)
    others = [seen for seen in gateway.seen if seen.path != LOGIN_PATH]
    assert [login.headers["x-password"] for login in logins] == [gateway.password] * 2
    assert len(others) == 5
    for seen in others:
        assert not {"x-password", "x-userid", "x-realm"} & seen.headers.keys(), seen.path


@pytest.mark.integration
def test_every_request_is_sent_with_keep_alive(gateway: VitreaGateway, session: requests.Session) -> None:
    # requests asks for keep-alive by default; without that default the header seen is the auth's.
    del session.headers["Connection"]
    log_in_then_expire(gateway, session)
    session.get(gateway.url + "/system", timeout=TIMEOUT)

    seen = gateway.seen
    assert [request.path for request in seen] == [STUDIES, LOGIN_PATH, STUDIES, "/system", LOGIN_PATH, "/system"]
    assert {request.headers["connection"] for request in seen} == {"keep-alive"}


# --- other kinds of auth --------------------------------------------------------------------


@pytest.mark.integration
def test_basic_auth_on_the_session_works_through_http_client(orthanc_factory: Callable[..., OrthancServer]) -> None:
    server = orthanc_factory(AuthenticationEnabled=True, RegisteredUsers={"alice": "basic-Pa55"})
    with requests.Session() as anonymous, requests.Session() as session:
        session.auth = ("alice", "basic-Pa55")

        studies = HTTPClient(session).get(server.dicomweb_url + "/studies").json()

        assert {study["0020000D"]["Value"][0] for study in studies} == sample_study_uids(server)
        with pytest.raises(ServerError) as refused:
            HTTPClient(anonymous).get(server.dicomweb_url + "/studies")
        assert refused.value.status == 401


def test_vitrea_auth_repr_names_everything_but_the_password() -> None:
    auth = VitreaAuth("https://vitrea.test/login", "someone", "hidden-Pa55", realm="Radiology")

    assert repr(auth) == "VitreaAuth(login_url='https://vitrea.test/login', user='someone', realm='Radiology')"


def test_auth_error_can_still_be_imported_from_the_auth_module() -> None:
    from dicomtrolley import auth, exceptions

    assert auth.DICOMTrolleyAuthError is exceptions.DICOMTrolleyAuthError
