"""What an export's task carries to another process: a server profile, never a trolley or a password.

An executor that runs tasks in other processes (a process pool, a Dask
cluster) pickles each task. A task's trolley source then travels as a
:class:`ProfileTrolley`: the secret-free
:class:`~dicomtrolley.profiles.ServerProfile` of the server. The process that
runs the task builds its own trolley from it, once, and logs in itself, with
the password from its own environment (``$DICOMTROLLEY_PASSWORD``), a secrets
file (``$DICOMTROLLEY_PASSWORD_FILE``) or its keyring; see
:meth:`~dicomtrolley.profiles.ServerProfile.secret`. A source holding a
Trolley built by hand (:class:`~dicomtrolley.export.tasks.SharedTrolley`)
turns into the profile that trolley was built from when it is pickled, so the
same ``export`` call works with any executor and no password leaves this process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.profiles import ServerProfile
from dicomtrolley.trolley import Trolley

_trolleys: dict[ServerProfile, Trolley] = {}
_trolleys_lock = threading.Lock()


@dataclass(frozen=True)
class ProfileTrolley:
    """A trolley source that builds its trolley from a profile, once per process.

    Every task in a process shares that trolley, so a worker logs in once and
    keeps its connections, however many studies it downloads.

    Parameters
    ----------
    profile
        The server; it holds no secret, so the source pickles without one.
    """

    profile: ServerProfile

    def __call__(self) -> Trolley:
        """This process's trolley for the profile (built, and logged in, on first use)."""
        with _trolleys_lock:
            trolley = _trolleys.get(self.profile)
            if trolley is None:
                trolley = _trolleys[self.profile] = self.profile.trolley()
            return trolley


def shipped_as_profile(trolley: object) -> tuple[Any, ...]:
    """How a source holding ``trolley`` pickles: as the :class:`ProfileTrolley` of its profile.

    For a ``__reduce__``; the profile is derived with
    :meth:`ServerProfile.from_trolley <dicomtrolley.profiles.ServerProfile.from_trolley>`.

    Raises
    ------
    DICOMTrolleyError
        ``trolley`` is not a Trolley a profile can describe, so the task cannot go to another process.
    """
    if not isinstance(trolley, Trolley):
        raise DICOMTrolleyError(
            f"An export task cannot take {trolley!r} to another process: pass a Trolley, or a ProfileTrolley"
        )
    return (ProfileTrolley, (ServerProfile.from_trolley(trolley),))
