"""Stale-mount detection: identity rules on a fabricated mount table, then real stale mounts
made with loop devices and a hung FUSE mount."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from rds_csi.host.connectors.loop import LoopConnector, LoopTarget
from rds_csi.host.mounter import Mounter
from rds_csi.host.probes import Prober
from rds_csi.host.runner import CommandRunner
from rds_csi.host.stale import HealthState, StaleChecker, StaleReason
from tests.host.conftest import HungFuse, Volume

LOOP6, LOOP7 = "/dev/loop6", "/dev/loop7"


def returns(device: str | None) -> Callable[[], Awaitable[str | None]]:
    async def resolve() -> str | None:
        return device

    return resolve


@pytest.fixture
def fabricated(tmp_path: Path) -> tuple[StaleChecker, Path, Path]:
    """A checker reading a hand-written mount table; the mount point is a plain directory."""
    if not (os.path.exists(LOOP6) and os.path.exists(LOOP7)):
        pytest.skip("needs the /dev/loop6 and /dev/loop7 nodes")
    table = tmp_path / "mountinfo"
    point = tmp_path / "staging"
    point.mkdir()
    mounter = Mounter(CommandRunner(), Prober(timeout=3), mountinfo_path=str(table))
    return StaleChecker(mounter), table, point


def write_table(table: Path, point: Path, dev: str, source: str) -> None:
    table.write_text(
        f"22 1 259:2 / / rw - ext4 /dev/sda1 rw\n"
        f"90 22 {dev} / {point} rw,relatime - ext4 {source} rw\n"
    )


async def test_identity_rules(fabricated: tuple[StaleChecker, Path, Path], tmp_path: Path) -> None:
    checker, table, point = fabricated
    table.write_text("22 1 259:2 / / rw - ext4 /dev/sda1 rw\n")
    verdict = await checker.check(str(point))
    assert (verdict.state, verdict.reason) == (HealthState.NOT_MOUNTED, StaleReason.MOUNT_NOT_FOUND)

    write_table(table, point, "7:9", str(tmp_path / "nvme9n1"))  # the node is gone
    verdict = await checker.check(str(point))
    assert (verdict.state, verdict.reason) == (HealthState.STALE, StaleReason.DEVICE_GONE)
    assert verdict.old_device == str(tmp_path / "nvme9n1") and verdict.errno == errno.ENOENT
    assert verdict.recoverable and "device_disappeared" in verdict.message

    write_table(table, point, "7:3", LOOP7)  # the name now belongs to another device
    verdict = await checker.check(str(point))
    assert (verdict.state, verdict.reason) == (HealthState.STALE, StaleReason.DEVICE_REPLACED)
    assert "/dev/loop7 is now device 7:7, the mount uses 7:3" in verdict.detail

    write_table(table, point, "7:7", LOOP7)
    verdict = await checker.check(str(point), resolve_device=returns(None))
    assert (verdict.state, verdict.reason) == (HealthState.STALE, StaleReason.VOLUME_NOT_ATTACHED)

    verdict = await checker.check(str(point), resolve_device=returns(LOOP6))
    assert (verdict.state, verdict.reason) == (HealthState.STALE, StaleReason.DEVICE_MISMATCH)
    assert (verdict.old_device, verdict.new_device) == (LOOP7, LOOP6)
    assert verdict.message == (
        "Stale mount detected (device_path_mismatch): mounted from 7:7, the volume is now "
        "/dev/loop6 (7:6); old device: /dev/loop7, new device: /dev/loop6"
    )

    verdict = await checker.check(str(point), resolve_device=returns(LOOP7))
    assert verdict.state is HealthState.HEALTHY and verdict.message == "Volume is healthy"
    assert await checker.check(str(point)) == verdict


# ---- real stale mounts (root) ---------------------------------------------------------------


@pytest.fixture
async def staged(
    require_root: None, mounter: Mounter, ext4_volume: Volume
) -> tuple[LoopConnector, LoopTarget, Volume]:
    """The ext4 volume staged through the loop connector, with a file written on it."""
    connector = LoopConnector(CommandRunner())
    subprocess.run(["losetup", "-d", ext4_volume.device], check=True, timeout=30)
    target = connector.parse_target("vol", {"backingFile": str(ext4_volume.image)})
    ext4_volume.device = await connector.connect(target)
    await mounter.mount(ext4_volume.device, str(ext4_volume.mount_point), "ext4")
    (ext4_volume.mount_point / "payload").write_text("still here")
    return connector, target, ext4_volume


@pytest.mark.root
async def test_healthy_staged_mount(
    mounter: Mounter, staged: tuple[LoopConnector, LoopTarget, Volume]
) -> None:
    connector, target, volume = staged
    verdict = await StaleChecker(mounter).check(
        str(volume.mount_point), resolve_device=lambda: connector.resolve_device(target)
    )
    assert verdict.healthy, verdict.message


@pytest.mark.root
async def test_replaced_device_under_a_mount_is_stale(
    mounter: Mounter, staged: tuple[LoopConnector, LoopTarget, Volume]
) -> None:
    """losetup -d while mounted (the kernel only sets autoclear), then the volume is attached
    again on a new loop device: the mount still uses the old one."""
    connector, target, volume = staged
    await connector.disconnect(target)
    verdict = await StaleChecker(mounter).check(
        str(volume.mount_point), resolve_device=lambda: connector.resolve_device(target)
    )
    assert (verdict.state, verdict.reason) == (HealthState.STALE, StaleReason.VOLUME_NOT_ATTACHED)

    new_device = await connector.connect(target)
    assert new_device != volume.device
    verdict = await StaleChecker(mounter).check(
        str(volume.mount_point), resolve_device=lambda: connector.resolve_device(target)
    )
    assert (verdict.state, verdict.reason) == (HealthState.STALE, StaleReason.DEVICE_MISMATCH)
    assert (verdict.old_device, verdict.new_device) == (volume.device, new_device)


@pytest.mark.root
async def test_corrupted_directory_needs_repair(mounter: Mounter, ext4_volume: Volume) -> None:
    """Garbage over the root directory's block, written through the block device (which shares
    the page cache with the mounted filesystem) before anything read that block: the
    directory's checksum no longer matches and lookups fail."""
    listing = subprocess.run(
        ["debugfs", "-R", "blocks /", ext4_volume.device],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    block = int(listing.stdout.split()[0])
    await mounter.mount(ext4_volume.device, str(ext4_volume.mount_point), "ext4")
    block_size = os.statvfs(ext4_volume.mount_point).f_bsize
    fd = os.open(ext4_volume.device, os.O_RDWR)
    try:
        os.pwrite(fd, b"\xff" * block_size, block * block_size)
        os.fsync(fd)
    finally:
        os.close(fd)
    verdict = await StaleChecker(mounter).check(str(ext4_volume.mount_point))
    assert verdict.state is HealthState.NEEDS_REPAIR, verdict
    assert verdict.errno in (errno.EBADMSG, errno.EUCLEAN)
    assert not verdict.recoverable
    assert verdict.message.startswith("Filesystem needs repair (fsck): ")


@pytest.mark.root
async def test_hung_mount_is_unresponsive_then_disconnected_is_stale(
    hung_fuse: HungFuse, runner: CommandRunner
) -> None:
    prober = Prober(timeout=0.3)
    checker = StaleChecker(Mounter(runner, prober))
    verdict = await checker.check(str(hung_fuse.path))
    assert verdict.state is HealthState.UNRESPONSIVE
    assert "did not return within 0.3 s" in verdict.message

    hung_fuse.disconnect()  # the server is gone: the stuck probe returns, new ones fail
    assert await asyncio.to_thread(prober.wait_idle, 10)
    verdict = await checker.check(str(hung_fuse.path))
    assert (verdict.state, verdict.errno) == (HealthState.STALE, errno.ENOTCONN)
    assert "Transport endpoint is not connected (ENOTCONN)" in verdict.message


@pytest.mark.root
async def test_raw_block_publish_follows_the_volume_device(
    mounter: Mounter, staged: tuple[LoopConnector, LoopTarget, Volume], tmp_path: Path
) -> None:
    """A block volume published as a bind-mounted device node: its identity is the node's
    rdev, compared with the device the volume resolves to now."""
    connector, target, volume = staged
    published = tmp_path / "block"
    await mounter.make_mount_target(str(published), is_file=True)
    await mounter.bind_mount(volume.device, str(published))

    async def resolve() -> str | None:
        return await connector.resolve_device(target)

    checker = StaleChecker(mounter)
    assert (await checker.check(str(published), resolve_device=resolve)).healthy
    rdev = os.stat(volume.device).st_rdev
    old_number = f"{os.major(rdev)}:{os.minor(rdev)}"
    await connector.disconnect(target)
    new_device = await connector.connect(target)
    verdict = await checker.check(str(published), resolve_device=resolve)
    assert (verdict.state, verdict.reason) == (HealthState.STALE, StaleReason.DEVICE_MISMATCH)
    assert (verdict.old_device, verdict.new_device) == (old_number, new_device)
