"""The one clock the pipeline reads, so that tests and benchmarks can drive time by hand."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Wall-clock Unix time in nanoseconds: event timestamps and names."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin: windows, buckets, backoff."""
        ...


class SystemClock:
    def now_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start_ns: int = 1_790_000_000 * 10**9) -> None:
        self._wall_ns = start_ns
        self._mono = 1000.0

    def now_ns(self) -> int:
        return self._wall_ns

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall_ns += int(seconds * 1e9)
        self._mono += seconds


SYSTEM_CLOCK = SystemClock()
