"""Real stale mounts under a staged volume, found, reported and recovered through the socket,
with the events checked where an operator reads them: on the PVC, in the API server.

A stale mount is made the way it happens with NVMe/TCP: the device under the mounted
filesystem goes away (`losetup -d` while mounted only marks the loop device autoclear; it is no
longer the volume's device) and the volume comes back on another device, or not at all.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from rds_csi.host.mountinfo import read_mountinfo
from rds_csi.testing.apiserver import ApiServerEmulator
from tests.host.conftest import attach
from tests.node.conftest import (
    NODE_ID,
    Plugin,
    PluginFactory,
    loop_devices_of,
    mount_count,
    pvc_context,
    wait_for_event,
)

pytestmark = pytest.mark.root

PAYLOAD = "survives the device change\n"


def source_of(path: Path) -> str:
    (entry,) = [m for m in read_mountinfo() if m.mount_point == str(path)]
    return entry.source


def number_of(device: str) -> str:
    """major:minor of a device node (the node outlives a detached loop device)."""
    rdev = os.stat(device).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def detach(device: str) -> None:
    subprocess.run(["losetup", "-d", device], check=True, timeout=30)


class Volume:
    """One ext4 volume staged and published at pod-a's target, with a file on it."""

    def __init__(
        self, plugin: Plugin, context: dict[str, str] | None = None, fs_type: str = "ext4"
    ) -> None:
        self.plugin = plugin
        self.id = f"pvc-{uuid.uuid4()}"
        self.image = plugin.image(self.id, 320 if fs_type == "xfs" else 64)
        self.context = {"backingFile": str(self.image), **(context or {})}
        self.staging = plugin.staging(self.id)
        self.cap = plugin.client.mount_cap(fs_type)

    def target(self, pod: str) -> Path:
        return self.plugin.target(self.id, pod)

    async def stage(self) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        await self.plugin.client.call(
            "NodeStageVolume",
            volume_id=self.id,
            staging_target_path=str(self.staging),
            volume_capability=self.cap,
            volume_context=self.context,
        )

    def publish_fields(self, pod: str) -> dict[str, Any]:
        self.target(pod).parent.mkdir(parents=True, exist_ok=True)
        return {
            "volume_id": self.id,
            "staging_target_path": str(self.staging),
            "target_path": str(self.target(pod)),
            "volume_capability": self.cap,
            "volume_context": self.context,
        }

    async def publish(self, pod: str) -> None:
        await self.plugin.client.call("NodePublishVolume", **self.publish_fields(pod))

    async def unpublish(self, pod: str) -> None:
        await self.plugin.client.call(
            "NodeUnpublishVolume", volume_id=self.id, target_path=str(self.target(pod))
        )

    async def stats(self, pod: str) -> Any:
        return await self.plugin.client.call(
            "NodeGetVolumeStats",
            volume_id=self.id,
            volume_path=str(self.target(pod)),
            staging_target_path=str(self.staging),
        )

    async def unstage(self) -> None:
        await self.plugin.client.call(
            "NodeUnstageVolume", volume_id=self.id, staging_target_path=str(self.staging)
        )

    async def ready(self) -> str:
        """Stage, publish at pod-a, write the payload; returns the device."""
        await self.stage()
        await self.publish("pod-a")
        (self.target("pod-a") / "payload").write_text(PAYLOAD)
        subprocess.run(["sync"], check=True, timeout=30)
        (device,) = loop_devices_of(self.image)
        return device


def assert_on_pvc(event: dict[str, Any], *, reason: str, type_: str, uid: str) -> None:
    assert (event["reason"], event["type"]) == (reason, type_)
    involved = event["involvedObject"]
    assert (involved["kind"], involved["name"], involved["namespace"], involved["uid"]) == (
        "PersistentVolumeClaim",
        "data",
        "apps",
        uid,
    )
    assert event["source"] == {"component": "rds-csi-node", "host": NODE_ID}


async def test_replaced_device_reported_by_stats_and_recovered_by_next_publish(
    loop_plugin: PluginFactory, api: ApiServerEmulator
) -> None:
    pvc = api.add_pvc("apps", "data")
    plugin = await loop_plugin()
    volume = Volume(plugin, pvc_context())
    old = await volume.ready()

    detach(old)  # still mounted, so the kernel keeps it as autoclear
    new = attach(volume.image)
    assert new != old

    stats = await volume.stats("pod-a")
    assert stats.volume_condition.abnormal is True
    assert list(stats.usage) == []
    assert stats.volume_condition.message == (
        f"Stale mount detected (device_path_mismatch): mounted from {number_of(old)}, the "
        f"volume is now {new} ({number_of(new)}); old device: {old}, new device: {new}"
    )
    assert source_of(volume.staging) == old  # reporting is not recovering

    await volume.unpublish("pod-a")  # the pod goes; its replacement is published
    await volume.publish("pod-b")
    assert mount_count(volume.staging) == 1 and source_of(volume.staging) == new
    assert mount_count(volume.target("pod-b")) == 1
    assert (volume.target("pod-b") / "payload").read_text() == PAYLOAD
    assert loop_devices_of(volume.image) == [new]  # the old device went with its last mount
    healthy = await volume.stats("pod-b")
    assert (healthy.volume_condition.abnormal, healthy.volume_condition.message) == (
        False,
        "Volume is healthy",
    )

    event = await wait_for_event(api, "StaleMountDetected")
    assert_on_pvc(event, reason="StaleMountDetected", type_="Normal", uid=pvc["metadata"]["uid"])
    assert event["message"] == (
        f"[{volume.id}] on [{NODE_ID}]: stale mount detected - old device: {old}, new device: {new}"
    )
    assert event["count"] == 1  # stats reported it, only the publish posted it
    assert plugin.node.stats.stale_recovered == 1

    await volume.unpublish("pod-b")
    await volume.unstage()
    assert loop_devices_of(volume.image) == []


@pytest.mark.parametrize("fs_type", ["ext4", "xfs"])
async def test_republished_target_and_staging_recovered_claim_found_through_the_pv(
    loop_plugin: PluginFactory, api: ApiServerEmulator, fs_type: str
) -> None:
    """kubelet publishes the same target again: the stale bind there and the staged mount are
    both remounted from the volume's new device (xfs refuses a second instance of the same
    filesystem while the old bind holds the first).  No PVC keys in volume_context: the poster
    finds the claim through the PersistentVolume named after the volume."""
    plugin = await loop_plugin()
    volume = Volume(plugin, fs_type=fs_type)
    pvc = api.add_pvc("apps", "data", volume_name=volume.id)
    api.add_pv(volume.id, claim=("apps", "data", pvc["metadata"]["uid"]))
    old = await volume.ready()

    detach(old)  # gone, and not back: the publish has to attach the volume again
    stats = await volume.stats("pod-a")
    assert stats.volume_condition.abnormal is True
    assert stats.volume_condition.message.startswith(
        "Stale mount detected (volume_device_missing): the volume has no block device"
    )

    await volume.publish("pod-a")
    (new,) = [d for d in loop_devices_of(volume.image) if d != old]  # attached again
    assert mount_count(volume.staging) == 1 and source_of(volume.staging) == new
    assert mount_count(volume.target("pod-a")) == 1 and source_of(volume.target("pod-a")) == new
    assert (volume.target("pod-a") / "payload").read_text() == PAYLOAD
    await volume.publish("pod-a")  # and again: now an ordinary idempotent retry
    assert mount_count(volume.target("pod-a")) == 1

    event = await wait_for_event(api, "StaleMountDetected")
    assert_on_pvc(event, reason="StaleMountDetected", type_="Normal", uid=pvc["metadata"]["uid"])
    assert event["message"] == (
        f"[{volume.id}] on [{NODE_ID}]: stale mount detected - old device: {old}, new device: {new}"
    )
    assert [r.path for r in api.requests if r.method == "GET"] == [
        f"/api/v1/persistentvolumes/{volume.id}"
    ]

    await volume.unpublish("pod-a")
    await volume.unstage()
    assert loop_devices_of(volume.image) == []


async def test_stage_again_recovers_a_stale_staging_mount(
    loop_plugin: PluginFactory, api: ApiServerEmulator
) -> None:
    """kubelet calls NodeStage again after it restarts: a stale staged mount is remounted from
    the volume's device, not left in place and not stacked."""
    uid = api.add_pvc("apps", "data")["metadata"]["uid"]
    plugin = await loop_plugin()
    volume = Volume(plugin, pvc_context())
    old = await volume.ready()
    await volume.unpublish("pod-a")

    detach(old)
    await volume.stage()
    (new,) = loop_devices_of(volume.image)
    assert new != old  # attached again while the dead mount still held old; old left with it
    assert mount_count(volume.staging) == 1 and source_of(volume.staging) == new
    assert (volume.staging / "payload").read_text() == PAYLOAD
    event = await wait_for_event(api, "StaleMountDetected")
    assert_on_pvc(event, reason="StaleMountDetected", type_="Normal", uid=uid)
    assert event["message"].endswith(f"old device: {old}, new device: {new}")

    await volume.unstage()
    assert loop_devices_of(volume.image) == []


async def test_recovery_that_fails_leaves_nothing_half_mounted_and_completes_later(
    loop_plugin: PluginFactory, api: ApiServerEmulator
) -> None:
    pvc = api.add_pvc("apps", "data")
    plugin = await loop_plugin(standin_losetup=True)
    losetup = plugin.extras["losetup"]
    volume = Volume(plugin, pvc_context())
    old = await volume.ready()
    await volume.unpublish("pod-a")

    detach(old)
    losetup.failing = True  # the volume cannot be attached any more: gone for good
    message = await plugin.client.fails(
        "NodePublishVolume", grpc.StatusCode.UNAVAILABLE, **volume.publish_fields("pod-b")
    )
    assert message.startswith(
        f"stale mount at {volume.staging} could not be recovered after 3 attempt(s): "
        f"the volume of {volume.staging} has no block device on this node"
    )
    assert plugin.extras["sleep"].delays == [1.0, 2.0]  # bounded backoff between attempts
    # Nothing half-mounted: the dead mount is gone, no target was made, no device is left.
    assert mount_count(volume.staging) == 0
    assert not volume.target("pod-b").exists()
    assert loop_devices_of(volume.image) == []

    uid = pvc["metadata"]["uid"]
    failed = await wait_for_event(api, "RecoveryFailed")
    assert_on_pvc(failed, reason="RecoveryFailed", type_="Warning", uid=uid)
    assert failed["message"].startswith(
        f"[{volume.id}] on [{NODE_ID}]: stale mount recovery failed after 3 attempt(s): "
    )
    detected = await wait_for_event(api, "StaleMountDetected")
    assert_on_pvc(detected, reason="StaleMountDetected", type_="Normal", uid=uid)
    assert detected["message"].endswith(f"old device: {old}, new device: unknown")
    connection = await wait_for_event(api, "ConnectionFailure")
    assert_on_pvc(connection, reason="ConnectionFailure", type_="Warning", uid=uid)
    assert "cannot find an unused loop device" in connection["message"]

    # The volume comes back: the next publish finishes the recovery kubelet cannot ask for
    # (it never stages a volume again that it staged once).
    losetup.failing = False
    await volume.publish("pod-b")
    assert mount_count(volume.staging) == 1 and mount_count(volume.target("pod-b")) == 1
    assert (volume.target("pod-b") / "payload").read_text() == PAYLOAD
    assert plugin.node.stats.recovery_failed == 1 and plugin.node.stats.stale_recovered == 1

    await volume.unpublish("pod-b")
    await volume.unstage()
    assert loop_devices_of(volume.image) == []


async def test_raw_block_publish_of_a_replaced_device_is_reported_and_rebound(
    loop_plugin: PluginFactory, api: ApiServerEmulator
) -> None:
    uid = api.add_pvc("apps", "data")["metadata"]["uid"]
    plugin = await loop_plugin()
    client = plugin.client
    volume_id = f"pvc-{uuid.uuid4()}"
    image = plugin.image(volume_id, 64)
    staging, target = plugin.staging(volume_id), plugin.target(volume_id)
    staging.mkdir(parents=True)
    target.parent.mkdir(parents=True)
    fields = {
        "volume_id": volume_id,
        "staging_target_path": str(staging),
        "volume_capability": client.block_cap(),
        "volume_context": {"backingFile": str(image), **pvc_context()},
    }
    await client.call("NodeStageVolume", **fields)
    await client.call("NodePublishVolume", target_path=str(target), **fields)
    (old,) = loop_devices_of(image)
    with open(target, "r+b") as device:
        device.write(PAYLOAD.encode())

    # The pod still has the old device open: a device nobody holds is freed at once and its
    # number handed out again, which is not stale at all.
    holder = os.open(old, os.O_RDONLY)
    try:
        detach(old)
        new = attach(image)
        old_number, new_number = number_of(old), number_of(new)
        stats = await client.call(
            "NodeGetVolumeStats",
            volume_id=volume_id,
            volume_path=str(target),
            staging_target_path=str(staging),
        )
        assert stats.volume_condition.abnormal is True and list(stats.usage) == []
        assert stats.volume_condition.message == (
            f"Stale mount detected (device_path_mismatch): {target} is device {old_number}, the "
            f"volume is now {new} ({new_number}); old device: {old_number}, new device: {new}"
        )

        await client.call("NodePublishVolume", target_path=str(target), **fields)
        assert mount_count(target) == 1
        assert number_of(str(target)) == new_number
    finally:
        os.close(holder)
    with open(target, "rb") as device:
        assert device.read(len(PAYLOAD)) == PAYLOAD.encode()
    healthy = await client.call("NodeGetVolumeStats", volume_id=volume_id, volume_path=str(target))
    assert healthy.volume_condition.abnormal is False
    assert [u.total for u in healthy.usage] == [64 * 1024 * 1024]

    event = await wait_for_event(api, "StaleMountDetected")
    assert_on_pvc(event, reason="StaleMountDetected", type_="Normal", uid=uid)
    assert event["message"] == (
        f"[{volume_id}] on [{NODE_ID}]: stale mount detected - old device: {old_number}, "
        f"new device: {new}"
    )
    assert plugin.node.stats.stale_recovered == 1

    await client.call("NodeUnpublishVolume", volume_id=volume_id, target_path=str(target))
    await client.call("NodeUnstageVolume", volume_id=volume_id, staging_target_path=str(staging))
    assert loop_devices_of(image) == []
