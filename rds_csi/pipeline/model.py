"""The event as it travels through the pipeline, independent of any Kubernetes API version."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

NORMAL = "Normal"
WARNING = "Warning"
EVENT_TYPES = frozenset({NORMAL, WARNING})


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """What an event is about (core/v1 ObjectReference).  An empty uid is resolved later."""

    kind: str
    name: str
    namespace: str = ""
    uid: str = ""
    api_version: str = ""
    resource_version: str = ""
    field_path: str = ""


@dataclass(slots=True)
class Event:
    """One occurrence, as the recorder built it.

    Times are integer Unix nanoseconds: cheap to take on the caller's path and exact enough to
    name events the way client-go does; sinks format them for their wire.
    """

    name: str
    namespace: str
    involved: ObjectRef
    type: str
    reason: str
    message: str
    source_component: str
    source_host: str
    reporting_controller: str
    reporting_instance: str
    first_timestamp_ns: int
    last_timestamp_ns: int
    count: int = 1
    action: str = ""
    related: ObjectRef | None = None
    annotations: Mapping[str, str] | None = field(default=None)
