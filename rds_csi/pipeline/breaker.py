"""A circuit breaker in front of the API server.

When the server is unreachable, retrying every pending event on its own schedule only adds
load and log noise.  After `threshold` consecutive failures (transport errors, timeouts, 5xx)
the breaker opens: callers wait, and a single probe goes out after an interval that doubles
on each failed probe up to a cap.  The first successful probe closes it for everyone.
"""

from __future__ import annotations

import enum

from rds_csi.pipeline.clock import Clock

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    PROBING = "probing"


class CircuitBreaker:
    def __init__(self, threshold: int, probe_base: float, probe_max: float, clock: Clock) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, got {threshold}")
        self.threshold = threshold
        self.probe_base = probe_base
        self.probe_max = probe_max
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self._interval = probe_base
        self._probe_at = 0.0
        self.opened = 0  # how many times it opened (CLOSED -> OPEN), for stats and tests

    def try_acquire(self) -> bool:
        """May a call go out now?  In the open state, the first caller after the interval
        becomes the probe and must report back with `success`, `failure` or `abandon`."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and self._clock.monotonic() >= self._probe_at:
            self.state = BreakerState.PROBING
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until `try_acquire` can next succeed; inf while a probe is out."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        if self.state is BreakerState.PROBING:
            return float("inf")
        return max(0.0, self._probe_at - self._clock.monotonic())

    def success(self) -> bool:
        """The server answered.  Returns True if this closed an open breaker."""
        self.consecutive_failures = 0
        if self.state is BreakerState.CLOSED:
            return False
        self.state = BreakerState.CLOSED
        self._interval = self.probe_base
        return True

    def failure(self) -> bool:
        """The server could not be reached.  Returns True if this opened (or re-opened) it."""
        self.consecutive_failures += 1
        if self.state is BreakerState.PROBING:
            self._interval = min(self.probe_max, self._interval * 2)
            self._open()
            return True
        if self.state is BreakerState.CLOSED and self.consecutive_failures >= self.threshold:
            self._interval = self.probe_base
            self.opened += 1
            self._open()
            return True
        return False

    def abandon(self) -> None:
        """The probe ended without reaching the server (cancelled, or no call was needed)."""
        if self.state is BreakerState.PROBING:
            self.state = BreakerState.OPEN

    def probe_now(self) -> None:
        """Let the next caller probe at once (used at shutdown, where waiting is pointless)."""
        self._probe_at = self._clock.monotonic()

    def _open(self) -> None:
        self.state = BreakerState.OPEN
        self._probe_at = self._clock.monotonic() + self._interval
