"""Write events to the Kubernetes API: client-go's recordToSink, rebuilt around coalescing.

client-go sends each accepted occurrence as its own request, one at a time, and sleeps up to
~110 s per failing event; a storm of 10,000 identical failures costs 25 writes, stores a count
of 25 and loses the rest.  Here there is one *pending record* per event key.  An occurrence
that arrives while that key's write is queued, in flight or waiting to retry is folded into
it, so the next write carries the true count, the latest message and the latest time.

- Writes: create; patch when the server already has the event; a patch that finds the event
  gone (TTL) re-creates it under the same name; a create that finds it there patches it.
- Several workers, at most one write in flight per key, so one failing object never holds up
  the others.  Every call has a timeout and passes a client-side rate limit.
- Transport errors, timeouts, 5xx and 429 are retried with jittered exponential backoff
  (honouring Retry-After) within a budget of attempts and time; other 4xx are dropped,
  counted by cause and logged once per cause.
- When the server is unreachable a circuit breaker stops per-event retries; counts keep
  coalescing in memory (bounded) until a probe gets through.
- Occurrences held back by the spam filter are written when the bucket next has a token, and
  at shutdown regardless: `aclose` flushes everything it can before its deadline.
- events.k8s.io/v1: series semantics (the second occurrence writes series.count 2, later ones
  are written at most once per `series_interval`).
- Objects referenced without a uid are resolved with a cached GET, in the workers.

Known limit: a write that times out may still be applied by the server.  If it was the last
attempt, its occurrences are counted as dropped although stored, and a late patch can land
after a newer one (client-go has the same exposure; resourceVersion preconditions would close
it at the price of a GET per conflict).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import random
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from kubernetes_asyncio import client as kclient

from rds_csi import __version__
from rds_csi.pipeline.backoff import Backoff, parse_retry_after
from rds_csi.pipeline.breaker import BreakerState, CircuitBreaker
from rds_csi.pipeline.clock import SYSTEM_CLOCK, Clock
from rds_csi.pipeline.correlator import (
    Correlation,
    Correlator,
    CorrelatorOptions,
    DedupRecord,
    EventKey,
)
from rds_csi.pipeline.kube_api import (
    CORE,
    EVENTS_V1,
    ApiResponse,
    EventApi,
    EventTransport,
    TransportError,
    load_configuration,
)
from rds_csi.pipeline.kube_wire import (
    core_event_body,
    core_event_patch,
    events_v1_body,
    events_v1_series_patch,
)
from rds_csi.pipeline.lru import LRUCache
from rds_csi.pipeline.model import Event, ObjectRef
from rds_csi.pipeline.ratelimit import AsyncRateLimiter
from rds_csi.pipeline.resolver import (
    RESOURCES,
    ResolveAbandoned,
    Resolved,
    ResolveError,
    UidResolver,
)
from rds_csi.pipeline.stats import PipelineStats

__all__ = ["KubeSink", "KubeSinkOptions", "kube_sink_from_config"]

_log = structlog.get_logger(__name__)

ApiGroup = Literal["core/v1", "events.k8s.io/v1"]

# How far a timer may be set: spam buckets with qps 0 never refill, and call_later needs a
# finite delay.  Such records are flushed at shutdown.
_MAX_TIMER = 86_400.0


@dataclass(frozen=True, slots=True)
class KubeSinkOptions:
    """Every writer limit in one place.  Times are seconds."""

    api: ApiGroup = "core/v1"
    workers: int = 4
    # Timeout of each API call, and the client-side limit in front of all of them.
    request_timeout: float = 10.0
    qps: float = 10.0
    burst: int = 25
    # Retry budget of one write: attempts (including the first) and time since its first failure.
    max_attempts: int = 12
    retry_budget: float = 300.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    backoff_jitter: float = 0.5
    # Retry-After is honoured up to this long.
    max_retry_after: float = 60.0
    # Consecutive unreachable-server failures (any key) that open the breaker, and its probes.
    breaker_threshold: int = 5
    breaker_probe_base: float = 1.0
    breaker_probe_max: float = 60.0
    # Keys with occurrences not yet written; beyond this new keys are dropped and counted.
    max_pending: int = 4096
    # events.k8s.io/v1: later occurrences are written at most this often, and a series idle
    # this long is finished (the next occurrence starts a new event).
    series_interval: float = 30.0
    series_finish_after: float = 360.0
    # uid resolution of PVC/PV/Node/Pod references that have none.
    resolve_uids: bool = True
    resolve_ttl: float = 300.0
    resolve_negative_ttl: float = 10.0
    # events.k8s.io/v1 requires an action; used when the event has none ("" = the reason).
    default_action: str = ""
    # Seed for the backoff jitter (tests and benchmarks); None = random.
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.api not in ("core/v1", "events.k8s.io/v1"):
            raise ValueError(f"api must be core/v1 or events.k8s.io/v1, got {self.api!r}")
        if self.workers < 1 or self.max_pending < 1 or self.max_attempts < 1:
            raise ValueError("workers, max_pending and max_attempts must be at least 1")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")


class _Phase(enum.Enum):
    QUEUED = "queued"  # in the work queue, or taken by a worker that waits to send
    SENDING = "sending"  # a worker is writing it
    WAITING = "waiting"  # a timer will bring it back (spam token, series interval, backoff)


class _Wait(enum.Enum):
    SPAM = "spam"
    SERIES = "series"
    BACKOFF = "backoff"


@dataclass(eq=False, slots=True)
class _Pending:
    """The one pending write of an event key."""

    key: EventKey
    record: DedupRecord
    spam_key: EventKey
    event: Event  # the latest occurrence: message and last timestamp to write
    phase: _Phase = _Phase.QUEUED
    # A spam token was granted for an occurrence not yet written: write as soon as possible.
    granted: bool = False
    wait: _Wait | None = None
    timer: asyncio.TimerHandle | None = None
    attempts: int = 0
    failing_since: float | None = None


@dataclass(frozen=True, slots=True)
class _Retry:
    why: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class _Drop:
    cause: str
    quiet: bool = False
    status: int = 0
    reason: str = ""
    message: str = ""


_Outcome = _Retry | _Drop | None  # None: written


class KubeSink:
    """An `EventSink` that writes to the Kubernetes API (see the module docstring)."""

    name = "kubernetes"

    def __init__(
        self,
        api_client: kclient.ApiClient | None,
        *,
        transport: EventTransport | None = None,
        options: KubeSinkOptions | None = None,
        correlator_options: CorrelatorOptions | None = None,
        stats: PipelineStats | None = None,
        clock: Clock = SYSTEM_CLOCK,
        owns_client: bool = False,
    ) -> None:
        self.options = opts = options or KubeSinkOptions()
        self.stats = stats if stats is not None else PipelineStats()
        self._clock = clock
        self._api_client = api_client
        self._owns_client = owns_client
        self._group = EVENTS_V1 if opts.api == "events.k8s.io/v1" else CORE
        self._series = self._group == EVENTS_V1
        corr = correlator_options or CorrelatorOptions()
        if self._series and corr.dedup_idle_expiry is None:
            corr = dataclasses.replace(corr, dedup_idle_expiry=opts.series_finish_after)
        self.correlator = Correlator(corr, clock=clock)
        if transport is None:
            if api_client is None:
                raise ValueError("KubeSink needs an ApiClient (or a transport)")
            transport = EventApi(api_client, timeout=opts.request_timeout)
        self._api = transport
        self._resolver = UidResolver(
            self._fetch_object,
            clock=clock,
            positive_ttl=opts.resolve_ttl,
            negative_ttl=opts.resolve_negative_ttl,
        )
        self._limiter = AsyncRateLimiter(opts.qps, opts.burst, clock)
        self.breaker = CircuitBreaker(
            opts.breaker_threshold, opts.breaker_probe_base, opts.breaker_probe_max, clock
        )
        self._backoff = Backoff(opts.backoff_base, opts.backoff_cap, opts.backoff_jitter)
        self._rng = random.Random(opts.seed)  # noqa: S311 (jitter, not secrets)
        self._pending: dict[EventKey, _Pending] = {}
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._breaker_changed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._closed = False
        self._logged_causes: set[str] = set()
        self._logged_objects: LRUCache[tuple[str, str, str], bool] = LRUCache(1024)

    # -- EventSink ----------------------------------------------------------------------

    async def write(self, batch: Sequence[Event]) -> None:
        """Correlate and queue `batch`; never blocks on the API and never raises."""
        if self._closed:
            self.stats.drop("closed", len(batch))
            return
        self._start()
        for event in batch:
            try:
                self._accept(event)
            except Exception as exc:  # a bug must cost one event, not the batch
                self.stats.drop("internal_error")
                _log.exception("event sink failed to accept an event", error=repr(exc)[:200])

    async def aclose(self, deadline: float) -> int:
        """Flush every pending occurrence (spam-held ones too) until loop time `deadline`,
        stop, and return how many occurrences could not be delivered."""
        if self._closed:
            return 0
        self._closing = True
        # Held-back counts, series intervals and retry backoffs all end now: each pending
        # record gets its write (or one more attempt) before the deadline.
        for pending in list(self._pending.values()):
            if pending.phase is _Phase.WAITING:
                self._arm(pending)
        self.breaker.probe_now()
        self._signal_breaker()
        if self._pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._idle.wait()
        self._closed = True
        for task in self._workers:
            task.cancel()
        # Settled before the next await: a caller that cancels us now loses no count.
        undelivered = 0
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
            pending.record.pinned = False
            undelivered += pending.record.unwritten
        self._pending.clear()
        if undelivered:
            self.stats.drop("shutdown", undelivered)
            _log.warning("events not delivered before shutdown deadline", occurrences=undelivered)
        try:
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers.clear()
        finally:
            if self._owns_client and self._api_client is not None:
                await self._api_client.close()
        return undelivered

    # -- introspection ------------------------------------------------------------------

    @property
    def pending_keys(self) -> int:
        return len(self._pending)

    @property
    def pending_occurrences(self) -> int:
        return sum(p.record.unwritten for p in self._pending.values())

    async def wait_idle(self) -> None:
        """Wait until nothing is pending (spam-held occurrences count as pending)."""
        await self._idle.wait()

    # -- accepting occurrences ----------------------------------------------------------

    def _start(self) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._worker(), name=f"kube-sink-worker-{i}")
                for i in range(self.options.workers)
            ]

    def _accept(self, event: Event) -> None:
        correlation = self.correlator.correlate(event)
        pending = self._pending.get(correlation.key)
        if pending is None:
            self._add(correlation)
            return
        self.stats.coalesced += 1
        pending.event = correlation.event
        if correlation.accepted:
            pending.granted = True
            if pending.phase is _Phase.WAITING and pending.wait is _Wait.SPAM:
                self._arm(pending)

    def _add(self, correlation: Correlation) -> None:
        if len(self._pending) >= self.options.max_pending:
            self.correlator.retract(correlation)
            breaker_open = self.breaker.state is not BreakerState.CLOSED
            cause = "breaker_overflow" if breaker_open else "pending_overflow"
            self.stats.drop(cause)
            self._log_once(
                cause,
                "too many pending events, dropping new ones",
                max_pending=self.options.max_pending,
            )
            return
        pending = _Pending(
            correlation.key,
            correlation.record,
            correlation.spam_key,
            correlation.event,
            granted=correlation.accepted,
        )
        correlation.record.pinned = True
        self._pending[correlation.key] = pending
        self._idle.clear()
        self._arm(pending)

    def _arm(self, pending: _Pending, *, interval_done: bool = False) -> None:
        """Queue `pending` now, or set a timer for when it may be written."""
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        if self._closing:
            pending.granted = True
            self._enqueue(pending)
            return
        delay, wait = 0.0, _Wait.SPAM
        if not pending.granted:
            if self.correlator.take_spam_token(pending.spam_key):
                pending.granted = True
            else:
                delay = self.correlator.spam_delay(pending.spam_key)
        if self._series and pending.record.stored_count >= 2 and not interval_done:
            since = self._clock.monotonic() - pending.record.stored_at
            series_wait = self.options.series_interval - since
            if series_wait > delay:
                delay, wait = series_wait, _Wait.SERIES
        if delay <= 0:
            self._enqueue(pending)
        else:
            self._wait(pending, wait, delay)

    def _wait(self, pending: _Pending, wait: _Wait, delay: float) -> None:
        pending.phase = _Phase.WAITING
        pending.wait = wait
        loop = asyncio.get_running_loop()
        pending.timer = loop.call_later(min(delay, _MAX_TIMER), self._wake, pending)

    def _wake(self, pending: _Pending) -> None:
        pending.timer = None
        if self._pending.get(pending.key) is not pending:
            return
        if pending.wait is _Wait.BACKOFF:
            self._enqueue(pending)
        else:
            # The series interval has passed by the timer; only a spam token may still lack.
            self._arm(pending, interval_done=pending.wait is _Wait.SERIES)

    def _enqueue(self, pending: _Pending) -> None:
        pending.phase = _Phase.QUEUED
        pending.wait = None
        self._queue.put_nowait(pending)

    def _finish(self, pending: _Pending) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        pending.record.pinned = False
        if self._pending.get(pending.key) is pending:
            del self._pending[pending.key]
        if not self._pending:
            self._idle.set()

    # -- workers ------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            pending = await self._queue.get()
            if self._pending.get(pending.key) is not pending:
                continue
            pending.phase = _Phase.SENDING
            try:
                outcome = await self._write(pending)
            except Exception as exc:
                _log.exception("event sink write failed unexpectedly", error=repr(exc)[:200])
                outcome = _Drop("internal_error")
            try:
                self._settle(pending, outcome)
            except Exception as exc:  # never lose a worker, nor the record's count
                _log.exception("event sink bookkeeping failed", error=repr(exc)[:200])
                self.stats.drop("internal_error", max(0, pending.record.unwritten))
                self._finish(pending)

    def _settle(self, pending: _Pending, outcome: _Outcome) -> None:
        if outcome is None:
            pending.attempts = 0
            pending.failing_since = None
            if pending.record.unwritten > 0:
                self._arm(pending)
            else:
                self._finish(pending)
        elif isinstance(outcome, _Retry):
            self._retry(pending, outcome)
        else:
            self._give_up(pending, outcome)

    def _retry(self, pending: _Pending, outcome: _Retry) -> None:
        pending.granted = True
        self.stats.retried += 1
        if self.breaker.state is not BreakerState.CLOSED:
            # The server is unreachable: this is not the event's fault.  Park it behind the
            # breaker with a fresh budget; counts keep coalescing into it meanwhile.
            pending.attempts = 0
            pending.failing_since = None
            self._enqueue(pending)
            return
        now = self._clock.monotonic()
        pending.attempts += 1
        if pending.failing_since is None:
            pending.failing_since = now
        delay = self._backoff.delay(pending.attempts, self._rng)
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, self.options.max_retry_after))
        if self._closing:  # the deadline is what counts now, not the server's pacing
            delay = min(delay, self.options.backoff_base)
        out_of_budget = now + delay - pending.failing_since > self.options.retry_budget
        if pending.attempts >= self.options.max_attempts or out_of_budget:
            self._give_up(pending, _Drop("retry_exhausted", message=outcome.why))
            return
        self._wait(pending, _Wait.BACKOFF, delay)

    def _give_up(self, pending: _Pending, drop: _Drop) -> None:
        record = pending.record
        lost = record.unwritten
        if lost > 0:
            self.stats.drop(drop.cause, lost)
        fields: dict[str, Any] = {
            "cause": drop.cause,
            "occurrences": lost,
            "event_name": record.name,
            "namespace": pending.event.namespace,
            "object": _describe(pending.event.involved),
            "reason": pending.event.reason,
        }
        if drop.status:
            fields.update(status=drop.status, status_reason=drop.reason, message=drop.message)
        elif drop.message:
            fields["detail"] = drop.message
        if drop.quiet:
            _log.debug("event dropped", **fields)
        else:
            self._log_once(drop.cause, "event dropped (will not retry)", **fields)
        # What the server holds stays the baseline; the lost occurrences are not re-counted.
        record.count = record.stored_count
        if record.stored_count == 0:
            self.correlator.forget(pending.key)
        self._finish(pending)

    def _log_once(self, once_key: str, what: str, /, **fields: Any) -> None:
        """Log `what` at warning the first time for `once_key`, at debug afterwards."""
        if once_key in self._logged_causes:
            _log.debug(what, **fields)
            return
        self._logged_causes.add(once_key)
        _log.warning(what, **fields, later="logged at debug level")

    # -- one write ----------------------------------------------------------------------

    async def _write(self, pending: _Pending) -> _Outcome:
        if pending.record.unwritten <= 0:
            return None
        verb = "patch" if pending.record.stored_count > 0 else "create"
        fallbacks = 0
        while True:
            uid = ""
            if verb == "create":
                resolved = await self._resolve_uid(pending)
                if not isinstance(resolved, str):
                    return resolved
                uid = resolved
            probe = await self._admit()
            # The body is built only now that the call may go: everything coalesced while
            # the record waited (queue, breaker, rate limit) rides along.
            count = pending.record.count
            pending.granted = False
            try:
                response = await self._exchange(
                    verb, probe, self._send_event(verb, pending, count, uid)
                )
            except TransportError as exc:
                return _Retry(f"{verb}: {exc}")
            if response.ok:
                self._stored(pending, count)
                return None
            if verb == "patch" and response.status == 404 and fallbacks < 2:
                # Gone (the 1 h event TTL): create it again under the same name, count going on.
                verb, fallbacks = "create", fallbacks + 1
                continue
            if verb == "create" and response.status == 409 and fallbacks < 2:
                if self._series and count < 2:
                    # Our earlier create landed after all; a series patch needs count >= 2.
                    self._stored(pending, count)
                    return None
                verb, fallbacks = "patch", fallbacks + 1
                continue
            return _classify(verb, response, self._clock.now_ns())

    def _stored(self, pending: _Pending, count: int) -> None:
        pending.record.stored_count = max(pending.record.stored_count, count)
        pending.record.stored_at = self._clock.monotonic()

    def _send_event(
        self, verb: str, pending: _Pending, count: int, uid: str
    ) -> Awaitable[ApiResponse]:
        event, record = pending.event, pending.record
        if verb == "create":
            if self._series:
                body = events_v1_body(
                    event,
                    name=record.name,
                    count=count,
                    first_timestamp_ns=record.first_timestamp_ns,
                    uid=uid,
                    default_action=self.options.default_action,
                )
            else:
                body = core_event_body(
                    event,
                    name=record.name,
                    count=count,
                    first_timestamp_ns=record.first_timestamp_ns,
                    uid=uid,
                )
            return self._api.create_event(self._group, event.namespace, body)
        if self._series:
            body = events_v1_series_patch(count=count, last_timestamp_ns=event.last_timestamp_ns)
        else:
            body = core_event_patch(
                count=count, last_timestamp_ns=event.last_timestamp_ns, message=event.message
            )
        return self._api.patch_event(self._group, event.namespace, record.name, body)

    async def _resolve_uid(self, pending: _Pending) -> str | _Retry | _Drop:
        ref = pending.event.involved
        if not self.options.resolve_uids or not UidResolver.needs_lookup(ref):
            return ""
        _, namespaced = RESOURCES[ref.kind]
        if namespaced and not ref.namespace:
            return ""
        try:
            resolution = await self._resolver.resolve(ref)
        except (TransportError, ResolveAbandoned) as exc:
            return _Retry(f"get {ref.kind}: {exc}")
        except ResolveError as exc:
            response = ApiResponse(exc.status, exc.body, exc.headers.get("Retry-After"))
            outcome = _classify(f"get {ref.kind}", response, self._clock.now_ns())
            if isinstance(outcome, _Drop):
                return dataclasses.replace(outcome, cause=f"resolve_failed:{exc.status}")
            return outcome
        if resolution.outcome is Resolved.FOUND:
            return resolution.uid
        where = _describe(ref)
        if resolution.outcome is Resolved.NOT_FOUND:
            logged_key = (ref.kind, ref.namespace, ref.name)
            if self._logged_objects.get(logged_key) is None:
                self._logged_objects.put(logged_key, True)
                _log.warning(
                    f"{_short_kind(ref.kind)} not found, event skipped",
                    object=where,
                    reason=pending.event.reason,
                )
            return _Drop("object_not_found", quiet=True, message=where)
        # FORBIDDEN: say once which RBAC rule is missing; the event is skipped.
        self._log_once(
            f"resolve_forbidden:{ref.kind}",
            "cannot resolve the uid of the event's object: RBAC forbids it, events skipped",
            object=where,
            missing_rule=resolution.missing_rule,
        )
        return _Drop("resolve_forbidden", quiet=True, message=where)

    async def _fetch_object(
        self, kind: str, namespace: str, name: str
    ) -> tuple[int, Any, dict[str, str]]:
        probe = await self._admit()
        response = await self._exchange("get", probe, self._api.get_object(kind, namespace, name))
        headers = {"Retry-After": response.retry_after} if response.retry_after else {}
        return response.status, response.body, headers

    # -- every API call -----------------------------------------------------------------

    async def _admit(self) -> bool:
        """Wait until the breaker and the rate limit let a call go; True if it is the probe."""
        while not self.breaker.try_acquire():
            changed = self._breaker_changed
            wait = self.breaker.wait_time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wait == float("inf") else wait):
                    await changed.wait()
        probe = self.breaker.state is BreakerState.PROBING
        try:
            await self._limiter.acquire()
        except BaseException:
            if probe:
                self._abandon_probe()
            raise
        return probe

    async def _exchange(
        self, verb: str, probe: bool, request: Awaitable[ApiResponse]
    ) -> ApiResponse:
        """Send one admitted call and account for its answer (stats, breaker)."""
        reported = False
        try:
            try:
                response = await request
            except TransportError as exc:
                self.stats.written[(verb, exc.cause)] += 1
                reported = True
                self._breaker_failure()
                raise
            self.stats.written[(verb, str(response.status))] += 1
            reported = True
            if response.status >= 500:
                self._breaker_failure()
            else:
                self._breaker_success()
            return response
        finally:
            if probe and not reported:
                self._abandon_probe()

    def _abandon_probe(self) -> None:
        self.breaker.abandon()
        self._signal_breaker()

    def _breaker_failure(self) -> None:
        if self.breaker.failure():
            _log.warning(
                "Kubernetes API unreachable, pausing event writes",
                consecutive_failures=self.breaker.consecutive_failures,
                next_probe_in=round(self.breaker.wait_time(), 3),
                pending=len(self._pending),
            )
            self._signal_breaker()

    def _breaker_success(self) -> None:
        if self.breaker.success():
            _log.info(
                "Kubernetes API reachable again, resuming event writes", pending=len(self._pending)
            )
            self._signal_breaker()

    def _signal_breaker(self) -> None:
        self._breaker_changed.set()
        self._breaker_changed = asyncio.Event()


def _classify(verb: str, response: ApiResponse, now_ns: int) -> _Retry | _Drop:
    status = response.status
    reason, message = response.status_message()
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.retry_after, now_ns / 1e9)
        return _Retry(f"{verb}: HTTP {status} {reason}".rstrip(), retry_after)
    if status == 403 and _namespace_terminating(response.body):
        return _Drop(
            "namespace_terminating", quiet=True, status=status, reason=reason, message=message
        )
    return _Drop(f"rejected:{status}", status=status, reason=reason, message=message)


def _namespace_terminating(body: Any) -> bool:
    """metav1.Status with a NamespaceTerminating cause (StatusCause.Type is JSON "reason")."""
    if not isinstance(body, dict):
        return False
    details = body.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    if not isinstance(causes, list):
        return False
    return any(
        isinstance(cause, dict)
        and "NamespaceTerminating" in (cause.get("reason"), cause.get("type"))
        for cause in causes
    )


def _describe(ref: ObjectRef) -> str:
    return f"{ref.kind}/{ref.namespace}/{ref.name}" if ref.namespace else f"{ref.kind}/{ref.name}"


def _short_kind(kind: str) -> str:
    return {"PersistentVolumeClaim": "PVC", "PersistentVolume": "PV"}.get(kind, kind)


async def kube_sink_from_config(
    *,
    configuration: kclient.Configuration | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    in_cluster: bool | None = None,
    options: KubeSinkOptions | None = None,
    correlator_options: CorrelatorOptions | None = None,
    stats: PipelineStats | None = None,
    clock: Clock = SYSTEM_CLOCK,
    user_agent: str = "",
) -> KubeSink:
    """A sink with its own ApiClient (closed by `aclose`).

    Without a `configuration`: `kubeconfig` when named, else in-cluster config when running
    in a pod (or `in_cluster`), else the default kubeconfig (see `load_configuration`).
    """
    options = options or KubeSinkOptions()
    if configuration is None:
        configuration = await load_configuration(kubeconfig, context=context, in_cluster=in_cluster)
        # One connection per worker, plus one for uid lookups.
        configuration.connection_pool_maxsize = options.workers + 1
    api_client = kclient.ApiClient(configuration)
    api_client.user_agent = user_agent or f"rds-csi/{__version__}"
    return KubeSink(
        api_client,
        options=options,
        correlator_options=correlator_options,
        stats=stats,
        clock=clock,
        owns_client=True,
    )
