"""Warnings for dicomtrolley 4.x arguments that are still accepted but do nothing here.

A 4.x script keeps running; the warning says where the setting lives now.
"""

from __future__ import annotations

import warnings

PARALLELISM_MOVED = (
    "{where}: use_async and max_workers are deprecated; downloads always run in parallel, and "
    "parallelism is set on the downloader, e.g. WadoURI(session, url, workers=8) or "
    "WadoRS(session, url, workers=4)"
)


def warn_parallelism_moved(where: str, *, stacklevel: int = 3) -> None:
    """Warn (DeprecationWarning) that ``use_async``/``max_workers`` were given to ``where``."""
    warnings.warn(PARALLELISM_MOVED.format(where=where), DeprecationWarning, stacklevel=stacklevel)
