"""In-memory stand-ins for tests: a sink that keeps every event and a recorder without a loop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from rds_csi.pipeline.clock import Clock, ManualClock
from rds_csi.pipeline.model import Event
from rds_csi.pipeline.stats import PipelineStats
from rds_csi.recorder import EventRecorder

__all__ = ["FakeRecorder", "RecordingSink"]


class RecordingSink:
    """An `EventSink` that stores every event it is given, in order.

    `block()` parks every following `write` until `unblock()`, to play a slow or hung sink.
    Waiting helpers use a condition, so tests never poll.
    """

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.events: list[Event] = []
        self.batches: list[int] = []  # size of each write, in order
        self.closed = False
        self.close_deadline: float | None = None
        self.parked = 0  # writes currently held by block()
        self._open = asyncio.Event()
        self._open.set()
        self._changed = asyncio.Condition()

    async def write(self, batch: Sequence[Event]) -> None:
        if not self._open.is_set():
            await self._notify_parked(+1)
            try:
                await self._open.wait()
            finally:
                self.parked -= 1
        self.events.extend(batch)
        self.batches.append(len(batch))
        async with self._changed:
            self._changed.notify_all()

    async def aclose(self, deadline: float) -> int:
        self.closed = True
        self.close_deadline = deadline
        return 0

    def block(self) -> None:
        self._open.clear()

    def unblock(self) -> None:
        self._open.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Event]:
        """Wait until at least `count` events arrived; returns them all."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.events) >= count), timeout
            )
        return list(self.events)

    async def wait_parked(self, writes: int = 1, timeout: float = 5.0) -> None:
        """Wait until `writes` writes are held by `block()`."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.parked >= writes), timeout)

    def find(
        self,
        *,
        reason: str | None = None,
        type: str | None = None,
        kind: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
    ) -> list[Event]:
        """Events matching every given field (object fields are the involved object's)."""
        return [
            event
            for event in self.events
            if (reason is None or event.reason == reason)
            and (type is None or event.type == type)
            and (kind is None or event.involved.kind == kind)
            and (name is None or event.involved.name == name)
            and (namespace is None or event.involved.namespace == namespace)
        ]

    async def _notify_parked(self, delta: int) -> None:
        async with self._changed:
            self.parked += delta
            self._changed.notify_all()


class _ListEmitter:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> bool:
        self.events.append(event)
        return True


class FakeRecorder(EventRecorder):
    """A real `EventRecorder` (same validation, naming and truncation) that keeps its events.

    `events` holds "Type Reason message" strings like client-go's FakeRecorder; `built` holds
    the `Event` objects.  No loop, broadcaster or sink is involved.
    """

    def __init__(
        self,
        *,
        component: str = "fake-component",
        host: str = "fake-host",
        reporting_controller: str = "",
        reporting_instance: str = "",
        stats: PipelineStats | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._kept = _ListEmitter()
        super().__init__(
            self._kept,
            component=component,
            host=host,
            reporting_controller=reporting_controller,
            reporting_instance=reporting_instance,
            stats=stats,
            clock=clock if clock is not None else ManualClock(),
        )

    @property
    def built(self) -> list[Event]:
        return self._kept.events

    @property
    def events(self) -> list[str]:
        return [f"{e.type} {e.reason} {e.message}" for e in self._kept.events]

    def clear(self) -> None:
        self._kept.events.clear()
