"""In-process counters for the event pipeline, read by the metrics endpoint and by tests.

Every event that does not reach a sink is counted here with its cause: nothing is dropped
silently.  Counters count occurrences (one `emit`), not API writes, unless the name says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class PipelineStats:
    emitted: int = 0
    # cause -> occurrences lost (e.g. "queue_full", "invalid", "closed", "rejected_422").
    dropped: Counter[str] = field(default_factory=Counter)
    # (verb, status) -> API calls, e.g. ("create", "201"), ("patch", "429"), ("create", "error").
    written: Counter[tuple[str, str]] = field(default_factory=Counter)
    retried: int = 0
    # occurrences folded into a write that was already queued, in flight or waiting to retry.
    coalesced: int = 0
    # Set by the broadcaster so that readers see the live depth of its queue.
    queue_depth: Callable[[], int] = field(default=lambda: 0)

    def drop(self, cause: str, occurrences: int = 1) -> None:
        self.dropped[cause] += occurrences

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def snapshot(self) -> dict[str, object]:
        """A plain, JSON-friendly copy for logs, metrics and benchmarks."""
        return {
            "emitted": self.emitted,
            "dropped": dict(self.dropped),
            "written": {f"{verb}:{status}": n for (verb, status), n in self.written.items()},
            "retried": self.retried,
            "coalesced": self.coalesced,
            "queue_depth": self.queue_depth(),
        }
