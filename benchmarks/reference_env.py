"""The virtual environment of the other Python clients: dicomtrolley 4.1.0 and dicomweb-client.

It lives in ``benchmarks/.venv-reference`` (git-ignored), apart from this
package's environment, because the public dicomtrolley 4.1.0 and this package
share the import name ``dicomtrolley``. It is made once and reused while it
holds the pinned versions.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

VENV = Path(__file__).resolve().parent / ".venv-reference"
PACKAGES = ("dicomtrolley==4.1.0", "dicomweb-client==0.61.2")

_CHECK = (
    "import importlib.metadata as m, sys; "
    "wanted = dict(p.split('==') for p in sys.argv[1:]); "
    "sys.exit(any(m.version(n) != v for n, v in wanted.items()))"
)


def _current(python: Path) -> bool:
    if not python.is_file():
        return False
    return subprocess.run([str(python), "-c", _CHECK, *PACKAGES], capture_output=True, check=False).returncode == 0


def ensure_reference_env(venv: Path = VENV) -> Path:
    """Make (or reuse) the environment; return its Python interpreter.

    Raises
    ------
    subprocess.CalledProcessError
        When the environment cannot be made or pip cannot install the packages.
    """
    python = venv / "bin" / "python"
    if _current(python):
        return python
    logger.info("installing %s into %s", " ".join(PACKAGES), venv)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PACKAGES],
        check=True,
    )
    return python
