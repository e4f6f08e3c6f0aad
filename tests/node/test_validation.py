"""Bad input for every Node RPC, answered with the spec's code before anything touches the host,
plus what NodeGetCapabilities and NodeGetInfo report.  No root needed: the nvme-tcp connector
runs the recording `nvme` stand-in, and every other command is recorded by the runner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from rds_csi.host import LoopConnector
from rds_csi.node_server import TOPOLOGY_ZONE_KEY
from tests.node.conftest import (
    NODE_ID,
    ZONE,
    CsiClient,
    Plugin,
    RecordingRunner,
    make_node,
    nvme_context,
    serving,
)
from tests.support.grpcio_csi import load_grpcio_csi

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND
VOLUME = "pvc-4a5c3a8e-2f61-4c1e-9d3b-0c7f1e2a9b10"


@dataclass
class Paths:
    """A staging directory and a pod's target directory that exist but hold no mount."""

    client: CsiClient
    staging: str
    target: str
    plain_dir: str


Fields = Callable[[Paths], dict[str, Any]]


def stage(**over: Any) -> Fields:
    def build(p: Paths) -> dict[str, Any]:
        fields = {
            "volume_id": VOLUME,
            "staging_target_path": p.staging,
            "volume_capability": p.client.mount_cap(),
            "volume_context": nvme_context(VOLUME),
        }
        fields.update({k: v(p) if callable(v) else v for k, v in over.items()})
        return {k: v for k, v in fields.items() if v is not None}

    return build


def publish(**over: Any) -> Fields:
    def build(p: Paths) -> dict[str, Any]:
        fields = {
            "volume_id": VOLUME,
            "staging_target_path": p.staging,
            "target_path": p.target,
            "volume_capability": p.client.mount_cap(),
            "volume_context": nvme_context(VOLUME),
        }
        fields.update({k: v(p) if callable(v) else v for k, v in over.items()})
        return {k: v for k, v in fields.items() if v is not None}

    return build


def plain(**fields: Any) -> Fields:
    def build(p: Paths) -> dict[str, Any]:
        return {k: v(p) if callable(v) else v for k, v in fields.items()}

    return build


def cap(**kwargs: Any) -> Callable[[Paths], Any]:
    return lambda p: p.client.mount_cap(**kwargs)


def mode_only(p: Paths) -> Any:
    """access_type unset: neither block nor mount."""
    return p.client.pb.VolumeCapability(access_mode=p.client.mode("SINGLE_NODE_WRITER"))


def no_mode(p: Paths) -> Any:
    return p.client.pb.VolumeCapability(mount=p.client.pb.VolumeCapability.MountVolume())


def mount_group(p: Paths) -> Any:
    pb = p.client.pb
    return pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(fs_type="ext4", volume_mount_group="1000"),
        access_mode=p.client.mode("SINGLE_NODE_WRITER"),
    )


def context(**over: str) -> dict[str, str]:
    merged = {**nvme_context(VOLUME), **over}
    return {k: v for k, v in merged.items() if v != "<unset>"}


def capacity(required: int, limit: int) -> Callable[[Paths], Any]:
    return lambda p: p.client.pb.CapacityRange(required_bytes=required, limit_bytes=limit)


CASES: list[tuple[str, str, Fields, grpc.StatusCode, str]] = [
    # NodeStageVolume: capability is checked before the staging path (csi-sanity sends neither)
    ("stage-no-volume-id", "NodeStageVolume", stage(volume_id=""), INVALID, "volume_id"),
    (
        "stage-no-capability-no-staging",
        "NodeStageVolume",
        stage(volume_capability=None, staging_target_path=""),
        INVALID,
        "volume_capability is required",
    ),
    (
        "stage-no-staging",
        "NodeStageVolume",
        stage(staging_target_path=""),
        INVALID,
        "staging_target_path is required",
    ),
    (
        "stage-relative-staging",
        "NodeStageVolume",
        stage(staging_target_path="staging/vol"),
        INVALID,
        "absolute path",
    ),
    (
        "stage-no-access-type",
        "NodeStageVolume",
        stage(volume_capability=mode_only),
        INVALID,
        "must set access_type (block or mount)",
    ),
    (
        "stage-no-access-mode",
        "NodeStageVolume",
        stage(volume_capability=no_mode),
        INVALID,
        "access_mode is required",
    ),
    (
        "stage-unknown-fs",
        "NodeStageVolume",
        stage(volume_capability=cap(fs_type="btrfs")),
        INVALID,
        "unsupported fs_type 'btrfs'",
    ),
    (
        "stage-forbidden-flag",
        "NodeStageVolume",
        stage(volume_capability=cap(flags=["remount"])),
        INVALID,
        "remount",
    ),
    (
        "stage-smuggled-flag",
        "NodeStageVolume",
        stage(volume_capability=cap(flags=["noatime,suid"])),
        INVALID,
        "noatime,suid",
    ),
    (
        "stage-unknown-flag",
        "NodeStageVolume",
        stage(volume_capability=cap(flags=["nonsense"])),
        INVALID,
        "nonsense",
    ),
    (
        "stage-mount-group",
        "NodeStageVolume",
        stage(volume_capability=mount_group),
        INVALID,
        "volume_mount_group",
    ),
    (
        "stage-multi-node-filesystem",
        "NodeStageVolume",
        stage(volume_capability=cap(mode="MULTI_NODE_MULTI_WRITER")),
        PRECONDITION,
        "only supported for raw block volumes",
    ),
    (
        "stage-unknown-mode",
        "NodeStageVolume",
        stage(volume_capability=cap(mode="UNKNOWN")),
        INVALID,
        "access mode",
    ),
    (
        "stage-no-nqn",
        "NodeStageVolume",
        stage(volume_context=context(nqn="<unset>")),
        INVALID,
        "volume_context['nqn'] is required",
    ),
    (
        "stage-bad-nqn",
        "NodeStageVolume",
        stage(volume_context=context(nqn="iqn.2000-02.com.mikrotik:" + VOLUME)),
        INVALID,
        "is not an NQN",
    ),
    (
        "stage-nqn-injecting-options",
        "NodeStageVolume",
        stage(volume_context=context(nqn=f"nqn.2000-02.com.mikrotik:{VOLUME},hostnqn=x")),
        INVALID,
        "contains characters outside",
    ),
    (
        "stage-no-address",
        "NodeStageVolume",
        stage(volume_context=context(nvmeAddress="<unset>")),
        INVALID,
        "nvmeAddress",
    ),
    (
        "stage-bad-address",
        "NodeStageVolume",
        stage(volume_context=context(nvmeAddress="10.0.0.256")),
        INVALID,
        "not a valid IP address",
    ),
    (
        "stage-address-with-space",
        "NodeStageVolume",
        stage(volume_context=context(nvmeAddress="rds 1")),
        INVALID,
        "neither an IP address nor a valid host name",
    ),
    (
        "stage-port-zero",
        "NodeStageVolume",
        stage(volume_context=context(nvmePort="0")),
        INVALID,
        "out of range",
    ),
    (
        "stage-port-too-big",
        "NodeStageVolume",
        stage(volume_context=context(nvmePort="65536")),
        INVALID,
        "out of range",
    ),
    (
        "stage-port-not-a-number",
        "NodeStageVolume",
        stage(volume_context=context(nvmePort="4420;reboot")),
        INVALID,
        "not an integer",
    ),
    (
        "stage-bad-ctrl-loss",
        "NodeStageVolume",
        stage(volume_context=context(ctrlLossTmo="-2")),
        INVALID,
        "ctrlLossTmo",
    ),
    # NodeUnstageVolume
    (
        "unstage-no-volume-id",
        "NodeUnstageVolume",
        plain(staging_target_path=lambda p: p.staging),
        INVALID,
        "volume_id",
    ),
    (
        "unstage-no-staging",
        "NodeUnstageVolume",
        plain(volume_id=VOLUME),
        INVALID,
        "staging_target_path",
    ),
    (
        "unstage-relative-staging",
        "NodeUnstageVolume",
        plain(volume_id=VOLUME, staging_target_path="staging"),
        INVALID,
        "absolute path",
    ),
    # NodePublishVolume
    ("publish-no-volume-id", "NodePublishVolume", publish(volume_id=""), INVALID, "volume_id"),
    ("publish-no-target", "NodePublishVolume", publish(target_path=""), INVALID, "target_path"),
    (
        "publish-no-capability-no-staging",
        "NodePublishVolume",
        publish(volume_capability=None, staging_target_path=""),
        INVALID,
        "volume_capability is required",
    ),
    (
        "publish-no-staging",
        "NodePublishVolume",
        publish(staging_target_path=""),
        PRECONDITION,
        "staging_target_path is required",
    ),
    (
        "publish-multi-node-filesystem",
        "NodePublishVolume",
        publish(volume_capability=cap(mode="MULTI_NODE_READER_ONLY")),
        PRECONDITION,
        "only supported for raw block volumes",
    ),
    (
        "publish-bad-nqn",
        "NodePublishVolume",
        publish(volume_context=context(nqn="nqn.2000-13.com.mikrotik:x")),
        INVALID,
        "invalid month",
    ),
    (
        "publish-not-staged",
        "NodePublishVolume",
        publish(),
        PRECONDITION,
        "is not staged at",
    ),
    (
        "publish-block-not-attached",
        "NodePublishVolume",
        publish(volume_capability=lambda p: p.client.block_cap()),
        PRECONDITION,
        "has no block device on this node",
    ),
    # NodeUnpublishVolume
    (
        "unpublish-no-volume-id",
        "NodeUnpublishVolume",
        plain(target_path=lambda p: p.target),
        INVALID,
        "volume_id",
    ),
    ("unpublish-no-target", "NodeUnpublishVolume", plain(volume_id=VOLUME), INVALID, "target"),
    # NodeGetVolumeStats: a relative, missing path is NOT_FOUND (csi-sanity), not INVALID
    (
        "stats-no-volume-id",
        "NodeGetVolumeStats",
        plain(volume_path="some/path"),
        INVALID,
        "volume_id",
    ),
    ("stats-no-path", "NodeGetVolumeStats", plain(volume_id=VOLUME), INVALID, "volume_path"),
    (
        "stats-relative-path",
        "NodeGetVolumeStats",
        plain(volume_id=VOLUME, volume_path="some/path"),
        NOT_FOUND,
        "does not exist",
    ),
    (
        "stats-missing-path",
        "NodeGetVolumeStats",
        plain(volume_id=VOLUME, volume_path="/nonexistent/rds-csi/volume"),
        NOT_FOUND,
        "does not exist",
    ),
    (
        "stats-not-mounted",
        "NodeGetVolumeStats",
        plain(volume_id=VOLUME, volume_path=lambda p: p.plain_dir),
        NOT_FOUND,
        "is not mounted at",
    ),
    # NodeExpandVolume
    (
        "expand-no-volume-id",
        "NodeExpandVolume",
        plain(volume_path=lambda p: p.target),
        INVALID,
        "volume_id",
    ),
    ("expand-no-path", "NodeExpandVolume", plain(volume_id=VOLUME), INVALID, "volume_path"),
    (
        "expand-relative-path",
        "NodeExpandVolume",
        plain(volume_id=VOLUME, volume_path="some/path"),
        NOT_FOUND,
        "does not exist",
    ),
    (
        "expand-not-mounted",
        "NodeExpandVolume",
        plain(volume_id=VOLUME, volume_path=lambda p: p.plain_dir),
        NOT_FOUND,
        "is not mounted at",
    ),
    (
        "expand-required-over-limit",
        "NodeExpandVolume",
        plain(volume_id=VOLUME, volume_path=lambda p: p.plain_dir, capacity_range=capacity(2, 1)),
        INVALID,
        "capacity_range",
    ),
    (
        "expand-negative",
        "NodeExpandVolume",
        plain(volume_id=VOLUME, volume_path=lambda p: p.plain_dir, capacity_range=capacity(-1, 0)),
        INVALID,
        "capacity_range",
    ),
    (
        "expand-multi-node-filesystem",
        "NodeExpandVolume",
        plain(
            volume_id=VOLUME,
            volume_path=lambda p: p.plain_dir,
            volume_capability=cap(mode="MULTI_NODE_MULTI_WRITER"),
        ),
        PRECONDITION,
        "only supported for raw block volumes",
    ),
]


@pytest.fixture
async def plugin(nvme_plugin: Any, tmp_path: Path) -> AsyncIterator[tuple[Plugin, Paths]]:
    started: Plugin = await nvme_plugin()
    staging = tmp_path / "staging"
    target = tmp_path / "pods" / "pod-a" / "mount"
    plain_dir = tmp_path / "plain"
    for directory in (staging, target.parent, plain_dir):
        directory.mkdir(parents=True)
    yield started, Paths(started.client, str(staging), str(target), str(plain_dir))


@pytest.mark.parametrize(
    ("method", "fields", "code", "says"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
async def test_bad_input_is_refused_before_any_command(
    plugin: tuple[Plugin, Paths], method: str, fields: Fields, code: grpc.StatusCode, says: str
) -> None:
    started, paths = plugin
    message = await started.client.fails(method, code, **fields(paths))
    assert says in message
    assert started.extras["nvme"].calls() == []
    assert started.runner is not None and started.runner.calls == []
    assert not Path(paths.target).exists()


@pytest.fixture
async def loop_client(tmp_path: Path) -> AsyncIterator[tuple[CsiClient, RecordingRunner, Path]]:
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    runner = RecordingRunner()
    node = make_node(connector=LoopConnector(runner, backing_dir=str(volumes)), runner=runner)
    async with serving(node) as client:
        yield client, runner, tmp_path


@pytest.mark.parametrize(
    ("backing", "says"),
    [
        ("volumes/vol.img", "must be an absolute path"),
        ("{tmp}/volumes/../volumes/vol.img", "must be normalised"),
        ("{tmp}/volumes/missing.img", "does not exist"),
        ("{tmp}/volumes", "is not a regular file"),
    ],
)
async def test_bad_backing_file_is_refused_before_losetup(
    loop_client: tuple[CsiClient, RecordingRunner, Path], backing: str, says: str
) -> None:
    client, runner, tmp = loop_client
    (tmp / "staging").mkdir()
    message = await client.fails(
        "NodeStageVolume",
        INVALID,
        volume_id="vol",
        staging_target_path=str(tmp / "staging"),
        volume_capability=client.mount_cap(),
        volume_context={"backingFile": backing.format(tmp=tmp)},
    )
    assert message.startswith("volume_context: volume_context['backingFile']") and says in message
    assert runner.calls == []


async def test_capabilities_and_info(nvme_plugin: Any) -> None:
    started: Plugin = await nvme_plugin()
    client = started.client
    pb = client.pb
    capabilities = await client.call("NodeGetCapabilities")
    assert [c.rpc.type for c in capabilities.capabilities] == [
        pb.NodeServiceCapability.RPC.STAGE_UNSTAGE_VOLUME,
        pb.NodeServiceCapability.RPC.GET_VOLUME_STATS,
        pb.NodeServiceCapability.RPC.EXPAND_VOLUME,
        pb.NodeServiceCapability.RPC.VOLUME_CONDITION,
    ]
    info = await client.call("NodeGetInfo")
    assert info.node_id == NODE_ID
    assert info.max_volumes_per_node == 0
    assert dict(info.accessible_topology.segments) == {TOPOLOGY_ZONE_KEY: ZONE}
    assert TOPOLOGY_ZONE_KEY == "topology.rds.csi.srvlab.io/zone"
    # A node-only plugin: the Controller service answers UNIMPLEMENTED, not "unknown service".
    controller = load_grpcio_csi()[1].ControllerStub(client.channel)
    with pytest.raises(grpc.RpcError) as raised:
        await asyncio.to_thread(
            controller.ControllerGetCapabilities, pb.ControllerGetCapabilitiesRequest(), timeout=10
        )
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
