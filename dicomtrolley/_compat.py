"""What keeps dicomtrolley 4.x scripts running: warnings for arguments that moved, and the tests that tell a 4.x object.

A 4.x script keeps running; a warning says where the setting lives now. The
shims sit here, at the edges where 4.x objects come in, so that no hot path
asks what kind of object it was handed.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any, cast

PARALLELISM_MOVED = (
    "{where}: use_async and max_workers are deprecated; downloads always run in parallel, and "
    "parallelism is set on the downloader, e.g. WadoURI(session, url, workers=8) or "
    "WadoRS(session, url, workers=4)"
)


ARGUMENTS_SWAPPED = (
    "Trolley(downloader, searcher) is 4.x's order and is taken as Trolley(searcher, downloader); "
    "pass them as Trolley(searcher=..., downloader=...)"
)


def warn_arguments_swapped(*, stacklevel: int = 3) -> None:
    """Warn (DeprecationWarning) that a Trolley was given its downloader first, as 4.x took it, and is swapping them."""
    warnings.warn(ARGUMENTS_SWAPPED, DeprecationWarning, stacklevel=stacklevel)


def warn_parallelism_moved(where: str, *, stacklevel: int = 3) -> None:
    """Warn (DeprecationWarning) that ``use_async``/``max_workers`` were given to ``where``."""
    warnings.warn(PARALLELISM_MOVED.format(where=where), DeprecationWarning, stacklevel=stacklevel)




def dataset_saver(storage: Any, *, folder: Any, protocol: type) -> Callable[..., object] | None:
    """The method a storage written for 4.x is handed parsed Datasets through; None for a storage of this version.

    ``folder`` is ``StorageDir`` and ``protocol`` is ``Storage``. A 4.x
    ``DICOMDiskStorage`` that is neither is fed through its ``save``; so is a
    ``StorageDir`` subclass whose ``save`` takes 4.x's ``(dataset, path)``. One
    that only chooses paths with ``generate_path`` is fed through
    ``save_dataset``, which asks it. A subclass whose ``save`` takes the bytes of
    an instance is a storage of this version. Asked once, where the trolley is
    handed its storage, never on the way of a download.
    """
    kind = type(storage)
    if not isinstance(storage, folder):
        return None if isinstance(storage, protocol) else cast(Callable[..., object], storage.save)
    saves = kind.save is not folder.save
    if kind.generate_path is not folder.generate_path:
        return cast(Callable[..., object], storage.save if saves else storage.save_dataset)
    if not saves:
        return None
    parameters = list(inspect.signature(kind.save).parameters)[1:]
    takes_datasets = parameters[:1] == ["dataset"] or "path" in parameters
    return cast(Callable[..., object], storage.save) if takes_datasets else None
