"""Retry delays: jittered exponential backoff, and the server's Retry-After header.

client-go's recorder sleeps a flat 10 s between its 12 attempts (only the first sleep is
random); a fleet of node plugins retrying in lockstep against a recovering API server is what
jitter avoids, and exponential growth keeps a long outage from costing a request per 10 s.
"""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass

__all__ = ["Backoff", "parse_retry_after"]


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float
    cap: float
    # Each delay is stretched by a random factor in [1, 1 + jitter] (client-go's wait.Jitter).
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The pause after failed attempt number `attempt` (1 for the first failure)."""
        exponent = min(max(attempt - 1, 0), 62)
        plain = min(self.cap, self.base * math.ldexp(1.0, exponent))
        draw = (rng or random).random()
        return min(self.cap, plain * (1.0 + self.jitter * draw))


def parse_retry_after(value: str | None, now_unix: float) -> float | None:
    """Seconds to wait according to a Retry-After header, or None if absent or unreadable.

    RFC 9110 allows delay-seconds or an HTTP-date.  Fractional seconds are accepted too,
    which costs nothing and lets tests use short delays.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP-date is always GMT, but be lenient
            return None
        return max(0.0, when.timestamp() - now_unix)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds
