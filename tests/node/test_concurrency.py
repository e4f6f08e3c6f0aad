"""One operation per volume, and operations that outlive a caller who gave up.

The connector's connect waits on a gate the test opens, so an operation is held mid-flight for
exactly as long as the test needs; nothing here waits on the clock except the client deadline
that is itself under test.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest

from tests.node.conftest import GatedConnector, Plugin, PluginFactory, loop_devices_of, mount_count

pytestmark = pytest.mark.root

ABORTED = grpc.StatusCode.ABORTED


def volume(plugin: Plugin) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A volume id, its NodeStage fields and its NodePublish fields."""
    volume_id = f"pvc-{uuid.uuid4()}"
    image = plugin.image(volume_id, 64)
    staging, target = plugin.staging(volume_id), plugin.target(volume_id)
    staging.mkdir(parents=True)
    target.parent.mkdir(parents=True)
    common = {
        "volume_id": volume_id,
        "staging_target_path": str(staging),
        "volume_capability": plugin.client.mount_cap(),
        "volume_context": {"backingFile": str(image)},
    }
    return volume_id, common, {**common, "target_path": str(target)}


async def test_every_other_operation_on_a_busy_volume_is_aborted(
    loop_plugin: PluginFactory,
) -> None:
    plugin = await loop_plugin(gated=True)
    gate: GatedConnector = plugin.extras["gate"]
    client = plugin.client
    volume_id, stage, publish = volume(plugin)
    other_id, other_stage, _ = volume(plugin)

    first = asyncio.ensure_future(client.call("NodeStageVolume", **stage))
    await asyncio.wait_for(gate.entered.wait(), 30)  # held inside connect

    busy = f"an operation on volume {volume_id} is already in progress (NodeStageVolume)"
    assert busy in await client.fails("NodeStageVolume", ABORTED, **stage)
    assert busy in await client.fails("NodePublishVolume", ABORTED, **publish)
    assert busy in await client.fails(
        "NodeUnpublishVolume", ABORTED, volume_id=volume_id, target_path=publish["target_path"]
    )
    assert busy in await client.fails(
        "NodeExpandVolume", ABORTED, volume_id=volume_id, volume_path=stage["staging_target_path"]
    )
    assert busy in await client.fails(
        "NodeUnstageVolume",
        ABORTED,
        volume_id=volume_id,
        staging_target_path=stage["staging_target_path"],
    )
    # Other volumes are not held up (this one has nothing staged: unstage is a no-op).
    await client.call(
        "NodeUnstageVolume",
        volume_id=other_id,
        staging_target_path=other_stage["staging_target_path"],
    )
    assert not first.done()

    gate.gate.set()
    await asyncio.wait_for(first, 60)
    assert mount_count(stage["staging_target_path"]) == 1
    assert gate.connects == 1  # the refused calls never reached the host
    await client.call(
        "NodeUnstageVolume", volume_id=volume_id, staging_target_path=stage["staging_target_path"]
    )
    assert loop_devices_of(plugin.volumes / f"{volume_id}.img") == []


async def test_a_deadline_that_passes_mid_operation_lets_it_finish_in_the_background(
    loop_plugin: PluginFactory,
) -> None:
    plugin = await loop_plugin(gated=True)
    gate: GatedConnector = plugin.extras["gate"]
    client = plugin.client
    volume_id, stage, _ = volume(plugin)
    staging = stage["staging_target_path"]

    # kubelet's deadline passes while the stage is held in connect.
    await client.fails("NodeStageVolume", grpc.StatusCode.DEADLINE_EXCEEDED, timeout=0.3, **stage)
    assert gate.entered.is_set()
    assert plugin.node.operations.busy(volume_id) == "NodeStageVolume"

    # kubelet retries: the first stage is still running, so the retry is turned away ...
    await client.fails("NodeStageVolume", ABORTED, **stage)
    assert mount_count(staging) == 0

    # ... until it finishes on its own, with nobody waiting for it.
    gate.gate.set()
    assert await plugin.node.operations.wait_idle(60)
    assert plugin.node.operations.busy(volume_id) is None
    assert mount_count(staging) == 1

    # The next retry finds the work done: OK, and still exactly one mount and one device.
    await client.call("NodeStageVolume", **stage)
    assert mount_count(staging) == 1
    assert gate.connects == 1
    assert len(loop_devices_of(plugin.volumes / f"{volume_id}.img")) == 1

    await client.call("NodeUnstageVolume", volume_id=volume_id, staging_target_path=staging)
    assert mount_count(staging) == 0
    assert loop_devices_of(plugin.volumes / f"{volume_id}.img") == []
