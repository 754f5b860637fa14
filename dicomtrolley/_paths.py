"""Where a path really lies: its links followed, by the one rule every folder check uses.

The output folder must not be left through a link, and the state folder and the
mapping table (which re-identify) must not lie inside a pseudonymised output;
each of these checks asks :func:`lies_inside`, so a link that loops is refused
the same way wherever it is met.
"""

from __future__ import annotations

from pathlib import Path

from dicomtrolley.exceptions import StorageError


def lies_inside(path: Path, folder: Path) -> bool:
    """True when ``path``, its links followed, is ``folder`` or lies below it (``folder``'s links followed too).

    Neither needs to exist: what does not is taken as written.

    Raises
    ------
    StorageError
        A link on the way loops, or a folder on the way cannot be read.
    """
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError) as error:  # RuntimeError: a link loop (before Python 3.13)
        raise StorageError(f"Could not check {path}: {error}") from error
