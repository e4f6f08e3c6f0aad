"""The Kubernetes sink's write logic against an in-memory API (no HTTP): coalescing, the
create/patch fallbacks, retries, the breaker, bounds and shutdown.  The same behaviour over
real HTTP is covered by test_kube_sink.py against the API-server emulator."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from rds_csi.pipeline.clock import ManualClock
from rds_csi.pipeline.correlator import CorrelatorOptions
from rds_csi.pipeline.kube_api import ApiResponse, TransportError
from rds_csi.pipeline.kube_sink import KubeSink, KubeSinkOptions
from rds_csi.pipeline.model import Event, ObjectRef
from tests.pipeline.factories import node_event

Failure = ApiResponse | Exception | None


class FakeApi:
    """Stores events like the API server does (create 409s on a taken name, patch 404s on a
    missing one) and can fail or hold calls on request."""

    def __init__(self) -> None:
        self.events: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.objects: dict[tuple[str, str, str], str] = {}
        self.fail: Callable[[str, str], Failure] = lambda verb, name: None
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight: set[str] = set()
        self.overlaps = 0
        self._changed = asyncio.Condition()

    async def wait_calls(self, n: int) -> None:
        async with asyncio.timeout(5):
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.calls) >= n)

    def writes(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [c for c in self.calls if c[0] != "get"]

    async def _enter(self, verb: str, name: str, body: dict[str, Any]) -> Failure:
        if name in self.in_flight:
            self.overlaps += 1
        self.in_flight.add(name)
        try:
            self.calls.append((verb, name, body))
            async with self._changed:
                self._changed.notify_all()
            await self.gate.wait()
        finally:
            self.in_flight.discard(name)
        failure = self.fail(verb, name)
        if isinstance(failure, Exception):
            raise failure
        return failure

    async def create_event(self, group: str, namespace: str, body: dict[str, Any]) -> ApiResponse:
        name = body["metadata"]["name"]
        failure = await self._enter("create", name, body)
        if failure is not None:
            return failure
        if (namespace, name) in self.events:
            return ApiResponse(409, {"reason": "AlreadyExists"})
        self.events[(namespace, name)] = dict(body)
        return ApiResponse(201, body)

    async def patch_event(
        self, group: str, namespace: str, name: str, body: dict[str, Any]
    ) -> ApiResponse:
        failure = await self._enter("patch", name, body)
        if failure is not None:
            return failure
        stored = self.events.get((namespace, name))
        if stored is None:
            return ApiResponse(404, {"reason": "NotFound"})
        stored.update(body)
        return ApiResponse(200, stored)

    async def get_object(self, kind: str, namespace: str, name: str) -> ApiResponse:
        failure = await self._enter("get", f"{kind}/{name}", {})
        if failure is not None:
            return failure
        uid = self.objects.get((kind, namespace, name))
        if uid is None:
            return ApiResponse(404, {"reason": "NotFound"})
        return ApiResponse(200, {"metadata": {"uid": uid}})

    def count(self, namespace: str, name: str) -> int:
        stored = self.events[(namespace, name)]
        if "series" in stored:
            return int(stored["series"]["count"])
        return int(stored.get("count", 1))


def pvc(i: int = 0, uid: str = "u") -> ObjectRef:
    return ObjectRef("PersistentVolumeClaim", f"data-{i}", "apps", f"{uid}-{i}", "v1")


def make_event(
    ref: ObjectRef, message: str = "mount failed", reason: str = "Failed", serial: int = 1
) -> Event:
    return node_event(ref, name=f"{ref.name}.{serial:x}", message=message, reason=reason)


FAST = KubeSinkOptions(
    qps=0,
    request_timeout=1.0,
    backoff_base=0.001,
    backoff_cap=0.01,
    breaker_probe_base=0.01,
    breaker_probe_max=0.05,
    seed=1,
)


def make_sink(
    fake: FakeApi,
    options: KubeSinkOptions = FAST,
    correlator: CorrelatorOptions | None = None,
    **changes: Any,
) -> KubeSink:
    if changes:
        options = dataclasses.replace(options, **changes)
    return KubeSink(None, transport=fake, options=options, correlator_options=correlator)


async def close(sink: KubeSink, seconds: float = 5.0) -> int:
    return await sink.aclose(asyncio.get_running_loop().time() + seconds)


async def test_storm_is_coalesced_into_three_writes_with_the_true_count() -> None:
    api = FakeApi()
    sink = make_sink(api)
    api.gate.clear()  # the first create hangs while the storm arrives
    await sink.write([make_event(pvc())])
    await api.wait_calls(1)
    for _ in range(99):
        await sink.write([make_event(pvc())] * 101)
    api.gate.set()
    assert await close(sink) == 0
    assert len(api.calls) <= 3
    assert api.calls[0][2]["count"] == 1  # the storm arrived while this create was in flight
    assert api.count("apps", api.calls[0][1]) == 10_000
    assert sink.stats.coalesced == 9_999
    assert sink.stats.dropped_total == 0
    assert api.overlaps == 0


async def test_storm_queued_before_any_write_is_a_single_create() -> None:
    api = FakeApi()
    sink = make_sink(api)
    await sink.write([make_event(pvc())] * 10_000)
    await sink.wait_idle()
    assert [c[0] for c in api.calls] == ["create"]
    assert api.calls[0][2]["count"] == 10_000
    await close(sink)


async def test_held_back_count_is_written_when_the_bucket_refills() -> None:
    api = FakeApi()
    sink = make_sink(api, correlator=CorrelatorOptions(spam_burst=1, spam_qps=50))
    await sink.write([make_event(pvc())])
    await api.wait_calls(1)
    await sink.wait_idle()
    await sink.write([make_event(pvc())] * 4)  # no token: held back, no write yet
    assert len(api.calls) == 1
    await api.wait_calls(2)  # ...until the bucket has a token again (20 ms)
    await sink.wait_idle()
    assert api.calls[1][0] == "patch"
    assert api.count("apps", api.calls[0][1]) == 5
    await close(sink)


async def test_patch_of_an_expired_event_recreates_it_under_the_same_name() -> None:
    api = FakeApi()
    sink = make_sink(api)
    await sink.write([make_event(pvc())])
    await sink.wait_idle()
    name = api.calls[0][1]
    api.events.clear()  # the 1 h TTL expired it
    await sink.write([make_event(pvc())])
    await sink.wait_idle()
    assert [(c[0], c[1]) for c in api.calls] == [
        ("create", name),
        ("patch", name),
        ("create", name),
    ]
    assert api.calls[2][2]["count"] == 2
    await close(sink)


async def test_create_conflict_patches_the_existing_event() -> None:
    api = FakeApi()
    sink = make_sink(api)
    original_create = api.create_event

    async def create_but_lose_the_answer(group: str, ns: str, body: dict[str, Any]) -> ApiResponse:
        api.create_event = original_create  # type: ignore[method-assign]
        await original_create(group, ns, body)
        raise TransportError("timeout", "answer lost")

    api.create_event = create_but_lose_the_answer  # type: ignore[method-assign]
    await sink.write([make_event(pvc())])
    await api.wait_calls(1)
    await sink.write([make_event(pvc())] * 2)
    await sink.wait_idle()
    # The server has the event but the sink never heard: the retried create conflicts and
    # becomes a patch carrying every occurrence.
    assert [c[0] for c in api.calls] == ["create", "create", "patch"]
    assert api.count("apps", api.calls[0][1]) == 3
    assert sink.stats.written[("create", "409")] == 1
    assert sink.stats.written[("create", "timeout")] == 1
    await close(sink)


async def test_rejected_event_is_dropped_counted_and_logged_once() -> None:
    api = FakeApi()
    api.fail = lambda verb, name: ApiResponse(
        422, {"reason": "Invalid", "message": "Event.v1 is invalid: message too long"}
    )
    sink = make_sink(api)
    with capture_logs() as logs:
        await sink.write([make_event(pvc(0)), make_event(pvc(0)), make_event(pvc(1))])
        await sink.wait_idle()
    assert len(api.calls) == 2  # not retried
    assert sink.stats.dropped["rejected:422"] == 3
    warnings = [log for log in logs if log["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["status"] == 422
    assert warnings[0]["message"] == "Event.v1 is invalid: message too long"
    await close(sink)


async def test_server_errors_and_resets_are_retried_with_coalesced_counts() -> None:
    api = FakeApi()
    failures: list[Failure] = [
        ApiResponse(503, None),
        TransportError("error", "connection reset"),
        ApiResponse(429, None, retry_after="0.01"),
    ]
    api.fail = lambda verb, name: failures.pop(0) if failures else None
    sink = make_sink(api)
    await sink.write([make_event(pvc())])
    await api.wait_calls(1)
    await sink.write([make_event(pvc())] * 4)
    await sink.wait_idle()
    assert [c[0] for c in api.calls] == ["create"] * 4
    assert api.count("apps", api.calls[0][1]) == 5
    assert sink.stats.retried == 3
    await close(sink)


async def test_retry_budget_exhaustion_drops_exactly_the_unwritten_occurrences() -> None:
    api = FakeApi()
    sink = make_sink(api, max_attempts=3)
    await sink.write([make_event(pvc())] * 2)
    await sink.wait_idle()
    api.fail = lambda verb, name: ApiResponse(500, None)
    await sink.write([make_event(pvc())] * 3)
    await sink.wait_idle()
    assert sink.stats.dropped["retry_exhausted"] == 3
    # The server still holds the first two; the next occurrence continues from there.
    api.fail = lambda verb, name: None
    await sink.write([make_event(pvc())])
    await sink.wait_idle()
    assert api.count("apps", api.calls[0][1]) == 3
    await close(sink)


async def test_breaker_opens_parks_writes_and_recovers_with_exact_counts() -> None:
    api = FakeApi()
    api.fail = lambda verb, name: TransportError("error", "connection refused")
    sink = make_sink(api, breaker_threshold=3, max_attempts=4)
    await sink.write([make_event(pvc(i)) for i in range(10)])
    async with asyncio.timeout(5):
        while sink.breaker.opened == 0:
            await api.wait_calls(len(api.calls) + 1)
    # Open: no per-event retrying, occurrences keep coalescing, nothing is dropped.
    await sink.write([make_event(pvc(i)) for i in range(10)] * 3)
    calls_while_open = len(api.calls)
    await api.wait_calls(calls_while_open + 2)  # probes, one at a time
    assert sink.stats.dropped_total == 0
    api.fail = lambda verb, name: None
    await sink.wait_idle()
    assert sink.stats.dropped_total == 0
    creates = {c[1] for c in api.calls if c[0] == "create"}
    assert sorted(api.count("apps", n) for n in creates) == [4] * 10
    assert api.overlaps == 0
    await close(sink)


async def test_one_hung_object_does_not_hold_up_the_others() -> None:
    api = FakeApi()
    stuck = asyncio.Event()
    original = api.create_event

    async def create(group: str, ns: str, body: dict[str, Any]) -> ApiResponse:
        if body["involvedObject"]["name"] == "data-0":
            await stuck.wait()
        return await original(group, ns, body)

    api.create_event = create  # type: ignore[method-assign]
    sink = make_sink(api, workers=2)
    await sink.write([make_event(pvc(0))] + [make_event(pvc(i)) for i in range(1, 20)])
    await api.wait_calls(19)
    assert {c[2]["involvedObject"]["name"] for c in api.calls} == {
        f"data-{i}" for i in range(1, 20)
    }
    stuck.set()
    await sink.wait_idle()
    await close(sink)


async def test_pending_keys_are_bounded_and_overflow_is_counted() -> None:
    api = FakeApi()
    api.gate.clear()
    sink = make_sink(api, max_pending=5, workers=1)
    await sink.write([make_event(pvc(i)) for i in range(8)])
    await sink.write([make_event(pvc(0))])  # an existing key still coalesces
    assert sink.pending_keys == 5
    assert sink.stats.dropped["pending_overflow"] == 3
    api.gate.set()
    await sink.wait_idle()
    assert sorted(api.count(*key) for key in api.events) == [1, 1, 1, 1, 2]
    await close(sink)


async def test_uid_is_resolved_once_and_missing_objects_are_skipped() -> None:
    api = FakeApi()
    api.objects[("PersistentVolumeClaim", "apps", "data-0")] = "uid-0"
    sink = make_sink(api)
    ref = ObjectRef("PersistentVolumeClaim", "data-0", "apps")
    gone = ObjectRef("PersistentVolumeClaim", "data-9", "apps")
    with capture_logs() as logs:
        await sink.write([make_event(ref), make_event(ref, "other"), make_event(gone)])
        await sink.wait_idle()
    creates = [c for c in api.calls if c[0] == "create"]
    assert [c[2]["involvedObject"]["uid"] for c in creates] == ["uid-0", "uid-0"]
    assert [c[0] for c in api.calls].count("get") == 2  # data-0 once (cached), data-9 once
    assert sink.stats.dropped["object_not_found"] == 1
    assert any(log["event"] == "PVC not found, event skipped" for log in logs)
    await close(sink)


async def test_shutdown_flushes_held_counts_and_reports_what_it_could_not() -> None:
    api = FakeApi()
    sink = make_sink(api, correlator=CorrelatorOptions(spam_burst=1, spam_qps=1e-9))
    await sink.write([make_event(pvc())])
    await sink.wait_idle()
    await sink.write([make_event(pvc())] * 9)  # held back for ~forever
    assert sink.pending_occurrences == 9
    assert await close(sink) == 0
    assert api.count("apps", api.calls[0][1]) == 10

    hung = FakeApi()
    hung.gate.clear()
    sink = make_sink(hung)
    await sink.write([make_event(pvc(i)) for i in range(3)] * 2)
    assert await close(sink, 0.05) == 6
    assert sink.stats.dropped["shutdown"] == 6
    await sink.write([make_event(pvc())])
    assert sink.stats.dropped["closed"] == 1


@pytest.mark.parametrize("occurrences", [1, 2, 3, 7])
async def test_events_v1_series(occurrences: int) -> None:
    api = FakeApi()
    sink = make_sink(api, api="events.k8s.io/v1", series_interval=0.05)
    await sink.write([make_event(pvc())])
    await sink.wait_idle()
    if occurrences >= 2:
        await sink.write([make_event(pvc())])
        await sink.wait_idle()
    for _ in range(occurrences - 2):  # arriving one by one, after the series started
        await sink.write([make_event(pvc())])
        await asyncio.sleep(0.005)
    await sink.wait_idle()
    name = api.calls[0][1]
    assert api.calls[0][0] == "create" and "series" not in api.calls[0][2]
    if occurrences >= 2:
        assert api.calls[1][0] == "patch"
        assert api.calls[1][2]["series"]["count"] == 2
        assert set(api.calls[1][2]) == {"series"}
    assert api.count("apps", name) == occurrences
    # The third and later occurrences ride on one interval write, not one write each.
    assert len(api.calls) == min(occurrences, 3)
    await close(sink)


async def test_events_v1_series_quiet_for_six_minutes_is_finished() -> None:
    api = FakeApi()
    clock = ManualClock()
    sink = KubeSink(
        None,
        transport=api,
        options=dataclasses.replace(FAST, api="events.k8s.io/v1", series_interval=0.01),
        clock=clock,
    )
    for _ in range(3):
        await sink.write([make_event(pvc(), serial=1)])
        await sink.wait_idle()
    clock.advance(361)
    await sink.write([make_event(pvc(), serial=2)])
    await sink.wait_idle()
    await close(sink)
    assert [(c[0], c[1]) for c in api.calls] == [
        ("create", "data-0.1"),
        ("patch", "data-0.1"),
        ("patch", "data-0.1"),
        ("create", "data-0.2"),  # a new series: the old one was finished
    ]
    assert api.count("apps", "data-0.1") == 3
    assert api.count("apps", "data-0.2") == 1


async def test_shutdown_gives_a_record_waiting_to_retry_one_more_attempt() -> None:
    api = FakeApi()
    failures: list[Failure] = [ApiResponse(429, None, retry_after="30")]
    api.fail = lambda verb, name: failures.pop(0) if failures else None
    sink = make_sink(api)
    await sink.write([make_event(pvc())] * 2)
    async with asyncio.timeout(5):
        while sink.stats.retried == 0:  # until the 429 has put it into a 30 s wait
            await asyncio.sleep(0.001)
    assert await close(sink, 2.0) == 0
    assert [c[0] for c in api.calls] == ["create", "create"]
    assert api.count("apps", api.calls[0][1]) == 2
