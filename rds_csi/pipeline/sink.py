"""The narrow interface between the broadcaster and whatever consumes events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rds_csi.pipeline.model import Event


class EventSink(Protocol):
    """A consumer of event batches.

    `write` is called from the sink's own task, one batch at a time; it must not raise (a sink
    counts and logs its own failures).  `aclose` flushes what the sink still holds until the
    loop time `deadline`, stops, and returns how many occurrences it could not deliver.
    """

    name: str

    async def write(self, batch: Sequence[Event]) -> None: ...

    async def aclose(self, deadline: float) -> int: ...
