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

import contextlib
import logging
import multiprocessing
import pickle
import queue
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


class WorkerPool:
    """Worker processes that each run ``function`` on the bytes one calling thread sends them.

    Each worker has its own pipe and serves one call at a time: the calling
    thread sends the bytes and waits for the answer itself, with the GIL
    released. For many small calls this costs the parent a third of what
    :class:`concurrent.futures.ProcessPoolExecutor` costs (no manager thread,
    no futures, no selector per answer), and the parent's CPU is what a
    download shares with its workers. A worker that dies is replaced.

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
    """

    def __init__(
        self, size: int, context: BaseContext, function: Callable[[bytes], Any], *,
        initializer: Callable[..., None], initargs: tuple[Any, ...] = (),
    ) -> None:
        self._context = context
        self._serve_args = (function, initializer, initargs)
        self._idle: queue.SimpleQueue[tuple[BaseProcess, Connection]] = queue.SimpleQueue()
        self._workers: list[tuple[BaseProcess, Connection]] = []
        self._lock = threading.Lock()
        for _ in range(size):
            self._idle.put(self._start())

    def call(self, data: bytes) -> Any:
        """``function(data)`` in the next free worker: its result, or the exception it raised.

        Raises
        ------
        ValueError
            ``data`` is empty (that is how a worker is told to stop).
        WorkerStoppedError
            The worker ended before it answered.
        """
        if not data:
            raise ValueError("no bytes to work on")
        worker = self._idle.get()
        process, connection = worker
        try:
            connection.send_bytes(data)
            ok, answer = connection.recv()
        except (EOFError, OSError) as error:
            process.join(5)
            worker = self._replace(worker)
            raise WorkerStoppedError(f"A worker process ended (exit code {process.exitcode}): {error!r}") from None
        finally:
            self._idle.put(worker)
        if not ok:
            raise answer
        return answer

    def close(self) -> None:
        """Ask every worker to exit, and end those that do not within seconds."""
        with self._lock:
            workers, self._workers = self._workers, []
        for _, connection in workers:
            with contextlib.suppress(OSError):
                connection.send_bytes(_STOP)
        for process, connection in workers:
            process.join(5)
            if process.is_alive():
                logger.warning("A worker process did not exit; terminating it")
                process.terminate()
                process.join()
            connection.close()

    def _start(self) -> tuple[BaseProcess, Connection]:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(theirs, *self._serve_args), daemon=True)  # type: ignore[attr-defined]
        process.start()
        theirs.close()
        with self._lock:
            self._workers.append((process, ours))
        return process, ours

    def _replace(self, worker: tuple[BaseProcess, Connection]) -> tuple[BaseProcess, Connection]:
        with self._lock:
            self._workers.remove(worker)
        worker[1].close()
        return self._start()


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
