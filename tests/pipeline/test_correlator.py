"""The correlator: client-go's aggregation, de-duplication and spam filter, with tuple keys."""

from __future__ import annotations

from dataclasses import replace

from rds_csi.pipeline.clock import ManualClock
from rds_csi.pipeline.correlator import (
    AGGREGATE_PREFIX,
    Correlation,
    Correlator,
    CorrelatorOptions,
    aggregate_key,
    event_key,
)
from rds_csi.pipeline.kube_wire import core_event_patch
from rds_csi.pipeline.model import Event, ObjectRef
from tests.pipeline.factories import node_event

PVC = ObjectRef(
    kind="PersistentVolumeClaim", name="data", namespace="apps", uid="u-1", api_version="v1"
)


def make_event(
    clock: ManualClock,
    message: str = "mount failed",
    *,
    reason: str = "NodeStageFailed",
    type_: str = "Warning",
    involved: ObjectRef = PVC,
) -> Event:
    return node_event(involved, at_ns=clock.now_ns(), type=type_, reason=reason, message=message)


def emit(
    correlator: Correlator, clock: ManualClock, message: str = "mount failed", **kwargs: object
) -> Correlation:
    return correlator.correlate(make_event(clock, message, **kwargs))  # type: ignore[arg-type]


def test_identical_events_become_one_event_with_a_growing_count() -> None:
    clock = ManualClock()
    correlator = Correlator(clock=clock)
    first = emit(correlator, clock)
    clock.advance(5)
    second = emit(correlator, clock)
    clock.advance(5)
    third = emit(correlator, clock)

    assert [first.event.count, second.event.count, third.event.count] == [1, 2, 3]
    assert first.key == second.key == third.key
    # The repeat keeps the first event's name and first timestamp: it patches that object.
    assert third.event.name == first.event.name
    assert third.event.first_timestamp_ns == first.event.first_timestamp_ns
    assert third.event.last_timestamp_ns == first.event.first_timestamp_ns + 10 * 10**9
    patch = core_event_patch(
        count=third.event.count,
        last_timestamp_ns=third.event.last_timestamp_ns,
        message=third.event.message,
    )
    assert patch == {
        "count": 3,
        "lastTimestamp": "2026-09-21T14:13:30Z",
        "message": "mount failed",
    }


def test_a_different_field_path_or_message_is_a_different_event() -> None:
    clock = ManualClock()
    correlator = Correlator(clock=clock)
    a = emit(correlator, clock, "exit 32")
    b = emit(correlator, clock, "exit 1")
    c = emit(correlator, clock, "exit 32", involved=replace(PVC, field_path="spec.volumes"))
    assert len({a.key, b.key, c.key}) == 3
    assert [a.event.count, b.event.count, c.event.count] == [1, 1, 1]


def test_tenth_distinct_message_is_combined_into_an_aggregate_event() -> None:
    clock = ManualClock()
    correlator = Correlator(clock=clock)
    singles = [emit(correlator, clock, f"attempt {i} failed") for i in range(9)]
    assert not any(c.aggregated for c in singles)
    assert [c.event.message for c in singles] == [f"attempt {i} failed" for i in range(9)]

    tenth = emit(correlator, clock, "attempt 9 failed")
    assert tenth.aggregated
    assert tenth.event.message == AGGREGATE_PREFIX + "attempt 9 failed"
    assert tenth.key == aggregate_key(make_event(clock))
    assert tenth.event.count == 1

    # Further new messages fold into the same aggregate event, count growing, latest message.
    eleventh = emit(correlator, clock, "attempt 10 failed")
    assert eleventh.aggregated
    assert eleventh.key == tenth.key
    assert eleventh.event.name == tenth.event.name
    assert eleventh.event.count == 2
    assert eleventh.event.message == AGGREGATE_PREFIX + "attempt 10 failed"


def test_a_retained_message_is_still_sent_on_its_own() -> None:
    clock = ManualClock()
    correlator = Correlator(clock=clock)
    for i in range(10):
        emit(correlator, clock, f"m{i}")
    # At the threshold the least recently seen message (m0) left the group; m9 stayed.
    again = emit(correlator, clock, "m9")
    assert not again.aggregated
    assert again.event.message == "m9"
    # The first m9 went out as the aggregate, so this is the first m9 event of its own.
    assert again.event.count == 1
    # m0 is no longer retained: sending it again fills the group and is combined.
    assert emit(correlator, clock, "m0").aggregated


def test_aggregation_window_slides_with_every_event() -> None:
    clock = ManualClock()
    correlator = Correlator(clock=clock)
    for i in range(9):
        emit(correlator, clock, f"m{i}")
        clock.advance(500)  # each gap < 600 s, total 4500 s > 600 s
    assert emit(correlator, clock, "m9").aggregated


def test_aggregation_group_starts_over_after_600_quiet_seconds() -> None:
    clock = ManualClock()
    correlator = Correlator(clock=clock)
    for i in range(9):
        emit(correlator, clock, f"m{i}")
    clock.advance(600.5)
    later = [emit(correlator, clock, f"n{i}") for i in range(9)]
    assert not any(c.aggregated for c in later)
    assert emit(correlator, clock, "n9").aggregated


def test_aggregation_can_be_switched_off() -> None:
    clock = ManualClock()
    correlator = Correlator(CorrelatorOptions(aggregate=False), clock=clock)
    results = [emit(correlator, clock, f"m{i}") for i in range(30)]
    assert not any(c.aggregated for c in results)


def test_spam_filter_holds_back_after_burst_but_keeps_counting() -> None:
    clock = ManualClock()
    correlator = Correlator(clock=clock)
    results = [emit(correlator, clock) for _ in range(30)]
    assert [c.accepted for c in results] == [True] * 25 + [False] * 5
    # Held-back occurrences still count: the next accepted write carries the true total.
    assert results[-1].event.count == 30
    skey = results[0].spam_key
    assert 299.0 < correlator.spam_delay(skey) <= 300.0
    clock.advance(299)
    assert not emit(correlator, clock).accepted
    clock.advance(300)
    after = emit(correlator, clock)
    assert after.accepted
    assert after.event.count == 32
    assert not emit(correlator, clock).accepted


def test_spam_bucket_ignores_reason_by_default() -> None:
    clock = ManualClock()
    correlator = Correlator(clock=clock)
    for _ in range(25):
        emit(correlator, clock, reason="Noisy")
    # client-go: one noisy reason starves every other reason on the object (k/k#67887).
    assert not emit(correlator, clock, reason="Important").accepted
    # ...but not the other type, which has its own bucket since 1.32.
    assert emit(correlator, clock, reason="Important", type_="Normal").accepted


def test_reason_aware_spam_key_gives_each_reason_its_own_bucket() -> None:
    clock = ManualClock()
    correlator = Correlator(CorrelatorOptions(spam_key_includes_reason=True), clock=clock)
    for _ in range(25):
        emit(correlator, clock, reason="Noisy")
    assert not emit(correlator, clock, reason="Noisy").accepted
    assert emit(correlator, clock, reason="Important").accepted


def test_take_spam_token_after_refill_is_what_flushes_a_held_count() -> None:
    clock = ManualClock()
    correlator = Correlator(CorrelatorOptions(spam_burst=1, spam_qps=0.5), clock=clock)
    first = emit(correlator, clock)
    held = emit(correlator, clock)
    assert first.accepted and not held.accepted
    assert correlator.spam_delay(held.spam_key) == 2.0
    assert not correlator.take_spam_token(held.spam_key)
    clock.advance(2)
    assert correlator.spam_delay(held.spam_key) == 0.0
    assert correlator.take_spam_token(held.spam_key)


def test_tuple_keys_do_not_collide_where_concatenation_would() -> None:
    clock = ManualClock()
    correlator = Correlator(CorrelatorOptions(spam_burst=1, spam_qps=0), clock=clock)
    # client-go joins fields with "": namespace "ab" + name "c" == namespace "a" + name "bc".
    one = ObjectRef("PersistentVolumeClaim", name="c", namespace="ab", uid="u", api_version="v1")
    two = ObjectRef("PersistentVolumeClaim", name="bc", namespace="a", uid="u", api_version="v1")
    assert "".join(event_key(make_event(clock, involved=one))[1:]) == "".join(
        event_key(make_event(clock, involved=two))[1:]
    )
    a = emit(correlator, clock, involved=one)
    b = emit(correlator, clock, involved=two)
    assert a.key != b.key
    assert a.event.count == b.event.count == 1  # not a count increment of the other object
    assert b.accepted  # and not sharing its spam bucket either
    # Reason "Fail" + message "ed" vs reason "Failed" + message "": distinct as well.
    c = emit(correlator, clock, "ed", reason="Fail")
    d = emit(correlator, clock, "", reason="Failed")
    assert c.key != d.key


def test_caches_are_bounded_by_the_lru_size_but_pinned_records_stay() -> None:
    clock = ManualClock()
    correlator = Correlator(CorrelatorOptions(lru_cache_size=8), clock=clock)
    first = emit(correlator, clock, involved=ObjectRef("Pod", "p0", "ns", "u0"))
    first.record.pinned = True  # the sink still has to write it
    for i in range(1, 50):
        emit(correlator, clock, involved=ObjectRef("Pod", f"p{i}", "ns", f"u{i}"))
    sizes = correlator.cache_sizes()
    assert sizes["aggregate"] == 8 and sizes["spam"] == 8
    assert sizes["dedup"] <= 9
    assert correlator.record(first.key) is first.record
    again = emit(correlator, clock, involved=ObjectRef("Pod", "p0", "ns", "u0"))
    assert again.event.count == 2 and again.record is first.record


def test_idle_expiry_starts_a_new_event() -> None:
    clock = ManualClock()
    correlator = Correlator(CorrelatorOptions(dedup_idle_expiry=360), clock=clock)
    first = emit(correlator, clock)
    clock.advance(300)
    assert emit(correlator, clock).event.count == 2
    clock.advance(361)
    fresh = emit(correlator, clock)
    assert fresh.event.count == 1
    assert fresh.event.name != first.event.name


def test_retract_and_forget() -> None:
    clock = ManualClock()
    correlator = Correlator(clock=clock)
    first = emit(correlator, clock)
    second = emit(correlator, clock)
    correlator.retract(second)
    assert emit(correlator, clock).event.count == 2
    correlator.forget(first.key)
    assert emit(correlator, clock).event.count == 1
