"""What searchers over HTTP share: one constructor, a client for the session, how they show and describe themselves.

:class:`~dicomtrolley.qido_rs.QidoRS` and :class:`~dicomtrolley.mint.Mint`
subclass :class:`HTTPSearcher` and say only how a search goes
(:meth:`~dicomtrolley.roles.Searcher.find_studies`) and which profile fields
name them (:attr:`HTTPSearcher.profile_fields`).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import ClassVar

import requests

from dicomtrolley._http import DEFAULT_TIMEOUT, HTTPClient, RetryPolicy, Timeout, redact_url
from dicomtrolley.roles import ProfileParts, Searcher


@dataclass(eq=False, repr=False)
class HTTPSearcher(Searcher):
    """A searcher over HTTP: a root URL (a trailing ``/`` dropped) and a client on the user's session.

    The parameters are described where users meet them, on
    :class:`~dicomtrolley.qido_rs.QidoRS` and :class:`~dicomtrolley.mint.Mint`.
    The constructor is built from the fields below, so a protocol with settings
    of its own declares only those (as keyword-only fields) and its signature
    lists every parameter without restating these; compared by identity, as before.
    """

    session: requests.Session
    url: str
    _: KW_ONLY
    timeout: Timeout = DEFAULT_TIMEOUT
    retry: RetryPolicy | None = None
    http: HTTPClient = field(init=False)
    """The client every request goes through: the session with the timeout and the retries."""

    profile_fields: ClassVar[tuple[str, str]]
    """The profile's ``searcher`` value for this protocol, and the profile field that holds :attr:`url`."""

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self.http = HTTPClient(self.session, timeout=self.timeout, retry=self.retry)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.url)!r})"

    def describe(self) -> ProfileParts:
        """This protocol as a profile's ``searcher``, at this root (:attr:`profile_fields`); see
        :meth:`Searcher.describe <dicomtrolley.roles.Searcher.describe>`."""
        name, url_field = self.profile_fields
        return ProfileParts({"searcher": name, url_field: self.url}, self.http)
