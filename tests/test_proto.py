"""The CSI v1 wire contract: proto/csi.proto against the spec, and both Python stacks on it.

kubelet and csi-sanity only ever see bytes, so the facts checked here are the ones that shape
bytes and paths: field numbers and types, oneof membership, enum values, method paths. The
expected values are written out from CSI spec v1.12.0, independently of our proto file.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import betterproto2
import pytest
from google.protobuf.descriptor import (  # type: ignore[import-untyped]
    Descriptor,
    FieldDescriptor,
)

from rds_csi.gen import regenerate
from rds_csi.gen.csi import v1 as csi
from tests.support.grpcio_csi import load_grpcio_csi


@pytest.fixture(scope="module")
def pb2() -> ModuleType:
    return load_grpcio_csi()[0]


# ---------------------------------------------------------------------------------------------
# The committed generated code is what the proto produces
# ---------------------------------------------------------------------------------------------


def _proto_with_an_extra_field(directory: Path) -> Path:
    text = regenerate.PROTO_FILE.read_text()
    anchor = "  Topology accessible_topology = 3;\n}\n\nmessage NodeExpandVolumeRequest {"
    assert anchor in text
    changed = directory / "csi.proto"
    changed.write_text(
        text.replace(anchor, anchor.replace("= 3;\n", "= 3;\n  string rack_label = 4;\n"))
    )
    return changed


@pytest.fixture(scope="module")
def check_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """`--check` reports for the real proto and for a changed copy, generated side by side.

    Each check runs protoc and the plugin (about a second); in parallel they cost one.
    """
    changed = _proto_with_an_extra_field(tmp_path_factory.mktemp("proto"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        real = pool.submit(regenerate.check, regenerate.PROTO_FILE, regenerate.GEN_DIR)
        stale = pool.submit(regenerate.check, changed, regenerate.GEN_DIR)
        return {"real": real.result(), "changed": stale.result()}


def test_committed_generated_code_matches_the_proto(check_reports: dict[str, list[str]]) -> None:
    assert check_reports["real"] == []


def test_check_reports_generated_code_that_a_changed_proto_makes_stale(
    check_reports: dict[str, list[str]],
) -> None:
    report = "\n".join(check_reports["changed"])
    assert report.startswith("1 generated file(s) differ:")
    assert "changed:    csi/v1/__init__.py" in report
    assert "rack_label" in report  # the unified diff shows the new field


@pytest.mark.parametrize(
    ("outcome", "status", "stream", "text"),
    [
        ([], 0, "out", "matches"),
        (
            ["1 generated file(s) differ:", "  changed:    csi/v1/__init__.py"],
            1,
            "out",
            "make proto",
        ),
        (regenerate.RegenerationError("protoc failed"), 2, "err", "error: protoc failed"),
    ],
)
def test_check_mode_exit_status_and_message(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    outcome: list[str] | Exception,
    status: int,
    stream: str,
    text: str,
) -> None:
    def fake_check(proto_file: Path, gen_dir: Path) -> list[str]:
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(regenerate, "check", fake_check)
    assert regenerate.main(["--check"]) == status
    captured = capsys.readouterr()
    output = captured.out if stream == "out" else captured.err
    assert text in output
    if status == 1:
        assert "changed:    csi/v1/__init__.py" in output


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_install_replaces_generated_parts_and_keeps_hand_written_files(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    for name, content in regenerate.generated_tree(regenerate.GEN_DIR).items():
        (fresh / name).parent.mkdir(parents=True, exist_ok=True)
        (fresh / name).write_bytes(content)
    _write(fresh / "__init__.py", "")  # the generator's own, empty package marker

    target = tmp_path / "gen"
    _write(target / "__init__.py", '"""ours"""\n')
    _write(target / "regenerate.py", "# ours\n")
    _write(target / "csi" / "v1" / "__init__.py", "# stale generated code\n")
    _write(target / "stale_pb.py", "# generated from an older proto\n")
    _write(target / "old" / "module.py", "# generated from an older proto\n")
    _write(target / "__pycache__" / "x.pyc", "cache")

    regenerate.install(fresh, target)

    assert regenerate.generated_tree(target) == regenerate.generated_tree(fresh)
    assert (target / "__init__.py").read_text() == '"""ours"""\n'
    assert (target / "regenerate.py").read_text() == "# ours\n"
    assert not (target / "stale_pb.py").exists()
    assert not (target / "old").exists()
    assert (target / "__pycache__" / "x.pyc").exists()


def test_diff_summary_names_every_kind_of_difference() -> None:
    report = regenerate.diff_trees(
        committed={"same.py": b"x\n", "edited.py": b"a\nb\n", "gone.py": b"old\n"},
        fresh={"same.py": b"x\n", "edited.py": b"a\nc\n", "new.py": b"new\n"},
    )
    text = "\n".join(report)
    assert report[0] == "3 generated file(s) differ:"
    assert "changed:    edited.py (+1 -1 lines)" in text
    assert "unexpected: gone.py" in text
    assert "missing:    new.py" in text
    assert "same.py" not in text
    assert "-b" in report and "+c" in report
    assert regenerate.diff_trees({"a": b"1"}, {"a": b"1"}) == []


def test_a_tree_copied_from_gen_dir_holds_only_generated_files(tmp_path: Path) -> None:
    copy = tmp_path / "gen"
    shutil.copytree(regenerate.GEN_DIR, copy)
    names = set(regenerate.generated_tree(copy))
    assert "csi/v1/__init__.py" in names
    assert "google/protobuf/__init__.py" in names
    assert "message_pool.py" in names
    assert not names & {"__init__.py", "regenerate.py"}
    assert not any("__pycache__" in name for name in names)


# ---------------------------------------------------------------------------------------------
# Spec facts, checked against the Google-protobuf descriptors of our proto
# ---------------------------------------------------------------------------------------------

STRMAP = "map<string,string>"
# message (relative to csi.v1) -> field -> (number, type). Types: proto scalar names,
# "repeated X", STRMAP, or a fully qualified message/enum name.
FIELDS: dict[str, dict[str, tuple[int, str]]] = {
    # Identity
    "GetPluginInfoRequest": {},
    "GetPluginInfoResponse": {
        "name": (1, "string"),
        "vendor_version": (2, "string"),
        "manifest": (3, STRMAP),
    },
    "GetPluginCapabilitiesRequest": {},
    "GetPluginCapabilitiesResponse": {
        "capabilities": (1, "repeated .csi.v1.PluginCapability"),
    },
    "PluginCapability": {
        "service": (1, ".csi.v1.PluginCapability.Service"),
        "volume_expansion": (2, ".csi.v1.PluginCapability.VolumeExpansion"),
    },
    "PluginCapability.Service": {"type": (1, ".csi.v1.PluginCapability.Service.Type")},
    "PluginCapability.VolumeExpansion": {
        "type": (1, ".csi.v1.PluginCapability.VolumeExpansion.Type"),
    },
    "ProbeRequest": {},
    "ProbeResponse": {"ready": (1, ".google.protobuf.BoolValue")},
    # Node
    "NodeStageVolumeRequest": {
        "volume_id": (1, "string"),
        "publish_context": (2, STRMAP),
        "staging_target_path": (3, "string"),
        "volume_capability": (4, ".csi.v1.VolumeCapability"),
        "secrets": (5, STRMAP),
        "volume_context": (6, STRMAP),
    },
    "NodeStageVolumeResponse": {},
    "NodeUnstageVolumeRequest": {
        "volume_id": (1, "string"),
        "staging_target_path": (2, "string"),
    },
    "NodeUnstageVolumeResponse": {},
    "NodePublishVolumeRequest": {
        "volume_id": (1, "string"),
        "publish_context": (2, STRMAP),
        "staging_target_path": (3, "string"),
        "target_path": (4, "string"),
        "volume_capability": (5, ".csi.v1.VolumeCapability"),
        "readonly": (6, "bool"),
        "secrets": (7, STRMAP),
        "volume_context": (8, STRMAP),
    },
    "NodePublishVolumeResponse": {},
    "NodeUnpublishVolumeRequest": {
        "volume_id": (1, "string"),
        "target_path": (2, "string"),
    },
    "NodeUnpublishVolumeResponse": {},
    "NodeGetVolumeStatsRequest": {
        "volume_id": (1, "string"),
        "volume_path": (2, "string"),
        "staging_target_path": (3, "string"),
    },
    "NodeGetVolumeStatsResponse": {
        "usage": (1, "repeated .csi.v1.VolumeUsage"),
        "volume_condition": (2, ".csi.v1.VolumeCondition"),
    },
    "VolumeUsage": {
        "available": (1, "int64"),
        "total": (2, "int64"),
        "used": (3, "int64"),
        "unit": (4, ".csi.v1.VolumeUsage.Unit"),
    },
    "VolumeCondition": {
        "abnormal": (1, "bool"),
        "message": (2, "string"),
    },
    "NodeGetCapabilitiesRequest": {},
    "NodeGetCapabilitiesResponse": {
        "capabilities": (1, "repeated .csi.v1.NodeServiceCapability"),
    },
    "NodeServiceCapability": {"rpc": (1, ".csi.v1.NodeServiceCapability.RPC")},
    "NodeServiceCapability.RPC": {"type": (1, ".csi.v1.NodeServiceCapability.RPC.Type")},
    "NodeGetInfoRequest": {},
    "NodeGetInfoResponse": {
        "node_id": (1, "string"),
        "max_volumes_per_node": (2, "int64"),
        "accessible_topology": (3, ".csi.v1.Topology"),
    },
    "NodeExpandVolumeRequest": {
        "volume_id": (1, "string"),
        "volume_path": (2, "string"),
        "capacity_range": (3, ".csi.v1.CapacityRange"),
        "staging_target_path": (4, "string"),
        "volume_capability": (5, ".csi.v1.VolumeCapability"),
        "secrets": (6, STRMAP),
    },
    "NodeExpandVolumeResponse": {"capacity_bytes": (1, "int64")},
    # Shared types the Node messages carry
    "VolumeCapability": {
        "block": (1, ".csi.v1.VolumeCapability.BlockVolume"),
        "mount": (2, ".csi.v1.VolumeCapability.MountVolume"),
        "access_mode": (3, ".csi.v1.VolumeCapability.AccessMode"),
    },
    "VolumeCapability.BlockVolume": {},
    "VolumeCapability.MountVolume": {
        "fs_type": (1, "string"),
        "mount_flags": (2, "repeated string"),
        "volume_mount_group": (3, "string"),
    },
    "VolumeCapability.AccessMode": {"mode": (1, ".csi.v1.VolumeCapability.AccessMode.Mode")},
    "CapacityRange": {
        "required_bytes": (1, "int64"),
        "limit_bytes": (2, "int64"),
    },
    "Topology": {"segments": (1, STRMAP)},
}

ONEOFS: dict[str, dict[str, set[str]]] = {
    "PluginCapability": {"type": {"service", "volume_expansion"}},
    "VolumeCapability": {"access_type": {"block", "mount"}},
    "NodeServiceCapability": {"type": {"rpc"}},
}

ENUMS: dict[str, dict[str, int]] = {
    "NodeServiceCapability.RPC.Type": {
        "UNKNOWN": 0,
        "STAGE_UNSTAGE_VOLUME": 1,
        "GET_VOLUME_STATS": 2,
        "EXPAND_VOLUME": 3,
        "VOLUME_CONDITION": 4,
        "SINGLE_NODE_MULTI_WRITER": 5,
        "VOLUME_MOUNT_GROUP": 6,
    },
    "PluginCapability.Service.Type": {
        "UNKNOWN": 0,
        "CONTROLLER_SERVICE": 1,
        "VOLUME_ACCESSIBILITY_CONSTRAINTS": 2,
        "GROUP_CONTROLLER_SERVICE": 3,
        "SNAPSHOT_METADATA_SERVICE": 4,
    },
    "PluginCapability.VolumeExpansion.Type": {"UNKNOWN": 0, "ONLINE": 1, "OFFLINE": 2},
    "VolumeCapability.AccessMode.Mode": {
        "UNKNOWN": 0,
        "SINGLE_NODE_WRITER": 1,
        "SINGLE_NODE_READER_ONLY": 2,
        "MULTI_NODE_READER_ONLY": 3,
        "MULTI_NODE_SINGLE_WRITER": 4,
        "MULTI_NODE_MULTI_WRITER": 5,
        "SINGLE_NODE_SINGLE_WRITER": 6,
        "SINGLE_NODE_MULTI_WRITER": 7,
    },
    "VolumeUsage.Unit": {"UNKNOWN": 0, "BYTES": 1, "INODES": 2},
    "ControllerServiceCapability.RPC.Type": {
        "UNKNOWN": 0,
        "CREATE_DELETE_VOLUME": 1,
        "PUBLISH_UNPUBLISH_VOLUME": 2,
        "LIST_VOLUMES": 3,
        "GET_CAPACITY": 4,
        "CREATE_DELETE_SNAPSHOT": 5,
        "LIST_SNAPSHOTS": 6,
        "CLONE_VOLUME": 7,
        "PUBLISH_READONLY": 8,
        "EXPAND_VOLUME": 9,
        "LIST_VOLUMES_PUBLISHED_NODES": 10,
        "VOLUME_CONDITION": 11,
        "GET_VOLUME": 12,
        "SINGLE_NODE_MULTI_WRITER": 13,
        "MODIFY_VOLUME": 14,
        "GET_SNAPSHOT": 15,
    },
}

# service -> [(method, request, response)] in the spec's order.
SERVICES: dict[str, list[tuple[str, str, str]]] = {
    "Identity": [
        ("GetPluginInfo", "GetPluginInfoRequest", "GetPluginInfoResponse"),
        ("GetPluginCapabilities", "GetPluginCapabilitiesRequest", "GetPluginCapabilitiesResponse"),
        ("Probe", "ProbeRequest", "ProbeResponse"),
    ],
    "Node": [
        (name, f"{name}Request", f"{name}Response")
        for name in (
            "NodeStageVolume",
            "NodeUnstageVolume",
            "NodePublishVolume",
            "NodeUnpublishVolume",
            "NodeGetVolumeStats",
            "NodeExpandVolume",
            "NodeGetCapabilities",
            "NodeGetInfo",
        )
    ],
    "Controller": [
        (name, f"{name}Request", f"{name}Response")
        for name in (
            "CreateVolume",
            "DeleteVolume",
            "ControllerPublishVolume",
            "ControllerUnpublishVolume",
            "ValidateVolumeCapabilities",
            "ListVolumes",
            "GetCapacity",
            "ControllerGetCapabilities",
            "CreateSnapshot",
            "DeleteSnapshot",
            "ListSnapshots",
            "GetSnapshot",
            "ControllerExpandVolume",
            "ControllerGetVolume",
            "ControllerModifyVolume",
        )
    ],
}

_SCALAR_NAMES = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_INT32: "int32",
}


def _message(pb2: ModuleType, relative_name: str) -> Descriptor:
    descriptor: Descriptor = pb2.DESCRIPTOR.message_types_by_name[relative_name.split(".")[0]]
    for nested in relative_name.split(".")[1:]:
        descriptor = descriptor.nested_types_by_name[nested]
    return descriptor


def _type_of(field: FieldDescriptor) -> str:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = (field.message_type.fields_by_name[n] for n in ("key", "value"))
        return f"map<{_SCALAR_NAMES[key.type]},{_SCALAR_NAMES[value.type]}>"
    if field.message_type is not None:
        base = "." + field.message_type.full_name
    elif field.enum_type is not None:
        base = "." + field.enum_type.full_name
    else:
        base = _SCALAR_NAMES[field.type]
    return f"repeated {base}" if field.is_repeated else base


@pytest.mark.parametrize("message", sorted(FIELDS))
def test_identity_and_node_message_fields_match_the_spec(pb2: ModuleType, message: str) -> None:
    descriptor = _message(pb2, message)
    actual = {field.name: (field.number, _type_of(field)) for field in descriptor.fields}
    assert actual == FIELDS[message]


@pytest.mark.parametrize("message", sorted(FIELDS))
def test_oneof_membership_matches_the_spec(pb2: ModuleType, message: str) -> None:
    descriptor = _message(pb2, message)
    actual = {oneof.name: {field.name for field in oneof.fields} for oneof in descriptor.oneofs}
    assert actual == ONEOFS.get(message, {})


@pytest.mark.parametrize("enum", sorted(ENUMS))
def test_enum_values_match_the_spec(pb2: ModuleType, enum: str) -> None:
    *parents, name = enum.split(".")
    descriptor = _message(pb2, ".".join(parents)).enum_types_by_name[name]
    assert {value.name: value.number for value in descriptor.values} == ENUMS[enum]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_methods_and_their_types_match_the_spec(pb2: ModuleType, service: str) -> None:
    descriptor = pb2.DESCRIPTOR.services_by_name[service]
    actual = [
        (
            method.name,
            method.input_type.full_name,
            method.output_type.full_name,
            method.client_streaming or method.server_streaming,
        )
        for method in descriptor.methods
    ]
    expected = [
        (name, f"csi.v1.{request}", f"csi.v1.{response}", False)
        for name, request, response in SERVICES[service]
    ]
    assert actual == expected


def test_only_the_three_v1_services_exist(pb2: ModuleType) -> None:
    assert set(pb2.DESCRIPTOR.services_by_name) == {"Identity", "Controller", "Node"}
    assert pb2.DESCRIPTOR.package == "csi.v1"


def test_file_options_and_extension_numbers_match_the_spec(pb2: ModuleType) -> None:
    assert (
        pb2.DESCRIPTOR.GetOptions().go_package
        == "github.com/container-storage-interface/spec/lib/go/csi"
    )
    extensions = {
        name: (ext.number, ext.containing_type.full_name)
        for name, ext in pb2.DESCRIPTOR.extensions_by_name.items()
    }
    assert extensions == {
        "csi_secret": (1059, "google.protobuf.FieldOptions"),
        "alpha_field": (1060, "google.protobuf.FieldOptions"),
        "alpha_enum": (1060, "google.protobuf.EnumOptions"),
        "alpha_enum_value": (1060, "google.protobuf.EnumValueOptions"),
        "alpha_message": (1060, "google.protobuf.MessageOptions"),
        "alpha_method": (1060, "google.protobuf.MethodOptions"),
        "alpha_service": (1060, "google.protobuf.ServiceOptions"),
    }


def _all_fields(descriptor: Descriptor) -> list[FieldDescriptor]:
    fields = list(descriptor.fields)
    for nested in descriptor.nested_types:
        fields.extend(_all_fields(nested))
    return fields


def test_every_csi_secret_field_is_a_map_named_secrets(pb2: ModuleType) -> None:
    # Log redaction works by field name, which is sound only while this holds.
    secret, named_secrets = set(), set()
    for message in pb2.DESCRIPTOR.message_types_by_name.values():
        for field in _all_fields(message):
            if field.GetOptions().Extensions[pb2.csi_secret]:
                secret.add(field.full_name)
                assert _type_of(field) == STRMAP
            if field.name == "secrets":
                named_secrets.add(field.full_name)
    assert secret == named_secrets
    assert "csi.v1.NodeStageVolumeRequest.secrets" in secret
    assert len(secret) == 14  # the 19 of v1.12 less GroupController's 3 and SnapshotMetadata's 2


@pytest.mark.parametrize(
    ("service", "base"),
    [("Identity", csi.IdentityBase), ("Node", csi.NodeBase), ("Controller", csi.ControllerBase)],
)
def test_grpclib_handlers_serve_the_spec_paths_with_the_right_messages(
    service: str, base: type[Any]
) -> None:
    # e.g. "/csi.v1.Node/NodeStageVolume": the path kubelet's grpc-go and grpcio clients call.
    handlers = base().__mapping__()
    expected = {
        f"/csi.v1.{service}/{name}": (request, response)
        for name, request, response in SERVICES[service]
    }
    actual = {
        path: (handler.request_type.__name__, handler.reply_type.__name__)
        for path, handler in handlers.items()
    }
    assert actual == expected


# ---------------------------------------------------------------------------------------------
# Round trips between betterproto2 and Google protobuf
# ---------------------------------------------------------------------------------------------


def test_empty_block_volume_in_the_access_type_oneof_survives_both_ways(pb2: ModuleType) -> None:
    ours = csi.NodeStageVolumeRequest(
        volume_id="pvc-1",
        staging_target_path="/staging",
        volume_capability=csi.VolumeCapability(block=csi.VolumeCapabilityBlockVolume()),
    )
    assert ours.volume_capability is not None
    assert bytes(ours.volume_capability) == b"\n\x00"  # field 1, length 0: present but empty
    assert b'"\x02\n\x00' in bytes(ours)  # field 4 wraps exactly that

    theirs = pb2.NodeStageVolumeRequest.FromString(bytes(ours))
    assert theirs.volume_capability.WhichOneof("access_type") == "block"
    assert theirs.volume_id == "pvc-1"

    back = csi.NodeStageVolumeRequest.parse(theirs.SerializeToString())
    assert back.volume_capability is not None
    assert betterproto2.which_one_of(back.volume_capability, "access_type")[0] == "block"
    assert back == ours


def test_block_volume_from_google_protobuf_is_block_in_betterproto2(pb2: ModuleType) -> None:
    theirs = pb2.NodeStageVolumeRequest(volume_id="pvc-2")
    theirs.volume_capability.block.SetInParent()
    ours = csi.NodeStageVolumeRequest.parse(theirs.SerializeToString())
    assert ours.volume_capability is not None
    assert ours.volume_capability.block == csi.VolumeCapabilityBlockVolume()
    assert ours.volume_capability.mount is None


def test_mount_with_flags_secrets_and_context_round_trips(pb2: ModuleType) -> None:
    ours = csi.NodeStageVolumeRequest(
        volume_id="pvc-3",
        publish_context={"devicePath": "/dev/nvme1n1"},
        staging_target_path="/var/lib/kubelet/plugins/x/globalmount",
        volume_capability=csi.VolumeCapability(
            mount=csi.VolumeCapabilityMountVolume(
                fs_type="xfs", mount_flags=["noatime", "nodiscard"], volume_mount_group="2000"
            ),
            access_mode=csi.VolumeCapabilityAccessMode(
                mode=csi.VolumeCapabilityAccessModeMode.SINGLE_NODE_MULTI_WRITER
            ),
        ),
        secrets={"password": "hunter2", "user": "admin"},
        volume_context={"nqn": "nqn.2000-02.com.mikrotik:pvc-3", "nvmePort": "4420"},
    )

    theirs = pb2.NodeStageVolumeRequest.FromString(bytes(ours))
    capability = theirs.volume_capability
    assert capability.WhichOneof("access_type") == "mount"
    assert capability.mount.fs_type == "xfs"
    assert list(capability.mount.mount_flags) == ["noatime", "nodiscard"]
    assert capability.mount.volume_mount_group == "2000"
    assert capability.access_mode.mode == pb2.VolumeCapability.AccessMode.SINGLE_NODE_MULTI_WRITER
    assert dict(theirs.secrets) == {"password": "hunter2", "user": "admin"}
    assert dict(theirs.volume_context) == ours.volume_context
    assert dict(theirs.publish_context) == ours.publish_context

    back = csi.NodeStageVolumeRequest.parse(theirs.SerializeToString(deterministic=True))
    assert back == ours


def test_volume_stats_with_usage_and_condition_round_trip(pb2: ModuleType) -> None:
    ours = csi.NodeGetVolumeStatsResponse(
        usage=[
            csi.VolumeUsage(available=700, total=1000, used=300, unit=csi.VolumeUsageUnit.BYTES),
            csi.VolumeUsage(available=90, total=100, used=10, unit=csi.VolumeUsageUnit.INODES),
        ],
        volume_condition=csi.VolumeCondition(abnormal=True, message="stale mount"),
    )

    theirs = pb2.NodeGetVolumeStatsResponse.FromString(bytes(ours))
    assert [(u.available, u.total, u.used, u.unit) for u in theirs.usage] == [
        (700, 1000, 300, pb2.VolumeUsage.BYTES),
        (90, 100, 10, pb2.VolumeUsage.INODES),
    ]
    assert theirs.HasField("volume_condition")
    assert theirs.volume_condition.abnormal is True
    assert theirs.volume_condition.message == "stale mount"

    assert csi.NodeGetVolumeStatsResponse.parse(theirs.SerializeToString()) == ours


def test_healthy_condition_is_still_sent(pb2: ModuleType) -> None:
    # abnormal=False and an empty message are all defaults, but the field itself must arrive.
    ours = csi.NodeGetVolumeStatsResponse(volume_condition=csi.VolumeCondition())
    theirs = pb2.NodeGetVolumeStatsResponse.FromString(bytes(ours))
    assert theirs.HasField("volume_condition")
    assert theirs.volume_condition.abnormal is False


def test_probe_ready_false_is_present_and_differs_from_unset(pb2: ModuleType) -> None:
    not_ready = bytes(csi.ProbeResponse(ready=False))
    unset = bytes(csi.ProbeResponse())
    assert not_ready == b"\n\x00"  # an empty BoolValue: present, value false
    assert unset == b""

    theirs = pb2.ProbeResponse.FromString(not_ready)
    assert theirs.HasField("ready")
    assert theirs.ready.value is False
    assert not pb2.ProbeResponse.FromString(unset).HasField("ready")

    from_google = pb2.ProbeResponse()
    from_google.ready.value = False
    assert csi.ProbeResponse.parse(from_google.SerializeToString()).ready is False
    assert csi.ProbeResponse.parse(pb2.ProbeResponse().SerializeToString()).ready is None
    assert csi.ProbeResponse.parse(b"\n\x02\x08\x01").ready is True


def test_unknown_enum_value_from_a_newer_peer_is_kept(pb2: ModuleType) -> None:
    theirs = pb2.NodeGetCapabilitiesResponse()
    theirs.capabilities.add().rpc.type = 99  # e.g. a capability a later spec adds
    theirs.capabilities.add().rpc.type = pb2.NodeServiceCapability.RPC.STAGE_UNSTAGE_VOLUME

    ours = csi.NodeGetCapabilitiesResponse.parse(theirs.SerializeToString())
    types = [cap.rpc.type for cap in ours.capabilities if cap.rpc is not None]
    assert [int(t) for t in types] == [99, 1]
    assert types[1] is csi.NodeServiceCapabilityRpcType.STAGE_UNSTAGE_VOLUME

    again = pb2.NodeGetCapabilitiesResponse.FromString(bytes(ours))
    assert [cap.rpc.type for cap in again.capabilities] == [99, 1]
