"""Recovery of real stale staged mounts (root only): remount from the volume's new device,
bounded retries, refusal while in use, and cancellation that a retry can complete."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from rds_csi.host.connectors.loop import LoopConnector, LoopTarget
from rds_csi.host.errors import DeviceBusy, DeviceNotFound
from rds_csi.host.mounter import Mounter
from rds_csi.host.recovery import MountRecoverer
from rds_csi.host.runner import CommandRunner
from rds_csi.host.stale import HealthState, StaleChecker
from tests.host.conftest import Volume, open_file_in_child

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("require_root")]


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
async def staged(mounter: Mounter, ext4_volume: Volume) -> tuple[LoopConnector, LoopTarget, Volume]:
    connector = LoopConnector(CommandRunner())
    subprocess.run(["losetup", "-d", ext4_volume.device], check=True, timeout=30)
    target = connector.parse_target("vol", {"backingFile": str(ext4_volume.image)})
    ext4_volume.device = await connector.connect(target)
    await mounter.mount(ext4_volume.device, str(ext4_volume.mount_point), "ext4", ["noatime"])
    (ext4_volume.mount_point / "payload").write_text("still here")
    return connector, target, ext4_volume


def loop_is_attached(device: str) -> bool:
    return Path(f"/sys/class/block/{Path(device).name}/loop").exists()


async def test_stale_mount_is_detected_and_recovered(
    mounter: Mounter, staged: tuple[LoopConnector, LoopTarget, Volume]
) -> None:
    connector, target, volume = staged
    point = str(volume.mount_point)
    old_device = volume.device
    await connector.disconnect(target)  # autoclear: loop stays until its mount goes
    new_device = await connector.connect(target)

    async def resolve() -> str | None:
        return await connector.resolve_device(target)

    verdict = await StaleChecker(mounter).check(point, resolve_device=resolve)
    assert verdict.state is HealthState.STALE and verdict.recoverable

    sleep = RecordingSleep()
    result = await MountRecoverer(mounter, sleep=sleep).recover(
        point, fs_type="ext4", options=["noatime"], resolve_device=resolve
    )
    assert result.recovered and result.error is None
    assert (result.attempts, result.old_device, result.new_device) == (1, old_device, new_device)
    assert sleep.delays == []
    stacked = [m for m in mounter.mount_table() if m.mount_point == point]
    assert len(stacked) == 1 and stacked[0].source == new_device
    assert "noatime" in stacked[0].options
    assert (volume.mount_point / "payload").read_text() == "still here"
    assert not loop_is_attached(old_device)  # the old device went away with its mount
    verdict = await StaleChecker(mounter).check(point, resolve_device=resolve)
    assert verdict.healthy


async def test_missing_device_fails_after_bounded_backoff_and_a_retry_completes(
    mounter: Mounter, staged: tuple[LoopConnector, LoopTarget, Volume]
) -> None:
    connector, target, volume = staged
    point = str(volume.mount_point)
    await connector.disconnect(target)

    async def resolve() -> str | None:
        return await connector.resolve_device(target)

    sleep = RecordingSleep()
    recoverer = MountRecoverer(mounter, max_attempts=3, initial_backoff=1.0, sleep=sleep)
    result = await recoverer.recover(point, fs_type="ext4", resolve_device=resolve)
    assert not result.recovered and result.attempts == 3
    assert isinstance(result.error, DeviceNotFound)
    assert sleep.delays == [1.0, 2.0]
    assert not mounter.is_mounted(point)  # the stale mount is gone, nothing half-mounted
    with pytest.raises(DeviceNotFound):
        result.raise_for_error()

    await connector.connect(target)  # the volume comes back
    result = await recoverer.recover(point, fs_type="ext4", resolve_device=resolve)
    assert result.recovered and result.old_device is None
    assert (volume.mount_point / "payload").read_text() == "still here"


async def test_recovery_is_refused_while_a_process_uses_the_mount(
    mounter: Mounter, staged: tuple[LoopConnector, LoopTarget, Volume]
) -> None:
    connector, target, volume = staged
    point = str(volume.mount_point)
    await connector.disconnect(target)
    await connector.connect(target)

    async def resolve() -> str | None:
        return await connector.resolve_device(target)

    sleep = RecordingSleep()
    with open_file_in_child(volume.mount_point / "payload") as pid:
        result = await MountRecoverer(mounter, sleep=sleep).recover(
            point, fs_type="ext4", resolve_device=resolve
        )
    assert not result.recovered and result.attempts == 1 and sleep.delays == []
    assert isinstance(result.error, DeviceBusy) and f"pid {pid}" in str(result.error)
    still = mounter.mount_of(point)
    assert still is not None and still.source == volume.device


async def test_cancelled_recovery_leaves_a_state_the_next_call_completes(
    mounter: Mounter, staged: tuple[LoopConnector, LoopTarget, Volume]
) -> None:
    connector, target, volume = staged
    point = str(volume.mount_point)
    await connector.disconnect(target)
    await connector.connect(target)
    resolving = asyncio.Event()

    async def blocked_resolve() -> str | None:
        resolving.set()
        await asyncio.Event().wait()  # cancelled here, after the unmount
        return None

    recoverer = MountRecoverer(mounter, sleep=RecordingSleep())
    task = asyncio.ensure_future(
        recoverer.recover(point, fs_type="ext4", resolve_device=blocked_resolve)
    )
    await resolving.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not mounter.is_mounted(point)

    async def resolve() -> str | None:
        return await connector.resolve_device(target)

    result = await recoverer.recover(point, fs_type="ext4", resolve_device=resolve)
    assert result.recovered and result.attempts == 1
    assert (volume.mount_point / "payload").read_text() == "still here"
