"""Event names and namespaces, built the way client-go builds them (tools/record makeEvent)."""

from __future__ import annotations

import re
import uuid
from functools import lru_cache

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
    # The hex suffix is always a valid label, so only the object name needs checking, and the
    # same objects come back again and again: cache that answer instead of matching each name.
    if len(name) <= _DNS1123_SUBDOMAIN_MAX and _is_valid_prefix(object_name):
        return name
    return str(uuid.uuid4())


@lru_cache(maxsize=4096)
def _is_valid_prefix(object_name: str) -> bool:
    return _DNS1123_SUBDOMAIN.fullmatch(object_name) is not None


def event_namespace(ref: ObjectRef) -> str:
    """The object's namespace; events about cluster-scoped objects live in "default"."""
    return ref.namespace or DEFAULT_NAMESPACE
