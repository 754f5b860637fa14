"""The server profile of a hand-built Trolley: what another process needs to build the same one.

A batch export on a cluster ships a :class:`~dicomtrolley.profiles.ServerProfile`
to each worker, never a Trolley: a Trolley holds a session, its connections
and its password. :func:`profile_of` reads a Trolley built by hand (``QidoRS``
and ``WadoRS`` on a ``create_session`` session, ...) back into the profile
that builds its like, without the password: a worker looks that up itself.

What a profile cannot say is refused, not dropped: a transfer syntax other
than "as stored", a session whose auth is neither basic, Vitrea nor a bearer
token, a searcher and a downloader on different servers or with different logins.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.auth import HTTPBasicAuth

from dicomtrolley._http import HTTPClient
from dicomtrolley.auth import AzureCredentials, BearerAuth, GoogleCredentials, TokenCommand, VitreaAuth
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.tokens import AZURE_DICOM_SCOPE, GOOGLE_SCOPES, TokenProvider
from dicomtrolley.trolley import Trolley


def profile_fields(trolley: Trolley) -> dict[str, Any]:
    """The fields of the secret-free profile that builds a trolley like ``trolley`` (same server, protocols, login).

    The searcher and the downloader each describe themselves
    (:meth:`~dicomtrolley.roles.Searcher.describe`); this adds their HTTP
    session's login, TLS and timeouts, and refuses two halves that disagree.

    Raises
    ------
    DICOMTrolleyError
        The trolley has a part, or a setting, that a profile cannot describe.
    """
    if trolley.searcher is None or trolley.downloader is None:
        raise DICOMTrolleyError("Only a Trolley with a searcher and a downloader can be described by a profile")
    fields: dict[str, Any] = {}
    parts = [trolley.searcher.describe(), trolley.downloader.describe()]
    for part in parts:
        _merge(fields, **part.fields)
    if trolley.searcher.result_cap is not None:
        _merge(fields, search_cap=trolley.searcher.result_cap)
    http: list[HTTPClient] = [part.http for part in parts if part.http is not None]
    if http:
        _describe_http(http, fields)
    return fields


def _merge(fields: dict[str, Any], **values: Any) -> None:
    """Add ``values`` to ``fields``; a value the other half of the trolley set differently is an error."""
    for key, value in values.items():
        if key in fields and fields[key] != value:
            raise DICOMTrolleyError(
                f"The searcher and the downloader differ in {key} ({fields[key]!r}, {value!r}); "
                "a profile describes one server"
            )
        fields[key] = value


def _describe_http(clients: list[HTTPClient], fields: dict[str, Any]) -> None:
    """Login, TLS and timeouts of the HTTP sessions of a trolley's searcher and downloader."""
    for client in clients:
        connect, read = client.timeout if isinstance(client.timeout, tuple) else (client.timeout,) * 2
        _merge(fields, connect_timeout=connect, read_timeout=read)
        _merge(fields, **_login(client.session))
        verify = client.session.verify
        _merge(fields, verify=verify is not False, ca_file=verify if isinstance(verify, str) else None)


def _login(session: requests.Session) -> dict[str, Any]:
    auth = session.auth
    bearer = str(session.headers.get("Authorization", ""))
    if isinstance(auth, BearerAuth):
        return _token_login(auth.provider)
    if isinstance(auth, VitreaAuth):
        return {"auth": "vitrea", "user": auth.user, "login_url": auth.login_url, "realm": auth.realm}
    if isinstance(auth, HTTPBasicAuth):
        return {"auth": "basic", "user": auth.username}
    if isinstance(auth, tuple) and len(auth) == 2:
        return {"auth": "basic", "user": auth[0]}
    if auth is None and bearer.lower().startswith("bearer "):
        return {"auth": "bearer"}
    if auth is None and not bearer:
        return {"auth": "none"}
    raise DICOMTrolleyError(f"A profile cannot describe the session's login ({type(auth).__name__})")


def _token_login(provider: TokenProvider) -> dict[str, Any]:
    """The profile's login for a BearerAuth: only providers that each process can build for itself."""
    if isinstance(provider, GoogleCredentials) and provider.from_environment and provider.scopes == GOOGLE_SCOPES:
        return {"auth": "google"}
    if isinstance(provider, AzureCredentials) and provider.from_environment and provider.scope == AZURE_DICOM_SCOPE:
        return {"auth": "azure"}
    if isinstance(provider, TokenCommand):
        return {"auth": "token-command", "token_command": provider.command}
    raise DICOMTrolleyError(
        f"A profile cannot describe the bearer tokens of {provider!r}: use GoogleCredentials(), "
        "AzureCredentials() or a TokenCommand, which each process can build for itself"
    )
