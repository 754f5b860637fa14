"""Where bearer tokens come from: Google's and Azure's credentials, or any program that prints one.

A token provider is a callable that returns a fresh :class:`BearerToken` each
time it is called; :class:`~dicomtrolley.auth.BearerAuth` calls it when it has
no token, when its token is about to expire, and after a 401. Three providers
are ready:

- :class:`GoogleCredentials`: Application Default Credentials through
  ``google-auth`` (extra ``dicomtrolley[google]``), or a credentials object of
  its own;
- :class:`AzureCredentials`: ``azure-identity``'s ``DefaultAzureCredential``
  for the scope of Azure's DICOM service (extra ``dicomtrolley[azure]``), or
  any ``TokenCredential``;
- :class:`TokenCommand`: a program that prints a token (``gcloud auth
  print-access-token``, an ``az`` call, a site script).

A provider pickles as what it is (ADC with these scopes, this command), never
with a token or a credentials object: in another process (a Dask worker) it
finds its own credentials in that process's environment. A credentials object
given by hand cannot be pickled, since it may hold a private key.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NoReturn

from dicomtrolley.exceptions import DICOMTrolleyAuthError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from google.auth.credentials import Credentials

logger = logging.getLogger(__name__)

GOOGLE_SCOPES: tuple[str, ...] = ("https://www.googleapis.com/auth/cloud-platform",)
"""The OAuth scopes asked of Google: the Cloud Healthcare API accepts cloud-platform tokens."""

AZURE_DICOM_SCOPE = "https://dicom.healthcareapis.azure.com/.default"
"""The scope of Azure Health Data Services' DICOM service."""

COMMAND_TIMEOUT = 60.0
"""Seconds a token command may take (a ``gcloud`` or ``az`` call can be slow on first use)."""


@dataclass(frozen=True)
class BearerToken:
    """A bearer token and when it expires.

    Parameters
    ----------
    value
        The token, sent as ``Authorization: Bearer <value>``; kept out of ``repr``.
    expires_at
        When it expires, in seconds since the epoch; None when unknown (then it
        is used until a server refuses it).
    """

    value: str = field(repr=False)
    expires_at: float | None = None

    def __reduce__(self) -> NoReturn:
        raise TypeError("a BearerToken is not pickled: a token never leaves the process that asked for it")


TokenProvider = Callable[[], "BearerToken | str"]
"""A callable that returns a new token each time it is called: a :class:`BearerToken`, or a bare token
(its lifetime unknown)."""


class GoogleCredentials:
    """Tokens from Google credentials: Application Default Credentials unless given others.

    Parameters
    ----------
    credentials
        A ``google.auth.credentials.Credentials``; None finds Application
        Default Credentials (``$GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth
        application-default login``, the metadata server) at the first call.
    scopes
        The OAuth scopes to ask ADC for.
    """

    def __init__(self, credentials: Credentials | None = None, scopes: tuple[str, ...] = GOOGLE_SCOPES) -> None:
        self.scopes = tuple(scopes)
        self._credentials = credentials
        self._own = credentials is None

    @property
    def from_environment(self) -> bool:
        """Whether the credentials are ADC, found in the environment of each process, not given by hand."""
        return self._own

    def __repr__(self) -> str:
        if self._own:
            return f"{type(self).__name__}(scopes={self.scopes!r})"
        return f"{type(self).__name__}({type(self._credentials).__name__})"

    def __reduce__(self) -> tuple[Any, ...]:
        if not self._own:
            _refuse_pickle(self)
        return (type(self), (None, self.scopes))

    def __call__(self) -> BearerToken:
        """Refresh the credentials and return their new token."""
        google_auth, transport = _import_google()
        if self._credentials is None:
            try:
                self._credentials, _ = google_auth.default(scopes=list(self.scopes))
            except google_auth.exceptions.DefaultCredentialsError as error:
                raise DICOMTrolleyAuthError(f"no Google credentials: {error}") from None
        try:
            self._credentials.refresh(transport.Request())
        except google_auth.exceptions.GoogleAuthError as error:
            raise DICOMTrolleyAuthError(f"Google credentials could not be refreshed: {error}") from None
        expiry: datetime | None = self._credentials.expiry
        # google-auth keeps expiry as a naive datetime in UTC.
        expires_at = expiry.replace(tzinfo=timezone.utc).timestamp() if expiry is not None else None
        return BearerToken(str(self._credentials.token), expires_at)


class AzureCredentials:
    """Tokens from Azure credentials: ``DefaultAzureCredential`` unless given another.

    Parameters
    ----------
    credential
        An ``azure.core.credentials.TokenCredential``; None builds
        ``azure.identity.DefaultAzureCredential`` (environment, workload or
        managed identity, the Azure CLI, ...) at the first call.
    scope
        The scope to ask a token for: Azure's DICOM service by default.
    """

    def __init__(self, credential: TokenCredential | None = None, scope: str = AZURE_DICOM_SCOPE) -> None:
        self.scope = scope
        self._credential = credential
        self._own = credential is None
        self._last = ""  # a digest of the last token given, never the token

    @property
    def from_environment(self) -> bool:
        """Whether the credential is ``DefaultAzureCredential``, found in the environment of each process."""
        return self._own

    def __repr__(self) -> str:
        if self._own:
            return f"{type(self).__name__}(scope={self.scope!r})"
        return f"{type(self).__name__}({type(self._credential).__name__})"

    def __reduce__(self) -> tuple[Any, ...]:
        if not self._own:
            _refuse_pickle(self)
        return (type(self), (None, self.scope))

    def __call__(self) -> BearerToken:
        """Ask the credential for a token for the scope."""
        try:
            from azure.core.exceptions import ClientAuthenticationError
        except ImportError:
            raise DICOMTrolleyAuthError(
                "auth 'azure' needs azure-identity: pip install 'dicomtrolley[azure]'"
            ) from None
        try:
            token = self._get_token()
            if self._own and _digest(token.token) == self._last:
                # azure-identity serves a cached token until shortly before it expires, also one
                # the server has just refused: a credential of our own is built anew to get another.
                logger.info("Azure's credential gave the token just refused again; asking a new credential")
                self._credential = None
                token = self._get_token()
        except ClientAuthenticationError as error:
            raise DICOMTrolleyAuthError(f"no Azure token for {self.scope}: {error.message}") from None
        self._last = _digest(token.token)
        return BearerToken(token.token, float(token.expires_on))

    def _get_token(self) -> Any:
        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        return self._credential.get_token(self.scope)


class TokenCommand:
    """Tokens printed by a program: ``gcloud auth print-access-token``, an ``az`` call, a site script.

    The command is split as a shell would split it, but run without a shell
    (write ``sh -c '...'`` for pipes). Its first line of output is the token;
    the token's lifetime is not known, so it is used until a server refuses it.

    Parameters
    ----------
    command
        The command line.
    """

    def __init__(self, command: str) -> None:
        self.command = command
        self._argv = shlex.split(command)
        if not self._argv:
            raise DICOMTrolleyAuthError("the token command is empty")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.command!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.command,))

    def __call__(self) -> BearerToken:
        """Run the command and return the token it printed."""
        started = time.monotonic()
        try:
            done = subprocess.run(
                self._argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise DICOMTrolleyAuthError(f"the token command {self._argv[0]!r} could not run: {error}") from None
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0:
            # stderr only: a failing command's stdout may hold half a token.
            said = " ".join(done.stderr.split())[:300]
            raise DICOMTrolleyAuthError(
                f"the token command {self._argv[0]!r} exited with status {done.returncode}{': ' + said if said else ''}"
            )
        if not lines:
            raise DICOMTrolleyAuthError(f"the token command {self._argv[0]!r} printed no token")
        logger.debug("the token command %r answered in %.1f s", self._argv[0], time.monotonic() - started)
        return BearerToken(lines[0].strip())


def as_provider(source: object) -> TokenProvider:
    """A token provider for ``source``: a provider as it is, Google and Azure credential objects adapted.

    Raises
    ------
    TypeError
        ``source`` is none of these.
    """
    google = sys.modules.get("google.auth.credentials")
    if google is not None and isinstance(source, google.Credentials):
        return GoogleCredentials(source)
    azure = sys.modules.get("azure.core.credentials")
    if azure is not None and isinstance(source, azure.TokenCredential):
        return AzureCredentials(source)
    if callable(source):
        return source
    raise TypeError(
        f"a bearer token source must be a callable returning a BearerToken, google-auth credentials or an "
        f"azure TokenCredential, not {type(source).__name__}"
    )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _import_google() -> tuple[Any, Any]:
    try:
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests
    except ImportError:
        raise DICOMTrolleyAuthError("auth 'google' needs google-auth: pip install 'dicomtrolley[google]'") from None
    return google.auth, google.auth.transport.requests


def _refuse_pickle(provider: object) -> NoReturn:
    raise TypeError(
        f"{provider!r} holds a credentials object given by hand, which may hold a private key and is not pickled; "
        "give no credentials (each process then finds its own) to send it to another process"
    )
