"""The API server emulator answers like a real kube-apiserver, through kubernetes-asyncio.

Every case here is something a real server does; raw aiohttp is used only where the client
library cannot produce the request (bad JSON, missing auth, odd content types).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient, ApiException, CoreV1Api, EventsV1Api

from rds_csi.testing.apiserver import DEFAULT_USER, ApiServerEmulator, Fault

NOW = datetime(2026, 11, 27, 8, 40, 43, 626807, tzinfo=UTC)
MICRO = "2026-11-27T08:40:43.626807Z"


@pytest.fixture
async def api() -> AsyncIterator[ApiServerEmulator]:
    async with ApiServerEmulator(token="test-token", seed=7) as server:
        yield server


@pytest.fixture(scope="session")
def one_ca_file(tmp_path_factory: pytest.TempPathFactory) -> str | None:
    """A CA bundle of one certificate.  kubernetes-asyncio builds an SSL context for every
    ApiClient, even for http://; with the system bundle that costs ~50 ms per test."""
    certificates = ssl.create_default_context().get_ca_certs(binary_form=True)
    if not certificates:
        return None
    path: Path = tmp_path_factory.mktemp("ca") / "one.pem"
    path.write_text(ssl.DER_cert_to_PEM_cert(certificates[0]))
    return str(path)


@pytest.fixture
async def kube(api: ApiServerEmulator, one_ca_file: str | None) -> AsyncIterator[ApiClient]:
    configuration = api.configuration()
    configuration.ssl_ca_cert = one_ca_file
    async with ApiClient(configuration) as api_client:
        yield api_client


def core_event(name: str = "data.17a1", namespace: str = "ns", **overrides: Any) -> dict[str, Any]:
    """A core/v1 Event as tools/record would post it (no eventTime)."""
    event: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {
            "kind": "PersistentVolumeClaim",
            "namespace": namespace,
            "name": "data",
            "uid": "u-1",
            "apiVersion": "v1",
        },
        "reason": "NodeStageFailed",
        "message": "mount failed: exit 32",
        "type": "Warning",
        "source": {"component": "rds-csi-node", "host": "node-1"},
        "firstTimestamp": "2026-11-27T08:40:43+00:00",
        "lastTimestamp": "2026-11-27T08:40:43+00:00",
        "count": 1,
        "reportingComponent": "rds.csi.srvlab.io",
        "reportingInstance": "node-1",
    }
    event.update(overrides)
    return event


def v1_event(name: str = "data.17a2", namespace: str = "ns", **overrides: Any) -> dict[str, Any]:
    """An events.k8s.io/v1 Event as tools/events would post it."""
    event: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace},
        "eventTime": MICRO,
        "regarding": {"kind": "PersistentVolumeClaim", "namespace": namespace, "name": "data"},
        "reason": "NodeStageFailed",
        "action": "Staging",
        "note": "mount failed",
        "type": "Warning",
        "reportingController": "rds.csi.srvlab.io/node",
        "reportingInstance": "node-1",
    }
    event.update(overrides)
    return event


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


async def raw(
    api: ApiServerEmulator,
    method: str,
    path: str,
    body: bytes | str | None = None,
    content_type: str | None = "application/json",
    token: str | None = "test-token",
) -> tuple[int, dict[str, Any], Any]:
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, api.url + path, data=body, headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.json(content_type=None)


# ----------------------------------------------------------------------------- CRUD


async def test_create_get_patch_delete_round_trip(api: ApiServerEmulator, kube: ApiClient) -> None:
    core = CoreV1Api(kube)
    created = await core.create_namespaced_event("ns", core_event())
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    # metav1.Time is stored to the second, MicroTime keeps microseconds.
    assert created.first_timestamp == datetime(2026, 11, 27, 8, 40, 43, tzinfo=UTC)
    assert api.requests[-1].status == 201

    fetched = await core.read_namespaced_event("data.17a1", "ns")
    assert fetched.metadata.resource_version == created.metadata.resource_version

    patched = await core.patch_namespaced_event(
        "data.17a1", "ns", {"count": 2, "lastTimestamp": "2026-11-27T08:45:00Z"}
    )
    assert patched.count == 2
    assert patched.last_timestamp == datetime(2026, 11, 27, 8, 45, tzinfo=UTC)
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    assert patched.metadata.uid == created.metadata.uid
    assert api.requests[-1].content_type == "application/strategic-merge-patch+json"

    deleted = await core.delete_namespaced_event("data.17a1", "ns")
    assert deleted.status == "Success" and deleted.details.uid == created.metadata.uid
    assert api.event("ns", "data.17a1") is None


async def test_duplicate_create_is_409_already_exists(kube: ApiClient) -> None:
    core = CoreV1Api(kube)
    await core.create_namespaced_event("ns", core_event())
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_event("ns", core_event())
    assert info.value.status == 409
    assert status_of(info.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'events "data.17a1" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "data.17a1", "kind": "events"},
        "code": 409,
    }


async def test_missing_event_is_404_for_get_and_patch(kube: ApiClient) -> None:
    core = CoreV1Api(kube)
    for call in (
        core.read_namespaced_event("gone", "ns"),
        core.patch_namespaced_event("gone", "ns", {"count": 2}),
    ):
        with pytest.raises(ApiException) as info:
            await call
        assert info.value.status == 404
        status = status_of(info.value)
        assert status["reason"] == "NotFound"
        assert status["details"] == {"name": "gone", "kind": "events"}


async def test_expired_event_patch_404_then_recreate_with_same_name(
    api: ApiServerEmulator, kube: ApiClient
) -> None:
    core = CoreV1Api(kube)
    await core.create_namespaced_event("ns", core_event())
    assert api.expire_events() == 1
    with pytest.raises(ApiException) as info:
        await core.patch_namespaced_event("data.17a1", "ns", {"count": 57})
    assert info.value.status == 404
    recreated = await core.create_namespaced_event("ns", core_event(count=57))
    assert recreated.count == 57


async def test_create_with_resource_version_is_500_like_etcd(kube: ApiClient) -> None:
    body = core_event()
    body["metadata"]["resourceVersion"] = "12"
    with pytest.raises(ApiException) as info:
        await CoreV1Api(kube).create_namespaced_event("ns", body)
    assert info.value.status == 500
    assert status_of(info.value)["message"] == (
        "resourceVersion should not be set on objects to be created"
    )
    assert "reason" not in status_of(info.value)


async def test_body_namespace_must_match_url(kube: ApiClient) -> None:
    with pytest.raises(ApiException) as info:
        await CoreV1Api(kube).create_namespaced_event("other", core_event(namespace="ns"))
    assert info.value.status == 400
    assert status_of(info.value)["message"] == (
        "the namespace of the provided object does not match the namespace sent on the request"
    )


async def test_generate_name_and_missing_name(kube: ApiClient) -> None:
    core = CoreV1Api(kube)
    body = core_event()
    body["metadata"] = {"generateName": "kopf-event-"}
    created = await core.create_namespaced_event("ns", body)
    assert created.metadata.name.startswith("kopf-event-") and len(created.metadata.name) == 16
    assert created.metadata.namespace == "ns"

    body["metadata"] = {}
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_event("ns", body)
    assert info.value.status == 422
    cause = status_of(info.value)["details"]["causes"][0]
    assert cause == {
        "reason": "FieldValueRequired",
        "message": "Required value: name or generateName is required",
        "field": "metadata.name",
    }


async def test_put_replaces_and_creates_on_update(api: ApiServerEmulator, kube: ApiClient) -> None:
    core = CoreV1Api(kube)
    created = await core.replace_namespaced_event("data.17a1", "ns", core_event())
    assert api.requests[-1].status == 201
    replaced = await core.replace_namespaced_event(
        "data.17a1", "ns", core_event(count=3, message="again")
    )
    assert api.requests[-1].status == 200
    assert (replaced.count, replaced.message) == (3, "again")
    assert replaced.metadata.uid == created.metadata.uid
    with pytest.raises(ApiException) as info:
        await core.replace_namespaced_event("other", "ns", core_event())
    assert info.value.status == 400
    assert "does not match the name on the URL (other)" in status_of(info.value)["message"]


async def test_list_events_with_field_selector(api: ApiServerEmulator, kube: ApiClient) -> None:
    core = CoreV1Api(kube)
    await core.create_namespaced_event("ns", core_event("a.1"))
    await core.create_namespaced_event("ns", core_event("b.1", reason="Other"))
    await core.create_namespaced_event("ns2", core_event("c.1", namespace="ns2"))
    everywhere = await core.list_event_for_all_namespaces()
    assert [e.metadata.name for e in everywhere.items] == ["a.1", "b.1", "c.1"]
    selected = await core.list_namespaced_event("ns", field_selector="reason=Other")
    assert [e.metadata.name for e in selected.items] == ["b.1"]
    with pytest.raises(ApiException) as info:
        await core.list_namespaced_event("ns", field_selector="note=x")
    assert info.value.status == 400


# ----------------------------------------------------------------------------- validation


def too_long(limit: int) -> str:
    """More than `limit` UTF-8 bytes in fewer than `limit` characters."""
    return "é" * (limit // 2 + 1)


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        pytest.param(
            {"reportingComponent": ""},
            "reportingController",
            "Required value",
            id="reportingController-required",
        ),
        pytest.param(
            {"reportingComponent": "rds csi"},
            "reportingController",
            'Invalid value: "rds csi": name part must consist of alphanumeric characters',
            id="reportingController-qualified-name",
        ),
        pytest.param(
            {"reportingInstance": ""}, "reportingInstance", "Required value", id="instance-required"
        ),
        pytest.param(
            {"reportingInstance": too_long(128)},
            "reportingInstance",
            'Invalid value: "": can have at most 128 characters',
            id="instance-129-bytes",
        ),
        pytest.param({"action": ""}, "action", "Required value", id="action-required"),
        pytest.param(
            {"action": too_long(128)},
            "action",
            'Invalid value: "": can have at most 128 characters',
            id="action-129-bytes",
        ),
        pytest.param({"reason": ""}, "reason", "Required value", id="reason-required"),
        pytest.param(
            {"reason": too_long(128)},
            "reason",
            'Invalid value: "": can have at most 128 characters',
            id="reason-129-bytes",
        ),
        pytest.param(
            {"message": too_long(1024)},
            "message",
            'Invalid value: "": can have at most 1024 characters',
            id="message-1026-bytes-in-513-characters",
        ),
        pytest.param(
            {"involvedObject": {"kind": "Node", "name": "n1"}},
            "involvedObject.namespace",
            'Invalid value: "": does not match event.namespace',
            id="cluster-scoped-object-outside-default",
        ),
    ],
)
async def test_event_time_rules_reject_with_422(
    kube: ApiClient, overrides: dict[str, Any], field: str, message: str
) -> None:
    """A core/v1 post that carries eventTime (as kopf does) gets the new-style rules."""
    body = core_event(**{"eventTime": MICRO, "action": "Staging", **overrides})
    with pytest.raises(ApiException) as info:
        await CoreV1Api(kube).create_namespaced_event("ns", body)
    assert info.value.status == 422
    status = status_of(info.value)
    assert status["reason"] == "Invalid"
    assert status["message"].startswith('Event "data.17a1" is invalid: ')
    messages = [c["message"] for c in status["details"]["causes"] if c["field"] == field]
    assert any(m.startswith(message) for m in messages), messages
    assert status["details"]["kind"] == "Event"


async def test_length_limits_count_bytes_and_accept_the_limit(kube: ApiClient) -> None:
    body = core_event(
        eventTime=MICRO,
        action="a" * 128,
        reason="r" * 128,
        reportingInstance="ü" * 64,  # 128 bytes
        message="é" * 512,  # 1024 bytes
    )
    created = await CoreV1Api(kube).create_namespaced_event("ns", body)
    assert len(created.message.encode()) == 1024


async def test_legacy_events_have_no_length_or_type_rules(kube: ApiClient) -> None:
    body = core_event(message="x" * 5000, reason="r" * 300, type="Custom")
    created = await CoreV1Api(kube).create_namespaced_event("ns", body)
    assert created.type == "Custom" and len(created.message) == 5000


@pytest.mark.parametrize(
    ("event_namespace", "involved_namespace", "event_time", "accepted"),
    [
        pytest.param("ns", "ns", None, True, id="legacy-same-namespace"),
        pytest.param("ns", "other", None, False, id="legacy-other-namespace"),
        pytest.param("default", "", None, True, id="legacy-cluster-scoped-in-default"),
        pytest.param("kube-system", "", None, False, id="legacy-cluster-scoped-in-kube-system"),
        pytest.param("ns", "", None, False, id="legacy-cluster-scoped-in-ns"),
        pytest.param("ns", "other", MICRO, True, id="new-other-namespace-is-fine"),
        pytest.param("default", "", MICRO, True, id="new-cluster-scoped-in-default"),
        pytest.param("kube-system", "", MICRO, True, id="new-cluster-scoped-in-kube-system"),
        pytest.param("ns", "", MICRO, False, id="new-cluster-scoped-in-ns"),
    ],
)
async def test_namespace_rules(
    kube: ApiClient,
    event_namespace: str,
    involved_namespace: str,
    event_time: str | None,
    accepted: bool,
) -> None:
    body = core_event(namespace=event_namespace)
    body["involvedObject"]["namespace"] = involved_namespace
    if event_time:
        body.update(eventTime=event_time, action="Staging")
    core = CoreV1Api(kube)
    if accepted:
        await core.create_namespaced_event(event_namespace, body)
        return
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_event(event_namespace, body)
    assert info.value.status == 422
    assert status_of(info.value)["details"]["causes"][0]["field"] == "involvedObject.namespace"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"metadata": {"name": "Data_1"}}, "metadata.name", id="name-dns-subdomain"),
        pytest.param({"eventTime": None}, "eventTime", id="eventTime-required"),
        pytest.param({"type": "Error"}, "type", id="type-normal-or-warning"),
        pytest.param({"deprecatedCount": 3}, "count", id="deprecatedCount-unset"),
        pytest.param(
            {"deprecatedSource": {"component": "x"}}, "source", id="deprecatedSource-unset"
        ),
        pytest.param(
            {"deprecatedFirstTimestamp": "2026-11-27T08:40:43Z"},
            "firstTimestamp",
            id="deprecatedFirstTimestamp-unset",
        ),
        pytest.param(
            {"series": {"count": 1, "lastObservedTime": MICRO}},
            "series.count",
            id="series-count-1",
        ),
        pytest.param({"series": {"count": 2}}, "series.lastObservedTime", id="series-time"),
    ],
)
async def test_events_v1_strict_rules(
    kube: ApiClient, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiException) as info:
        await EventsV1Api(kube).create_namespaced_event("ns", v1_event(**overrides))
    assert info.value.status == 422
    status = status_of(info.value)
    assert status["details"]["group"] == "events.k8s.io"
    assert status["message"].startswith("Event.events.k8s.io ")
    assert field in {c["field"] for c in status["details"]["causes"]}


async def test_events_v1_series_of_two_is_accepted(kube: ApiClient) -> None:
    body = v1_event(series={"count": 2, "lastObservedTime": MICRO})
    created = await EventsV1Api(kube).create_namespaced_event("ns", body)
    assert created.series.count == 2


async def test_micro_time_needs_exactly_six_fraction_digits(kube: ApiClient) -> None:
    """kubernetes-asyncio sends datetime.isoformat(): a whole second loses its fraction."""
    events = EventsV1Api(kube)
    model = client.EventsV1Event(
        metadata=client.V1ObjectMeta(name="whole.1"),
        event_time=NOW.replace(microsecond=0),
        regarding=client.V1ObjectReference(kind="Node", name="n1"),
        reason="Rebooted",
        action="Boot",
        note="node rebooted",
        type="Normal",
        reporting_controller="rds.csi.srvlab.io/node",
        reporting_instance="node-1",
    )
    with pytest.raises(ApiException) as info:
        await events.create_namespaced_event("default", model)
    assert info.value.status == 400
    assert status_of(info.value)["message"] == (
        'Event in version "v1" cannot be handled as a Event: parsing time '
        '"2026-11-27T08:40:43+00:00" as "2006-01-02T15:04:05.000000Z07:00": '
        'cannot parse "+00:00" as ".000000"'
    )

    model.event_time = NOW  # 626807 µs: isoformat gives six digits and +00:00, which parses
    created = await events.create_namespaced_event("default", model)
    assert created.event_time == NOW

    for bad in ("2026-11-27T08:40:43.626Z", "2026-11-27T08:40:43.6268070Z"):
        body = v1_event("bad.1", eventTime=bad)
        with pytest.raises(ApiException) as info:
            await events.create_namespaced_event("ns", body)
        assert info.value.status == 400


@pytest.mark.parametrize(
    ("timestamp", "accepted"),
    [
        ("2026-11-27T08:40:43Z", True),
        ("2026-11-27T08:40:43+00:00", True),
        ("2026-11-27T10:40:43.5+02:00", True),
        ("2026-11-27T08:40:43", False),  # a naive datetime's isoformat()
        ("2026-11-27 08:40:43Z", False),
        ("2026-02-30T08:40:43Z", False),
    ],
)
async def test_time_parses_rfc3339_only(kube: ApiClient, timestamp: str, accepted: bool) -> None:
    body = core_event(firstTimestamp=timestamp)
    core = CoreV1Api(kube)
    if accepted:
        created = await core.create_namespaced_event("ns", body)
        assert created.first_timestamp == datetime(2026, 11, 27, 8, 40, 43, tzinfo=UTC)
        return
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_event("ns", body)
    assert info.value.status == 400
    assert status_of(info.value)["reason"] == "BadRequest"


async def test_wrong_json_type_is_400(kube: ApiClient) -> None:
    with pytest.raises(ApiException) as info:
        await CoreV1Api(kube).create_namespaced_event("ns", core_event(count="2"))
    assert info.value.status == 400
    assert status_of(info.value)["message"].endswith(
        "json: cannot unmarshal string into Go struct field Event.count of type int32"
    )


async def test_invalid_json_is_400_and_unknown_fields_are_dropped_with_a_warning(
    api: ApiServerEmulator,
) -> None:
    code, _, status = await raw(api, "POST", "/api/v1/namespaces/ns/events", "{not json")
    assert code == 400 and status["reason"] == "BadRequest"

    body = core_event(colour="blue")
    code, headers, created = await raw(
        api, "POST", "/api/v1/namespaces/ns/events", json.dumps(body)
    )
    assert code == 201
    assert "colour" not in created
    assert headers["Warning"] == '299 - "unknown field \\"colour\\""'


async def test_terminating_namespace_rejects_creates_with_the_cause(
    api: ApiServerEmulator, kube: ApiClient
) -> None:
    core = CoreV1Api(kube)
    await core.create_namespaced_event("ns", core_event())
    api.set_namespace_terminating("ns")
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_event("ns", core_event("data.2"))
    assert info.value.status == 403
    status = status_of(info.value)
    assert status["message"] == (
        'events "data.2" is forbidden: unable to create new content in namespace ns because it '
        "is being terminated"
    )
    assert status["details"]["causes"] == [
        {
            "reason": "NamespaceTerminating",
            "message": "namespace ns is being terminated",
            "field": "metadata.namespace",
        }
    ]
    # Updates are still allowed while the namespace terminates.
    await core.patch_namespaced_event("data.17a1", "ns", {"count": 2})


async def test_missing_namespace_is_404(api: ApiServerEmulator, kube: ApiClient) -> None:
    api.remove_namespace("ns")
    with pytest.raises(ApiException) as info:
        await CoreV1Api(kube).create_namespaced_event("ns", core_event())
    assert info.value.status == 404
    assert status_of(info.value)["message"] == 'namespaces "ns" not found'


# ----------------------------------------------------------------------------- both groups


async def test_events_v1_create_is_visible_as_core_event(
    api: ApiServerEmulator, kube: ApiClient
) -> None:
    await EventsV1Api(kube).create_namespaced_event("ns", v1_event())
    seen = await CoreV1Api(kube).read_namespaced_event("data.17a2", "ns")
    assert seen.event_time == NOW
    assert seen.involved_object.name == "data"
    assert seen.message == "mount failed"
    assert seen.reporting_component == "rds.csi.srvlab.io/node"
    assert seen.first_timestamp is None and seen.count is None
    stored = api.event("ns", "data.17a2")
    assert stored is not None and stored["source"] == {} and stored["firstTimestamp"] is None


async def test_core_event_is_visible_through_events_v1(kube: ApiClient) -> None:
    body = core_event(eventTime=MICRO, action="Staging")
    await CoreV1Api(kube).create_namespaced_event("ns", body)
    seen = await EventsV1Api(kube).read_namespaced_event("data.17a1", "ns")
    assert seen.regarding.uid == "u-1"
    assert seen.note == "mount failed: exit 32"
    assert seen.deprecated_count == 1
    assert seen.deprecated_source.component == "rds-csi-node"
    assert seen.reporting_controller == "rds.csi.srvlab.io"
    listed = await EventsV1Api(kube).list_namespaced_event("ns")
    assert [e.metadata.name for e in listed.items] == ["data.17a1"]


async def test_events_v1_updates_keep_immutable_fields(kube: ApiClient) -> None:
    events, core = EventsV1Api(kube), CoreV1Api(kube)
    await events.create_namespaced_event("ns", v1_event())
    series = {"series": {"count": 2, "lastObservedTime": "2026-11-27T08:41:00.000000Z"}}
    patched = await events.patch_namespaced_event("data.17a2", "ns", series)
    assert patched.series.count == 2

    with pytest.raises(ApiException) as info:
        await events.patch_namespaced_event("data.17a2", "ns", {"note": "changed"})
    assert info.value.status == 422
    assert status_of(info.value)["details"]["causes"][0] == {
        "reason": "FieldValueInvalid",
        "message": 'Invalid value: "changed": field is immutable',
        "field": "message",
    }
    # The legacy path lets the same field change.
    changed = await core.patch_namespaced_event("data.17a2", "ns", {"message": "changed"})
    assert changed.message == "changed"


# ----------------------------------------------------------------------------- patch flavours


async def test_json_patch_with_test_operation(api: ApiServerEmulator, kube: ApiClient) -> None:
    core = CoreV1Api(kube)
    await core.create_namespaced_event("ns", core_event())
    ops = [
        {"op": "test", "path": "/count", "value": 1},
        {"op": "replace", "path": "/count", "value": 5},
    ]
    patched = await core.patch_namespaced_event("data.17a1", "ns", ops)
    assert patched.count == 5
    assert api.requests[-1].content_type == "application/json-patch+json"

    with pytest.raises(ApiException) as info:
        await core.patch_namespaced_event("data.17a1", "ns", ops)
    assert info.value.status == 422
    assert status_of(info.value)["details"]["causes"][0]["message"] == (
        "testing value /count failed: test failed"
    )


async def test_merge_patch_and_conflict_on_stale_resource_version(kube: ApiClient) -> None:
    core = CoreV1Api(kube)
    created = await core.create_namespaced_event("ns", core_event())
    patched = await core.patch_namespaced_event(
        "data.17a1",
        "ns",
        {"message": "merged", "metadata": {"resourceVersion": created.metadata.resource_version}},
        _content_type="application/merge-patch+json",
    )
    assert patched.message == "merged"
    with pytest.raises(ApiException) as info:
        await core.patch_namespaced_event(
            "data.17a1", "ns", {"metadata": {"resourceVersion": created.metadata.resource_version}}
        )
    assert info.value.status == 409
    assert status_of(info.value)["message"] == (
        'Operation cannot be fulfilled on events "data.17a1": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


async def test_patch_that_breaks_a_timestamp_is_422(kube: ApiClient) -> None:
    core = CoreV1Api(kube)
    await core.create_namespaced_event("ns", core_event())
    with pytest.raises(ApiException) as info:
        await core.patch_namespaced_event("data.17a1", "ns", {"lastTimestamp": "yesterday"})
    assert info.value.status == 422
    assert status_of(info.value)["details"]["causes"][0]["field"] == "patch"


async def test_unsupported_content_types_are_415(api: ApiServerEmulator, kube: ApiClient) -> None:
    await CoreV1Api(kube).create_namespaced_event("ns", core_event())
    path = "/api/v1/namespaces/ns/events/data.17a1"
    code, _, status = await raw(api, "PATCH", path, '{"count": 2}', content_type="text/plain")
    assert (code, status["reason"]) == (415, "UnsupportedMediaType")
    assert status["message"].startswith(
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json"
    )
    code, _, status = await raw(
        api, "POST", "/api/v1/namespaces/ns/events", "count: 1", content_type="text/plain"
    )
    assert (code, status["reason"]) == (415, "UnsupportedMediaType")


# ----------------------------------------------------------------------------- auth and RBAC


async def test_missing_or_wrong_token_is_401(api: ApiServerEmulator) -> None:
    for token in (None, "wrong"):
        code, _, status = await raw(api, "GET", "/api/v1/nodes/n1", token=token)
        assert code == 401
        assert status == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }


async def test_forbid_gives_the_rbac_message(api: ApiServerEmulator, kube: ApiClient) -> None:
    api.add_pvc("ns", "data")
    api.forbid("get", "persistentvolumeclaims")
    api.forbid("create", "events")
    core = CoreV1Api(kube)
    with pytest.raises(ApiException) as info:
        await core.read_namespaced_persistent_volume_claim("data", "ns")
    assert info.value.status == 403
    assert status_of(info.value)["message"] == (
        'persistentvolumeclaims "data" is forbidden: User '
        f'"{DEFAULT_USER}" cannot get resource "persistentvolumeclaims" in API group "" in the '
        'namespace "ns"'
    )
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_event("ns", core_event())
    assert status_of(info.value)["message"].startswith("events is forbidden: User ")
    # Reading events is still allowed.
    await core.list_namespaced_event("ns")


# ----------------------------------------------------------------------------- EventRateLimit


async def test_event_rate_limit_is_429_without_retry_after(
    kube: ApiClient, api: ApiServerEmulator
) -> None:
    api.limit_events(qps=0.001, burst=2)
    core = CoreV1Api(kube)
    await core.create_namespaced_event("ns", core_event("a.1"))
    await core.patch_namespaced_event("a.1", "ns", {"count": 2})  # a patch takes a token too
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_event("ns", core_event("b.1"))
    assert info.value.status == 429
    assert "Retry-After" not in info.value.headers
    assert status_of(info.value)["message"] == (
        "Too many requests: limit reached on type Server for key "
    )
    # The admission plugin matches the core group's Event kind only.
    await EventsV1Api(kube).create_namespaced_event("ns", v1_event())


# ----------------------------------------------------------------------------- faults


async def test_fault_status_with_retry_after(api: ApiServerEmulator, kube: ApiClient) -> None:
    fault = api.inject(Fault(method="POST", path=r"/events$", status=503, retry_after=2))
    core = CoreV1Api(kube)
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_event("ns", core_event())
    assert info.value.status == 503
    assert info.value.headers["Retry-After"] == "2"
    assert status_of(info.value)["reason"] == "ServiceUnavailable"
    assert fault.fired == 1 and api.requests[-1].fault is fault
    await core.create_namespaced_event("ns", core_event())  # times=1: the next one goes through


async def test_fault_times_and_body_reason(api: ApiServerEmulator, kube: ApiClient) -> None:
    api.inject(Fault(path="nodes", status=429, body_reason="TooManyRequests", times=2))
    api.add_node("n1")
    core = CoreV1Api(kube)
    statuses = []
    for _ in range(3):
        try:
            await core.read_node("n1")
            statuses.append(200)
        except ApiException as exc:
            statuses.append(exc.status)
    assert statuses == [429, 429, 200]


async def test_fault_probability_is_reproducible_with_a_seed() -> None:
    async def run(seed: int) -> list[int | None]:
        async with ApiServerEmulator(token=None, seed=seed) as server:
            server.add_node("n1")
            server.inject(Fault(path="nodes", status=500, times=None, probability=0.5))
            async with aiohttp.ClientSession() as session:
                for _ in range(20):
                    async with session.get(server.url + "/api/v1/nodes/n1") as response:
                        await response.read()
            return [r.status for r in server.requests]

    first, again, other = await run(1), await run(1), await run(2)
    assert first == again
    assert first != other
    assert {500, 200} == set(first)


async def test_delay_holds_the_answer(api: ApiServerEmulator, kube: ApiClient) -> None:
    api.add_node("n1")
    fault = api.inject(Fault(path="nodes/n1", status=None, delay=0.3))
    core = CoreV1Api(kube)
    started = asyncio.get_running_loop().time()
    slow = asyncio.create_task(core.read_node("n1"))
    await api.wait_for_fault(fault)
    await core.list_persistent_volume()  # answered while the delayed request still waits
    node = await slow
    assert node.metadata.name == "n1"
    log = api.requests
    assert [r.path for r in log] == ["/api/v1/persistentvolumes", "/api/v1/nodes/n1"]
    assert log[1].time - started >= 0.3 - 0.01  # the loop may run a timer a tick early


async def test_hang_until_released(api: ApiServerEmulator, kube: ApiClient) -> None:
    fault = api.inject(Fault(method="POST", status=None, hang=True))
    create = asyncio.create_task(CoreV1Api(kube).create_namespaced_event("ns", core_event()))
    await api.wait_for_fault(fault)
    assert not create.done() and api.requests == []
    api.release_hangs()
    created = await create
    assert created.metadata.name == "data.17a1"
    assert api.requests[-1].status == 201


async def test_hang_cut_off_at_shutdown_and_reset_are_client_errors() -> None:
    server = ApiServerEmulator(token=None)
    await server.start()
    hang = server.inject(Fault(path="/hang", hang=True))
    server.inject(Fault(path="/reset", reset=True))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.post(server.url + "/reset", data=b"{}") as response:
                await response.read()

        async def hanging() -> None:
            async with session.get(server.url + "/hang") as response:
                await response.read()

        task = asyncio.create_task(hanging())
        await server.wait_for_fault(hang)
        await server.close()
        with pytest.raises(aiohttp.ClientError):
            await task
    assert [r.status for r in server.requests] == [None, None]


# ----------------------------------------------------------------------------- request log


async def test_request_log_and_wait_for_requests(api: ApiServerEmulator, kube: ApiClient) -> None:
    core = CoreV1Api(kube)

    async def traffic() -> None:
        await core.create_namespaced_event("ns", core_event())
        await core.list_namespaced_event("ns", field_selector="type=Warning")

    task = asyncio.create_task(traffic())
    log = await api.wait_for_requests(2, timeout=5)
    await task
    post, listing = log
    assert (post.method, post.path, post.status) == ("POST", "/api/v1/namespaces/ns/events", 201)
    assert post.content_type == "application/json"
    assert post.body["reason"] == "NodeStageFailed"
    assert post.response["metadata"]["name"] == "data.17a1"
    assert listing.query == {"fieldSelector": "type=Warning"}
    with pytest.raises(TimeoutError):
        await api.wait_for_requests(3, timeout=0.05)


# ----------------------------------------------------------------------------- PVC, PV, Node


async def test_pvc_pv_and_node_reads(api: ApiServerEmulator, kube: ApiClient) -> None:
    pvc = api.add_pvc("ns", "data")
    handle = "pvc-1b2c"
    api.add_pv(handle, claim=("ns", "data", pvc["metadata"]["uid"]))
    api.add_node("node-1")
    core = CoreV1Api(kube)

    claim = await core.read_namespaced_persistent_volume_claim("data", "ns")
    assert claim.metadata.uid == pvc["metadata"]["uid"]
    assert (claim.spec.volume_name, claim.status.phase) == (handle, "Bound")

    volume = await core.read_persistent_volume(handle)
    assert volume.spec.csi.driver == "rds.csi.srvlab.io"
    assert volume.spec.csi.volume_handle == handle
    assert volume.spec.claim_ref.uid == pvc["metadata"]["uid"]

    listed = await core.list_persistent_volume()
    assert [v.metadata.name for v in listed.items] == [handle]
    node = await core.read_node("node-1")
    assert node.metadata.labels["kubernetes.io/hostname"] == "node-1"

    api.delete_pvc("ns", "data")
    with pytest.raises(ApiException) as info:
        await core.read_namespaced_persistent_volume_claim("data", "ns")
    assert info.value.status == 404
    assert status_of(info.value)["message"] == 'persistentvolumeclaims "data" not found'


async def test_unknown_path_is_404_and_wrong_method_is_405(api: ApiServerEmulator) -> None:
    code, _, status = await raw(api, "GET", "/api/v1/namespaces/ns/widgets")
    assert (code, status["reason"]) == (404, "NotFound")
    code, _, status = await raw(api, "POST", "/api/v1/namespaces/ns/events/x", "{}")
    assert (code, status["reason"]) == (405, "MethodNotAllowed")
    code, _, status = await raw(api, "DELETE", "/api/v1/nodes/n1")
    assert (code, status["reason"]) == (405, "MethodNotAllowed")
