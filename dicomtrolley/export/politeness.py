"""Being polite to a server shared with a hospital: a cap on bytes per second, and a time window.

A :class:`RateLimiter` paces the whole export (every study in flight draws on
one budget); a :class:`TimeWindow` lets new studies start only in the hours
the archive can spare, such as ``19:00-07:00``.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as clock

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMG]I?B|B)?\s*(?:/S)?\s*$", re.I)
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_rate(text: str) -> float:
    """Bytes per second from ``"50MB/s"``, ``"1.5 GB/s"``, ``"800KiB/s"`` or a plain number.

    Raises
    ------
    ValueError
        The text is not a rate.
    """
    match = _RATE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a rate such as 50MB/s")
    return float(match.group(1)) * _UNITS[(match.group(2) or "").upper()]


class RateLimiter:
    """A token bucket shared by every thread of an export: at most ``rate`` bytes per second on average.

    Parameters
    ----------
    rate
        Bytes per second.
    burst
        Seconds of traffic that may go out at once after a pause.
    """

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.capacity = rate * burst
        self._tokens = self.capacity
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def wait_for(self, size: int, stop: threading.Event | None = None) -> None:
        """Take ``size`` bytes from the budget, sleeping until it allows them (or ``stop`` is set)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= size
            debt = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if debt > 0:
            if stop is not None:
                stop.wait(debt)
            else:
                time.sleep(debt)


@dataclass(frozen=True)
class TimeWindow:
    """Hours of the day, local time, in which new studies may start; may run over midnight.

    Examples
    --------
    >>> TimeWindow.parse("19:00-07:00").is_open(datetime(2024, 1, 1, 23, 0))
    True
    >>> TimeWindow.parse("19:00-07:00").is_open(datetime(2024, 1, 1, 12, 0))
    False
    """

    start: clock
    end: clock

    @classmethod
    def parse(cls, text: str) -> TimeWindow:
        """A window from ``"HH:MM-HH:MM"``.

        Raises
        ------
        ValueError
            The text is not such a window.
        """
        match = _WINDOW.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a time window such as 19:00-07:00")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        try:
            return cls(clock(h1, m1), clock(h2, m2))
        except ValueError as error:
            raise ValueError(f"{text!r} is not a time window: {error}") from None

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def is_open(self, moment: datetime | None = None) -> bool:
        """True when ``moment`` (default: now) lies in the window."""
        now = (moment or datetime.now()).time()
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def seconds_until_open(self, moment: datetime | None = None) -> float:
        """Seconds from ``moment`` (default: now) until the window opens; 0 when it is open."""
        moment = moment or datetime.now()
        if self.is_open(moment):
            return 0.0
        opening = datetime.combine(moment.date(), self.start)
        if opening <= moment:
            opening += timedelta(days=1)
        return (opening - moment).total_seconds()
