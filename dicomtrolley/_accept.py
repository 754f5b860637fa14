"""Accept negotiation: the forms of a retrieve's Accept header to try, and the one that worked.

Servers differ in which Accept headers they take for the same retrieve: most
take ``transfer-syntax=*`` (the bytes as stored), some (Azure's DICOM service
among them) refuse it with 406 or 400 and want no syntax or a list of them.
:class:`AcceptForms` sends the first form; a 406 or 400 is tried again with
the next, and the form that worked is kept for every later request of the
session and named once in the log, so one refusal costs one extra request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

import requests

from dicomtrolley._http import HTTPClient, raise_for_status, redact_url

logger = logging.getLogger(__name__)

REFUSED_FORM = frozenset({400, 406})
"""Statuses that may mean "not this Accept header": tried again with the next form."""


class AcceptForms:
    """The Accept forms a retrieve tries, in order, and the one that worked last.

    Parameters
    ----------
    forms
        Accept header values, the preferred first.
    """

    def __init__(self, forms: Sequence[str]) -> None:
        if not forms:
            raise ValueError("at least one Accept form is needed")
        self.forms = tuple(forms)
        self._index = 0
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled without its lock, starting at the form that worked."""
        return (type(self), (self.forms[self._index:],))

    @property
    def current(self) -> str:
        """The form the next request sends."""
        return self.forms[self._index]

    def get(self, http: HTTPClient, url: str, headers: Mapping[str, str], *, stream: bool = True) -> requests.Response:
        """GET ``url`` with the current form; on a 406 or 400 go on to the next form, each tried once.

        Raises
        ------
        ServerError
            Every form left was refused, or the server failed otherwise.
        """
        index = self._index
        while True:
            form = self.forms[index]
            response = http.send("GET", url, headers={**headers, "Accept": form}, stream=stream)
            if response.status_code not in REFUSED_FORM or index + 1 >= len(self.forms):
                break
            response.close()
            logger.warning(
                "%s refused Accept %r with %d; trying %r", redact_url(url), form, response.status_code,
                self.forms[index + 1],
            )
            index += 1
        raise_for_status(response)
        self._keep(index)
        return response

    def _keep(self, index: int) -> None:
        with self._lock:
            if index > self._index:
                self._index = index
                logger.warning("the server takes Accept %r; keeping it for this session", self.forms[index])
