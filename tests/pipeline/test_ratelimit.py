"""Token buckets for the spam filter and the client-side request limit."""

from __future__ import annotations

import asyncio

import pytest

from rds_csi.pipeline.clock import ManualClock
from rds_csi.pipeline.ratelimit import AsyncRateLimiter, TokenBucket


def test_bucket_starts_full_then_refills_at_rate() -> None:
    bucket = TokenBucket(rate=0.5, burst=3, now=0.0)
    assert [bucket.try_take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.delay(0.0) == 2.0
    assert bucket.delay(1.5) == pytest.approx(0.5)
    assert bucket.try_take(2.0)
    # Never more than the burst, however long it rested.
    assert bucket.tokens(1000.0) == 3.0


def test_zero_rate_never_refills() -> None:
    bucket = TokenBucket(rate=0, burst=1, now=0.0)
    assert bucket.try_take(0.0)
    assert bucket.delay(1e9) == float("inf")


def test_reserve_queues_takers_behind_each_other() -> None:
    bucket = TokenBucket(rate=10, burst=1, now=0.0)
    assert [bucket.reserve(0.0) for _ in range(3)] == pytest.approx([0.0, 0.1, 0.2])


async def test_async_limiter_spaces_calls_after_the_burst() -> None:
    limiter = AsyncRateLimiter(qps=200, burst=2)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(6):
        await limiter.acquire()
    # 2 immediately, then 4 at 5 ms each.
    assert loop.time() - start >= 0.019


async def test_disabled_limiter_never_waits() -> None:
    limiter = AsyncRateLimiter(qps=0, burst=1, clock=ManualClock())
    for _ in range(1000):
        await limiter.acquire()
