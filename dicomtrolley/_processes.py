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
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import threading
import types
from collections.abc import Iterator
from multiprocessing import context as mp_context
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

_LOCK = threading.Lock()


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
