"""Progress of a long download: a callback, and a tqdm bar where one makes sense.

A bar appears by default only where somebody watches: a terminal, or a
notebook, and only when tqdm is installed (``pip install dicomtrolley[progress]``).
Batch jobs whose output goes to a file get no bar; they can pass their own
callback instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Progress:
    """How far a download has come.

    Parameters
    ----------
    instances
        Instances written (or found complete) so far.
    total
        Instances expected, when a search said so; ``None`` when unknown.
    bytes_written
        Bytes written so far.
    elapsed
        Seconds since the download started.
    """

    instances: int
    total: int | None
    bytes_written: int
    elapsed: float


ProgressCallback = Callable[[Progress], None]


def is_watched() -> bool:
    """True in an interactive terminal or a Jupyter kernel: where a bar is shown by default."""
    return "ipykernel" in sys.modules or sys.stderr.isatty()


class ProgressReporter:
    """Sends progress to a callback and/or a tqdm bar; a context manager that closes the bar.

    Parameters
    ----------
    progress
        ``None``: a bar when watched and tqdm is installed; ``True``/``False``:
        bar on or off; a callable: called with each :class:`Progress`.
    total
        Instances expected, if known.
    """

    def __init__(self, progress: bool | ProgressCallback | None, total: int | None) -> None:
        self.callback = progress if callable(progress) else None
        want_bar = is_watched() if progress is None else progress is True
        self._bar: Any = None
        if want_bar:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                if progress is True:
                    raise ImportError(
                        "A progress bar needs tqdm: pip install dicomtrolley[progress]"
                    ) from None
            else:
                self._bar = tqdm(total=total, unit="instance", desc="dicomtrolley", leave=True)

    def update(self, progress: Progress) -> None:
        """Report one step."""
        if self._bar is not None:
            self._bar.n = progress.instances
            megabytes = progress.bytes_written / 1e6
            rate = f", {megabytes / progress.elapsed:.0f} MB/s" if progress.elapsed > 0 else ""
            self._bar.set_postfix_str(f"{megabytes:.0f} MB{rate}", refresh=False)
            self._bar.refresh()
        if self.callback is not None:
            self.callback(progress)

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
