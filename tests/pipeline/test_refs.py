"""Object references from every shape a caller may hold."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from kubernetes_asyncio.client import (
    V1Node,
    V1ObjectMeta,
    V1ObjectReference,
    V1PersistentVolumeClaim,
    V1VolumeAttachment,
    V1VolumeAttachmentSource,
    V1VolumeAttachmentSpec,
)

from rds_csi.pipeline.model import ObjectRef
from rds_csi.pipeline.refs import InvalidObjectError, object_ref

PVC_REF = ObjectRef(
    kind="PersistentVolumeClaim",
    name="data",
    namespace="apps",
    uid="u-1",
    api_version="v1",
    resource_version="42",
)


def test_object_ref_is_taken_as_is() -> None:
    assert object_ref(PVC_REF) is PVC_REF


def test_model_read_from_a_list_gets_kind_and_version_from_its_class() -> None:
    pvc = V1PersistentVolumeClaim(
        metadata=V1ObjectMeta(name="data", namespace="apps", uid="u-1", resource_version="42")
    )
    assert pvc.kind is None and pvc.api_version is None
    assert object_ref(pvc) == PVC_REF


def test_model_in_a_named_group_gets_its_group_version() -> None:
    spec = V1VolumeAttachmentSpec(
        attacher="rds.csi.srvlab.io",
        node_name="n1",
        source=V1VolumeAttachmentSource(persistent_volume_name="pv-1"),
    )
    attachment = V1VolumeAttachment(metadata=V1ObjectMeta(name="csi-123"), spec=spec)
    ref = object_ref(attachment)
    assert (ref.kind, ref.api_version, ref.namespace) == (
        "VolumeAttachment",
        "storage.k8s.io/v1",
        "",
    )


def test_model_with_kind_keeps_its_own_kind_and_version() -> None:
    node = V1Node(api_version="v1", kind="Node", metadata=V1ObjectMeta(name="node-1", uid="n-1"))
    assert object_ref(node) == ObjectRef(kind="Node", name="node-1", uid="n-1", api_version="v1")


def test_kind_hint_names_objects_nothing_else_can_name() -> None:
    custom = SimpleNamespace(metadata=SimpleNamespace(name="r1", namespace="ns"))
    with pytest.raises(InvalidObjectError, match="no kind"):
        object_ref(custom)
    ref = object_ref(custom, kind="Replica", api_version="example.com/v1")
    assert (ref.kind, ref.api_version, ref.name, ref.namespace) == (
        "Replica",
        "example.com/v1",
        "r1",
        "ns",
    )


def test_kind_hint_does_not_override_the_objects_own_kind() -> None:
    node = V1Node(kind="Node", metadata=V1ObjectMeta(name="node-1"))
    assert object_ref(node, kind="Pod").kind == "Node"


def test_v1_object_reference() -> None:
    ref = V1ObjectReference(
        kind="PersistentVolumeClaim",
        name="data",
        namespace="apps",
        uid="u-1",
        api_version="v1",
        resource_version="42",
        field_path="spec",
    )
    assert object_ref(ref) == ObjectRef(
        kind="PersistentVolumeClaim",
        name="data",
        namespace="apps",
        uid="u-1",
        api_version="v1",
        resource_version="42",
        field_path="spec",
    )


@pytest.mark.parametrize(
    "data",
    [
        {
            "kind": "PersistentVolumeClaim",
            "apiVersion": "v1",
            "metadata": {
                "name": "data",
                "namespace": "apps",
                "uid": "u-1",
                "resourceVersion": "42",
            },
        },
        {
            "kind": "PersistentVolumeClaim",
            "apiVersion": "v1",
            "name": "data",
            "namespace": "apps",
            "uid": "u-1",
            "resourceVersion": "42",
        },
        {
            "kind": "PersistentVolumeClaim",
            "api_version": "v1",
            "name": "data",
            "namespace": "apps",
            "uid": "u-1",
            "resource_version": "42",
        },
        # No apiVersion: known kinds get theirs.
        {
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": "data",
                "namespace": "apps",
                "uid": "u-1",
                "resource_version": "42",
            },
        },
    ],
    ids=["api-shaped", "reference-camel", "reference-snake", "api-shaped-no-version"],
)
def test_dicts(data: dict[str, object]) -> None:
    assert object_ref(data) == PVC_REF


def test_reference_without_uid_is_accepted_for_later_resolution() -> None:
    ref = object_ref({"kind": "PersistentVolumeClaim", "name": "data", "namespace": "apps"})
    assert ref.uid == ""
    assert ref.name == "data"


def test_none_values_in_dicts_read_as_empty() -> None:
    ref = object_ref({"kind": "Node", "name": "node-1", "namespace": None, "uid": None})
    assert (ref.namespace, ref.uid) == ("", "")


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (None, "not a Kubernetes object"),
        ("pvc/data", "not a Kubernetes object"),
        ({"kind": "Pod", "metadata": {"namespace": "x"}}, "no name"),
        ({"name": "data"}, "no kind"),
        (V1PersistentVolumeClaim(metadata=V1ObjectMeta(namespace="x")), "no name"),
        (V1ObjectReference(name="x"), "no kind"),
        (object(), "no name"),
    ],
    ids=["none", "string", "dict-no-name", "dict-no-kind", "model-no-name", "ref-no-kind", "other"],
)
def test_unreferenceable_objects_are_rejected(obj: object, match: str) -> None:
    with pytest.raises(InvalidObjectError, match=match):
        object_ref(obj)
