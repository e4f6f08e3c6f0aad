"""Retry delays and Retry-After parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

from rds_csi.pipeline.backoff import Backoff, parse_retry_after


def test_backoff_doubles_up_to_the_cap_with_jitter_on_top() -> None:
    backoff = Backoff(base=1.0, cap=10.0, jitter=0.5)
    rng = random.Random(7)
    delays = [backoff.delay(n, rng) for n in range(1, 8)]
    for attempt, delay in zip(range(1, 8), delays, strict=True):
        plain = min(10.0, 2.0 ** (attempt - 1))
        assert plain <= delay <= min(10.0, plain * 1.5)
    assert delays[-1] == 10.0


def test_jitter_spreads_retries() -> None:
    backoff = Backoff(base=1.0, cap=100.0, jitter=0.5)
    rng = random.Random(1)
    assert len({round(backoff.delay(3, rng), 6) for _ in range(20)}) > 10


def test_retry_after_in_seconds_and_as_http_date() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("0.25", now) == 0.25
    later = datetime(2026, 1, 2, 3, 4, 35, tzinfo=UTC)
    assert parse_retry_after(format_datetime(later, usegmt=True), now) == 30.0
    earlier = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)
    assert parse_retry_after(format_datetime(earlier, usegmt=True), now) == 0.0


def test_unusable_retry_after_is_ignored() -> None:
    for value in (None, "", "soon", "-3", "nan", "inf"):
        assert parse_retry_after(value, 0.0) is None
