"""Worker processes that never run the caller's script again.

A process started by ``spawn`` or ``forkserver`` prepares itself as its
parent was: it imports the parent's ``__main__`` again, from its file (a
script) or by its name (``python -m``). A script without an
``if __name__ == "__main__":`` guard then runs itself once per worker,
each run starting its own download and its own workers. Library code must
not depend on the caller's guard.

:func:`process_context` gives a :mod:`multiprocessing` context whose
processes are launched while ``__main__`` shows neither a file nor a module
name, so what the child is told to prepare holds no main module and imports
none. The workers then run only what they are sent (functions of this
package, by reference), so they never need the caller's ``__main__``.

:class:`WorkerPool` runs one function of this package in such processes, for
many small calls from a few threads.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import pickle
import sys
import threading
import types
from collections.abc import Callable, Iterator
from multiprocessing import context as mp_context
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()

_STOP = b""
"""What a worker is sent to make it exit (a call always sends some bytes)."""


class _MainWithoutOrigin(types.ModuleType):
    """Stands in for ``__main__`` while a process is launched: everything of it but where it came from.

    ``multiprocessing`` reads ``__spec__`` and ``__file__`` to decide what the
    child imports; the rest is looked up in the real module, so another
    thread pickling one of its classes meanwhile still finds it.
    """

    def __init__(self, main: types.ModuleType) -> None:
        super().__init__("__main__")
        self.__spec__ = None
        object.__setattr__(self, "_main", main)

    def __getattr__(self, name: str) -> Any:
        if name in ("__file__", "__spec__", "__path__"):
            raise AttributeError(name)
        return getattr(object.__getattribute__(self, "_main"), name)


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """While it lasts, ``sys.modules["__main__"]`` tells no file and no module name."""
    with _LOCK:
        main = sys.modules.get("__main__")
        if main is None:
            yield
            return
        sys.modules["__main__"] = _MainWithoutOrigin(main)
        try:
            yield
        finally:
            sys.modules["__main__"] = main


class _MainHidden(BaseProcess):
    """Launches its process with ``__main__`` hidden: listed before a context's process class.

    Its subclasses stay at module level: the child unpickles them.
    """

    @classmethod
    def _Popen(cls, process_obj: Any) -> Any:  # noqa: N802 - multiprocessing's name
        with _main_hidden():
            return super()._Popen(process_obj)  # type: ignore[misc]


class _SpawnProcess(_MainHidden, mp_context.SpawnProcess):
    """A spawned process launched with ``__main__`` hidden."""


class _SpawnContext(mp_context.SpawnContext):
    Process = _SpawnProcess


_CONTEXTS: dict[str, type[BaseContext]] = {"spawn": _SpawnContext}

if sys.platform != "win32":

    class _ForkServerProcess(_MainHidden, mp_context.ForkServerProcess):
        """A process of the fork server launched with ``__main__`` hidden."""

    class _ForkServerContext(mp_context.ForkServerContext):
        Process = _ForkServerProcess

    _CONTEXTS["forkserver"] = _ForkServerContext


def process_context(method: str) -> BaseContext:
    """A context of the start ``method`` (``"spawn"``, ``"forkserver"``) whose children never import ``__main__``.

    ``"fork"`` copies the parent and imports nothing; it is returned as it is.
    """
    made = _CONTEXTS.get(method)
    return made() if made is not None else multiprocessing.get_context(method)


class WorkerStoppedError(RuntimeError):
    """A worker process ended in the middle of a call (killed, out of memory, crashed); another replaces it."""


class PendingCall:
    """A call sent to a worker whose answer is not taken yet: what :meth:`WorkerPool.submit` returns."""

    __slots__ = ("answer", "done", "wake", "worker")

    def __init__(self) -> None:
        self.answer: tuple[bool, Any] | None = None
        self.done = False
        self.wake = threading.Event()
        self.worker: _Worker | None = None

    def deliver(self, answer: tuple[bool, Any]) -> None:
        self.answer, self.done = answer, True
        self.wake.set()


class _Worker:
    """A worker process, its pipe, and the calls sent to it whose answers are not read yet (in order)."""

    def __init__(self, process: BaseProcess, connection: Connection) -> None:
        self.process = process
        self.connection = connection
        self.pending: collections.deque[PendingCall] = collections.deque()
        self.load = 0  # calls given to it and not answered: sent, or about to be
        self.sending = threading.RLock()  # held to send, and to change what it holds
        self.reading = threading.Lock()
        self.stopped: str | None = None  # why it can take no more calls


class WorkerPool:
    """Worker processes that each run ``function`` on bytes the calling threads send them.

    Each worker has its own pipe. A calling thread sends its bytes to the
    worker with the fewest calls in hand, and waits for its answer with the
    GIL released (:meth:`call`); or it sends (:meth:`submit`) and takes the
    answer later (:meth:`result`), so that one thread keeps every worker busy.
    A worker holds up to ``queued`` calls: the next one waits in
    its pipe while it works on the current one, so it never sits idle while
    the parent, busy with the download, gets round to handing it more work.
    Answers come back in the order the calls were sent; whichever waiting
    thread holds the worker's read lock reads them and hands each to its
    caller. For many small calls this costs the parent a third of what
    :class:`concurrent.futures.ProcessPoolExecutor` costs (no manager thread,
    no futures, no selector per answer), and the parent's CPU is what a
    download shares with its workers. A worker that dies is replaced; the calls
    it held raise :class:`WorkerStoppedError`.

    Parameters
    ----------
    size
        Worker processes, all started at once.
    context
        How they start (see :func:`process_context`).
    function
        What each call runs in a worker: a module-level function of bytes whose
        result pickles.
    initializer, initargs
        Run once in each worker before its first call.
    queued
        Calls a worker holds at most, the one it works on included.
    """

    def __init__(
        self, size: int, context: BaseContext, function: Callable[[bytes], Any], *,
        initializer: Callable[..., None], initargs: tuple[Any, ...] = (), queued: int = 2,
    ) -> None:
        self._context = context
        self._serve_args = (function, initializer, initargs)
        self._queued = max(1, queued)
        self._room = threading.Condition()
        self._workers: list[_Worker] = [self._start() for _ in range(size)]

    def call(self, data: bytes) -> Any:
        """``function(data)`` in a worker: its result, or the exception it raised.

        Raises
        ------
        ValueError
            ``data`` is empty (that is how a worker is told to stop).
        WorkerStoppedError
            The worker ended before it answered.
        """
        return self.result(self.submit(data))

    def submit(self, data: bytes) -> PendingCall:
        """Send ``data`` to a worker and return at once; :meth:`result` takes the answer later.

        A thread that produces work (a download) hands it over this way and
        goes on, taking the answers when it needs room: one thread keeps every
        worker busy, where :meth:`call` needs a waiting thread per call in
        flight. Waits only while every worker already holds ``queued`` calls.

        Raises
        ------
        ValueError
            ``data`` is empty (that is how a worker is told to stop).
        """
        if not data:
            raise ValueError("no bytes to work on")
        call = PendingCall()
        call.worker = self._send(call, data)
        return call

    def result(self, call: PendingCall) -> Any:
        """The result of a :meth:`submit`: ``function(data)``, or the exception it raised.

        The answers of one worker come back in the order its calls were sent,
        so taking them in the order of :meth:`submit` never waits on a later one.

        Raises
        ------
        WorkerStoppedError
            The worker ended before it answered.
        """
        self.wait(call)
        assert call.answer is not None
        ok, answer = call.answer
        if not ok:
            raise answer
        return answer

    def wait(self, call: PendingCall) -> None:
        """Wait until the answer of a :meth:`submit` is taken from its worker, without raising what it holds.

        A worker's calls in hand count until their answers are taken: a call
        whose result nobody asks for must still be waited for, or its worker
        looks busy to every later :meth:`submit`.
        """
        assert call.worker is not None, "a call that was never sent"
        self._await(call.worker, call)

    def _send(self, call: PendingCall, data: bytes) -> _Worker:
        """Give ``call`` to the worker with the fewest calls in hand, waiting for room; send its bytes."""
        with self._room:
            while True:
                worker = min(self._workers, key=lambda candidate: candidate.load)
                if worker.load < self._queued:
                    break
                self._room.wait()
            worker.load += 1
        with worker.sending:  # in the pipe in the order of the pending list
            if worker.stopped is not None:
                self._answered(worker, call, (False, WorkerStoppedError(worker.stopped)))
                return worker
            worker.pending.append(call)
            try:
                worker.connection.send_bytes(data)
            except OSError as error:
                self._stopped(worker, error)
        return worker

    def _await(self, worker: _Worker, call: PendingCall) -> None:
        """Wait for ``call``'s answer, reading the worker's answers while no other thread does."""
        while not call.done:
            if not worker.reading.acquire(blocking=False):
                call.wake.wait()  # answered, or asked to read: the reader left with this call first in line
                call.wake.clear()
                continue
            try:
                while not call.done:
                    try:
                        answer = worker.connection.recv()
                    except (EOFError, OSError) as error:
                        self._stopped(worker, error)
                        break
                    self._answered(worker, worker.pending.popleft(), answer)
            finally:
                worker.reading.release()
            with worker.sending:
                if worker.pending:
                    worker.pending[0].wake.set()  # its answer is next: its thread reads from here on

    def _answered(self, worker: _Worker, call: PendingCall, answer: tuple[bool, Any]) -> None:
        call.deliver(answer)
        with self._room:
            worker.load -= 1
            self._room.notify()

    def _stopped(self, worker: _Worker, error: BaseException) -> None:
        """The worker is gone: every call it held fails, and a new worker takes its place."""
        with worker.sending:
            if worker.stopped is not None:
                return
            worker.process.join(5)
            reason = f"A worker process ended (exit code {worker.process.exitcode}): {error!r}"
            worker.stopped = reason
            while worker.pending:
                self._answered(worker, worker.pending.popleft(), (False, WorkerStoppedError(reason)))
            worker.connection.close()
        with self._room:
            if worker in self._workers:
                self._workers[self._workers.index(worker)] = self._start()
            self._room.notify_all()

    def close(self) -> None:
        """Ask every worker to exit, and end those that do not within seconds."""
        with self._room:
            workers, self._workers = self._workers, []
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.connection.send_bytes(_STOP)
        for worker in workers:
            worker.process.join(5)
            if worker.process.is_alive():
                logger.warning("A worker process did not exit; terminating it")
                worker.process.terminate()
                worker.process.join()
            worker.connection.close()

    def _start(self) -> _Worker:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(theirs, *self._serve_args), daemon=True)  # type: ignore[attr-defined]
        process.start()
        theirs.close()
        return _Worker(process, ours)


def _serve(
    connection: Connection, function: Callable[[bytes], Any], initializer: Callable[..., None],
    initargs: tuple[Any, ...],
) -> None:
    """A worker's life: ``initializer``, then one call per message until the stop signal or the pipe closes."""
    initializer(*initargs)
    while True:
        try:
            data = connection.recv_bytes()
        except EOFError:
            return
        if data == _STOP:
            return
        try:
            answer: tuple[bool, Any] = (True, function(data))
        except Exception as error:  # noqa: BLE001 - raised again in the calling thread
            answer = (False, error)
        try:
            connection.send(answer)
        except (pickle.PicklingError, TypeError, AttributeError) as error:  # an answer that does not pickle
            connection.send((False, RuntimeError(f"{answer[1]!r} could not be sent back: {error}")))
