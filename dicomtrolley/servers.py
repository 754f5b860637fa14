"""4.x's server-specific log-ins, kept so 4.x scripts run; use :mod:`dicomtrolley.auth` instead.

:class:`VitreaConnection` was already deprecated in 4.x. It now hands out a
session from :func:`dicomtrolley.auth.create_session`, which logs in when the
server first asks for it and again whenever the server's session expires.
Its :meth:`~VitreaConnection.get_mint_trolley` builds 4.x's MINT + WADO-URI
trolley on such a session (this module sits above the trolley for that).
"""

from __future__ import annotations

import warnings

import requests

from dicomtrolley.auth import create_session
from dicomtrolley.mint import Mint
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_uri import WadoURI


class VitreaConnection:
    """A log-in to Vitrea Connection (deprecated: use :func:`dicomtrolley.auth.create_session`).

    Parameters
    ----------
    login_url
        The URL to POST the login to.
    """

    def __init__(self, login_url: str) -> None:
        warnings.warn(
            "VitreaConnection is deprecated: use dicomtrolley.auth.create_session(login_url, user, password, realm)",
            DeprecationWarning,
            stacklevel=2,
        )
        self.login_url = login_url

    def __repr__(self) -> str:
        return f"VitreaConnection({self.login_url!r})"

    def log_in(self, user: str, password: str, realm: str) -> requests.Session:
        """A session that logs in to Vitrea as ``user``.

        Unlike 4.x, the login happens at the first request the server refuses
        and is repeated when the server's session expires; refused credentials
        raise :class:`~dicomtrolley.exceptions.DICOMTrolleyAuthError` (a
        :class:`~dicomtrolley.exceptions.DICOMTrolleyError`) from that request.
        """
        return create_session(self.login_url, user, password, realm)

    def get_mint_trolley(self, user: str, password: str, realm: str, wado_url: str, mint_url: str) -> Trolley:
        """A trolley that searches with MINT and downloads over WADO-URI, on one session, as 4.x built it.

        Parameters
        ----------
        user, password, realm
            The log-in, as for :meth:`log_in`.
        wado_url
            The WADO-URI endpoint, e.g. ``https://vitrea/wado``.
        mint_url
            The MINT root, e.g. ``https://vitrea/MINTApi``.
        """
        session = self.log_in(user, password, realm)
        return Trolley(searcher=Mint(session, mint_url), downloader=WadoURI(session, wado_url))
