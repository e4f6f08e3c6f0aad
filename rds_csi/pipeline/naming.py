"""Event names and namespaces, built the way client-go builds them (tools/record makeEvent)."""

from __future__ import annotations

import re
import uuid

from rds_csi.pipeline.model import ObjectRef

__all__ = ["DEFAULT_NAMESPACE", "event_name", "event_namespace", "is_dns1123_subdomain"]

DEFAULT_NAMESPACE = "default"
_DNS1123_SUBDOMAIN_MAX = 253
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= _DNS1123_SUBDOMAIN_MAX and _DNS1123_SUBDOMAIN.fullmatch(value) is not None


def event_name(object_name: str, now_ns: int) -> str:
    """`<object name>.<hex unix nanoseconds>`, or a uuid4 when that is not a valid name.

    The fallback matters for objects whose names are valid for their kind but not for an
    Event (uppercase, '_', ':' or very long names); the API server would reject the event.
    """
    name = f"{object_name}.{now_ns:x}"
    if is_dns1123_subdomain(name):
        return name
    return str(uuid.uuid4())


def event_namespace(ref: ObjectRef) -> str:
    """The object's namespace; events about cluster-scoped objects live in "default"."""
    return ref.namespace or DEFAULT_NAMESPACE
