"""Failures on the RPC path: what kubelet gets back (the gRPC code), what the operator sees on
the PVC (the Warning event in the API server), and what is left on the host (nothing)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from rds_csi.event_pipeline import EventPipeline
from rds_csi.host.mountinfo import read_mountinfo
from rds_csi.testing.apiserver import ApiServerEmulator
from tests.node.conftest import (
    NODE_ID,
    Plugin,
    PluginFactory,
    loop_devices_of,
    mount_count,
    nvme_context,
    pvc_context,
    wait_for_event,
)


def stage_fields(
    plugin: Plugin, volume_id: str, cap: Any, context: dict[str, str]
) -> dict[str, Any]:
    staging = plugin.staging(volume_id)
    staging.mkdir(parents=True, exist_ok=True)
    return {
        "volume_id": volume_id,
        "staging_target_path": str(staging),
        "volume_capability": cap,
        "volume_context": context,
    }


def assert_warning_on_pvc(event: dict[str, Any], reason: str, uid: str) -> None:
    assert (event["type"], event["reason"]) == ("Warning", reason)
    involved = event["involvedObject"]
    assert (involved["kind"], involved["namespace"], involved["name"], involved["uid"]) == (
        "PersistentVolumeClaim",
        "apps",
        "data",
        uid,
    )


# ---- nvme-tcp with the recording stand-in (no root needed) ----------------------------------


async def test_nvme_connect_failure_is_unavailable_with_a_connection_failure_event(
    nvme_plugin: Any, pipeline: EventPipeline, api: ApiServerEmulator
) -> None:
    uid = api.add_pvc("apps", "data")["metadata"]["uid"]
    plugin: Plugin = await nvme_plugin(poster=pipeline.poster)
    volume_id = f"pvc-{uuid.uuid4()}"
    nqn = nvme_context(volume_id)["nqn"]
    plugin.extras["nvme"].plan_connect(
        nqn, {"rc": 1, "stderr": "Failed to write to /dev/nvme-fabrics: Connection refused\n"}
    )
    context = {**nvme_context(volume_id), **pvc_context()}
    fields = stage_fields(plugin, volume_id, plugin.client.mount_cap(), context)

    message = await plugin.client.fails("NodeStageVolume", grpc.StatusCode.UNAVAILABLE, **fields)
    assert "Connection refused" in message and "10.0.0.5:4420" in message

    event = await wait_for_event(api, "ConnectionFailure")
    assert_warning_on_pvc(event, "ConnectionFailure", uid)
    assert event["message"].startswith(
        f"[{volume_id}] on [{NODE_ID}]: connection to {nqn} at 10.0.0.5:4420 failed: "
    )
    assert event["message"].endswith("Connection refused")
    assert plugin.extras["nvme"].calls() == [
        ["connect", "-t", "tcp", "-a", "10.0.0.5", "-s", "4420", "-n", nqn, "-l", "-1", "-c", "5"]
    ]
    assert plugin.runner is not None and plugin.runner.ran("mkfs.ext4") == []


async def test_mkfs_failure_is_internal_with_a_mount_failure_event_and_disconnects(
    nvme_plugin: Any, pipeline: EventPipeline, api: ApiServerEmulator
) -> None:
    """The stand-in's namespace is an empty file: blkid finds nothing, mkfs cannot make a
    filesystem of zero bytes."""
    uid = api.add_pvc("apps", "data")["metadata"]["uid"]
    plugin: Plugin = await nvme_plugin(poster=pipeline.poster)
    volume_id = f"pvc-{uuid.uuid4()}"
    nqn = nvme_context(volume_id)["nqn"]
    context = {**nvme_context(volume_id), **pvc_context()}
    fields = stage_fields(plugin, volume_id, plugin.client.mount_cap(), context)

    message = await plugin.client.fails("NodeStageVolume", grpc.StatusCode.INTERNAL, **fields)
    assert message.startswith("mkfs.ext4 exited with code 1")

    event = await wait_for_event(api, "MountFailure")
    assert_warning_on_pvc(event, "MountFailure", uid)
    assert event["message"] == f"[{volume_id}] on [{NODE_ID}]: stage volume failed: {message}"
    # It attached the volume for this call, so it detaches it again.
    assert [argv[0] for argv in plugin.extras["nvme"].calls()] == ["connect", "disconnect"]
    assert plugin.extras["nvme"].calls()[-1] == ["disconnect", "-n", nqn]
    assert mount_count(fields["staging_target_path"]) == 0


async def test_missing_pvc_and_missing_pv_are_logged_and_skipped_never_an_rpc_error(
    nvme_plugin: Any, pipeline: EventPipeline, api: ApiServerEmulator
) -> None:
    plugin: Plugin = await nvme_plugin(poster=pipeline.poster)
    with_keys, without_keys = f"pvc-{uuid.uuid4()}", f"pvc-{uuid.uuid4()}"
    with capture_logs() as logs:
        for volume_id, extra in ((with_keys, pvc_context("gone")), (without_keys, {})):
            context = {**nvme_context(volume_id), **extra}
            fields = stage_fields(plugin, volume_id, plugin.client.mount_cap(), context)
            # The same code as with a PVC: the event's fate never changes the answer.
            await plugin.client.fails("NodeStageVolume", grpc.StatusCode.INTERNAL, **fields)
        await pipeline.aclose(timeout=5.0)  # flush: every lookup and write is done

    lookups = {(r.path, r.status) for r in api.requests if r.method == "GET"}
    assert lookups == {
        ("/api/v1/namespaces/apps/persistentvolumeclaims/gone", 404),
        (f"/api/v1/persistentvolumes/{without_keys}", 404),
    }
    assert api.events() == []
    assert not [r for r in api.requests if r.method == "POST"]
    skipped = {(line["event"], line.get("object") or line.get("volume_id")) for line in logs}
    assert ("PVC not found, event skipped", "PersistentVolumeClaim/apps/gone") in skipped
    assert ("no PVC bound to volume, event skipped", without_keys) in skipped


# ---- loop devices and real mounts (root) ----------------------------------------------------


@pytest.mark.root
async def test_loop_attach_failure_is_unavailable_with_a_connection_failure_event(
    loop_plugin: PluginFactory, api: ApiServerEmulator
) -> None:
    uid = api.add_pvc("apps", "data")["metadata"]["uid"]
    plugin = await loop_plugin(standin_losetup=True)
    plugin.extras["losetup"].failing = True
    volume_id = f"pvc-{uuid.uuid4()}"
    image = plugin.image(volume_id, 64)
    context = {"backingFile": str(image), **pvc_context()}
    fields = stage_fields(plugin, volume_id, plugin.client.mount_cap(), context)

    message = await plugin.client.fails("NodeStageVolume", grpc.StatusCode.UNAVAILABLE, **fields)
    assert message == (
        f"attaching {image} failed: losetup exited with code 1: "
        "losetup: cannot find an unused loop device: No such device"
    )
    event = await wait_for_event(api, "ConnectionFailure")
    assert_warning_on_pvc(event, "ConnectionFailure", uid)
    assert event["message"] == (
        f"[{volume_id}] on [{NODE_ID}]: connection to loop file {image} failed: {message}"
    )
    assert loop_devices_of(image) == []


@pytest.mark.root
async def test_loop_mkfs_failure_detaches_and_leaves_nothing_mounted(
    loop_plugin: PluginFactory, api: ApiServerEmulator
) -> None:
    """xfs asked for on a 64 MiB volume: mkfs.xfs refuses anything under 300 MB."""
    uid = api.add_pvc("apps", "data")["metadata"]["uid"]
    plugin = await loop_plugin()
    volume_id = f"pvc-{uuid.uuid4()}"
    image = plugin.image(volume_id, 64)
    context = {"backingFile": str(image), **pvc_context()}
    fields = stage_fields(plugin, volume_id, plugin.client.mount_cap("xfs"), context)

    message = await plugin.client.fails("NodeStageVolume", grpc.StatusCode.INTERNAL, **fields)
    assert message.startswith("mkfs.xfs exited with code 1: ")
    assert "Filesystem must be larger than 300MB" in message
    event = await wait_for_event(api, "MountFailure")
    assert_warning_on_pvc(event, "MountFailure", uid)
    assert event["message"] == f"[{volume_id}] on [{NODE_ID}]: stage volume failed: {message}"
    assert mount_count(fields["staging_target_path"]) == 0
    assert loop_devices_of(image) == []


@pytest.mark.root
async def test_loop_mount_failure_then_a_corrected_retry_mounts_the_same_filesystem(
    loop_plugin: PluginFactory, api: ApiServerEmulator
) -> None:
    """uquota passes the flag whitelist (xfs knows it) but ext4 rejects it at mount time."""
    uid = api.add_pvc("apps", "data")["metadata"]["uid"]
    plugin = await loop_plugin()
    volume_id = f"pvc-{uuid.uuid4()}"
    image = plugin.image(volume_id, 64)
    context = {"backingFile": str(image), **pvc_context()}
    bad = stage_fields(plugin, volume_id, plugin.client.mount_cap("ext4", ["uquota"]), context)

    message = await plugin.client.fails("NodeStageVolume", grpc.StatusCode.INTERNAL, **bad)
    assert message.startswith("mount exited with code 32: ")
    event = await wait_for_event(api, "MountFailure")
    assert_warning_on_pvc(event, "MountFailure", uid)
    assert event["message"] == f"[{volume_id}] on [{NODE_ID}]: stage volume failed: {message}"
    staging = Path(bad["staging_target_path"])
    assert mount_count(staging) == 0 and loop_devices_of(image) == []
    made = fs_uuid(str(image))

    # The StorageClass is fixed; the filesystem made by the first try is mounted, not remade.
    good = {**bad, "volume_capability": plugin.client.mount_cap("ext4", ["noatime"])}
    await plugin.client.call("NodeStageVolume", **good)
    (device,) = loop_devices_of(image)
    assert mount_count(staging) == 1
    assert fs_uuid(device) == made
    assert "noatime" in mount_entry_options(staging)
    await plugin.client.call(
        "NodeUnstageVolume", volume_id=volume_id, staging_target_path=str(staging)
    )
    assert loop_devices_of(image) == [] and mount_count(staging) == 0


def fs_uuid(path: str) -> str:
    done = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "UUID", path],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def mount_entry_options(path: Path) -> tuple[str, ...]:
    (entry,) = [m for m in read_mountinfo() if m.mount_point == str(path)]
    return entry.options
