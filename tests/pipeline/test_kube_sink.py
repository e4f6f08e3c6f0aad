"""The Kubernetes sink over real HTTP, against the API-server emulator."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from structlog.testing import capture_logs

from rds_csi.broadcaster import EventBroadcaster
from rds_csi.pipeline.correlator import CorrelatorOptions
from rds_csi.pipeline.kube_sink import KubeSink, KubeSinkOptions, kube_sink_from_config
from rds_csi.pipeline.model import Event, ObjectRef
from rds_csi.pipeline.stats import PipelineStats
from rds_csi.testing.apiserver import ApiServerEmulator, Fault, RecordedRequest
from tests.pipeline.factories import T0, node_event

FAST = KubeSinkOptions(
    qps=0,
    request_timeout=2.0,
    backoff_base=0.005,
    backoff_cap=0.05,
    breaker_probe_base=0.02,
    breaker_probe_max=0.1,
    series_interval=0.05,
    seed=3,
)


@pytest.fixture
async def api() -> AsyncIterator[ApiServerEmulator]:
    async with ApiServerEmulator(token="t") as server:
        yield server


@pytest.fixture
async def client(api: ApiServerEmulator) -> AsyncIterator[ApiClient]:
    async with ApiClient(api.configuration()) as api_client:
        yield api_client


def make_sink(
    client: ApiClient, correlator: CorrelatorOptions | None = None, **changes: Any
) -> KubeSink:
    return KubeSink(
        client, options=dataclasses.replace(FAST, **changes), correlator_options=correlator
    )


def pvc(i: int = 0, namespace: str = "apps", uid: str | None = "auto") -> ObjectRef:
    return ObjectRef(
        "PersistentVolumeClaim",
        f"data-{i}",
        namespace,
        f"uid-{i}" if uid == "auto" else (uid or ""),
        "v1",
    )


def make_event(
    ref: ObjectRef,
    message: str = "mount failed: exit 32",
    *,
    at_ns: int = T0,
    namespace: str | None = None,
) -> Event:
    return node_event(
        ref, at_ns=at_ns, message=message, namespace=namespace or ref.namespace or "default"
    )


async def close(sink: KubeSink, seconds: float = 5.0) -> int:
    return await sink.aclose(asyncio.get_running_loop().time() + seconds)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition on counters the sink does not signal (a safety-net timeout)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)


def event_requests(api: ApiServerEmulator) -> list[RecordedRequest]:
    return [r for r in api.requests if "/events" in r.path]


def stored_counts(api: ApiServerEmulator, group: str = "core") -> Counter[str]:
    """Stored count per involved object name, summed over every event about it."""
    counts: Counter[str] = Counter()
    for event in api.events(group=group):
        if group == "core":
            counts[event["involvedObject"]["name"]] += event["count"]
        else:
            counts[event["regarding"]["name"]] += event.get("series", {}).get("count", 1)
    return counts


async def test_create_then_patch_with_the_right_body_and_content_type(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    sink = make_sink(client)
    await sink.write([make_event(pvc())])
    await sink.wait_idle()
    await sink.write([make_event(pvc(), at_ns=T0 + 7 * 10**9)])
    await sink.wait_idle()
    await close(sink)

    create, patch = event_requests(api)
    assert (create.method, create.path, create.status) == (
        "POST",
        "/api/v1/namespaces/apps/events",
        201,
    )
    assert create.content_type == "application/json"
    assert create.body["count"] == 1
    assert create.body["involvedObject"]["uid"] == "uid-0"
    name = create.body["metadata"]["name"]
    assert (patch.method, patch.path, patch.status) == (
        "PATCH",
        f"/api/v1/namespaces/apps/events/{name}",
        200,
    )
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.body == {
        "count": 2,
        "lastTimestamp": "2026-09-21T14:13:27Z",
        "message": "mount failed: exit 32",
    }
    stored = api.event("apps", name)
    assert stored is not None
    assert stored["count"] == 2
    assert stored["firstTimestamp"] == "2026-09-21T14:13:20Z"
    assert stored["lastTimestamp"] == "2026-09-21T14:13:27Z"


async def test_factory_builds_and_closes_its_own_client(api: ApiServerEmulator) -> None:
    sink = await kube_sink_from_config(configuration=api.configuration(), options=FAST)
    await sink.write([make_event(pvc())])
    assert await close(sink) == 0
    assert api.requests[-1].user_agent is not None
    assert api.requests[-1].user_agent.startswith("rds-csi/")
    assert stored_counts(api) == {"data-0": 1}


async def test_factory_prefers_a_named_kubeconfig_inside_a_pod(
    api: ApiServerEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In a pod (KUBERNETES_SERVICE_HOST is set) an explicit kubeconfig still decides where
    # events go; the in-cluster service account is only the fallback.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emu", "cluster": {"server": api.url}}],
                "users": [{"name": "node", "user": {"token": api.token}}],
                "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "node"}}],
                "current-context": "emu",
            }
        )
    )
    sink = await kube_sink_from_config(kubeconfig=str(kubeconfig), options=FAST)
    await sink.write([make_event(pvc())])
    assert await close(sink) == 0
    assert stored_counts(api) == {"data-0": 1}


async def test_patch_of_an_expired_event_recreates_it_with_the_same_name(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    sink = make_sink(client)
    await sink.write([make_event(pvc())] * 2)
    await sink.wait_idle()
    assert api.expire_events() == 1  # the 1 h TTL
    await sink.write([make_event(pvc())])
    await sink.wait_idle()
    await close(sink)
    first, patch, again = event_requests(api)
    name = first.body["metadata"]["name"]
    assert (patch.method, patch.status) == ("PATCH", 404)
    assert (again.method, again.status, again.body["metadata"]["name"]) == ("POST", 201, name)
    assert "resourceVersion" not in again.body["metadata"]
    stored = api.event("apps", name)
    assert stored is not None and stored["count"] == 3  # the count goes on


async def test_create_whose_answer_was_lost_conflicts_and_becomes_a_patch(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    hang = api.inject(Fault(method="POST", path="/events", status=None, hang=True))
    sink = make_sink(client, request_timeout=0.2, backoff_base=0.2, backoff_cap=0.2)
    await sink.write([make_event(pvc())])
    await wait_until(lambda: sink.stats.written[("create", "timeout")] == 1)
    api.release_hangs()  # the server now stores the create nobody waits for any more
    await api.wait_for_requests(1)
    await sink.write([make_event(pvc())] * 4)
    await sink.wait_idle()
    await close(sink)
    assert hang.fired == 1
    assert [(r.method, r.status) for r in event_requests(api)] == [
        ("POST", 201),  # the answer the client never saw
        ("POST", 409),
        ("PATCH", 200),
    ]
    assert stored_counts(api) == {"data-0": 5}


async def test_429_is_retried_after_retry_after(api: ApiServerEmulator, client: ApiClient) -> None:
    api.inject(Fault(method="POST", path="/events", status=429, retry_after=0.3))
    sink = make_sink(client)
    await sink.write([make_event(pvc())])
    await api.wait_for_requests(2)
    await sink.wait_idle()
    await close(sink)
    throttled, retried = event_requests(api)
    assert throttled.status == 429 and retried.status == 201
    assert retried.time - throttled.time >= 0.3
    assert sink.stats.retried == 1
    assert stored_counts(api) == {"data-0": 1}


async def test_invalid_event_is_not_retried_and_logged_once(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    sink = make_sink(client)
    # involvedObject in "apps" but the event in "other": legacy validation rejects it (422).
    bad = [make_event(pvc(i), namespace="other") for i in range(2)]
    with capture_logs() as logs:
        await sink.write(bad + bad)
        await sink.wait_idle()
    await close(sink)
    assert [r.status for r in event_requests(api)] == [422, 422]
    assert sink.stats.dropped == {"rejected:422": 4}
    warnings = [log for log in logs if log["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["status"] == 422
    assert warnings[0]["status_reason"] == "Invalid"
    assert "does not match event.namespace" in warnings[0]["message"]


async def test_terminating_namespace_is_dropped_quietly(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    api.set_namespace_terminating("apps")
    sink = make_sink(client)
    with capture_logs() as logs:
        await sink.write([make_event(pvc(0)), make_event(pvc(1)), make_event(pvc(1))])
        await sink.wait_idle()
    await close(sink)
    assert [r.status for r in event_requests(api)] == [403, 403]
    assert sink.stats.dropped == {"namespace_terminating": 3}
    assert not [log for log in logs if log["log_level"] in ("warning", "error")]


async def test_a_hung_object_does_not_hold_up_the_others(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    api.inject(Fault(method="POST", path="/namespaces/slow/", status=None, hang=True, times=None))
    sink = make_sink(client, request_timeout=30)
    await sink.write([make_event(pvc(0, "slow"))] + [make_event(pvc(i)) for i in range(1, 30)])
    await wait_until(lambda: stored_counts(api).total() == 29)
    # Everything else was written while the slow create is still hanging (no timeout yet).
    assert sink.stats.written[("create", "timeout")] == 0
    api.release_hangs()
    await sink.wait_idle()
    await close(sink)
    assert stored_counts(api)["data-0"] == 1


async def test_a_hung_server_blocks_a_worker_only_until_the_call_times_out(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    api.inject(Fault(method="POST", path="/namespaces/slow/", status=None, hang=True, times=2))
    sink = make_sink(client, workers=1, request_timeout=0.2)
    await sink.write([make_event(pvc(0, "slow"))] + [make_event(pvc(i)) for i in range(1, 6)])
    await sink.wait_idle()
    await close(sink)
    assert sink.stats.written[("create", "timeout")] == 2
    assert sink.stats.retried == 2
    api.release_hangs()
    assert {name: n for name, n in stored_counts(api).items() if name != "data-0"} == {
        f"data-{i}": 1 for i in range(1, 6)
    }


async def test_breaker_opens_when_the_api_is_down_and_recovers_with_exact_counts(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    outage = api.inject(Fault(status=503, times=None))
    sink = make_sink(client, breaker_threshold=3, max_attempts=3)
    await sink.write([make_event(pvc(i)) for i in range(10)])
    await wait_until(lambda: sink.breaker.opened == 1)
    # While it is open, occurrences keep coalescing and probes go out one at a time.
    await sink.write([make_event(pvc(i)) for i in range(10)] * 4)
    probes_before = outage.fired
    await api.wait_for_fault(outage, fired=probes_before + 2)
    assert sink.pending_keys == 10
    api.clear_faults()
    await sink.wait_idle()
    await close(sink)
    assert sink.stats.dropped_total == 0
    assert stored_counts(api) == {f"data-{i}": 5 for i in range(10)}
    # Far fewer requests than 10 objects x 3 attempts x 5 occurrences.
    assert outage.fired < 20


async def test_storm_of_identical_failures_takes_at_most_three_writes(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    sink = make_sink(client)
    for _ in range(100):
        await sink.write([make_event(pvc())] * 100)
        await asyncio.sleep(0)  # let the workers run between batches, as a broadcaster would
    assert await close(sink) == 0
    assert len(event_requests(api)) <= 3
    assert stored_counts(api) == {"data-0": 10_000}
    assert sink.stats.coalesced == 9_999


async def test_events_v1_series(api: ApiServerEmulator, client: ApiClient) -> None:
    sink = make_sink(client, api="events.k8s.io/v1")
    await sink.write([make_event(pvc(), at_ns=T0)])
    await sink.wait_idle()
    await sink.write([make_event(pvc(), at_ns=T0 + 1_000)])
    await sink.wait_idle()
    for i in range(2, 7):
        await sink.write([make_event(pvc(), at_ns=T0 + i * 10**9)])
    await sink.wait_idle()
    await close(sink)

    create, second, later = event_requests(api)
    assert (create.path, create.status) == ("/apis/events.k8s.io/v1/namespaces/apps/events", 201)
    assert create.body["eventTime"] == "2026-09-21T14:13:20.000000Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", create.body["eventTime"])
    assert "series" not in create.body
    assert (second.method, second.status) == ("PATCH", 200)
    assert second.body == {
        "series": {"count": 2, "lastObservedTime": "2026-09-21T14:13:20.000001Z"}
    }
    assert (later.method, later.status) == ("PATCH", 200)
    assert later.body["series"]["count"] == 7
    (stored,) = api.events(group="events.k8s.io")
    assert stored["series"] == {"count": 7, "lastObservedTime": "2026-09-21T14:13:26.000000Z"}


async def test_uid_is_resolved_with_one_cached_get(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    api.add_pvc("apps", "data-0", uid="real-uid")
    sink = make_sink(client)
    ref = pvc(0, uid=None)
    await sink.write([make_event(ref, "first", at_ns=T0), make_event(ref, "second", at_ns=T0 + 1)])
    await sink.wait_idle()
    await sink.write([make_event(ref, "third", at_ns=T0 + 2)])
    await sink.wait_idle()
    await close(sink)
    gets = [r for r in api.requests if r.method == "GET"]
    assert [r.path for r in gets] == ["/api/v1/namespaces/apps/persistentvolumeclaims/data-0"]
    creates = event_requests(api)
    assert [r.status for r in creates] == [201, 201, 201]
    assert {r.body["involvedObject"]["uid"] for r in creates} == {"real-uid"}


async def test_missing_pvc_is_skipped_and_counted(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    sink = make_sink(client)
    with capture_logs() as logs:
        await sink.write([make_event(pvc(0, uid=None))] * 3)
        await sink.wait_idle()
    await close(sink)
    assert event_requests(api) == []
    assert sink.stats.dropped == {"object_not_found": 3}
    skipped = [log for log in logs if log["event"] == "PVC not found, event skipped"]
    assert len(skipped) == 1 and skipped[0]["object"] == "PersistentVolumeClaim/apps/data-0"


async def test_forbidden_lookup_names_the_missing_rbac_rule_once(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    api.forbid("get", "persistentvolumeclaims")
    api.add_pvc("apps", "data-0")
    sink = make_sink(client, resolve_negative_ttl=0)
    with capture_logs() as logs:
        for i in range(3):
            await sink.write([make_event(pvc(i, uid=None))])
            await sink.wait_idle()
    await close(sink)
    assert [r.status for r in api.requests] == [403, 403, 403]
    assert sink.stats.dropped == {"resolve_forbidden": 3}
    warnings = [log for log in logs if log["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "grant get on persistentvolumeclaims" in warnings[0]["missing_rule"]


async def test_random_faults_never_lose_or_invent_an_occurrence(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    for fault in (
        Fault(status=500, probability=0.08, times=None),
        Fault(status=503, retry_after=0.01, probability=0.08, times=None),
        Fault(status=429, retry_after=0.01, probability=0.08, times=None),
        Fault(status=None, reset=True, probability=0.05, times=None),
        # A timeout that the server does not act on: it answers 504 only after the client left.
        # (A timed-out write the server did apply is unknowable to any client: if it was the
        # last attempt, its occurrences are counted as dropped although stored.  The call
        # timeout is generous so that a loaded test machine does not produce those.)
        Fault(status=504, delay=0.8, probability=0.02, times=None),
    ):
        api.inject(fault)
    # No spam filter: data-78 gets 28 occurrences, over its burst of 25, and whether the ones
    # held back ride along on a pending write depends on timing; otherwise they wait 300 s for
    # a token and wait_idle() with them.
    sink = make_sink(
        client,
        CorrelatorOptions(spam_filter=False),
        request_timeout=0.6,
        max_attempts=6,
        breaker_threshold=8,
    )
    rng = random.Random(11)
    emitted: Counter[str] = Counter()
    with capture_logs() as logs:
        for round_ in range(20):
            batch = []
            for i in rng.sample(range(100), 30):
                occurrences = rng.randint(1, 3)
                batch += [make_event(pvc(i), at_ns=T0 + round_)] * occurrences
                emitted[f"data-{i}"] += occurrences
            await sink.write(batch)
            await asyncio.sleep(rng.random() * 0.01)  # spread the writes over time
        await sink.wait_idle()
        api.clear_faults()
        assert await close(sink) == 0
    dropped: Counter[str] = Counter()
    for log in logs:
        if log["event"] == "event dropped (will not retry)":
            dropped[log["object"].rsplit("/", 1)[1]] += log["occurrences"]
    stored = stored_counts(api)
    assert sum(dropped.values()) == sink.stats.dropped_total
    for name, count in emitted.items():
        assert stored[name] + dropped[name] == count, name
    assert sink.stats.retried > 0  # the faults did fire


async def test_shutdown_flushes_500_pending_events(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    sink = make_sink(client, correlator=CorrelatorOptions(spam_burst=1, spam_qps=1e-6))
    await sink.write([make_event(pvc(i)) for i in range(50)])
    await sink.wait_idle()
    # 50 repeats held back by the spam filter, plus 450 new objects not written yet.
    await sink.write([make_event(pvc(i)) for i in range(500)])
    assert sink.pending_occurrences == 500
    assert await close(sink, 10) == 0
    counts = stored_counts(api)
    assert sum(counts.values()) == 550
    assert all(counts[f"data-{i}"] == 2 for i in range(50))


async def test_events_lost_at_the_broadcasters_deadline_are_reported_and_counted(
    api: ApiServerEmulator, client: ApiClient
) -> None:
    # The sink's own aclose runs until the same deadline and then settles its books; the
    # broadcaster must let it, or the loss vanishes from the report and the counters.
    api.inject(Fault(status=503, times=None))
    stats = PipelineStats()
    sink = KubeSink(client, options=dataclasses.replace(FAST, request_timeout=0.2), stats=stats)
    broadcaster = EventBroadcaster([sink], stats=stats)
    broadcaster.start()
    for i in range(5):
        broadcaster.emit(make_event(pvc(i)))
    await wait_until(lambda: stats.retried >= 5)
    report = await broadcaster.aclose(timeout=0.3)
    assert report.sink("kubernetes").undelivered == 5
    assert report.undelivered == 5
    assert stats.dropped == {"shutdown": 5}
