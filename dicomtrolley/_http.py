"""How HTTP requests go out: timeouts, retries, pool size, headers, query encoding.

Every HTTP searcher and downloader sends its requests through an
:class:`HTTPClient`, so one place decides what a good request looks like and
how a bad response becomes a :class:`~dicomtrolley.exceptions.ServerError`
that names the URL, the status and the server's message.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO
from urllib.parse import quote, urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from dicomtrolley._spooled import SPILL_THRESHOLD, SpooledChunks
from dicomtrolley._version import __version__
from dicomtrolley.exceptions import ConnectionFailedError, ResponseTooLargeError, ServerError

logger = logging.getLogger(__name__)

USER_AGENT = f"dicomtrolley/{__version__} python-requests/{requests.__version__}"

Timeout = float | tuple[float, float]
Body = bytes | Iterable[bytes | bytearray]
"""A request body: bytes, or an iterable that yields the same pieces each time it is iterated."""
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 300.0)
"""Seconds to connect, and seconds to wait between bytes once connected."""

QueryValue = str | int | Sequence[str]

# Characters a query value may keep as they are. RFC 3986 allows more than
# Python's urlencode keeps, and some servers (Orthanc 1.10) never decode
# %2A or %2F, so wildcards and slashes must go out as written. ("^" is not
# allowed bare in a query; urllib3 escapes it to %5E whatever we do, so on
# such servers a person name matches only through wildcards: "DOE*JOHN".)
_SAFE_IN_VALUE = "*?^/,:;@!$'()~.-_"


def encode_query(params: Mapping[str, QueryValue]) -> str:
    """Build a query string that escapes only what it must.

    Space, ``%``, ``&``, ``#``, ``+``, ``=`` and non-ASCII are escaped; ``*``,
    ``^``, ``/``, ``,`` and ``:`` are kept. A sequence value repeats the key.

    Examples
    --------
    >>> encode_query({"PatientName": "DOE^J*", "includefield": ["00100010", "StudyDate"]})
    'PatientName=DOE^J*&includefield=00100010&includefield=StudyDate'
    """
    pairs = []
    for key, value in params.items():
        values = [value] if isinstance(value, (str, int)) else list(value)
        for one in values:
            pairs.append(f"{quote(key, safe=_SAFE_IN_VALUE)}={quote(str(one), safe=_SAFE_IN_VALUE)}")
    return "&".join(pairs)


def redact_url(url: str) -> str:
    """The URL without user and password, for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def raise_for_status(response: requests.Response) -> None:
    """Raise :class:`ServerError` for a 4xx or 5xx response, quoting the server's message.

    The body is read only for error responses, and only its first kilobyte:
    from the connection when the response is streamed, from memory when
    requests has read it already (then the connection holds nothing more).
    """
    if response.status_code < 400:
        return
    message = ""
    try:
        start = next(response.iter_content(1024), b"")
        message = start.decode("utf-8", "replace").strip()
    except (OSError, ValueError, requests.RequestException):
        message = "(the error body could not be read)"
    finally:
        response.close()
    message = " ".join(message.split())[:500]
    raise ServerError(redact_url(response.url), response.status_code, response.reason or "", message)


RETRY_AFTER_SPREAD = 0.25
"""How much later than a server's Retry-After a retry may go, as a share of it (jitter)."""


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often an idempotent request is tried again.

    Parameters
    ----------
    attempts
        Tries in all, the first included; 1 switches retrying off.
    backoff
        Seconds before the first retry; doubles each time, with jitter. A
        Retry-After header replaces it, also with jitter (never sooner than it says).
    max_backoff
        The longest wait between tries, Retry-After included.
    statuses
        Statuses that mean "try again later".
    """

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0
    statuses: frozenset[int] = frozenset({429, 502, 503, 504})

    def delay(self, attempt: int, response: requests.Response | None = None) -> float:
        """Seconds to wait before try number ``attempt + 1``."""
        if response is not None:
            after = _retry_after(response.headers.get("Retry-After"))
            if after is not None:
                # Never sooner than asked, up to a quarter later: workers told the same
                # Retry-After at once must not all come back in the same instant.
                spread = after * RETRY_AFTER_SPREAD * random.random()  # noqa: S311 - jitter, not crypto
                return float(min(after + spread, self.max_backoff))
        return backoff_delay(attempt, self.backoff, self.max_backoff)


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failure number ``attempt``: ``base`` doubled per failure, jittered, at most ``cap``.

    The jitter (0.5 to 1.5 times) keeps clients that failed together from coming back together.
    """
    grown: float = base * 2.0 ** (attempt - 1)
    return min(grown * (0.5 + random.random()), cap)  # noqa: S311 - jitter, not crypto


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HTTPClient:
    """Sends requests on a user's ``requests.Session`` with the package's defaults.

    The session keeps whatever the user configured (auth, certificates,
    proxies, cookies); the client adds a timeout, retries, a User-Agent and a
    connection pool large enough for its workers.

    Parameters
    ----------
    session
        The session to send on; shared by a searcher and a downloader.
    timeout
        Seconds to connect and to wait for data, as ``(connect, read)`` or one number.
    retry
        The retry policy for idempotent requests.
    pool_size
        Connections kept per host: at least the number of workers that use the session.
    observe
        Called with every answer, and whether the request will be tried again,
        before it is retried or returned: shows what retries and a renewing
        auth smooth over (a 429 waited out; a 401 replayed after a renewal is
        in the answer's ``history``). The probe reports rate limits and token
        renewals this way.
    """

    def __init__(
        self,
        session: requests.Session,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        pool_size: int = 10,
        observe: Callable[[requests.Response, bool], None] | None = None,
    ) -> None:
        self.session = session
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.observe = observe
        self._proxies: dict[tuple[object, ...], dict[str, str]] = {}
        # Sized at the first request, not here: building a searcher or
        # downloader never touches the session (4.x scripts build them early).
        self._pool_size: int | None = pool_size

    def get(
        self,
        url: str,
        *,
        params: Mapping[str, QueryValue] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """GET ``url`` with retries; return a response with a status below 400.

        Raises
        ------
        ServerError
            The server answered 4xx or 5xx (after the retries, for retryable statuses).
        ConnectionFailedError
            The server could not be reached or stopped answering (after the retries).
        """
        full_url = f"{url}?{encode_query(params)}" if params else url
        response = self.send("GET", full_url, headers=headers, stream=stream)
        raise_for_status(response)
        return response

    def send(
        self,
        method: str,
        url: str,
        *,
        data: Body | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        auth: AuthBase | None = None,
    ) -> requests.Response:
        """Send a request that is safe to repeat, with retries; return the response whatever its status.

        For requests that only read, also when sent as a POST (a RAD-69
        retrieve, say), and for requests whose repetition changes nothing (a
        STOW-RS store), so that a caller can read an error answer before
        :func:`raise_for_status`. ``data`` is sent as it is, again on a retry:
        an iterable body must yield the same bytes each time it is iterated.
        ``auth``, when given, replaces the session's for this request (the
        probe's request without credentials).

        Raises
        ------
        ConnectionFailedError
            The server could not be reached or stopped answering (after the retries).
        """
        all_headers = {"User-Agent": USER_AGENT}
        all_headers.update(headers or {})
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._send(method, url, all_headers, data, stream, auth)
            except requests.RequestException as error:
                if attempt >= self.retry.attempts or not _is_retryable_error(error):
                    raise ConnectionFailedError(
                        f"{method} {redact_url(url)} failed: {error}"
                    ) from error
                wait = self.retry.delay(attempt)
                logger.warning(
                    "%s %s failed (%s); try %d of %d in %.1f s",
                    method, redact_url(url), type(error).__name__, attempt + 1, self.retry.attempts, wait,
                )
                time.sleep(wait)
                continue
            again = response.status_code in self.retry.statuses and attempt < self.retry.attempts
            if self.observe is not None:
                self.observe(response, again)
            if again:
                wait = self.retry.delay(attempt, response)
                asked = response.headers.get("Retry-After")
                logger.warning(
                    "%s %s answered %d%s; try %d of %d in %.1f s",
                    method, redact_url(url), response.status_code, f" (Retry-After: {asked})" if asked else "",
                    attempt + 1, self.retry.attempts, wait,
                )
                response.close()
                time.sleep(wait)
                continue
            return response

    def _send(
        self, method: str, url: str, headers: dict[str, str], data: Body | None, stream: bool, auth: AuthBase | None
    ) -> requests.Response:
        """What ``session.request`` does, with the proxy settings of the environment looked up once per host.

        ``Session.request`` reads every environment variable twice per
        request to find proxy settings, a cost that adds up over many small
        requests (see docs/performance.md).
        """
        if self._pool_size is not None:
            ensure_pool_size(self.session, self._pool_size)
            self._pool_size = None
        prepared = self.session.prepare_request(requests.Request(method, url, headers=headers, data=data, auth=auth))
        return self.session.send(
            prepared, stream=stream, timeout=self.timeout, verify=tls_verify(self.session),
            proxies=self._proxies_for(prepared.url or url), allow_redirects=True,
        )

    def _proxies_for(self, url: str) -> dict[str, str]:
        """The session's proxies merged with the environment's for ``url``'s host, as requests merges them."""
        parts = urlsplit(url)
        session = self.session
        key = (parts.scheme, parts.netloc, session.trust_env, tuple(sorted(session.proxies.items())))
        proxies = self._proxies.get(key)
        if proxies is None:
            settings = session.merge_environment_settings(url, {}, None, None, None)
            proxies = self._proxies[key] = dict(settings["proxies"])
        return dict(proxies)


CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
"""Environment variables naming a CA file, in the order they are read (requests' two, then OpenSSL's)."""


def tls_verify(session: requests.Session) -> bool | str:
    """What to verify a server's certificate with: the session's own choice, else the environment's CA file.

    A session's CA file or ``verify=False`` is a deliberate choice and wins
    (requests itself lets ``REQUESTS_CA_BUNDLE`` override it). A session left at
    the default ``True`` trusts the CA file the environment names, as requests
    and OpenSSL tools do, so a private certificate authority needs no code.
    """
    verify = session.verify
    if verify is True and session.trust_env:
        return next((path for name in CA_BUNDLE_VARIABLES if (path := os.environ.get(name))), True)
    return verify if isinstance(verify, str) else bool(verify)


def _is_retryable_error(error: requests.RequestException) -> bool:
    # Connection problems and timeouts may pass; a bad URL or TLS failure will not.
    if isinstance(error, requests.exceptions.SSLError):
        return False
    return isinstance(
        error,
        (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError),
    )


_pool_lock = threading.Lock()


def ensure_pool_size(session: requests.Session, size: int) -> None:
    """Give the session's plain HTTP adapters at least ``size`` pooled connections per host.

    Adapters the user mounted themselves (any subclass) are left alone.
    """
    with _pool_lock:
        for prefix, adapter in list(session.adapters.items()):
            if type(adapter) is not HTTPAdapter:
                continue
            current = getattr(adapter, "_pool_maxsize", 10)
            if current >= size:
                continue
            session.mount(
                prefix,
                HTTPAdapter(pool_connections=size, pool_maxsize=size, max_retries=adapter.max_retries),
            )


CHUNK_SIZE = 1 << 20
"""Bytes read from a response body at a time."""

def read_bounded(chunks: Iterable[bytes], limit: int, too_large: str) -> bytes:
    """A whole answer from its ``chunks``, refused once it passes ``limit`` bytes.

    For answers read whole before they are parsed (a search's JSON, a SOAP
    envelope): a runaway answer, or a decompression bomb, stops at the limit
    instead of filling memory.

    Raises
    ------
    ResponseTooLargeError
        More than ``limit`` bytes came; ``too_large`` is the message.
    """
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise ResponseTooLargeError(too_large)
    return bytes(body)


def iter_body(response: requests.Response, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The body of a streamed response in chunks, each handed on as soon as it arrives.

    A chunk is whatever the connection has ready, up to ``chunk_size`` bytes:
    waiting for a full ``chunk_size`` would hold back instances that arrived
    whole, and lose them if the connection then broke.

    Raises
    ------
    ConnectionFailedError
        The connection broke, was reset, or stalled past the read timeout mid-body.
    """
    # urllib3 2.2 and later; any other body (a transport adapter's file object) goes through requests.
    read1 = getattr(response.raw, "read1", None) if isinstance(response.raw, urllib3.HTTPResponse) else None
    try:
        if read1 is None:
            yield from response.iter_content(chunk_size)
            return
        while chunk := read1(chunk_size, decode_content=True):
            yield chunk
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
        raise ConnectionFailedError(
            f"Reading the body of {redact_url(response.url)} failed: {error}"
        ) from error
    finally:
        response.close()


def spool(chunks: Iterable[bytes], threshold: int = SPILL_THRESHOLD) -> tuple[IO[bytes], int]:
    """Collect chunks into a file object kept in memory up to ``threshold`` bytes (0: on disk at once).

    The same body a multipart part has (:class:`~dicomtrolley._spooled.SpooledChunks`):
    the chunks as they arrived, not a copy. Returns the file, positioned at 0, and its size.
    """
    body = SpooledChunks(threshold)
    size = 0
    try:
        for chunk in chunks:
            body.write(chunk)
            size += len(chunk)
    except BaseException:
        body.close()
        raise
    body.seek(0)
    return body, size
