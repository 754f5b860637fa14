"""Run one client in a fresh process and measure it: wall time, CPU time, peak memory.

Every run is a new process, started through GNU time (``/usr/bin/time``),
which reports that process's peak resident set size. Measuring it from this
orchestrating process would not do: Linux starts a child's ``ru_maxrss`` at
the size of the process that forked it (and ``exec`` keeps it), so every
client would seem at least as large as the orchestrator. GNU time is a small
program, so the figure it reports is the client's own.

Python clients time their own work and print it as JSON on their last line of
output (see ``clientlib.py``): interpreter start and imports (0.3-0.5 s) are
not what a benchmark of a download should measure. For other programs (curl)
the process's own wall time and CPU time are used.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GNU_TIME = "/usr/bin/time"


class ClientFailedError(RuntimeError):
    """A client exited with an error, timed out, or printed no result."""


@dataclass(frozen=True)
class Sample:
    """One run of one client."""

    wall: float
    """Seconds the work took (the client's own timing when it reports one)."""
    cpu: float
    """User + system CPU seconds of that work, all threads."""
    peak_rss: int
    """Peak resident set size of the process, in bytes."""
    output: Mapping[str, Any] = field(default_factory=dict)
    """What the client reported (counts, bytes, ...), or curl's write-out lines."""
    stdout: str = ""


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
    reports_json: bool = True,
    scratch: Path | None = None,
) -> Sample:
    """Run ``argv`` to its end and measure it.

    Parameters
    ----------
    argv
        The program and its arguments.
    cwd
        Working directory of the process.
    env
        Its environment (default: this process's).
    timeout
        Seconds after which the process is killed and the run fails.
    reports_json
        The program prints a JSON object with ``seconds`` and ``cpu`` on its last
        line; those replace the process's wall and CPU times.
    scratch
        A folder for GNU time's report and the program's standard error (default ``cwd``).

    Raises
    ------
    ClientFailedError
        On a non-zero exit, a timeout, or missing JSON output.
    """
    if not Path(GNU_TIME).is_file():
        raise ClientFailedError(f"{GNU_TIME} is missing: apt-get install time")
    scratch = scratch or cwd
    usage_path, stderr_path = scratch / "usage.txt", scratch / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        started = time.perf_counter()
        try:
            completed = subprocess.run(
                [GNU_TIME, "--format", "%M %U %S", "--output", str(usage_path), *argv],
                cwd=cwd, env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise ClientFailedError(f"{' '.join(argv[:4])} ... still running after {timeout:.0f} s") from None
        wall = time.perf_counter() - started
    stdout = completed.stdout.decode("utf-8", "replace")
    if completed.returncode != 0:
        tail = stderr_path.read_text(errors="replace")[-2000:]
        raise ClientFailedError(f"{' '.join(argv[:4])} ... exited with {completed.returncode}:\n{tail}")
    max_kib, user, system = usage_path.read_text().split()[-3:]
    peak = int(max_kib) * 1024
    if not reports_json:
        return Sample(wall, float(user) + float(system), peak, {}, stdout)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ClientFailedError(f"{' '.join(argv[:4])} ... printed no JSON result: {stdout[-500:]!r}")
    output = json.loads(lines[-1])
    return Sample(float(output["seconds"]), float(output["cpu"]), peak, output, stdout)


@dataclass(frozen=True)
class Spread:
    """Median, min and max of one figure over the runs."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values`` (at least one)."""
        return cls(statistics.median(values), min(values), max(values))


@dataclass
class Result:
    """All runs of one client on one task."""

    group: str
    client: str
    payload_bytes: int
    """Bytes the task moves or parses, for MB/s (0 when MB/s means nothing)."""
    samples: list[Sample] = field(default_factory=list)
    verified: str = ""
    """How the output was checked, e.g. "500 files, byte-equal"."""
    role: str = "current"
    """``current`` (this package), ``reference`` (dicomtrolley 4.1.0), ``curl``, ``pynetdicom``, ``getscu`` or
    ``other``."""
    headline: bool = False
    """The row the group's targets are judged on."""
    kind: str = ""
    """Rows of a group with the same kind are compared with each other."""
    error: str = ""

    @property
    def wall(self) -> Spread:
        """Seconds per run."""
        return Spread.of([s.wall for s in self.samples])

    @property
    def cpu(self) -> Spread:
        """CPU seconds per run."""
        return Spread.of([s.cpu for s in self.samples])

    @property
    def peak_rss(self) -> Spread:
        """Peak resident memory per run, in bytes."""
        return Spread.of([float(s.peak_rss) for s in self.samples])

    @property
    def throughput(self) -> Spread:
        """MB/s (10^6 bytes) per run: the median run's rate, and the slowest and fastest."""
        rates = [self.payload_bytes / s.wall / 1e6 for s in self.samples if s.wall > 0]
        return Spread.of(rates or [0.0])
