"""Server profiles: how to reach one server, kept by name in a TOML file.

A :class:`ServerProfile` says where a server listens (DICOMweb root, WADO-URI
URL, DIMSE host, port and AE titles), which searcher and downloader to use,
how to log in, how to check TLS, how long to wait and how many requests to run
at once; :meth:`ServerProfile.trolley` builds the :class:`~dicomtrolley.trolley.Trolley`.

Profiles hold no secrets, so they can be written to disk, logged, and pickled
to other machines. The password (or bearer token) is looked up when a trolley
is built: from ``$DICOMTROLLEY_PASSWORD`` (``$DICOMTROLLEY_TOKEN`` for a bearer
token), from a file named by ``$DICOMTROLLEY_PASSWORD_FILE`` (``$DICOMTROLLEY_TOKEN_FILE``),
from the system keyring when ``keyring`` is installed, or at a prompt.

A file of named servers (``servers.toml`` in the user's config folder, see
:func:`default_config_path`)::

    [servers.pacs]
    url = "https://pacs.example/dicom-web"
    auth = "basic"
    user = "me"
    ca_file = "/etc/ssl/hospital-ca.pem"

    [servers.archive]
    searcher = "c-find"
    downloader = "c-get"
    sender = "c-store"
    host = "archive.example"
    port = 104
    aec = "ARCHIVE"

The kinds of searcher, downloader and sender are the keys of
:data:`SEARCHERS`, :data:`DOWNLOADERS` and :data:`SENDERS`; a protocol module
that is added later joins by adding an entry there.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from requests.adapters import HTTPAdapter

from dicomtrolley.auth import AzureCredentials, BearerAuth, GoogleCredentials, TokenCommand, create_session
from dicomtrolley.exceptions import DICOMTrolleyAuthError, DICOMTrolleyError
from dicomtrolley.roles import Downloader, Searcher, Sender
from dicomtrolley.tokens import TokenProvider
from dicomtrolley.trolley import Trolley

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

logger = logging.getLogger(__name__)

PASSWORD_VARIABLE = "DICOMTROLLEY_PASSWORD"  # noqa: S105 - the name of a variable, not a password
"""The environment variable a password is read from."""

TOKEN_VARIABLE = "DICOMTROLLEY_TOKEN"  # noqa: S105 - the name of a variable, not a token
"""The environment variable a bearer token is read from."""

KEYRING_SERVICE = "dicomtrolley"
"""The keyring service name secrets are stored under (user name: ``<profile>:<user>``)."""

CONFIG_VARIABLE = "DICOMTROLLEY_CONFIG"
"""An environment variable naming the servers file, instead of the default location."""

_SECRET_KEYS = frozenset({"password", "token", "secret", "bearer_token"})

AuthKind = Literal["none", "basic", "vitrea", "bearer", "google", "azure", "token-command"]

SECRET_AUTHS = frozenset({"basic", "vitrea", "bearer"})
"""The kinds of login that need a password or token looked up (:meth:`ServerProfile.secret`); the
cloud kinds and a token command find their tokens themselves, in each process."""


class ServerProfile(BaseModel):
    """How to reach one server: addresses, protocols, login, TLS, timeouts, workers.

    Parameters
    ----------
    name
        The profile's name in the servers file (in messages and the keyring).
    url
        The DICOMweb root, e.g. ``https://pacs.example/dicom-web`` (QIDO-RS, WADO-RS).
    wado_uri_url
        The WADO-URI endpoint; by default ``wado`` beside the DICOMweb root.
    host, port
        The DIMSE address (C-FIND, C-GET, C-MOVE).
    aet, aec
        Our AE title and the server's.
    move_port
        The port our storage SCP listens on for C-MOVE.
    mint_url, rad69_url
        Vitrea Connection's MINT root and RAD-69 endpoint (``searcher = "mint"``,
        ``downloader = "rad69"``).
    searcher, downloader
        Which protocol to use, a key of :data:`SEARCHERS` / :data:`DOWNLOADERS`.
    sender
        How instances are stored on this server (``dicomtrolley upload``, an
        export to it): ``"stow-rs"`` (at ``url``) or ``"c-store"`` (at ``host``,
        ``port``, ``aec``), a key of :data:`SENDERS`.
    auth
        ``"none"``, ``"basic"`` (HTTP basic), ``"vitrea"`` (a Vitrea Connection
        login at ``login_url``), ``"bearer"`` (a fixed ``Authorization: Bearer`` token),
        ``"google"`` (Google's Application Default Credentials), ``"azure"``
        (``DefaultAzureCredential`` for Azure's DICOM service) or ``"token-command"``
        (a program that prints a token: ``token_command``); the last three renew
        their tokens as they expire (:class:`~dicomtrolley.auth.BearerAuth`).
    token_command
        The command of ``auth = "token-command"``, e.g. ``gcloud auth print-access-token``.
    user, login_url, realm
        Who logs in, where (Vitrea), and in which Vitrea realm.
    verify
        Check the server's TLS certificate.
    ca_file
        A CA bundle to check it against, instead of the system's.
    connect_timeout, read_timeout
        Seconds to connect, and to wait for data (HTTP) or a message (DIMSE).
    workers
        Requests a downloader (or a sender) runs at once (its default when unset).
    search_cap
        The most results the server answers one search with (its C-FIND or
        QIDO-RS cap), when known: a search that finds that many over a date
        range is split by date (:mod:`dicomtrolley.capped`). ``dicomtrolley
        probe --save`` finds and writes it when paging cannot get past the cap.
    accept
        The Accept header WADO-RS retrieves start with, when the server is
        known to refuse the default (``dicomtrolley probe --save`` writes it).
    max_connections
        A cap on the HTTP connections open to the server at once, across every
        thread that shares the trolley (a batch export's studies included):
        a request waits for a free connection rather than opening another.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    url: str | None = None
    wado_uri_url: str | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    aet: str = "DICOMTROLLEY"
    aec: str = "ANY-SCP"
    move_port: int | None = Field(default=None, ge=1, le=65535)
    mint_url: str | None = None
    rad69_url: str | None = None
    searcher: str = "qido-rs"
    downloader: str = "wado-rs"
    sender: str = "stow-rs"
    auth: AuthKind = "none"
    token_command: str | None = None
    user: str | None = None
    login_url: str | None = None
    realm: str = "DefaultSystemRealm"
    verify: bool = True
    ca_file: Path | None = None
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=300.0, gt=0)
    workers: int | None = Field(default=None, ge=1)
    max_connections: int | None = Field(default=None, ge=1)
    search_cap: int | None = Field(default=None, ge=1)
    accept: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> ServerProfile:
        if self.searcher not in SEARCHERS:
            raise ValueError(f"searcher {self.searcher!r} is not one of {sorted(SEARCHERS)}")
        if self.downloader not in DOWNLOADERS:
            raise ValueError(f"downloader {self.downloader!r} is not one of {sorted(DOWNLOADERS)}")
        if self.sender not in SENDERS:
            raise ValueError(f"sender {self.sender!r} is not one of {sorted(SENDERS)}")
        missing = sorted(key for key in required_settings(self.searcher, self.downloader) if getattr(self, key) is None)
        if missing:
            raise ValueError(
                f"{self.searcher} search and {self.downloader} download need {', '.join(missing)}"
            )
        if self.auth in ("basic", "vitrea") and not self.user:
            raise ValueError(f"auth {self.auth!r} needs a user")
        if self.auth == "vitrea" and not self.login_url:
            raise ValueError("auth 'vitrea' needs a login_url")
        if (self.auth == "token-command") != bool(self.token_command):
            raise ValueError("auth 'token-command' and a token_command go together")
        return self

    def __str__(self) -> str:
        where = self.url or f"{self.aec}@{self.host}:{self.port}"
        return f"{self.name or 'server'} ({self.searcher}/{self.downloader} at {where})"

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` seconds, as the HTTP searchers and downloaders take them."""
        return (self.connect_timeout, self.read_timeout)

    @property
    def wado_uri_endpoint(self) -> str:
        """The WADO-URI URL: ``wado_uri_url``, or ``wado`` beside the DICOMweb root."""
        if self.wado_uri_url:
            return self.wado_uri_url
        if not self.url:
            raise DICOMTrolleyError(f"{self}: WADO-URI needs wado_uri_url or url")
        return self.url.rstrip("/").rsplit("/", 1)[0] + "/wado"

    def secret(self) -> str:
        """The password (or bearer token): environment, a secrets file, keyring, or a prompt.

        Raises
        ------
        DICOMTrolleyAuthError
            None of the three has one (no terminal to prompt on).
        """
        variable = TOKEN_VARIABLE if self.auth == "bearer" else PASSWORD_VARIABLE
        value = os.environ.get(variable) or _secret_file(f"{variable}_FILE")
        if value:
            return value
        value = self._keyring_secret()
        if value:
            return value
        if sys.stdin is not None and sys.stdin.isatty():
            what = "Token" if self.auth == "bearer" else f"Password for {self.user}"
            return getpass.getpass(f"{what} ({self.name or self.url}): ")
        raise DICOMTrolleyAuthError(
            f"{self}: no {'token' if self.auth == 'bearer' else 'password'}: set ${variable} (or ${variable}_FILE), "
            f"store one with `keyring set {KEYRING_SERVICE} {self._keyring_user()}`, or run in a terminal"
        )

    def token_provider(self) -> TokenProvider | None:
        """Where this profile's bearer tokens come from (``google``, ``azure``, ``token-command``), else None.

        A new provider each call: it finds its credentials in this process's environment.
        """
        build = _TOKEN_PROVIDERS.get(self.auth)
        return build(self) if build is not None else None

    def check_credentials(self) -> None:
        """Make sure this process can log in without asking anyone: a secret is found, or a token is given.

        What a cluster's workers run before an export; the secret or token stays here.

        Raises
        ------
        DICOMTrolleyAuthError
            No secret is found, or the token provider fails.
        """
        provider = self.token_provider()
        if provider is not None:
            provider()
        elif self.auth in SECRET_AUTHS:
            self.secret()

    @classmethod
    def from_trolley(cls, trolley: Trolley, name: str = "") -> ServerProfile:
        """The secret-free profile of a Trolley built by hand, so that other processes can build its like.

        A trolley built from a profile gives that profile. Otherwise its searcher
        and downloader describe themselves (QIDO-RS, WADO-RS, WADO-URI, MINT,
        RAD-69, C-FIND, C-GET and C-MOVE can), and its session's login (none,
        basic auth, a Vitrea login or a bearer token) is read; what a profile
        cannot say (another transfer syntax, another kind of login, a searcher
        and downloader on different servers, a searcher or downloader of another
        kind, named) is refused, not dropped.

        Parameters
        ----------
        trolley
            A Trolley with a searcher and a downloader.
        name
            The profile's name (the keyring looks passwords up by name, or by URL without one).

        Raises
        ------
        DICOMTrolleyError
            The trolley has a part, or a setting, that a profile cannot describe.
        """
        if trolley.profile is not None:  # built from a profile: that one, as it is
            return trolley.profile.model_copy(update={"name": name}) if name else trolley.profile
        from dicomtrolley._trolley_profile import profile_fields

        return cls(name=name, **profile_fields(trolley))

    def _keyring_user(self) -> str:
        return f"{self.name or self.url}:{self.user or ''}"

    def _keyring_secret(self) -> str | None:
        try:
            import keyring
            from keyring.errors import KeyringError
        except ImportError:
            return None
        try:
            value: str | None = keyring.get_password(KEYRING_SERVICE, self._keyring_user())
        except KeyringError as error:
            logger.debug("No keyring to ask for %s: %s", self, error)
            return None
        return value

    def session(self, secret: str | None = None) -> requests.Session:
        """A ``requests.Session`` with this profile's login and TLS settings.

        Parameters
        ----------
        secret
            The password or token; looked up with :meth:`secret` when needed and not given.
        """
        if self.auth == "vitrea":
            session = create_session(self.login_url or "", self.user or "", secret or self.secret(), self.realm)
        else:
            session = requests.Session()
            if self.auth == "basic":
                session.auth = (self.user or "", secret or self.secret())
            elif self.auth == "bearer":
                session.headers["Authorization"] = f"Bearer {secret or self.secret()}"
            elif (provider := self.token_provider()) is not None:
                session.auth = BearerAuth(provider)
        session.verify = str(self.ca_file) if self.ca_file and self.verify else self.verify
        if self.max_connections:
            capped = _CappedAdapter(self.max_connections)
            session.mount("http://", capped)
            session.mount("https://", capped)
        return session

    def trolley(self, secret: str | None = None, *, download: bool = True) -> Trolley:
        """A :class:`~dicomtrolley.trolley.Trolley` for this server: its searcher and downloader on one session.

        Parameters
        ----------
        secret
            As for :meth:`session`.
        download
            ``False``: a trolley that only searches (no downloader is built, so
            none of its settings are needed).
        """
        kinds = {self.searcher, self.downloader} if download else {self.searcher}
        http = {"qido-rs", "wado-rs", "wado-uri", "mint", "rad69"} & kinds
        session = self.session(secret) if http else requests.Session()
        searcher = SEARCHERS[self.searcher](self, session)
        searcher.result_cap = self.search_cap
        return Trolley(searcher, DOWNLOADERS[self.downloader](self, session) if download else None, profile=self)


    def build_sender(self, secret: str | None = None) -> Sender:
        """The :class:`~dicomtrolley.roles.Sender` that stores instances on this server (its ``sender``).

        Parameters
        ----------
        secret
            As for :meth:`session`.

        Raises
        ------
        DICOMTrolleyError
            The profile lacks what its sender needs (a url; a host and port).
        """
        missing = sorted(key for key in _NEEDS[self.sender] if getattr(self, key) is None)
        if missing:
            raise DICOMTrolleyError(f"{self}: sending with {self.sender} needs {', '.join(missing)}")
        session = self.session(secret) if self.sender == "stow-rs" else requests.Session()
        return SENDERS[self.sender](self, session)


_TOKEN_PROVIDERS: dict[str, Callable[[ServerProfile], TokenProvider]] = {
    "google": lambda profile: GoogleCredentials(),
    "azure": lambda profile: AzureCredentials(),
    "token-command": lambda profile: TokenCommand(profile.token_command or ""),
}
"""The logins that take their bearer tokens from a provider, and the provider each builds."""


class _CappedAdapter(HTTPAdapter):
    """At most ``size`` connections per host; a request waits for one to come free.

    A subclass, so that the downloaders' pool sizing leaves it as it is.
    """

    def __init__(self, size: int) -> None:
        super().__init__(pool_connections=size, pool_maxsize=size, pool_block=True)


def _secret_file(variable: str) -> str | None:
    """The secret in the file ``$variable`` names (as container platforms mount secrets), without its line end."""
    path = os.environ.get(variable)
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n") or None
    except OSError as error:
        raise DICOMTrolleyAuthError(f"${variable} names {path}, which cannot be read: {error.strerror}") from None


# ------------------------------------------------------------ the protocols a profile can name

SearcherBuilder = Callable[[ServerProfile, requests.Session], Searcher]
DownloaderBuilder = Callable[[ServerProfile, requests.Session], Downloader]


def _qido_rs(profile: ServerProfile, session: requests.Session) -> Searcher:
    from dicomtrolley.qido_rs import QidoRS

    return QidoRS(session, _dicomweb_root(profile), timeout=profile.timeout)


def _wado_rs(profile: ServerProfile, session: requests.Session) -> Downloader:
    from dicomtrolley.wado_rs import WadoRS

    url = _dicomweb_root(profile)
    wado = WadoRS(session, url, timeout=profile.timeout, workers=profile.workers)
    if profile.accept:
        wado.prefer_accept(profile.accept)
    return wado


def _wado_uri(profile: ServerProfile, session: requests.Session) -> Downloader:
    from dicomtrolley.wado_uri import WadoURI

    url = profile.wado_uri_endpoint
    if profile.workers:
        return WadoURI(session, url, timeout=profile.timeout, workers=profile.workers)
    return WadoURI(session, url, timeout=profile.timeout)


def _mint(profile: ServerProfile, session: requests.Session) -> Searcher:
    from dicomtrolley.mint import Mint

    if profile.mint_url is None:
        raise DICOMTrolleyError(f"{profile}: MINT needs mint_url")
    return Mint(session, profile.mint_url, timeout=profile.timeout)


def _rad69(profile: ServerProfile, session: requests.Session) -> Downloader:
    from dicomtrolley.rad69 import Rad69

    if profile.rad69_url is None:
        raise DICOMTrolleyError(f"{profile}: RAD-69 needs rad69_url")
    return Rad69(session, profile.rad69_url, timeout=profile.timeout, workers=profile.workers)


def _dicomweb_root(profile: ServerProfile) -> str:
    if profile.url is None:
        raise DICOMTrolleyError(f"{profile}: no DICOMweb url")
    return profile.url


def _dimse_peer(profile: ServerProfile) -> dict[str, Any]:
    """The arguments every DIMSE searcher and downloader of this profile is built with."""
    if profile.host is None or profile.port is None:
        raise DICOMTrolleyError(f"{profile}: no DIMSE host and port")
    return {
        "host": profile.host, "port": profile.port, "aet": profile.aet, "aec": profile.aec,
        "acse_timeout": profile.connect_timeout, "dimse_timeout": profile.read_timeout,
        "network_timeout": profile.read_timeout,
    }


def _c_find(profile: ServerProfile, session: requests.Session) -> Searcher:
    from dicomtrolley.dicom_qr import DICOMQR

    return DICOMQR(**_dimse_peer(profile))


def _c_get(profile: ServerProfile, session: requests.Session) -> Downloader:
    from dicomtrolley.dimse_retrieve import DICOMCGet

    return DICOMCGet(**_dimse_peer(profile))


def _c_move(profile: ServerProfile, session: requests.Session) -> Downloader:
    from dicomtrolley.dimse_retrieve import DICOMCMove

    if profile.move_port is None:
        raise DICOMTrolleyError(f"{profile}: C-MOVE needs move_port")
    return DICOMCMove(**_dimse_peer(profile), destination_port=profile.move_port)


def _stow_rs(profile: ServerProfile, session: requests.Session) -> Sender:
    from dicomtrolley.stow_rs import StowRS

    url = _dicomweb_root(profile)
    if profile.workers:
        return StowRS(session, url, timeout=profile.timeout, workers=profile.workers)
    return StowRS(session, url, timeout=profile.timeout)


def _c_store(profile: ServerProfile, session: requests.Session) -> Sender:
    from dicomtrolley.dimse_store import DICOMCStore

    peer = _dimse_peer(profile)
    options: dict[str, Any] = {"workers": profile.workers} if profile.workers else {}
    return DICOMCStore(peer.pop("host"), peer.pop("port"), called_aet=peer.pop("aec"), **peer, **options)


SEARCHERS: dict[str, SearcherBuilder] = {"qido-rs": _qido_rs, "c-find": _c_find, "mint": _mint}
"""Searcher kinds a profile can name, and how each is built from the profile and its session."""

DOWNLOADERS: dict[str, DownloaderBuilder] = {
    "wado-rs": _wado_rs,
    "wado-uri": _wado_uri,
    "c-get": _c_get,
    "c-move": _c_move,
    "rad69": _rad69,
}
"""Downloader kinds a profile can name, and how each is built from the profile and its session."""

SENDERS: dict[str, Callable[[ServerProfile, requests.Session], Sender]] = {"stow-rs": _stow_rs, "c-store": _c_store}
"""Sender kinds a profile can name, and how each is built from the profile and its session."""

_NEEDS: dict[str, tuple[str, ...]] = {
    "qido-rs": ("url",),
    "wado-rs": ("url",),
    "wado-uri": (),
    "c-find": ("host", "port"),
    "c-get": ("host", "port"),
    "c-move": ("host", "port", "move_port"),
    "mint": ("mint_url",),
    "rad69": ("rad69_url",),
    "stow-rs": ("url",),
    "c-store": ("host", "port"),
}
"""The profile fields each kind cannot do without (a kind missing here needs none)."""


def required_settings(*kinds: str) -> tuple[str, ...]:
    """The profile fields these searcher and downloader kinds cannot do without, in the order they are named.

    The command line asks for what is missing before it builds a profile, so it
    can name its own options (``--host``) rather than the profile's fields.
    """
    return tuple(dict.fromkeys(name for kind in kinds for name in _NEEDS.get(kind, ())))


# ------------------------------------------------------------ the servers file


def default_config_path() -> Path:
    """Where the servers file is looked for: ``$DICOMTROLLEY_CONFIG``, else ``servers.toml``
    in the user's config folder (``%APPDATA%\\dicomtrolley`` on Windows,
    ``$XDG_CONFIG_HOME/dicomtrolley`` or ``~/.config/dicomtrolley`` elsewhere)."""
    explicit = os.environ.get(CONFIG_VARIABLE)
    if explicit:
        return Path(explicit)
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        base = Path(os.environ["APPDATA"])
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "dicomtrolley" / "servers.toml"


def load_profiles(path: str | os.PathLike[str] | None = None) -> dict[str, ServerProfile]:
    """Every server in a servers file, by name.

    Raises
    ------
    DICOMTrolleyError
        The file is missing, is not TOML, holds a secret, or a server in it is invalid.
    """
    file = Path(path) if path is not None else default_config_path()
    try:
        with file.open("rb") as handle:
            content = tomllib.load(handle)
    except FileNotFoundError:
        raise DICOMTrolleyError(f"No servers file at {file}") from None
    except tomllib.TOMLDecodeError as error:
        raise DICOMTrolleyError(f"{file} is not valid TOML: {error}") from None
    servers = content.get("servers")
    if not isinstance(servers, dict):
        raise DICOMTrolleyError(f"{file} has no [servers.NAME] tables")
    return {name: _profile_from(file, name, table) for name, table in servers.items()}


def _profile_from(file: Path, name: str, table: Any) -> ServerProfile:
    if not isinstance(table, dict):
        raise DICOMTrolleyError(f"{file}: servers.{name} is not a table")
    secrets = sorted(_SECRET_KEYS & set(table))
    if secrets:
        raise DICOMTrolleyError(
            f"{file}: servers.{name} holds {', '.join(secrets)}; secrets are never stored in the servers "
            f"file (use ${PASSWORD_VARIABLE}, ${TOKEN_VARIABLE} or the keyring)"
        )
    try:
        return ServerProfile(**{"name": name, **table})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or name}: {e['msg']}" for e in error.errors())
        raise DICOMTrolleyError(f"{file}: servers.{name}: {problems}") from None


def load_profile(name: str, path: str | os.PathLike[str] | None = None) -> ServerProfile:
    """The server called ``name`` in a servers file (the default one unless ``path`` is given).

    Raises
    ------
    DICOMTrolleyError
        The file cannot be read, or names no such server.
    """
    profiles = load_profiles(path)
    try:
        return profiles[name]
    except KeyError:
        known = ", ".join(sorted(profiles)) or "none"
        raise DICOMTrolleyError(f"No server {name!r} in {path or default_config_path()} (known: {known})") from None
