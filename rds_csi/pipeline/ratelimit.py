"""Token buckets: the correlator's spam filter and the sink's client-side request limit.

Both follow golang.org/x/time/rate as client-go uses it: a bucket starts full with `burst`
tokens and refills at `rate` tokens per second.  Time is passed in (seconds, monotonic), so one
bucket costs a few floats and thousands of them can live in an LRU.
"""

from __future__ import annotations

import asyncio

from rds_csi.pipeline.clock import SYSTEM_CLOCK, Clock

__all__ = ["AsyncRateLimiter", "TokenBucket"]


class TokenBucket:
    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate < 0 or burst < 1:
            raise ValueError(f"need rate >= 0 and burst >= 1, got rate={rate} burst={burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now

    def tokens(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def try_take(self, now: float) -> bool:
        """Take one token if there is one (client-go's TryAccept)."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def delay(self, now: float) -> float:
        """Seconds until a token is available (0 if one is); inf if the bucket never refills."""
        self._refill(now)
        missing = 1.0 - self._tokens
        if missing <= 0:
            return 0.0
        if self.rate == 0:
            return float("inf")
        return missing / self.rate

    def reserve(self, now: float) -> float:
        """Take one token, going into debt if needed; return how long the taker must wait.

        Concurrent takers queue up behind each other this way instead of all waking at once.
        """
        wait = self.delay(now)
        self._tokens -= 1.0
        return wait


class AsyncRateLimiter:
    """`await acquire()` before each API call: at most `qps` per second after a `burst`.

    `qps <= 0` disables the limit.
    """

    def __init__(self, qps: float, burst: int, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._bucket = TokenBucket(qps, max(1, burst), clock.monotonic()) if qps > 0 else None

    async def acquire(self) -> None:
        if self._bucket is None:
            return
        wait = self._bucket.reserve(self._clock.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
