"""What downloaders over HTTP share: one constructor, a client for the session, one request per target on a pool.

:class:`~dicomtrolley.wado_rs.WadoRS` and :class:`~dicomtrolley.wado_uri.WadoURI`
(and new HTTP protocols beside them) subclass :class:`HTTPDownloader` and say
only how one target is fetched.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import requests

from dicomtrolley._compat import warn_parallelism_moved
from dicomtrolley._concurrency import run_targets
from dicomtrolley._http import DEFAULT_TIMEOUT, HTTPClient, RetryPolicy, Timeout, redact_url
from dicomtrolley._spooled import SPILL_THRESHOLD
from dicomtrolley.core import FetchFailure, PartSink, Reference
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.roles import Downloader, ProfileParts


class HTTPDownloader(Downloader):
    """A downloader over HTTP: subclasses say how one target is fetched (:meth:`_fetch_one`).

    Parameters
    ----------
    session
        The session to send on (auth, certificates and cookies included).
    url
        The endpoint the requests are built on (the DICOMweb root for WADO-RS,
        the WADO-URI endpoint for WADO-URI).
    transfer_syntax
        A transfer syntax UID to ask for; the default is the protocol's
        (:attr:`default_transfer_syntax`).
    workers
        Requests in flight at once; the connection pool is sized to match.
        The default is the protocol's (:attr:`default_workers`).
    timeout
        Seconds to connect and to wait for data (one number, or ``(connect, read)``).
    retry
        When a failed request is tried again (default: :class:`~dicomtrolley._http.RetryPolicy`'s).
    spill_threshold
        Instances larger than this many bytes are held in a temporary file, not memory.
    use_async, max_workers
        4.x's switches, accepted with a DeprecationWarning: requests always run
        in parallel; ``max_workers``, when given, sets ``workers``.
    """

    default_transfer_syntax: ClassVar[str | None] = None
    """What is asked for when no transfer syntax is given."""

    default_workers: ClassVar[int] = 4
    """Requests in flight at once when no number is given."""

    def __init__(
        self,
        session: requests.Session,
        url: str,
        *,
        transfer_syntax: str | None = None,
        workers: int | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        spill_threshold: int = SPILL_THRESHOLD,
        use_async: bool | None = None,
        max_workers: int | None = None,
    ) -> None:
        if use_async is not None or max_workers is not None:
            # Point the warning at the caller: past this __init__ and each subclass's that passed them on.
            overrides = sum(
                "__init__" in vars(klass) for klass in type(self).__mro__ if issubclass(klass, HTTPDownloader)
            )
            warn_parallelism_moved(f"{type(self).__name__}()", stacklevel=2 + overrides)
            workers = max_workers or workers
        self.url = self._endpoint(url)
        self.transfer_syntax = transfer_syntax or self.default_transfer_syntax
        self.workers = workers or self.default_workers
        self.spill_threshold = spill_threshold
        self.http = HTTPClient(session, timeout=timeout, retry=retry, pool_size=self.workers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.url)!r}, transfer_syntax={self.transfer_syntax!r})"

    def _described(self, **fields: Any) -> ProfileParts:
        """These profile fields, the number of workers and the HTTP client, for :meth:`describe`.

        Raises
        ------
        DICOMTrolleyError
            The downloader asks for a transfer syntax; a profile downloads as stored (or as the server chooses).
        """
        if self.transfer_syntax not in ("*", None):
            raise DICOMTrolleyError(
                f"A profile cannot describe {self!r}: it asks for transfer syntax "
                f"{self.transfer_syntax}, a profile downloads as the server stores it"
            )
        return ProfileParts({**fields, "workers": self.workers}, self.http)

    @staticmethod
    def _endpoint(url: str) -> str:
        """The URL as requests are built on it; as given by default."""
        return url

    def fetch(
        self, targets: Sequence[Reference], sink: PartSink, *, stop_on_failure: bool = True
    ) -> list[FetchFailure]:
        """Fetch each target with its own request, ``workers`` at a time; see :meth:`Downloader.fetch`."""
        return run_targets(
            targets,
            lambda target: self._fetch_one(target, sink),
            workers=self.workers,
            stop_on_failure=stop_on_failure,
        )

    @abstractmethod
    def _fetch_one(self, target: Reference, sink: PartSink) -> None:
        """Fetch one target and hand its instances to ``sink``."""
