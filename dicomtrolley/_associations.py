"""Open DIMSE associations kept for the next operation: one bounded pool per peer.

Opening an association costs a TCP connection, an A-ASSOCIATE negotiation and
a pynetdicom thread; an export of small studies spends most of its time there
when every study opens its own (one for its C-FIND, one for its C-GET). A
:class:`AssociationPool` keeps the associations its operations leave behind
and lends them out again:

- **What may be reused.** An association is described by the :class:`Proposal`
  it was opened with (presentation contexts, SCP roles, extended negotiation).
  An idle one is lent only to an operation whose proposal it *covers*: every
  context, role and negotiation item asked for was proposed, word for word,
  when it was opened. A C-GET's storage contexts are shaped by the SOP classes
  of its studies (:mod:`dicomtrolley._get_contexts`); a study whose classes
  are a subset of another's gets the very same contexts for each class while
  there are few classes, so it reuses that study's association, and the
  server sends every instance in the same transfer syntax as on a fresh one.
- **Tried when idle.** :meth:`AssociationPool.lease_idle` lends an idle
  association an operation may be *tried* on, and opens none: a C-GET whose
  study's SOP classes are not known yet runs on an idle C-GET association
  first, and asks for them only if that fails.
- **Bounded.** At most :attr:`AssociationPool.keep` idle associations per peer;
  returning one more releases the longest idle. Those in use are bounded by
  the callers' workers (the pool never makes anyone wait). Opening a new
  association first releases the longest idle one: a server serves a bounded
  number of associations at once (Orthanc: 4), and one held idle takes a
  place, so the pool holds no more than were in use at once.
- **Released when idle.** An association idle for :attr:`AssociationPool.idle_timeout`
  seconds is released (A-RELEASE) by a reaper thread, which exists only while
  something is idle. A check on the next checkout alone would leave an
  association open on the server for as long as the program does nothing
  more with it (a notebook, a long export step), holding one of the
  server's association slots.
- **Discarded when broken.** An association the peer aborted or closed, or
  whose operation raised, is never lent again (the raising one is aborted);
  :meth:`AssociationPool.lease` opens a fresh one instead.
- **Closed at exit.** :func:`close_all` runs at interpreter exit; a forked
  child forgets its parent's associations without touching them.

pynetdicom is imported only when a proposal is turned into pynetdicom objects.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext

logger = logging.getLogger(__name__)

DEFAULT_KEEP = 8
"""Idle associations kept per peer: a few workers' C-FIND and C-GET associations."""

DEFAULT_IDLE_TIMEOUT = 5.0
"""Seconds an association may stay idle before it is released; below the 30 s
or more after which servers (Orthanc's DicomScpTimeout) drop idle associations."""

Handlers = Sequence[tuple[Any, Callable[..., Any]]]
"""pynetdicom event handlers, ``(evt.EVT_..., function)``."""


@dataclass(frozen=True)
class Proposal:
    """What an association is asked for when it is opened: the key it is pooled under.

    Parameters
    ----------
    contexts
        ``(abstract syntax, transfer syntaxes)`` per presentation context;
        no transfer syntaxes means pynetdicom's default four.
    scp_roles
        SOP classes we propose to take in the SCP role (C-STORE sub-operations of a C-GET).
    extended
        ``(SOP class, service class application information)`` extended negotiation items.
    needs
        The abstract syntax the operation cannot do without (C-GET's, say, where
        C-FIND's is proposed too): an association that did not accept it is
        refused when opened, and never lent for it.
    """

    contexts: tuple[tuple[str, tuple[str, ...]], ...]
    scp_roles: tuple[str, ...] = ()
    extended: tuple[tuple[str, bytes], ...] = ()
    needs: str | None = None

    def covers(self, wanted: Proposal) -> bool:
        """True when an association opened with this proposal can carry what ``wanted`` asks for.

        Every context and extended negotiation item asked for was proposed, and
        each class of those contexts in the same role: a C-GET association takes
        CT in the SCP role only, so it cannot carry a C-STORE of CT.
        """
        roles, wanted_roles = set(self.scp_roles), set(wanted.scp_roles)
        return (
            set(wanted.contexts) <= set(self.contexts)
            and set(wanted.extended) <= set(self.extended)
            and all((sop_class in roles) == (sop_class in wanted_roles) for sop_class, _ in wanted.contexts)
        )

    def presentation_contexts(self) -> list[PresentationContext]:
        """The contexts as pynetdicom proposes them."""
        from pynetdicom import build_context

        return [build_context(sop_class, list(syntaxes) or None) for sop_class, syntaxes in self.contexts]

    def negotiation_items(self) -> list[Any]:
        """The role selection and extended negotiation items as pynetdicom sends them."""
        from pynetdicom import build_role
        from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

        items: list[Any] = [build_role(sop_class, scp_role=True) for sop_class in self.scp_roles]
        for sop_class, information in self.extended:
            item = SOPClassExtendedNegotiation()
            item.sop_class_uid = sop_class
            item.service_class_application_information = information
            items.append(item)
        return items


Opener = Callable[[Proposal], "Association"]
"""Opens an association for a proposal, or raises (DIMSEError)."""


@dataclass
class _Idle:
    """An association waiting in the pool, and since when."""

    association: Association
    proposal: Proposal
    since: float
    accepted: frozenset[str]
    """The abstract syntaxes the peer accepted (in the SCU role)."""

    def carries(self, wanted: Proposal) -> bool:
        """True when this association may be lent for an operation that asks for ``wanted``."""
        return self.proposal.covers(wanted) and (wanted.needs is None or wanted.needs in self.accepted)


@dataclass
class Lease:
    """An association lent for one operation.

    Attributes
    ----------
    association
        The association; the borrower must not release or abort it.
    reused
        True when it carried an operation before: the peer may have dropped it since.
    """

    association: Association
    proposal: Proposal
    reused: bool


class AssociationPool:
    """Associations to one peer, lent out per operation and kept while idle.

    Thread safe: each lease belongs to one thread until it is returned.

    Parameters
    ----------
    opener
        Opens a fresh association for a proposal.
    name
        The peer, for log messages (``AEC@host:port``).
    keep
        Idle associations kept at most; 0 releases each after its operation (no reuse).
    idle_timeout
        Seconds after which an idle association is released.
    """

    def __init__(
        self, opener: Opener, *, name: str, keep: int = DEFAULT_KEEP, idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    ) -> None:
        self.opener = opener
        self.name = name
        self.keep = keep
        self.idle_timeout = idle_timeout
        self.opened = 0
        """Associations this pool opened, for tests and benchmarks."""
        self._idle: list[_Idle] = []
        self._closed = False
        self._changed = threading.Condition()
        self._reaper: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"AssociationPool({self.name!r}, keep={self.keep}, idle={len(self._idle)}, opened={self.opened})"

    @property
    def idle(self) -> int:
        """Associations waiting in the pool now."""
        with self._changed:
            return len(self._idle)

    @contextmanager
    def lease(
        self, proposal: Proposal, handlers: Handlers = (), *, fresh: bool = False, opening: Proposal | None = None
    ) -> Iterator[Lease]:
        """Lend an association that covers ``proposal``, with ``handlers`` bound for the block.

        ``fresh`` opens a new one even when an idle one fits; ``opening`` (which
        must cover ``proposal``) is what a new one is opened with, so that it
        fits later operations too. After the block the association goes back
        to the pool if it is still established; if the block raises, it is
        aborted and forgotten.

        Raises
        ------
        DIMSEError
            No idle association fits and a new one cannot be opened.
        """
        with self._lent(self._checkout(proposal, fresh, opening or proposal), handlers) as lease:
            yield lease

    @contextmanager
    def lease_idle(
        self, proposal: Proposal, fits: Callable[[Proposal], bool], handlers: Handlers = ()
    ) -> Iterator[Lease | None]:
        """Lend an idle association that covers ``proposal`` and whose own proposal ``fits``; None if none waits.

        For an operation worth trying on an association already open but not
        worth opening one for (a C-GET before its study's SOP classes are
        known). Nothing is opened; otherwise as :meth:`lease`.
        """
        found = self._take_idle(lambda entry: entry.carries(proposal) and fits(entry.proposal))
        if found is None:
            yield None
            return
        with self._lent(found, handlers) as lease:
            yield lease

    @contextmanager
    def _lent(self, lease: Lease, handlers: Handlers) -> Iterator[Lease]:
        """Bind ``handlers`` on the lease for the block; then back to the pool, or aborted if the block raised."""
        for event, handler in handlers:
            lease.association.bind(event, handler)
        try:
            yield lease
        except BaseException:
            _end(lease.association, clean=False)
            raise
        for event, handler in handlers:
            lease.association.unbind(event, handler)
        self._checkin(lease)

    def close(self) -> None:
        """Release every idle association; those lent out are released when they come back."""
        with self._changed:
            self._closed = True
            idle, self._idle = self._idle, []
            reaper = self._reaper
            self._changed.notify_all()
        for entry in idle:
            _end(entry.association, clean=True)
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(timeout=1)  # it finds nothing idle and ends

    def _checkout(self, proposal: Proposal, fresh: bool, opening: Proposal) -> Lease:
        found = self._take_idle(lambda entry: not fresh and entry.carries(proposal))
        if found is not None:
            return found
        self._release_longest_idle()
        association = self.opener(opening)
        with self._changed:
            self.opened += 1
        return Lease(association, opening, reused=False)

    def _take_idle(self, wanted: Callable[[_Idle], bool]) -> Lease | None:
        """Take out the most recently returned idle association that is ``wanted``; release the stale ones."""
        stale: list[_Idle] = []
        found: _Idle | None = None
        now = time.monotonic()
        with self._changed:
            for entry in reversed(self._idle):  # the most recently returned first
                if not entry.association.is_established or now - entry.since >= self.idle_timeout:
                    stale.append(entry)
                elif found is None and wanted(entry):
                    found = entry
            for entry in [*stale, *([found] if found else [])]:
                self._idle.remove(entry)
        for entry in stale:
            _end(entry.association, clean=True)
        if found is None:
            return None
        logger.debug("Reusing an association to %s", self.name)
        return Lease(found.association, found.proposal, reused=True)

    def _release_longest_idle(self) -> None:
        """Make room on the server for a new association: release the one idle longest, if any.

        A server serves a bounded number of associations at once (Orthanc:
        ``DicomThreadsCount``, 4 by default) and an idle one held open takes
        one of them; so the pool never holds more associations than were in
        use at once, and a new one replaces one that did not fit.
        """
        with self._changed:
            oldest = self._idle.pop(0) if self._idle else None
        if oldest is not None:
            _end(oldest.association, clean=True)

    def _checkin(self, lease: Lease) -> None:
        released: list[Association] = []
        with self._changed:
            if lease.association.is_established and not self._closed and self.keep > 0:
                accepted = frozenset(str(c.abstract_syntax) for c in lease.association.accepted_contexts)
                self._idle.append(_Idle(lease.association, lease.proposal, time.monotonic(), accepted))
                while len(self._idle) > self.keep:
                    released.append(self._idle.pop(0).association)
                self._start_reaper()
            else:
                released.append(lease.association)
        for association in released:
            _end(association, clean=True)

    def _start_reaper(self) -> None:
        """Start the thread that releases idle associations, unless one runs (called holding the lock)."""
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="dicomtrolley-associations", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        """Release idle associations as their time runs out; end when none is left."""
        while True:
            with self._changed:
                if not self._idle:
                    self._reaper = None
                    return
                now = time.monotonic()
                expired = [e for e in self._idle if now - e.since >= self.idle_timeout]
                if not expired:
                    self._changed.wait(min(e.since for e in self._idle) + self.idle_timeout - now)
                    continue
                for entry in expired:
                    self._idle.remove(entry)
            logger.debug("Releasing %d idle association(s) to %s", len(expired), self.name)
            for entry in expired:
                _end(entry.association, clean=True)


def _end(association: Association, *, clean: bool) -> None:
    """Release (``clean``) or abort an association that is still established."""
    if not association.is_established:
        return
    if clean:
        association.release()
    else:
        association.abort()


_pools: dict[Hashable, AssociationPool] = {}
_pools_lock = threading.Lock()


def pool_for(key: Hashable, make: Callable[[], AssociationPool]) -> AssociationPool:
    """The pool of the peer ``key`` names, made with ``make`` the first time."""
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = make()
        return pool


def discard_pool(key: Hashable) -> None:
    """Close the pool of ``key``, if any; the next :func:`pool_for` makes a new one."""
    with _pools_lock:
        pool = _pools.pop(key, None)
    if pool is not None:
        pool.close()


def close_all() -> None:
    """Close every pool: idle associations are released (run at interpreter exit)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def _forget_all() -> None:
    """In a forked child: the parent's associations are the parent's; start with no pools."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


# Before the interpreter waits for non-daemon threads (pynetdicom's own), not after: an idle
# association kept for reuse would otherwise hold every script's exit until its idle release.
_before_threads_are_joined = getattr(threading, "_register_atexit", atexit.register)
_before_threads_are_joined(close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all)
