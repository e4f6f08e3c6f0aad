"""The batching broadcaster: drops are counted and logged, sinks are isolated, close flushes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from rds_csi.broadcaster import EventBroadcaster
from rds_csi.pipeline.clock import ManualClock
from rds_csi.pipeline.model import Event, ObjectRef
from rds_csi.pipeline.stats import PipelineStats
from rds_csi.testing import RecordingSink

PVC = ObjectRef(kind="PersistentVolumeClaim", name="data", namespace="apps")


def make_event(i: int) -> Event:
    return Event(
        name=f"data.{i:x}",
        namespace="apps",
        involved=PVC,
        type="Normal",
        reason="Step",
        message=f"step {i}",
        source_component="c",
        source_host="h",
        reporting_controller="c",
        reporting_instance="h",
        first_timestamp_ns=i,
        last_timestamp_ns=i,
    )


def emit_range(broadcaster: EventBroadcaster, start: int, stop: int) -> list[bool]:
    return [broadcaster.emit(make_event(i)) for i in range(start, stop)]


def messages(events: Sequence[Event]) -> list[str]:
    return [e.message for e in events]


def dropped_lines(logs: Sequence[Mapping[str, Any]], cause: str) -> list[Mapping[str, Any]]:
    return [line for line in logs if line["event"] == "events dropped" and line["cause"] == cause]


async def test_every_sink_gets_every_event_in_order_in_batches() -> None:
    first, second = RecordingSink("first"), RecordingSink("second")
    broadcaster = EventBroadcaster([first, second], batch_size=7)
    broadcaster.start()
    broadcaster.start()  # idempotent: no second dispatcher, no duplicates
    emit_range(broadcaster, 0, 100)
    expected = [f"step {i}" for i in range(100)]
    assert messages(await first.wait_for(100)) == expected
    assert messages(await second.wait_for(100)) == expected
    assert max(first.batches) <= 7
    report = await broadcaster.aclose(1)
    assert [(s.name, s.delivered, s.undelivered) for s in report.sinks] == [
        ("first", 100, 0),
        ("second", 100, 0),
    ]
    assert broadcaster.stats.emitted == 100


async def test_events_emitted_before_start_are_delivered_after_start() -> None:
    sink = RecordingSink()
    broadcaster = EventBroadcaster([sink])
    assert emit_range(broadcaster, 0, 3) == [True] * 3
    assert broadcaster.stats.queue_depth() == 3
    broadcaster.start()
    assert messages(await sink.wait_for(3)) == ["step 0", "step 1", "step 2"]
    assert broadcaster.stats.queue_depth() == 0
    await broadcaster.aclose(1)


async def test_full_queue_drops_are_counted_and_logged_once_per_interval() -> None:
    clock = ManualClock()
    sink = RecordingSink()
    broadcaster = EventBroadcaster([sink], queue_size=10, clock=clock)
    with capture_logs() as logs:
        accepted = emit_range(broadcaster, 0, 25)  # not started: nothing drains the queue
        assert accepted == [True] * 10 + [False] * 15
        assert len(dropped_lines(logs, "queue_full")) == 1
        clock.advance(10)
        broadcaster.emit(make_event(25))
    stats = broadcaster.stats
    assert stats.emitted == 10
    assert stats.dropped == {"queue_full": 16}
    assert stats.queue_depth() == 10
    lines = dropped_lines(logs, "queue_full")
    # The second line reports the 14 drops it held back plus the one that triggered it.
    assert [line["occurrences"] for line in lines] == [1, 15]
    assert [line["log_level"] for line in lines] == ["warning", "warning"]
    broadcaster.start()
    assert messages(await sink.wait_for(10)) == [f"step {i}" for i in range(10)]
    await broadcaster.aclose(1)


async def test_blocked_sink_does_not_delay_a_healthy_one() -> None:
    slow, healthy = RecordingSink("slow"), RecordingSink("healthy")
    slow.block()
    broadcaster = EventBroadcaster([slow, healthy], batch_size=10)
    broadcaster.start()
    emit_range(broadcaster, 0, 100)
    assert len(await healthy.wait_for(100)) == 100
    await slow.wait_parked()
    assert slow.events == []
    slow.unblock()
    assert messages(await slow.wait_for(100)) == [f"step {i}" for i in range(100)]
    assert broadcaster.stats.dropped_total == 0
    await broadcaster.aclose(1)


async def test_inbox_overflow_drops_for_that_sink_only() -> None:
    slow, healthy = RecordingSink("slow"), RecordingSink("healthy")
    slow.block()
    broadcaster = EventBroadcaster([slow, healthy], batch_size=5, sink_inbox_size=10)
    broadcaster.start()
    with capture_logs() as logs:
        emit_range(broadcaster, 0, 5)
        await slow.wait_parked()  # the slow sink now holds 5 in flight, its inbox is empty
        emit_range(broadcaster, 5, 15)  # fills its inbox
        await healthy.wait_for(15)
        emit_range(broadcaster, 15, 18)  # no room left for the slow sink
        await healthy.wait_for(18)
    assert broadcaster.stats.dropped == {"sink_inbox_full:slow": 3}
    [line] = dropped_lines(logs, "sink_inbox_full:slow")
    assert line["occurrences"] == 3
    slow.unblock()
    assert messages(await slow.wait_for(15)) == [f"step {i}" for i in range(15)]
    assert messages(healthy.events) == [f"step {i}" for i in range(18)]
    await broadcaster.aclose(1)


class FailingSink(RecordingSink):
    """Raises on the first write, works afterwards."""

    def __init__(self) -> None:
        super().__init__("failing")
        self.failed = asyncio.Event()

    async def write(self, batch: Sequence[Event]) -> None:
        if not self.failed.is_set():
            self.failed.set()
            raise ConnectionError("sink bug")
        await super().write(batch)


async def test_a_raising_sink_is_counted_and_keeps_being_served() -> None:
    sink = FailingSink()
    broadcaster = EventBroadcaster([sink])
    broadcaster.start()
    with capture_logs() as logs:
        emit_range(broadcaster, 0, 4)
        await sink.failed.wait()
        emit_range(broadcaster, 4, 6)
        await sink.wait_for(2)
    assert broadcaster.stats.dropped == {"sink_error:failing": 4}
    [line] = dropped_lines(logs, "sink_error:failing")
    assert "sink bug" in line["error"]
    assert messages(sink.events) == ["step 4", "step 5"]
    await broadcaster.aclose(1)


@pytest.mark.parametrize("started", [True, False])
async def test_aclose_flushes_all_pending_events(started: bool) -> None:
    sink = RecordingSink()
    # An inbox smaller than what is pending: close lifts the limit rather than drop.
    broadcaster = EventBroadcaster([sink], sink_inbox_size=100, batch_size=64)
    if started:
        broadcaster.start()
    assert emit_range(broadcaster, 0, 500) == [True] * 500  # no await: all still queued
    report = await broadcaster.aclose(5)
    assert messages(sink.events) == [f"step {i}" for i in range(500)]
    assert sink.closed
    only = report.sink("recording")
    assert (only.delivered, only.undelivered, only.timed_out) == (500, 0, False)
    assert report.dropped_at_close == 0
    assert broadcaster.stats.dropped_total == 0


class HangingCloseSink(RecordingSink):
    async def aclose(self, deadline: float) -> int:
        await asyncio.Event().wait()
        return 0


async def test_aclose_respects_the_deadline_and_reports_what_was_not_delivered() -> None:
    stuck, hanging, healthy = RecordingSink("stuck"), HangingCloseSink("hanging"), RecordingSink()
    stuck.block()
    broadcaster = EventBroadcaster([stuck, hanging, healthy], batch_size=10)
    broadcaster.start()
    emit_range(broadcaster, 0, 30)
    await stuck.wait_parked()  # 10 in flight, 20 waiting in its inbox
    loop = asyncio.get_running_loop()
    before = loop.time()
    with capture_logs() as logs:
        report = await asyncio.wait_for(broadcaster.aclose(timeout=0.2), timeout=5)
    assert loop.time() - before < 2  # returned near the deadline instead of hanging
    by_name = {s.name: (s.delivered, s.undelivered, s.timed_out) for s in report.sinks}
    assert by_name == {
        "stuck": (0, 30, True),
        "hanging": (30, 0, True),
        "recording": (30, 0, False),
    }
    assert report.dropped_at_close == 30
    assert broadcaster.stats.dropped == {"close_deadline:stuck": 30}
    assert healthy.closed and healthy.close_deadline == pytest.approx(before + 0.2, abs=0.05)
    assert not stuck.closed
    [closed_line] = [line for line in logs if line["event"] == "event broadcaster closed"]
    assert closed_line["log_level"] == "warning"
    assert closed_line["sinks"]["stuck"]["undelivered"] == 30


async def test_cancelled_aclose_stops_the_pipeline_tasks() -> None:
    stuck = RecordingSink("stuck")
    stuck.block()
    broadcaster = EventBroadcaster([stuck])
    broadcaster.start()
    emit_range(broadcaster, 0, 5)
    await stuck.wait_parked()
    closing = asyncio.create_task(broadcaster.aclose(timeout=60))
    await stuck.wait_parked()  # still parked: aclose is waiting on the stuck sink
    pipeline = [t for t in asyncio.all_tasks() if t.get_name().startswith("event-")]
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await asyncio.wait(pipeline, timeout=5)
    assert all(t.done() for t in pipeline)
    [sink_task] = [t for t in pipeline if t.get_name() == "event-sink:stuck"]
    assert sink_task.cancelled()
    assert broadcaster.emit(make_event(9)) is False


async def test_emit_after_close_is_a_counted_no_op() -> None:
    sink = RecordingSink()
    broadcaster = EventBroadcaster([sink])
    broadcaster.start()
    first = await broadcaster.aclose(1)
    assert broadcaster.emit(make_event(1)) is False
    assert broadcaster.emit(make_event(2)) is False
    assert broadcaster.stats.dropped == {"closed": 2}
    assert sink.events == []
    assert await broadcaster.aclose(1) is first
    broadcaster.start()  # no-op once closed
    with pytest.raises(RuntimeError):
        broadcaster.add_sink(RecordingSink("late"))


async def test_sink_added_after_start_is_served() -> None:
    early, late = RecordingSink("early"), RecordingSink("late")
    broadcaster = EventBroadcaster([early])
    broadcaster.start()
    broadcaster.add_sink(late)
    emit_range(broadcaster, 0, 3)
    assert len(await late.wait_for(3)) == 3
    await broadcaster.aclose(1)


def test_sink_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        EventBroadcaster([RecordingSink("a"), RecordingSink("a")])


def test_stats_are_shared_with_the_caller() -> None:
    stats = PipelineStats()
    broadcaster = EventBroadcaster([], stats=stats)
    broadcaster.emit(make_event(0))
    assert stats.emitted == 1 and stats.queue_depth() == 1
