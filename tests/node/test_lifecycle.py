"""The full volume life cycle through the socket, as kubelet drives it, on real loop devices and
real mounts: stage -> publish (rw and ro) -> stats -> expand -> unpublish -> unstage, every call
repeated because kubelet retries, for ext4, xfs and a raw block volume."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from rds_csi.host.mountinfo import MountInfo, read_mountinfo
from tests.node.conftest import Plugin, PluginFactory, loop_devices_of, mount_count

pytestmark = pytest.mark.root

MIB = 1024 * 1024
CAP_SYS_RESOURCE = 24
PAYLOAD = b"written by the pod through its published volume\n"
BLOCK_OFFSET = 3 * MIB


def has_capability(number: int) -> bool:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> number & 1)
    return False


# resize2fs grows a mounted ext4 through an ioctl that needs CAP_SYS_RESOURCE; a privileged
# node plugin pod has it, some sandboxes do not.
ONLINE_EXT4_RESIZE = has_capability(CAP_SYS_RESOURCE)


def df_size(path: Path) -> int:
    done = subprocess.run(
        ["df", "-B1", "--output=size", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return int(done.stdout.split()[-1])


def block_size_of(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def backing_file_of(device: str) -> str | None:
    try:
        with open(f"/sys/class/block/{os.path.basename(device)}/loop/backing_file") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def mount_entry(path: Path) -> MountInfo:
    (entry,) = [m for m in read_mountinfo() if m.mount_point == str(path)]
    return entry


def read_back_independently(image: Path, kind: str, point: Path) -> bytes:
    """What the backing file holds, seen through a fresh read-only attachment: proof that the
    data reached the volume, not just a cache of the plugin's mount."""
    if kind == "block":
        with open(image, "rb") as raw:
            raw.seek(BLOCK_OFFSET)
            return raw.read(len(PAYLOAD))
    device = subprocess.run(
        ["losetup", "--read-only", "--find", "--show", str(image)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    point.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", kind, "-o", "ro", device, str(point)], check=True, timeout=30
        )
        try:
            return (point / "data.txt").read_bytes()
        finally:
            subprocess.run(["umount", str(point)], check=True, timeout=30)
    finally:
        subprocess.run(["losetup", "-d", device], check=True, timeout=30)


async def twice(plugin: Plugin, method: str, **fields: Any) -> Any:
    """Call an RPC twice with the same arguments (kubelet's retry); both must succeed alike."""
    first = await plugin.client.call(method, **fields)
    second = await plugin.client.call(method, **fields)
    assert first == second, method
    return second


@pytest.mark.parametrize("kind", ["ext4", "xfs", "block"])
async def test_full_cycle(loop_plugin: PluginFactory, tmp_path: Path, kind: str) -> None:
    plugin = await loop_plugin()
    client = plugin.client
    volume_id = f"pvc-{uuid.uuid4()}"
    size_mib = 320 if kind == "xfs" else 64  # mkfs.xfs refuses anything under 300 MB
    image = plugin.image(volume_id, size_mib)
    cap = client.block_cap() if kind == "block" else client.mount_cap(kind)
    context = {"backingFile": str(image)}
    staging, rw_target = plugin.staging(volume_id), plugin.target(volume_id, "pod-a")
    ro_target = plugin.target(volume_id, "pod-b")
    staging.mkdir(parents=True)  # kubelet creates the staging directory and the targets' parents
    rw_target.parent.mkdir(parents=True)
    ro_target.parent.mkdir(parents=True)

    # -- stage ---------------------------------------------------------------------------
    stage: dict[str, Any] = {
        "volume_id": volume_id,
        "staging_target_path": str(staging),
        "volume_capability": cap,
        "volume_context": context,
    }
    await twice(plugin, "NodeStageVolume", **stage)
    (device,) = loop_devices_of(image)
    if kind == "block":
        assert mount_count(staging) == 0  # a raw block volume is only attached
    else:
        assert mount_count(staging) == 1
        entry = mount_entry(staging)
        assert (entry.fs_type, entry.source) == (kind, device)

    # -- publish, read-write and read-only -------------------------------------------------
    publish = {
        "volume_id": volume_id,
        "staging_target_path": str(staging),
        "volume_capability": cap,
        "volume_context": context,
    }
    await twice(plugin, "NodePublishVolume", target_path=str(rw_target), readonly=False, **publish)
    await twice(plugin, "NodePublishVolume", target_path=str(ro_target), readonly=True, **publish)
    assert mount_count(rw_target) == 1 and mount_count(ro_target) == 1
    assert mount_count(staging) == (0 if kind == "block" else 1)
    assert mount_entry(ro_target).read_only and not mount_entry(rw_target).read_only

    if kind == "block":
        assert stat.S_ISBLK(os.stat(rw_target).st_mode)  # the device node, bound on a file
        fd = os.open(rw_target, os.O_RDWR)
        try:
            os.pwrite(fd, PAYLOAD, BLOCK_OFFSET)
            os.fsync(fd)
        finally:
            os.close(fd)
        fd = os.open(ro_target, os.O_RDONLY)
        try:
            assert os.pread(fd, len(PAYLOAD), BLOCK_OFFSET) == PAYLOAD
        finally:
            os.close(fd)
        # The read-only bind is all a plugin can do for a device node: kubelet gives the
        # container read-only device access (the kernel lets a device node be opened for
        # writing on a read-only mount), so there is no EROFS to assert here.
    else:
        (rw_target / "data.txt").write_bytes(PAYLOAD)
        fd = os.open(rw_target / "data.txt", os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        assert (ro_target / "data.txt").read_bytes() == PAYLOAD
        with pytest.raises(OSError) as refused:
            (ro_target / "other.txt").write_bytes(b"x")
        assert refused.value.errno == errno.EROFS

    # -- stats -----------------------------------------------------------------------------
    stats_request: dict[str, Any] = {
        "volume_id": volume_id,
        "volume_path": str(rw_target),
        "staging_target_path": str(staging),
    }
    stats = await client.call("NodeGetVolumeStats", **stats_request)
    assert stats.volume_condition.abnormal is False
    assert stats.volume_condition.message == "Volume is healthy"
    pb = client.pb
    if kind == "block":
        assert [(u.unit, u.total) for u in stats.usage] == [(pb.VolumeUsage.BYTES, size_mib * MIB)]
    else:
        vfs = os.statvfs(rw_target)
        by_unit = {u.unit: u for u in stats.usage}
        assert set(by_unit) == {pb.VolumeUsage.BYTES, pb.VolumeUsage.INODES}
        bytes_, inodes = by_unit[pb.VolumeUsage.BYTES], by_unit[pb.VolumeUsage.INODES]
        assert bytes_.total == vfs.f_blocks * vfs.f_frsize
        assert bytes_.available == vfs.f_bavail * vfs.f_frsize
        assert bytes_.used == (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
        assert (inodes.total, inodes.available) == (vfs.f_files, vfs.f_favail)
        assert inodes.used == vfs.f_files - vfs.f_ffree
        assert inodes.used >= 1  # our file is counted

    # -- expand after the storage grew the volume ------------------------------------------
    grown = (size_mib + 64) * MIB
    size_before = block_size_of(rw_target) if kind == "block" else df_size(rw_target)
    os.truncate(image, grown)
    expand = {
        "volume_id": volume_id,
        "volume_path": str(rw_target),
        "staging_target_path": str(staging),
        "capacity_range": pb.CapacityRange(required_bytes=grown),
        "volume_capability": cap,
    }
    if kind == "ext4" and not ONLINE_EXT4_RESIZE:
        message = await client.fails("NodeExpandVolume", grpc.StatusCode.INTERNAL, **expand)
        assert "resize2fs" in message and "Permission denied" in message
    else:
        expanded = await twice(plugin, "NodeExpandVolume", **expand)
        assert expanded.capacity_bytes == grown
        if kind == "block":
            assert block_size_of(rw_target) == grown
            stats = await client.call("NodeGetVolumeStats", **stats_request)
            assert stats.usage[0].total == grown
        else:
            assert df_size(rw_target) > size_before
            assert df_size(ro_target) == df_size(rw_target)
            stats = await client.call("NodeGetVolumeStats", **stats_request)
            assert stats.usage[0].total == df_size(rw_target)

    # A third stage (kubelet restarted) must neither format nor stack a second mount.
    await client.call("NodeStageVolume", **stage)
    assert mount_count(staging) == (0 if kind == "block" else 1)
    if kind != "block":
        assert (rw_target / "data.txt").read_bytes() == PAYLOAD

    # -- unpublish, unstage ----------------------------------------------------------------
    for target in (rw_target, ro_target):
        await twice(plugin, "NodeUnpublishVolume", volume_id=volume_id, target_path=str(target))
        assert not os.path.lexists(target)
        assert mount_count(target) == 0
    await twice(plugin, "NodeUnstageVolume", volume_id=volume_id, staging_target_path=str(staging))
    assert mount_count(staging) == 0
    assert loop_devices_of(image) == []
    # The device itself is detached (another user may have taken its number since).
    assert backing_file_of(device) != str(image)

    assert read_back_independently(image, kind, tmp_path / "check") == PAYLOAD
