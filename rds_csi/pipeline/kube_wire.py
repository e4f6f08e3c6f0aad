"""JSON bodies for core/v1 and events.k8s.io/v1 Events, and their count/series patches.

Plain dicts with string timestamps, handed to kubernetes-asyncio as they are: no model
objects to build and serialise, and no `datetime.isoformat()`, which drops zero microseconds
from a MicroTime and gets the request rejected by the API server.
"""

from __future__ import annotations

import re
import time
from typing import Any

from rds_csi.pipeline.model import Event, ObjectRef
from rds_csi.pipeline.naming import is_dns1123_subdomain
from rds_csi.pipeline.truncate import (
    ACTION_LIMIT,
    MESSAGE_LIMIT,
    REPORTING_INSTANCE_LIMIT,
    truncate_middle_utf8,
    truncate_utf8,
)

__all__ = [
    "core_event_body",
    "core_event_patch",
    "events_v1_body",
    "events_v1_series_patch",
    "format_micro_time",
    "format_time",
    "object_ref_json",
    "qualified_name",
]

Json = dict[str, Any]

_NS = 1_000_000_000
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_NAME_LIMIT = 63
_NOT_NAME_CHAR = re.compile(r"[^-A-Za-z0-9_.]")
_NOT_SUBDOMAIN_CHAR = re.compile(r"[^-a-z0-9.]")


def format_time(unix_ns: int) -> str:
    """metav1.Time: RFC 3339 in UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_ns // _NS))


def format_micro_time(unix_ns: int) -> str:
    """metav1.MicroTime: always exactly six fractional digits, as the server's parser needs."""
    seconds, rest = divmod(unix_ns, _NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"


def object_ref_json(ref: ObjectRef, uid: str = "") -> Json:
    """An ObjectReference with empty fields left out; `uid` fills in a resolved uid."""
    out: Json = {"kind": ref.kind, "name": ref.name}
    for key, value in (
        ("namespace", ref.namespace),
        ("uid", ref.uid or uid),
        ("apiVersion", ref.api_version),
        ("resourceVersion", ref.resource_version),
        ("fieldPath", ref.field_path),
    ):
        if value:
            out[key] = value
    return out


def _metadata(event: Event, name: str) -> Json:
    meta: Json = {"name": name, "namespace": event.namespace}
    if event.annotations:
        meta["annotations"] = dict(event.annotations)
    return meta


def core_event_body(
    event: Event, *, name: str, count: int, first_timestamp_ns: int, uid: str = ""
) -> Json:
    """A core/v1 Event as tools/record creates it (no eventTime: legacy validation)."""
    body: Json = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": _metadata(event, name),
        "involvedObject": object_ref_json(event.involved, uid),
        "reason": event.reason,
        "message": event.message,
        "source": {"component": event.source_component, "host": event.source_host},
        "firstTimestamp": format_time(first_timestamp_ns),
        "lastTimestamp": format_time(event.last_timestamp_ns),
        "count": count,
        "type": event.type,
        "reportingComponent": event.reporting_controller,
        "reportingInstance": event.reporting_instance,
    }
    if event.action:
        body["action"] = event.action
    if event.related is not None:
        body["related"] = object_ref_json(event.related)
    return body


def core_event_patch(*, count: int, last_timestamp_ns: int, message: str) -> Json:
    """The strategic-merge patch tools/record sends for a repeat (count, time, message)."""
    return {"count": count, "lastTimestamp": format_time(last_timestamp_ns), "message": message}


def qualified_name(value: str, fallback: str = "rds-csi") -> str:
    """`value` made into a Kubernetes qualified name ([prefix/]name), which reportingController
    must be; unusable characters become '-'."""
    prefix, _, name = value.rpartition("/")
    if _QUALIFIED_NAME.fullmatch(name) and len(name) <= _NAME_LIMIT:
        clean_name = name
    else:
        clean_name = _NOT_NAME_CHAR.sub("-", name)[:_NAME_LIMIT].strip("-_.")
    if not clean_name:
        clean_name = fallback
    if not prefix:
        return clean_name
    clean_prefix = prefix if is_dns1123_subdomain(prefix) else ""
    if not clean_prefix:
        clean_prefix = _NOT_SUBDOMAIN_CHAR.sub("-", prefix.lower()).strip("-.")
        if not is_dns1123_subdomain(clean_prefix):
            return clean_name
    return f"{clean_prefix}/{clean_name}"


def events_v1_body(
    event: Event,
    *,
    name: str,
    count: int,
    first_timestamp_ns: int,
    uid: str = "",
    default_action: str = "",
) -> Json:
    """An events.k8s.io/v1 Event; with `count >= 2` it is created with its series already."""
    body: Json = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": _metadata(event, name),
        "eventTime": format_micro_time(first_timestamp_ns),
        "reportingController": qualified_name(event.reporting_controller),
        "reportingInstance": truncate_utf8(
            event.reporting_instance or event.source_host or "unknown",
            REPORTING_INSTANCE_LIMIT,
            marker="",
        ),
        "action": truncate_utf8(event.action or default_action or event.reason, ACTION_LIMIT),
        "reason": event.reason,
        "regarding": object_ref_json(event.involved, uid),
        "note": truncate_middle_utf8(event.message, MESSAGE_LIMIT),
        "type": event.type,
    }
    if event.related is not None:
        body["related"] = object_ref_json(event.related)
    if count >= 2:
        body["series"] = _series(count, event.last_timestamp_ns)
    return body


def events_v1_series_patch(*, count: int, last_timestamp_ns: int) -> Json:
    """The patch events.k8s.io/v1 recorders send for a repeat: only the series changes."""
    return {"series": _series(count, last_timestamp_ns)}


def _series(count: int, last_timestamp_ns: int) -> Json:
    return {"count": count, "lastObservedTime": format_micro_time(last_timestamp_ns)}
