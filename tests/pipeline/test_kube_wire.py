"""Event bodies and patches as the API server expects them on the wire."""

from __future__ import annotations

import re

from rds_csi.pipeline.kube_wire import (
    core_event_body,
    core_event_patch,
    events_v1_body,
    events_v1_series_patch,
    format_micro_time,
    format_time,
    qualified_name,
)
from rds_csi.pipeline.model import Event, ObjectRef
from tests.pipeline.factories import T0, node_event

PVC = ObjectRef(kind="PersistentVolumeClaim", name="data", namespace="apps", api_version="v1")


def make_event(**changes: object) -> Event:
    fields: dict[str, object] = {"name": "data.1", "last_timestamp_ns": T0 + 5 * 10**9}
    return node_event(PVC, **{**fields, **changes})


def test_time_formats() -> None:
    assert format_time(T0 + 999_999_999) == "2026-09-21T14:13:20Z"
    # MicroTime keeps six digits even when they are zeros (isoformat() would drop them).
    assert format_micro_time(T0) == "2026-09-21T14:13:20.000000Z"
    assert format_micro_time(T0 + 1_234_567) == "2026-09-21T14:13:20.001234Z"


def test_core_body_carries_count_times_and_resolved_uid() -> None:
    body = core_event_body(
        make_event(), name="data.abc", count=7, first_timestamp_ns=T0 - 10**9, uid="u-9"
    )
    assert body["metadata"] == {"name": "data.abc", "namespace": "apps"}
    assert body["involvedObject"] == {
        "kind": "PersistentVolumeClaim",
        "name": "data",
        "namespace": "apps",
        "uid": "u-9",
        "apiVersion": "v1",
    }
    assert body["count"] == 7
    assert body["firstTimestamp"] == "2026-09-21T14:13:19Z"
    assert body["lastTimestamp"] == "2026-09-21T14:13:25Z"
    assert body["source"] == {"component": "rds-csi-node", "host": "node-1"}
    # JSON name of ReportingController is reportingComponent in core/v1.
    assert body["reportingComponent"] == "rds.csi.srvlab.io"
    assert "eventTime" not in body  # legacy validation, as tools/record


def test_core_patch_is_count_time_and_message() -> None:
    assert core_event_patch(count=3, last_timestamp_ns=T0, message="m") == {
        "count": 3,
        "lastTimestamp": "2026-09-21T14:13:20Z",
        "message": "m",
    }


def test_events_v1_body_meets_the_servers_rules() -> None:
    event = make_event(
        reporting_controller="rds csi/node!",
        reporting_instance="n" * 300,
        message="x" * 5000,
    )
    body = events_v1_body(event, name="data.abc", count=1, first_timestamp_ns=T0)
    assert body["eventTime"] == "2026-09-21T14:13:20.000000Z"
    assert re.fullmatch(
        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", body["reportingController"].split("/")[-1]
    )
    assert len(body["reportingInstance"].encode()) <= 128
    assert len(body["note"].encode()) <= 1024
    assert body["action"] == "NodeStageFailed"  # required: the reason when none is given
    assert body["regarding"]["name"] == "data"
    assert "series" not in body
    assert not {"count", "source", "firstTimestamp", "lastTimestamp"} & body.keys()


def test_events_v1_body_created_late_carries_its_series() -> None:
    body = events_v1_body(make_event(action="Stage"), name="n", count=4, first_timestamp_ns=T0)
    assert body["action"] == "Stage"
    assert body["series"] == {"count": 4, "lastObservedTime": "2026-09-21T14:13:25.000000Z"}
    assert events_v1_series_patch(count=2, last_timestamp_ns=T0) == {
        "series": {"count": 2, "lastObservedTime": "2026-09-21T14:13:20.000000Z"}
    }


def test_qualified_name() -> None:
    assert qualified_name("rds.csi.srvlab.io") == "rds.csi.srvlab.io"
    assert qualified_name("example.com/rds-csi") == "example.com/rds-csi"
    assert qualified_name("rds csi") == "rds-csi"
    assert qualified_name("Bad_Prefix!/name") == "bad-prefix/name"
    assert qualified_name("-") == "rds-csi"
    assert len(qualified_name("a" * 100)) == 63
