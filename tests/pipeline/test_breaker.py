"""The circuit breaker in front of the API server."""

from __future__ import annotations

from rds_csi.pipeline.breaker import BreakerState, CircuitBreaker
from rds_csi.pipeline.clock import ManualClock


def test_opens_after_threshold_consecutive_failures_only() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(threshold=3, probe_base=1.0, probe_max=8.0, clock=clock)
    breaker.failure()
    breaker.failure()
    breaker.success()  # a success in between resets the streak
    breaker.failure()
    breaker.failure()
    assert breaker.state is BreakerState.CLOSED and breaker.try_acquire()
    assert breaker.failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.try_acquire()
    assert breaker.wait_time() == 1.0


def test_single_probe_with_exponential_capped_interval() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(threshold=1, probe_base=1.0, probe_max=4.0, clock=clock)
    breaker.failure()
    intervals = []
    for _ in range(4):
        intervals.append(breaker.wait_time())
        clock.advance(breaker.wait_time())
        assert breaker.try_acquire()  # the probe
        assert not breaker.try_acquire()  # nobody else while it is out
        assert breaker.wait_time() == float("inf")
        breaker.failure()
    assert intervals == [1.0, 2.0, 4.0, 4.0]
    clock.advance(4.0)
    assert breaker.try_acquire()
    assert breaker.success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.try_acquire() and breaker.try_acquire()


def test_abandoned_probe_lets_another_caller_probe() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(threshold=1, probe_base=1.0, probe_max=4.0, clock=clock)
    breaker.failure()
    clock.advance(1.0)
    assert breaker.try_acquire()
    breaker.abandon()
    assert breaker.try_acquire()


def test_probe_now_skips_the_wait() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(threshold=1, probe_base=30.0, probe_max=60.0, clock=clock)
    breaker.failure()
    assert not breaker.try_acquire()
    breaker.probe_now()
    assert breaker.try_acquire()
