"""Logging in to servers: a Vitrea session cookie, or a bearer token from a cloud or a command.

Vitrea answers 401 to any request without a valid session cookie. A client
logs in with a POST that carries the user, password and realm in headers, and
gets a session cookie back; the server checks that cookie only (the token in
the login answer is never asked for). Sessions expire on the server's
schedule, so the client must log in again whenever a 401 comes back, and must
do it once for all threads that hit the expiry together.

:class:`VitreaAuth` does this as a ``requests`` auth handler, so every searcher
and downloader that takes a ``requests.Session`` works with it unchanged::

    session = create_session("https://vitrea/login", "user", "password")
    searcher = QidoRS(session, "https://vitrea/dicom-web")

Cloud archives (Google Cloud Healthcare, Azure Health Data Services) take an
OAuth bearer token that expires after an hour or so. :class:`BearerAuth`
keeps one on every request with the same machinery: it asks its provider
(:mod:`dicomtrolley.tokens`) for a token, renews it shortly before it expires
and whenever a 401 comes back, once for all threads::

    session = requests.Session()
    session.auth = BearerAuth(GoogleCredentials())
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from requests.cookies import RequestsCookieJar, get_cookie_header

from dicomtrolley._http import DEFAULT_TIMEOUT, redact_url
from dicomtrolley.exceptions import DICOMTrolleyAuthError
from dicomtrolley.tokens import (
    AzureCredentials,
    BearerToken,
    GoogleCredentials,
    TokenCommand,
    TokenProvider,
    as_provider,
)

__all__ = [
    "AzureCredentials",
    "BearerAuth",
    "BearerToken",
    "DICOMTrolleyAuthError",
    "GoogleCredentials",
    "TokenCommand",
    "TokenProvider",
    "VitreaAuth",
    "create_session",
]

logger = logging.getLogger(__name__)

# Keyword arguments of HTTPAdapter.send that a login inherits from the request
# that triggered it: the user's TLS and proxy settings. Not the timeout (a
# login gets DEFAULT_TIMEOUT) and not stream (a login answer is small).
_INHERITED_SEND_ARGUMENTS = ("verify", "cert", "proxies")

# How much of a server's error body goes into an exception message.
_MESSAGE_CHARS = 500


def create_session(login_url: str, user: str, password: str, realm: str = "DefaultSystemRealm") -> requests.Session:
    """Return a ``requests.Session`` that logs in to Vitrea whenever it has to.

    Parameters
    ----------
    login_url
        The URL to POST the login to.
    user
        The user name.
    password
        The password; sent to ``login_url`` only.
    realm
        The Vitrea realm the user belongs to.
    """
    session = requests.Session()
    session.auth = VitreaAuth(login_url, user, password, realm)
    return session


class _RenewingAuth(AuthBase):
    """A credential on every request, renewed once for all threads when a 401 comes back.

    The machinery :class:`VitreaAuth` and :class:`BearerAuth` share: a
    subclass says how to put its credential on a request (``_apply``) and
    how to get a new one (``_renew``); this class sends each request with
    the current credential and, when one comes back 401, renews the
    credential (once, however many threads were refused at the same time)
    and sends that request again, exactly once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # How many renewals have been tried. A request remembers the value it
        # was sent with; a 401 for an older value means another thread has
        # renewed since: resend with its credential, or report its failure.
        self._generation = 0
        self._renew_failure: str | None = None

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        """Prepare a request: keep-alive, the current credential, the 401 hook."""
        r.headers["Connection"] = "keep-alive"
        with self._lock:
            self._before_send()
            generation = self._generation
            self._apply(r)
        hook = functools.partial(self._on_response, generation=generation, body_position=_body_position(r))
        r.hooks["response"].append(hook)
        return r

    def _before_send(self) -> None:
        """Called with the lock held before each request: renew a credential known to be stale."""

    def _apply(self, request: requests.PreparedRequest) -> None:
        """Put the current credential on ``request`` (called with the lock held)."""
        raise NotImplementedError

    def _renew(self, adapter: HTTPAdapter, send_kwargs: dict[str, Any]) -> None:
        """Get a new credential (called with the lock held); record a failure in ``_renew_failure``."""
        raise NotImplementedError

    def _refused_after_renewal(self, target: str, retried: requests.Response) -> str:
        """The message of the error raised when a request is refused again right after a renewal."""
        raise NotImplementedError

    def _on_response(
        self,
        response: requests.Response,
        *,
        generation: int,
        body_position: int | None,
        **send_kwargs: Any,
    ) -> requests.Response:
        """Renew the credential if needed and resend a refused request once; pass anything else through."""
        if response.status_code != 401:
            return response
        request = response.request
        target = f"{request.method} {redact_url(request.url or '')}"
        adapter = response.connection
        _release(response)
        with self._lock:
            if self._generation == generation:
                logger.info("%s answered 401; renewing the credential and sending it again", target)
                self._renew(adapter, send_kwargs)
            elif self._renew_failure is not None:
                # Another thread's renewal failed since this request went out;
                # trying the same credentials again could lock the account.
                raise DICOMTrolleyAuthError(self._renew_failure)
            else:
                logger.debug("%s answered 401, but another thread has renewed the credential since", target)
            resend = request.copy()
            self._apply(resend)
        if body_position is not None:
            _rewind(resend, body_position)
        logger.debug("resending %s with the current credential", target)
        retried = adapter.send(resend, **send_kwargs)
        retried.history.append(response)
        if retried.status_code == 401:
            raise DICOMTrolleyAuthError(self._refused_after_renewal(target, retried))
        return retried


class VitreaAuth(_RenewingAuth):
    """Keep a Vitrea session cookie on every request; log in again on a 401.

    Each request goes out with ``Connection: keep-alive`` and the current
    session cookie. When one comes back 401, the auth logs in (once, however
    many threads were refused at the same time) and sends that request again
    with the new cookie, exactly once.

    Parameters
    ----------
    login_url
        The URL to POST the login to.
    user
        The user name (sent as ``X-Userid``).
    password
        The password (sent as ``X-Password``, to ``login_url`` only, and kept
        out of logs, messages and ``repr``).
    realm
        The Vitrea realm (sent as ``X-Realm``).

    Raises
    ------
    DICOMTrolleyAuthError
        From the request that needed a login, when the login is refused, when
        it sets no cookie, or when the request is refused again right after a
        successful login. A login that cannot connect or times out raises the
        usual ``requests`` exception in the thread that tried it, and this
        error in the threads that were waiting for it.
    """

    def __init__(self, login_url: str, user: str, password: str, realm: str = "DefaultSystemRealm") -> None:
        super().__init__()
        self.login_url = login_url
        self.user = user
        self.password = password
        self.realm = realm
        self._cookies = RequestsCookieJar()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(login_url={redact_url(self.login_url)!r}, user={self.user!r}, realm={self.realm!r})"
        )

    def _apply(self, request: requests.PreparedRequest) -> None:
        self._put_session_cookie(request)

    def _refused_after_renewal(self, target: str, retried: requests.Response) -> str:
        message = self._server_message(retried)
        return (
            f"{target} was refused (401 {retried.reason}) right after logging in to "
            f"{redact_url(self.login_url)}: the credentials were accepted but the resource "
            f"was still refused{message}"
        )

    def _renew(self, adapter: HTTPAdapter, send_kwargs: dict[str, Any]) -> None:
        """POST the credentials to the login URL; keep the session cookie it sets.

        Called with the lock held. Sent once: a login is not idempotent, and
        repeating refused credentials can lock an account, so a failure is
        reported, not retried.
        """
        login = requests.Request(
            "POST",
            self.login_url,
            headers={
                "X-Userid": self.user,
                "X-Password": self.password,
                "X-Realm": self.realm,
                "Connection": "keep-alive",
            },
        ).prepare()
        inherited = {key: send_kwargs[key] for key in _INHERITED_SEND_ARGUMENTS if key in send_kwargs}
        login_url = redact_url(self.login_url)
        # Counted before sending: threads waiting for this login must not try
        # again if it fails, however it fails.
        self._generation += 1
        self._cookies = RequestsCookieJar()
        try:
            response = adapter.send(login, timeout=DEFAULT_TIMEOUT, **inherited)
        except requests.RequestException as error:
            self._renew_failure = f"login to {login_url} failed: {type(error).__name__}: {error}"
            raise
        if response.status_code != 200:
            message = self._server_message(response)
            self._renew_failure = f"login to {login_url} failed: {response.status_code} {response.reason}{message}"
            raise DICOMTrolleyAuthError(self._renew_failure)
        cookies = response.cookies
        _release(response)
        if not cookies:
            self._renew_failure = f"login to {login_url} answered 200 but set no session cookie"
            raise DICOMTrolleyAuthError(self._renew_failure)
        self._cookies = cookies
        self._renew_failure = None
        logger.info("logged in to %s as %s", login_url, self.user)

    def _put_session_cookie(self, request: requests.PreparedRequest) -> None:
        """Replace this auth's cookies in the request's Cookie header with the current ones.

        Cookies of other names (from the user's session) stay. A copied
        request carries the Cookie header it was first sent with, so a resend
        must go through here, or it would carry the expired session again.
        """
        own_names = {cookie.name for cookie in self._cookies}
        kept = [
            pair.strip()
            for pair in request.headers.pop("Cookie", "").split(";")
            if pair.strip() and pair.split("=", 1)[0].strip() not in own_names
        ]
        # Only asked after the old header is gone: a cookie jar adds nothing
        # to a request that already has a Cookie header.
        own = get_cookie_header(self._cookies, request)  # type: ignore[no-untyped-call]
        if own:
            kept.append(own)
        if kept:
            request.headers["Cookie"] = "; ".join(kept)

    def _server_message(self, response: requests.Response) -> str:
        """The start of an error body, as ``": text"``, with the password blanked out."""
        # Blank the password before cutting the text short, so that no part
        # of it survives at the cut: read enough bytes for the whole of any
        # occurrence that starts within the part that is kept.
        wanted = 4 * (_MESSAGE_CHARS + len(self.password))
        start = bytearray()
        try:
            for chunk in response.iter_content(wanted):
                start += chunk
                if len(start) >= wanted:
                    break
        except requests.RequestException as error:
            logger.debug("could not read the error body: %s", type(error).__name__)
        finally:
            response.close()
        text = start.decode("utf-8", "replace")
        if self.password:
            text = text.replace(self.password, "***")
        text = " ".join(text[:_MESSAGE_CHARS].split())
        return f": {text}" if text else ""


class BearerAuth(_RenewingAuth):
    """An ``Authorization: Bearer`` token on every request, renewed before it expires and after a 401.

    The token comes from ``provider``: it is asked at the first request, again
    when the token is about to expire (a quarter of its life, at most a
    minute, before), and again when a request comes back 401 (once, however
    many threads were refused at the same time), after which the refused
    request is sent once more.

    The token never appears in logs, messages or ``repr``; the auth pickles
    as its provider only, so another process (a Dask worker) asks its own.

    Parameters
    ----------
    provider
        A :data:`~dicomtrolley.tokens.TokenProvider` (such as
        :class:`~dicomtrolley.tokens.GoogleCredentials`,
        :class:`~dicomtrolley.tokens.AzureCredentials` or
        :class:`~dicomtrolley.tokens.TokenCommand`), or a ``google-auth``
        credentials object, or an ``azure-identity`` credential (for Azure's
        DICOM service scope), adapted to one.

    Raises
    ------
    DICOMTrolleyAuthError
        From a request, when the provider fails, or when the request is
        refused again with a token the provider has just given.
    """

    def __init__(self, provider: TokenProvider | object) -> None:
        super().__init__()
        self.provider = as_provider(provider)
        self._token: BearerToken | None = None
        self._renew_at = 0.0
        self._lifetime: float | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.provider!r})"

    @property
    def tokens_asked(self) -> int:
        """How many times the provider has been asked for a token: the first, and each renewal."""
        return self._generation

    @property
    def lifetime(self) -> float | None:
        """Seconds the latest token had to live when it came; None when the provider did not say (a token command).

        What a probe reports of a server's tokens; the token itself is never exposed.
        """
        return self._lifetime

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its provider: the token stays in this process."""
        return (type(self), (self.provider,))

    def _before_send(self) -> None:
        stale = self._token is None or (self._token.expires_at is not None and time.time() >= self._renew_at)
        if stale:
            if self._token is not None:
                logger.info("the bearer token is about to expire; asking %r for a new one", self.provider)
            self._renew(None, {})

    def _apply(self, request: requests.PreparedRequest) -> None:
        if self._token is not None:
            request.headers["Authorization"] = f"Bearer {self._token.value}"

    def _renew(self, adapter: HTTPAdapter | None, send_kwargs: dict[str, Any]) -> None:
        """Ask the provider for a new token (the lock held, so one thread asks for all)."""
        self._generation += 1
        self._token = None
        try:
            answer = self.provider()
        except DICOMTrolleyAuthError as error:
            self._renew_failure = str(error)
            raise
        token = answer if isinstance(answer, BearerToken) else BearerToken(answer)
        now = time.time()
        self._lifetime = None if token.expires_at is None else token.expires_at - now
        if token.expires_at is not None:
            self._renew_at = token.expires_at - min(60.0, max(0.0, token.expires_at - now) / 4)
        self._token = token
        self._renew_failure = None
        left = f"valid for {self._lifetime:.0f} s" if self._lifetime is not None else "lifetime unknown"
        logger.info("got a bearer token from %r (%s)", self.provider, left)

    def _refused_after_renewal(self, target: str, retried: requests.Response) -> str:
        _release(retried)
        return (
            f"{target} was refused (401 {retried.reason}) with a token {self.provider!r} had just given: "
            "the token is valid but not for this server, or lacks the rights"
        )


def _body_position(request: requests.PreparedRequest) -> int | None:
    """Where a file-like body starts, so that a resend can send it again; else None."""
    tell = getattr(request.body, "tell", None)
    if tell is None:
        return None
    try:
        position = tell()
    except OSError:
        return None
    return position if isinstance(position, int) else None


def _rewind(request: requests.PreparedRequest, position: int) -> None:
    seek = getattr(request.body, "seek", None)
    if seek is not None:
        seek(position)


def _release(response: requests.Response) -> None:
    """Read what is left of a response and close it, so its connection returns to the pool."""
    try:
        _ = response.content
    except requests.RequestException as error:
        # The connection is dropped instead of reused; nothing else is lost.
        logger.debug("could not drain %s: %s", redact_url(response.url), type(error).__name__)
    finally:
        response.close()
