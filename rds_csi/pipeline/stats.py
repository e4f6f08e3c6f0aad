"""In-process counters for the event pipeline, read by the metrics endpoint and by tests.

Every event that does not reach a sink is counted here with its cause: nothing is dropped
silently.  Counters count occurrences (one `emit`), not API writes, unless the name says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rds_csi.pipeline.clock import SYSTEM_CLOCK, Clock


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
    # eventf calls whose format string did not fit its arguments (the event went out unformatted).
    format_errors: int = 0
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
            "format_errors": self.format_errors,
            "queue_depth": self.queue_depth(),
        }


class DropReporter:
    """Counts every drop in `stats` and logs it, at most one line per cause per `interval`.

    A drop storm (a full queue, a caller passing garbage in a loop) must stay visible without
    flooding the log: the first drop of a cause is logged at once, later ones are summed and
    reported with the next line after the interval, or by `flush()` at shutdown.
    """

    def __init__(
        self,
        stats: PipelineStats,
        logger: Any,
        *,
        clock: Clock = SYSTEM_CLOCK,
        interval: float = 10.0,
    ) -> None:
        self._stats = stats
        self._log = logger
        self._clock = clock
        self._interval = interval
        self._next_line: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def drop(self, cause: str, occurrences: int = 1, **context: Any) -> None:
        """Count `occurrences` lost for `cause` and log (rate-limited) with `context`."""
        self._stats.dropped[cause] += occurrences
        self._line("events dropped", cause, occurrences, context)

    def warn(self, cause: str, **context: Any) -> None:
        """Log (rate-limited) a problem that did not cost an event, e.g. a bad format string."""
        self._line("event degraded", cause, 1, context)

    def flush(self) -> None:
        """Log whatever was suppressed since the last line of each cause."""
        for cause, n in sorted(self._suppressed.items()):
            self._emit(
                "events dropped" if cause in self._stats.dropped else "event degraded", cause, n, {}
            )
        self._suppressed.clear()
        self._next_line.clear()

    def _line(self, what: str, cause: str, occurrences: int, context: dict[str, Any]) -> None:
        now = self._clock.monotonic()
        if now < self._next_line.get(cause, float("-inf")):
            self._suppressed[cause] += occurrences
            return
        self._next_line[cause] = now + self._interval
        self._emit(what, cause, occurrences + self._suppressed.pop(cause, 0), context)

    def _emit(self, what: str, cause: str, since_last: int, context: dict[str, Any]) -> None:
        if cause in self._stats.dropped:
            context = {**context, "total": self._stats.dropped[cause]}
        self._log.warning(what, cause=cause, occurrences=since_last, **context)
