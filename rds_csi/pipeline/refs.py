"""Turn whatever a caller has at hand into the `ObjectRef` an event is about.

Callers hold kubernetes-asyncio models (often read from a list, where `kind` and `apiVersion`
are None), plain dicts from JSON, `V1ObjectReference`s or our own `ObjectRef`.  All of them are
read by duck typing so that this module does not import kubernetes-asyncio (slow to import, and
the pipeline must not depend on it).  A missing uid is fine: the Kubernetes sink resolves it
later, off the caller's path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from rds_csi.pipeline.model import ObjectRef

__all__ = ["InvalidObjectError", "object_ref"]

# apiVersion of the kinds this driver reports on, for models that arrive without one.
_KNOWN_API_VERSIONS = {
    "Pod": "v1",
    "Node": "v1",
    "Namespace": "v1",
    "PersistentVolume": "v1",
    "PersistentVolumeClaim": "v1",
    "Secret": "v1",
    "ConfigMap": "v1",
    "Service": "v1",
    "VolumeAttachment": "storage.k8s.io/v1",
    "CSINode": "storage.k8s.io/v1",
    "CSIDriver": "storage.k8s.io/v1",
    "StorageClass": "storage.k8s.io/v1",
}

# kubernetes-asyncio names model classes <Version><Kind>, e.g. V1PersistentVolumeClaim.
_MODEL_CLASS = re.compile(r"V\d+(?:(?:alpha|beta)\d+)?([A-Z]\w*)")


class InvalidObjectError(ValueError):
    """The object cannot be referenced: no name or no kind."""


def object_ref(obj: object, *, kind: str = "", api_version: str = "") -> ObjectRef:
    """Build the reference for `obj`.

    `kind` and `api_version` are hints used only where the object carries none.  Raises
    `InvalidObjectError` when no name or no kind can be found.
    """
    if isinstance(obj, ObjectRef):
        ref = obj
    elif isinstance(obj, Mapping):
        ref = _from_mapping(obj)
    elif obj is None or isinstance(obj, str | bytes):
        raise InvalidObjectError(f"not a Kubernetes object: {type(obj).__name__}")
    elif getattr(obj, "metadata", None) is not None:
        ref = _from_model(obj, kind)
    else:
        ref = _from_reference_like(obj)
    if (not ref.kind and kind) or (not ref.api_version and api_version):
        ref = _with_hints(ref, kind, api_version)
    if not ref.name:
        raise InvalidObjectError(f"{type(obj).__name__} has no name")
    if not ref.kind:
        raise InvalidObjectError(f"{type(obj).__name__} {ref.name!r} has no kind (pass kind=)")
    return ref


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _get(data: Mapping[str, Any], camel: str, snake: str) -> str:
    value = data.get(camel)
    if value is None:
        value = data.get(snake)
    return _text(value)


def _from_mapping(data: Mapping[str, Any]) -> ObjectRef:
    meta = data.get("metadata")
    # API-shaped objects keep identity under metadata; reference-shaped ones keep it flat.
    ident: Mapping[str, Any] = meta if isinstance(meta, Mapping) else data
    kind = _text(data.get("kind"))
    return ObjectRef(
        kind=kind,
        name=_text(ident.get("name")),
        namespace=_text(ident.get("namespace")),
        uid=_text(ident.get("uid")),
        api_version=_get(data, "apiVersion", "api_version") or _KNOWN_API_VERSIONS.get(kind, ""),
        resource_version=_get(ident, "resourceVersion", "resource_version"),
        field_path=_get(data, "fieldPath", "field_path"),
    )


def _from_model(obj: object, kind_hint: str) -> ObjectRef:
    meta = obj.metadata  # type: ignore[attr-defined]
    kind = _text(getattr(obj, "kind", None)) or kind_hint
    if not kind:
        # Models read from a list come without kind; their class name still says it.
        match = _MODEL_CLASS.fullmatch(type(obj).__name__)
        if match:
            kind = match.group(1)
    return ObjectRef(
        kind=kind,
        name=_text(getattr(meta, "name", None)),
        namespace=_text(getattr(meta, "namespace", None)),
        uid=_text(getattr(meta, "uid", None)),
        api_version=_text(getattr(obj, "api_version", None)) or _KNOWN_API_VERSIONS.get(kind, ""),
        resource_version=_text(getattr(meta, "resource_version", None)),
    )


def _from_reference_like(obj: object) -> ObjectRef:
    """V1ObjectReference, or anything else with flat reference attributes."""
    kind = _text(getattr(obj, "kind", None))
    return ObjectRef(
        kind=kind,
        name=_text(getattr(obj, "name", None)),
        namespace=_text(getattr(obj, "namespace", None)),
        uid=_text(getattr(obj, "uid", None)),
        api_version=_text(getattr(obj, "api_version", None)) or _KNOWN_API_VERSIONS.get(kind, ""),
        resource_version=_text(getattr(obj, "resource_version", None)),
        field_path=_text(getattr(obj, "field_path", None)),
    )


def _with_hints(ref: ObjectRef, kind: str, api_version: str) -> ObjectRef:
    new_kind = ref.kind or kind
    return replace(
        ref,
        kind=new_kind,
        api_version=ref.api_version or api_version or _KNOWN_API_VERSIONS.get(new_kind, ""),
    )
