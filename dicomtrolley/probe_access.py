"""What a probe learns of a server's door: does it need credentials, do they work, does it slow clients down.

Retries and a renewing auth hide what they handle: a 429 waited out or a 401
answered by a new token looks, to the code above, like an answer that came
at once. :class:`AccessWatch` is given every answer of the probe (the
``observe`` hook of :class:`~dicomtrolley._http.HTTPClient`) and keeps what
they hid: each 429 or 503 with its ``Retry-After`` and whether the request
then succeeded, each 401 replayed after a renewal (in an answer's
``history``). One request of its own, the first search sent without
credentials (:class:`NoCredentials`), shows whether the server needs them
and which scheme its ``WWW-Authenticate`` asks for. :class:`Access` holds
the result: two rows of the probe's table, the ``access`` part of its JSON,
and notes for a saved profile. Credentials are described by their kind and
source only; a token or password is never kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase, HTTPBasicAuth

from dicomtrolley.auth import BearerAuth, VitreaAuth

RATE_LIMITS = frozenset({429, 503})
"""The statuses that ask a client to slow down (with a ``Retry-After``, when the server is kind)."""

REFUSALS = frozenset({401, 403})


class NoCredentials(AuthBase):
    """Sends a request without the session's credentials: its auth is not asked, an Authorization header dropped."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        """Remove the Authorization header the session's headers put on ``r``."""
        r.headers.pop("Authorization", None)
        return r


@dataclass(frozen=True)
class Throttle:
    """One answer that asked the probe to slow down.

    Attributes
    ----------
    status
        429 or 503.
    retry_after
        The ``Retry-After`` header as sent (seconds or a date); None without one.
    recovered
        Whether the request then succeeded when tried again (False when it was
        not tried again); None when it was answered 429 or 503 again, which
        the next throttle tells of, or while not known.
    """

    status: int
    retry_after: str | None
    recovered: bool | None = None


class AccessWatch:
    """Every answer of a probe, before retries and re-authentication hide it; give it as ``HTTPClient(observe=...)``.

    Parameters
    ----------
    session
        The probe's session: what credentials it sends, and (a
        :class:`~dicomtrolley.auth.BearerAuth`) how long its tokens live.
    url
        The server probed (credentials in it count).
    """

    def __init__(self, session: requests.Session, url: str) -> None:
        self.session = session
        self.credentials = credentials_of(session, url)
        """What the session sends as credentials (:func:`credentials_of`); None when nothing."""
        self._tokens_before = session.auth.tokens_asked if isinstance(session.auth, BearerAuth) else 0
        self.answers = 0
        self.replayed = 0
        self.throttles: list[Throttle] = []
        self._waiting: dict[str, int] = {}

    def __call__(self, response: requests.Response, again: bool) -> None:
        """Count ``response`` (its request tried ``again`` or not): 429s, 503s and their retries, 401s replayed."""
        self.answers += 1
        self.replayed += sum(1 for earlier in response.history if earlier.status_code == 401)
        request = response.request
        key = f"{request.method} {request.url}"
        waiting = self._waiting.pop(key, None)
        limited = response.status_code in RATE_LIMITS
        if waiting is not None and not limited:
            self.throttles[waiting] = replace(self.throttles[waiting], recovered=response.status_code < 400)
        if limited:
            if again:
                self._waiting[key] = len(self.throttles)
            self.throttles.append(Throttle(response.status_code, response.headers.get("Retry-After"),
                                           recovered=None if again else False))

    def access(self, *, without: requests.Response | None, first: requests.Response | None) -> Access:
        """What was seen, put together.

        Parameters
        ----------
        without
            The answer to a search without credentials: the first search's when the session sends none.
        first
            The answer to the first search, with the session's credentials.
        """
        auth = self.session.auth
        bearer = auth if isinstance(auth, BearerAuth) else None
        return Access(
            credentials=self.credentials,
            required=without is not None and without.status_code in REFUSALS,
            challenge=challenge_of(without),
            accepted=None if self.credentials is None else first is not None and first.status_code not in REFUSALS,
            token_lifetime=bearer.lifetime if bearer else None,
            tokens_asked=bearer.tokens_asked - self._tokens_before if bearer else None,
            replayed=self.replayed,
            answers=self.answers,
            throttles=list(self.throttles),
        )


@dataclass
class Access:
    """What the probe found of authentication and rate limits.

    Attributes
    ----------
    credentials
        What the session sends (``a Bearer token from GoogleCredentials``), never
        the credential itself; None when it sends none.
    required
        Whether a search without credentials was refused (401 or 403).
    challenge
        The schemes its ``WWW-Authenticate`` named (``Bearer``, ``Basic``); empty when none.
    accepted
        Whether the search with the session's credentials was answered; None without credentials.
    token_lifetime
        Seconds a bearer token had to live, as its provider said; None when not said or not a bearer token.
    tokens_asked
        Bearer tokens asked of the provider during the probe; None when not a bearer token.
    replayed
        Requests answered 401 and sent again with renewed credentials.
    answers
        Answers seen, retried ones included.
    throttles
        The answers that asked to slow down.
    """

    credentials: str | None
    required: bool
    challenge: str
    accepted: bool | None
    token_lifetime: float | None = None
    tokens_asked: int | None = None
    replayed: int = 0
    answers: int = 0
    throttles: list[Throttle] = field(default_factory=list)

    def authentication(self) -> tuple[bool, str]:
        """The table's authentication row: whether access works, and how."""
        need = f"required ({self.challenge or 'no WWW-Authenticate'})" if self.required else "not required"
        if self.credentials is None:
            if self.required:
                return False, f"{need}: refused without credentials, and none were given (--auth, --token-command, " \
                              "--user)"
            return True, f"{need}: answered without credentials"
        said = [f"{need}; {self.credentials} {'accepted' if self.accepted else 'refused'}"]
        if self.tokens_asked is not None:
            said.append(f"a token lived {self.token_lifetime:.0f} s" if self.token_lifetime is not None
                        else "token lifetime not given by its source")
            said.append(f"{self.tokens_asked} token(s) asked for during the probe")
        said.append(f"{self.replayed} request(s) answered 401 and sent again with renewed credentials")
        return bool(self.accepted), "; ".join(said)

    def rate_limiting(self) -> tuple[bool | None, str]:
        """The table's rate-limiting row: None when no answer asked to slow down, else whether retrying got past it."""
        if not self.throttles:
            return None, f"no 429 or 503 in {self.answers} answers"
        statuses = ", ".join(f"{status} x{sum(1 for t in self.throttles if t.status == status)}"
                             for status in sorted({t.status for t in self.throttles}))
        after = sorted({t.retry_after for t in self.throttles if t.retry_after is not None})
        told = f"Retry-After: {', '.join(after)}" if after else "no Retry-After"
        failed = sum(1 for t in self.throttles if t.recovered is False)
        if failed:
            return False, f"rate-limited: {statuses} ({told}); {failed} still refused after retrying"
        return True, f"rate-limited: {statuses} ({told}); each request succeeded after waiting it out"

    def notes(self) -> list[str]:
        """What a saved profile should say of access; nothing secret."""
        notes = []
        if self.required:
            scheme = self.challenge or "credentials"
            notes.append(f"needs {scheme} authentication" + ("; none was given when probed: set auth"
                                                               if self.credentials is None else ""))
        if self.throttles:
            notes.append(self.rate_limiting()[1])
        return notes


def credentials_of(session: requests.Session, url: str) -> str | None:
    """What ``session`` sends to ``url`` as credentials, described by kind and source; None when nothing."""
    auth = session.auth
    if isinstance(auth, BearerAuth):
        return f"a Bearer token from {getattr(auth.provider, '__name__', type(auth.provider).__name__)}"
    if isinstance(auth, VitreaAuth):
        return "a Vitrea login"
    if isinstance(auth, (tuple, HTTPBasicAuth)) or urlsplit(url).username:
        return "Basic credentials"
    header = session.headers.get("Authorization")
    if header:
        return f"{str(header).split(' ', 1)[0]} credentials (a session header)"
    return None if auth is None else f"credentials ({type(auth).__name__})"


def challenge_of(response: requests.Response | None) -> str:
    """The schemes a ``WWW-Authenticate`` header names (``Bearer``, ``Basic, Negotiate``); empty without one."""
    header = response.headers.get("WWW-Authenticate", "") if response is not None else ""
    unquoted = re.sub(r'"[^"]*"', '""', header)
    words = (part.split(None, 1)[0] for part in unquoted.split(",") if part.strip())
    return ", ".join(word for word in words if "=" not in word)
