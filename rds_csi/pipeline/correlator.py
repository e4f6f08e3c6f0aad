"""client-go's EventCorrelator (tools/record/events_cache.go), with tuple keys.

Each occurrence goes through three stages, in client-go's order:

1. aggregation: the 10th distinct message for the same object, type and reason within a
   sliding 600 s window is folded into one "(combined from similar events): ..." event;
2. de-duplication: an identical event becomes a count increment on the first one's record
   (name, first timestamp, true count);
3. spam filter: a token bucket per source+object+type (optionally +reason) decides whether
   this occurrence may cause an API write.  A held-back occurrence still counts, so the next
   write carries the true total.

client-go joins key fields without a separator ("ab"+"c" == "a"+"bc"); tuples cannot collide
that way, and each key kind starts with its own tag so the caches never mix them up.

The correlator is synchronous and does no I/O.  The Kubernetes sink owns one (as client-go
creates one per sink) and records on each `DedupRecord` what the API server holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rds_csi.pipeline.clock import SYSTEM_CLOCK, Clock
from rds_csi.pipeline.lru import LRUCache
from rds_csi.pipeline.model import Event
from rds_csi.pipeline.naming import event_name
from rds_csi.pipeline.ratelimit import TokenBucket

__all__ = [
    "AGGREGATE_PREFIX",
    "Correlation",
    "Correlator",
    "CorrelatorOptions",
    "DedupRecord",
    "EventKey",
    "aggregate_key",
    "event_key",
    "spam_key",
]

AGGREGATE_PREFIX = "(combined from similar events): "

EventKey = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CorrelatorOptions:
    """Every correlator limit in one place; the defaults are client-go's."""

    # Entries in each of the three caches (aggregation groups, dedup records, spam buckets).
    lru_cache_size: int = 4096
    aggregate: bool = True
    # Distinct messages per object+type+reason before they are combined.
    max_events: int = 10
    # Sliding window: a group quiet for longer than this starts over.
    max_interval: float = 600.0
    spam_filter: bool = True
    spam_burst: int = 25
    spam_qps: float = 1 / 300
    # client-go keys the bucket without the reason, so one noisy reason starves the others
    # on the same object (k/k#67887); True gives each reason its own bucket.
    spam_key_includes_reason: bool = False
    # A dedup record idle this long starts a new event (events.k8s.io series finish after
    # 6 min); None keeps records until the LRU evicts them, as tools/record does.
    dedup_idle_expiry: float | None = None

    def __post_init__(self) -> None:
        if self.lru_cache_size < 1:
            raise ValueError("lru_cache_size must be at least 1")
        if self.max_events < 1:
            raise ValueError("max_events must be at least 1")
        if self.spam_burst < 1 or self.spam_qps < 0:
            raise ValueError("spam_burst must be >= 1 and spam_qps >= 0")


@dataclass(slots=True, eq=False)
class DedupRecord:
    """What is known about one event object: its name, true count and what the server holds."""

    name: str
    count: int
    first_timestamp_ns: int
    last_seen: float
    # The count the API server is known to store (0: not created yet) and when it was
    # written (monotonic seconds).  Set by the sink.
    stored_count: int = 0
    stored_at: float = float("-inf")
    # True while the sink still has to write this record; pinned records are never evicted.
    pinned: bool = False

    @property
    def unwritten(self) -> int:
        return self.count - self.stored_count


@dataclass(slots=True)
class Correlation:
    """The outcome for one occurrence."""

    # The event to write: the dedup record's name, first timestamp and true count.
    event: Event
    key: EventKey
    record: DedupRecord
    spam_key: EventKey
    # False when the spam filter held this occurrence back (it is counted all the same).
    accepted: bool
    aggregated: bool


@dataclass(slots=True)
class _AggregateGroup:
    # Distinct messages seen, oldest first (a dict as an ordered set).
    messages: dict[str, None]
    last_seen: float


def event_key(event: Event) -> EventKey:
    """Full identity (client-go getEventKey): an identical event is a count increment."""
    ref = event.involved
    return (
        "event",
        event.source_component,
        event.source_host,
        ref.kind,
        ref.namespace,
        ref.name,
        ref.field_path,
        ref.uid,
        ref.api_version,
        event.type,
        event.reason,
        event.message,
    )


def _source_and_object(event: Event) -> tuple[str, ...]:
    """The fields client-go's aggregate and spam keys share (no fieldPath, unlike event_key)."""
    ref = event.involved
    return (
        event.source_component,
        event.source_host,
        ref.kind,
        ref.namespace,
        ref.name,
        ref.uid,
        ref.api_version,
        event.type,
    )


def aggregate_key(event: Event) -> EventKey:
    """Group for aggregation (EventAggregatorByReasonFunc); the message is the local key."""
    return (
        "aggregate",
        *_source_and_object(event),
        event.reason,
        event.reporting_controller,
        event.reporting_instance,
    )


def spam_key(event: Event, *, include_reason: bool = False) -> EventKey:
    """Bucket identity (client-go getSpamKey): source, object and type; optionally reason."""
    key: EventKey = ("spam", *_source_and_object(event))
    return (*key, event.reason) if include_reason else key


class Correlator:
    def __init__(
        self, options: CorrelatorOptions | None = None, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.options = options or CorrelatorOptions()
        self._clock = clock
        size = self.options.lru_cache_size
        self._groups: LRUCache[EventKey, _AggregateGroup] = LRUCache(size)
        self._records: LRUCache[EventKey, DedupRecord] = LRUCache(
            size, keep=lambda record: record.pinned
        )
        self._buckets: LRUCache[EventKey, TokenBucket] = LRUCache(size)

    def correlate(self, event: Event) -> Correlation:
        now = self._clock.monotonic()
        event, key, aggregated = self._aggregate(event, now)
        record = self._observe(event, key, now)
        skey = spam_key(event, include_reason=self.options.spam_key_includes_reason)
        accepted = self.take_spam_token(skey)
        observed = dataclasses.replace(
            event,
            name=record.name,
            first_timestamp_ns=record.first_timestamp_ns,
            count=record.count,
        )
        return Correlation(observed, key, record, skey, accepted, aggregated)

    # -- spam filter ---------------------------------------------------------------------

    def take_spam_token(self, skey: EventKey) -> bool:
        """Take a token from the bucket for `skey` (a new bucket starts full)."""
        if not self.options.spam_filter:
            return True
        now = self._clock.monotonic()
        bucket = self._buckets.get(skey)
        if bucket is None:
            bucket = TokenBucket(self.options.spam_qps, self.options.spam_burst, now)
            self._buckets.put(skey, bucket)
        return bucket.try_take(now)

    def spam_delay(self, skey: EventKey) -> float:
        """Seconds until the bucket for `skey` has a token (0 now, inf if it never refills)."""
        if not self.options.spam_filter:
            return 0.0
        bucket = self._buckets.peek(skey)
        return 0.0 if bucket is None else bucket.delay(self._clock.monotonic())

    # -- dedup records -------------------------------------------------------------------

    def forget(self, key: EventKey) -> None:
        """Drop the record: the next occurrence starts a new event object."""
        self._records.pop(key)

    def retract(self, correlation: Correlation) -> None:
        """Undo the count of an occurrence that was dropped before any write could carry it."""
        record = correlation.record
        record.count -= 1
        if record.count <= 0 and self._records.peek(correlation.key) is record:
            self._records.pop(correlation.key)

    def record(self, key: EventKey) -> DedupRecord | None:
        return self._records.peek(key)

    def cache_sizes(self) -> dict[str, int]:
        return {
            "aggregate": len(self._groups),
            "dedup": len(self._records),
            "spam": len(self._buckets),
        }

    # -- stages --------------------------------------------------------------------------

    def _aggregate(self, event: Event, now: float) -> tuple[Event, EventKey, bool]:
        if not self.options.aggregate:
            return event, event_key(event), False
        gkey = aggregate_key(event)
        group = self._groups.get(gkey)
        if group is None or now - group.last_seen > self.options.max_interval:
            group = _AggregateGroup({}, now)
        # Re-inserting moves a message to the young end, so the one dropped below is the
        # least recently seen (client-go drops an arbitrary one).
        group.messages.pop(event.message, None)
        group.messages[event.message] = None
        group.last_seen = now
        self._groups.put(gkey, group)
        if len(group.messages) < self.options.max_events:
            return event, event_key(event), False
        del group.messages[next(iter(group.messages))]
        wall_ns = self._clock.now_ns()
        combined = Event(
            name=event_name(event.involved.name, wall_ns),
            namespace=event.namespace,
            involved=event.involved,
            type=event.type,
            reason=event.reason,
            message=AGGREGATE_PREFIX + event.message,
            source_component=event.source_component,
            source_host=event.source_host,
            reporting_controller=event.reporting_controller,
            reporting_instance=event.reporting_instance,
            first_timestamp_ns=wall_ns,
            last_timestamp_ns=wall_ns,
            action=event.action,
        )
        return combined, gkey, True

    def _observe(self, event: Event, key: EventKey, now: float) -> DedupRecord:
        record = self._records.get(key)
        expiry = self.options.dedup_idle_expiry
        if (
            record is not None
            and expiry is not None
            and not record.pinned
            and now - record.last_seen > expiry
        ):
            record = None
        if record is None:
            record = DedupRecord(event.name, 1, event.first_timestamp_ns, now)
            self._records.put(key, record)
        else:
            record.count += 1
            record.last_seen = now
        return record
