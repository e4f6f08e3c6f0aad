"""Fans events out from the recorder to every sink, in batches, without ever blocking emitters.

client-go's broadcaster has two drop points: a logged one at its incoming queue and a silent
one per watcher, and it throws away whatever is pending on shutdown.  Here both drop points are
counted by cause and logged (rate-limited), each sink is served by its own task from its own
bounded inbox so a slow or dead sink delays nobody else, and `aclose` flushes what is pending
within one deadline instead of dropping it.

    emit ──► queue (queue_size) ──dispatcher──► inbox per sink (sink_inbox_size) ──task──► sink
          drop "queue_full"                     drop "sink_inbox_full:<name>"

Sinks receive the same `Event` objects: they must treat them as read-only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import structlog

from rds_csi.pipeline.clock import SYSTEM_CLOCK, Clock
from rds_csi.pipeline.model import Event
from rds_csi.pipeline.sink import EventSink
from rds_csi.pipeline.stats import DropReporter, PipelineStats

__all__ = ["CloseReport", "EventBroadcaster", "SinkReport"]

_log = structlog.get_logger(__name__)

# Once the close deadline has passed: how long sink tasks get to finish their own `aclose`
# (which runs until that same deadline and then settles its books), and then how long
# cancelled ones get to unwind.
_CANCEL_GRACE = 0.1


@dataclass(frozen=True, slots=True)
class SinkReport:
    name: str
    # Events whose `write` returned normally, over the broadcaster's lifetime.
    delivered: int
    # Events left in the inbox or in flight at the deadline, plus what the sink's own
    # `aclose` said it could not deliver.
    undelivered: int
    # The sink did not finish (inbox and `aclose`) before the deadline.
    timed_out: bool


@dataclass(frozen=True, slots=True)
class CloseReport:
    sinks: tuple[SinkReport, ...]
    # Events the broadcaster itself still held for some sink when the deadline passed.
    dropped_at_close: int
    elapsed: float

    @property
    def undelivered(self) -> int:
        return sum(sink.undelivered for sink in self.sinks)

    def sink(self, name: str) -> SinkReport:
        return next(sink for sink in self.sinks if sink.name == name)


class _Lane:
    """One sink with its inbox and the task that serves it."""

    __slots__ = (
        "abandoned",
        "delivered",
        "draining",
        "in_flight",
        "inbox",
        "name",
        "sink",
        "sink_undelivered",
        "task",
        "wakeup",
    )

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self.name = sink.name
        self.inbox: deque[Event] = deque()
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.in_flight: Sequence[Event] = ()
        self.delivered = 0
        self.abandoned = 0
        self.sink_undelivered = 0
        # Set once the dispatcher has handed over its last events: empty inbox means done.
        self.draining = False


class EventBroadcaster:
    """Bounded, batching, per-sink fan-out of events.

    `emit` may be called before `start` (events wait in the queue) and from the loop's thread
    only; `rds_csi.recorder.ThreadSafeRecorder` serves other threads.
    """

    def __init__(
        self,
        sinks: Iterable[EventSink] = (),
        *,
        queue_size: int = 1000,
        batch_size: int = 100,
        sink_inbox_size: int = 1000,
        stats: PipelineStats | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if queue_size < 1 or batch_size < 1 or sink_inbox_size < 1:
            raise ValueError("queue_size, batch_size and sink_inbox_size must be positive")
        self.stats = stats if stats is not None else PipelineStats()
        self._queue: deque[Event] = deque()
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._inbox_size = sink_inbox_size
        self._wakeup = asyncio.Event()
        self._drops = DropReporter(self.stats, _log, clock=clock)
        self._lanes: list[_Lane] = []
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed = False  # emit refuses
        self._closing = False  # tasks drain what they hold, then finish
        self._deadline = 0.0
        self._report: asyncio.Future[CloseReport] | None = None
        self.stats.queue_depth = self._queue.__len__
        for sink in sinks:
            self.add_sink(sink)

    def add_sink(self, sink: EventSink) -> None:
        """Add a sink; it receives the events dispatched from now on."""
        if self._closed:
            raise RuntimeError("event broadcaster is closed")
        if any(lane.name == sink.name for lane in self._lanes):
            raise ValueError(f"duplicate sink name {sink.name!r}")
        lane = _Lane(sink)
        self._lanes.append(lane)
        if self._dispatcher is not None:
            self._start_lane(lane)

    def start(self) -> None:
        """Start dispatching (idempotent; needs a running loop).  A no-op once closed."""
        if self._dispatcher is None and not self._closed:
            self._start_tasks()

    def emit(self, event: Event) -> bool:
        """Queue `event` without waiting.  False (counted, logged) if it was dropped."""
        if self._closed:
            self._drops.drop("closed")
            return False
        queue = self._queue
        if len(queue) >= self._queue_size:
            self._drops.drop("queue_full", queue_size=self._queue_size)
            return False
        queue.append(event)
        self.stats.emitted += 1
        self._wakeup.set()
        return True

    async def aclose(self, timeout: float = 10.0) -> CloseReport:
        """Stop accepting, deliver what is pending and close every sink, all within `timeout`.

        Each sink first gets the rest of its inbox and then `aclose(deadline)`; sinks that are
        still busy at the deadline are cancelled and what they held is reported undelivered.
        Calling it again returns the same report.
        """
        if self._report is not None:
            return await asyncio.shield(self._report)
        loop = asyncio.get_running_loop()
        self._report = loop.create_future()
        try:
            report = await self._close(loop, timeout)
        except BaseException as exc:
            # Cancelled (or a bug): stop the pipeline's tasks rather than leak them.
            for task in self._tasks():
                task.cancel()
            if isinstance(exc, asyncio.CancelledError):
                self._report.cancel()
            else:
                self._report.set_exception(exc)
                self._report.exception()  # retrieved: the caller gets it raised below
            raise
        self._report.set_result(report)
        return report

    def _tasks(self) -> list[asyncio.Task[None]]:
        tasks = [lane.task for lane in self._lanes if lane.task is not None]
        if self._dispatcher is not None:
            tasks.append(self._dispatcher)
        return tasks

    async def _close(self, loop: asyncio.AbstractEventLoop, timeout: float) -> CloseReport:
        started = loop.time()
        self._deadline = started + timeout
        self._closed = True
        if self._dispatcher is None:
            self._start_tasks()  # so that events emitted before start() are flushed too
        self._closing = True
        self._wakeup.set()
        _, timed_out = await asyncio.wait(
            self._tasks(), timeout=max(0.0, self._deadline - loop.time())
        )
        pending = timed_out
        if pending:
            # Cancelling now would cut off sinks that are just counting what they could not
            # deliver: the loss would go missing from the report and the counters.
            _, pending = await asyncio.wait(pending, timeout=_CANCEL_GRACE)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=_CANCEL_GRACE)
        report = self._build_report(timed_out, loop.time() - started)
        self._drops.flush()
        self._log_report(report)
        return report

    def _build_report(self, timed_out: set[asyncio.Task[None]], elapsed: float) -> CloseReport:
        # Only if the dispatcher itself was stuck; it never waits while closing.
        undispatched = len(self._queue)
        sinks = []
        for lane in self._lanes:
            lane.abandoned = len(lane.inbox) + len(lane.in_flight) + undispatched
            if lane.abandoned:
                self._drops.drop(f"close_deadline:{lane.name}", lane.abandoned)
            sinks.append(
                SinkReport(
                    name=lane.name,
                    delivered=lane.delivered,
                    undelivered=lane.abandoned + lane.sink_undelivered,
                    timed_out=lane.task in timed_out,
                )
            )
        return CloseReport(
            sinks=tuple(sinks),
            dropped_at_close=sum(lane.abandoned for lane in self._lanes),
            elapsed=elapsed,
        )

    def _log_report(self, report: CloseReport) -> None:
        log = _log.warning if report.undelivered else _log.info
        log(
            "event broadcaster closed",
            elapsed_s=round(report.elapsed, 3),
            dropped_at_close=report.dropped_at_close,
            sinks={
                sink.name: {
                    "delivered": sink.delivered,
                    "undelivered": sink.undelivered,
                    "timed_out": sink.timed_out,
                }
                for sink in report.sinks
            },
        )

    def _start_tasks(self) -> None:
        loop = asyncio.get_running_loop()
        for lane in self._lanes:
            self._start_lane(lane)
        self._dispatcher = loop.create_task(self._dispatch(), name="event-dispatcher")
        self._dispatcher.add_done_callback(_log_crash)

    def _start_lane(self, lane: _Lane) -> None:
        lane.task = asyncio.get_running_loop().create_task(
            self._serve(lane), name=f"event-sink:{lane.name}"
        )
        lane.task.add_done_callback(_log_crash)

    async def _dispatch(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                if self._closing:
                    break
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = list(queue)
            queue.clear()
            for lane in self._lanes:
                self._offer(lane, batch)
        for lane in self._lanes:
            lane.draining = True
            lane.wakeup.set()

    def _offer(self, lane: _Lane, batch: list[Event]) -> None:
        # While closing, the limit is lifted: the queue is bounded, and flushing is the point.
        free = len(batch) if self._closing else self._inbox_size - len(lane.inbox)
        if free >= len(batch):
            lane.inbox.extend(batch)
        else:
            if free > 0:
                lane.inbox.extend(batch[:free])
            self._drops.drop(
                f"sink_inbox_full:{lane.name}",
                len(batch) - max(free, 0),
                sink_inbox_size=self._inbox_size,
            )
        lane.wakeup.set()

    async def _serve(self, lane: _Lane) -> None:
        inbox = lane.inbox
        sink = lane.sink
        batch_size = self._batch_size
        while True:
            if not inbox:
                if lane.draining:
                    break
                lane.wakeup.clear()
                await lane.wakeup.wait()
                continue
            if len(inbox) <= batch_size:
                batch = list(inbox)
                inbox.clear()
            else:
                batch = [inbox.popleft() for _ in range(batch_size)]
            lane.in_flight = batch
            try:
                await sink.write(batch)
            except Exception as exc:  # the protocol says it must not; survive it anyway
                self._drops.drop(
                    f"sink_error:{lane.name}", len(batch), error=repr(exc)[:300], exc_info=exc
                )
            else:
                lane.delivered += len(batch)
            lane.in_flight = ()
        try:
            lane.sink_undelivered = await sink.aclose(self._deadline)
        except Exception as exc:
            _log.error("event sink failed to close", sink=lane.name, error=repr(exc)[:300])


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("event pipeline task crashed", task=task.get_name(), exc_info=task.exception())
