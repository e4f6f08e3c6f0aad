"""The mounter against real loop devices, real filesystems and real mounts (root only)."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from rds_csi.host.errors import (
    AlreadyMounted,
    DeviceBusy,
    FilesystemNeedsRepair,
    FormatRefused,
    InvalidInput,
)
from rds_csi.host.mounter import Mounter
from tests.host.conftest import Volume, attach, make_image, mkfs, open_file_in_child

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("require_root")]

MIB = 1024 * 1024
CAP_SYS_RESOURCE = 24


def _has_capability(bit: int) -> bool:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << bit))
    return False


def _corrupt_ext4_root_inode(device: str) -> None:
    """Clear the root inode and mark the filesystem as not cleanly unmounted, the way the kernel
    leaves it after detecting corruption."""
    for request in ("clri <2>", "ssv state 0"):
        subprocess.run(
            ["debugfs", "-w", "-R", request, device], check=True, capture_output=True, timeout=30
        )


async def test_format_mount_usage_unmount(mounter: Mounter, ext4_volume: Volume) -> None:
    device, point = ext4_volume.device, str(ext4_volume.mount_point)
    assert await mounter.get_fs_type(device) == "ext4"
    await mounter.mount(device, point, "ext4", ["noatime"])
    entry = mounter.mount_of(point)
    assert entry is not None and entry.source == device and "noatime" in entry.options
    assert entry.device_number == await mounter.device_number(device)

    before = await mounter.usage(point)
    assert 50 * MIB < before.total_bytes <= 64 * MIB
    assert before.used_bytes + before.available_bytes <= before.total_bytes
    (ext4_volume.mount_point / "data").write_bytes(os.urandom(2 * MIB))
    os.sync()
    after = await mounter.usage(point)
    assert after.used_bytes - before.used_bytes >= 2 * MIB
    assert after.used_inodes == before.used_inodes + 1
    assert after.total_inodes == before.total_inodes > 0

    assert await mounter.unmount(point) is True
    assert not mounter.is_mounted(point)
    assert await mounter.unmount(point) is False  # idempotent


async def test_mount_never_stacks(mounter: Mounter, ext4_volume: Volume) -> None:
    point = str(ext4_volume.mount_point)
    await mounter.mount(ext4_volume.device, point, "ext4")
    with pytest.raises(AlreadyMounted, match="refusing to stack"):
        await mounter.mount(ext4_volume.device, point, "ext4")
    assert len([m for m in mounter.mount_table() if m.mount_point == point]) == 1


async def test_bad_flags_are_rejected_before_anything_runs(
    mounter: Mounter, ext4_volume: Volume
) -> None:
    point = str(ext4_volume.mount_point)
    with pytest.raises(InvalidInput, match="contains ','"):
        await mounter.mount(ext4_volume.device, point, "ext4", ["rw,remount"])
    with pytest.raises(InvalidInput, match="unsupported filesystem 'btrfs'"):
        await mounter.mount(ext4_volume.device, point, "btrfs")
    with pytest.raises(InvalidInput, match="absolute path"):
        await mounter.mount("loop0", point, "ext4")
    assert not mounter.is_mounted(point)


async def test_readonly_bind_mount(mounter: Mounter, ext4_volume: Volume, tmp_path: Path) -> None:
    staging, target = str(ext4_volume.mount_point), tmp_path / "publish"
    await mounter.mount(ext4_volume.device, staging, "ext4")
    await mounter.make_mount_target(str(target))
    await mounter.bind_mount(staging, str(target), readonly=True, options=["nosuid"])
    bind = mounter.mount_of(str(target))
    assert bind is not None and bind.read_only and "nosuid" in bind.options
    with pytest.raises(OSError) as caught:
        (target / "file").write_text("x")
    assert caught.value.errno == errno.EROFS
    (ext4_volume.mount_point / "file").write_text("through staging")  # staging stays writable
    assert (target / "file").read_text() == "through staging"
    with pytest.raises(InvalidInput, match="cannot be applied to a bind mount"):
        await mounter.bind_mount(staging, str(tmp_path), options=["data=journal"])

    await mounter.cleanup_mount_point(str(target))
    assert not target.exists()
    assert mounter.is_mounted(staging)


async def test_busy_mount_is_never_lazily_unmounted(mounter: Mounter, ext4_volume: Volume) -> None:
    point = str(ext4_volume.mount_point)
    await mounter.mount(ext4_volume.device, point, "ext4")
    held = ext4_volume.mount_point / "held"
    held.write_text("x")
    with open_file_in_child(held) as pid:
        users = await mounter.device_users(mount_point=point)
        assert [p.pid for p in users.processes] == [pid]
        assert f"pid {pid} (python" in users.describe()[0]
        with pytest.raises(DeviceBusy) as caught:
            await mounter.unmount(point)
        assert f"pid {pid}" in str(caught.value)
        with pytest.raises(DeviceBusy):
            await mounter.lazy_unmount(point)
        with pytest.raises(DeviceBusy):
            await mounter.unmount_all(point)  # settles, then refuses the lazy fallback
        assert mounter.is_mounted(point)
        device_users = await mounter.device_users(ext4_volume.device)
        assert device_users.mounts == (point,) and device_users.in_use
    assert await mounter.lazy_unmount(point) is True  # nobody uses it any more
    assert not mounter.is_mounted(point)
    assert not (await mounter.device_users(ext4_volume.device)).in_use


async def test_process_holding_the_block_device_is_a_user(
    mounter: Mounter, ext4_volume: Volume
) -> None:
    with open_file_in_child(Path(ext4_volume.device)) as pid:
        users = await mounter.device_users(ext4_volume.device)
        assert [p.pid for p in users.processes] == [pid]
        assert users.mounts == () and users.holders == ()
    assert not (await mounter.device_users(ext4_volume.device)).in_use


async def test_raw_block_publish_is_a_bind_mount_of_the_device_node(
    mounter: Mounter, ext4_volume: Volume, tmp_path: Path
) -> None:
    target = tmp_path / "pod" / "block"
    await mounter.make_mount_target(str(target), is_file=True)
    await mounter.bind_mount(ext4_volume.device, str(target), readonly=True)
    assert await mounter.device_size(str(target)) == 64 * MIB
    assert await mounter.device_number(str(target)) == await mounter.device_number(
        ext4_volume.device
    )
    await mounter.cleanup_mount_point(str(target))
    assert not target.exists()


async def test_unmount_all_removes_stacked_mounts(
    mounter: Mounter, ext4_volume: Volume, tmp_path: Path
) -> None:
    point = str(ext4_volume.mount_point)
    other = attach(make_image(tmp_path, "other.img", 32))
    mkfs("ext4", other)
    # Stack on purpose with mount(8) directly: the mounter itself refuses to.
    for device in (ext4_volume.device, other):
        subprocess.run(["mount", device, point], check=True, timeout=30)
    top = mounter.mount_of(point)
    assert top is not None and top.source == other
    assert await mounter.unmount_all(point) == 2
    assert not mounter.is_mounted(point)


async def test_format_refuses_a_device_with_a_filesystem(mounter: Mounter, tmp_path: Path) -> None:
    device = attach(make_image(tmp_path, "blank.img", 64))
    assert (await mounter.probe_device(device)).empty
    await mounter.format(device, "ext4", label="vol1")
    content = await mounter.probe_device(device)
    assert (content.fs_type, content.label) == ("ext4", "vol1")
    with pytest.raises(FormatRefused, match="already holds ext4"):
        await mounter.format(device, "xfs")
    assert (await mounter.probe_device(device)).uuid == content.uuid  # untouched


async def test_fsck_clean_and_corrupted_ext4(mounter: Mounter, ext4_volume: Volume) -> None:
    report = await mounter.check_filesystem(ext4_volume.device, "ext4")
    assert report.clean and report.returncode == 0

    await mounter.mount(ext4_volume.device, str(ext4_volume.mount_point), "ext4")
    with pytest.raises(DeviceBusy, match="mounted at"):
        await mounter.check_filesystem(ext4_volume.device, "ext4")
    await mounter.unmount(str(ext4_volume.mount_point))

    _corrupt_ext4_root_inode(ext4_volume.device)
    with pytest.raises(FilesystemNeedsRepair, match=r"fsck.ext4 -n found errors: .*[Rr]oot inode"):
        await mounter.check_filesystem(ext4_volume.device, "ext4")
    with pytest.raises(FilesystemNeedsRepair, match="Structure needs cleaning"):
        await mounter.mount(ext4_volume.device, str(ext4_volume.mount_point), "ext4")
    assert not mounter.is_mounted(str(ext4_volume.mount_point))


async def test_xfs_format_check_and_online_grow(mounter: Mounter, tmp_path: Path) -> None:
    image = make_image(tmp_path, "xfs.img", 300)
    device = attach(image)
    await mounter.format(device, "xfs")
    assert (await mounter.check_filesystem(device, "xfs")).clean
    point = tmp_path / "xfs"
    await mounter.make_mount_target(str(point))
    await mounter.mount(device, str(point), "xfs")
    before = await mounter.usage(str(point))

    os.truncate(image, 400 * MIB)
    subprocess.run(["losetup", "-c", device], check=True, timeout=30)
    assert await mounter.device_size(device) == 400 * MIB
    await mounter.resize(device, str(point), "xfs")
    after = await mounter.usage(str(point))
    assert after.total_bytes - before.total_bytes >= 90 * MIB


async def test_ext4_grow_offline(mounter: Mounter, ext4_volume: Volume) -> None:
    os.truncate(ext4_volume.image, 128 * MIB)
    subprocess.run(["losetup", "-c", ext4_volume.device], check=True, timeout=30)
    assert await mounter.device_size(ext4_volume.device) == 128 * MIB
    await mounter.resize(ext4_volume.device, None, "ext4")
    await mounter.mount(ext4_volume.device, str(ext4_volume.mount_point), "ext4")
    assert (await mounter.usage(str(ext4_volume.mount_point))).total_bytes > 100 * MIB


async def test_ext4_grow_online(mounter: Mounter, ext4_volume: Volume) -> None:
    if not _has_capability(CAP_SYS_RESOURCE):
        pytest.skip("online ext4 resize needs CAP_SYS_RESOURCE, which this sandbox lacks")
    await mounter.mount(ext4_volume.device, str(ext4_volume.mount_point), "ext4")
    os.truncate(ext4_volume.image, 128 * MIB)
    subprocess.run(["losetup", "-c", ext4_volume.device], check=True, timeout=30)
    await mounter.resize(ext4_volume.device, str(ext4_volume.mount_point), "ext4")
    assert (await mounter.usage(str(ext4_volume.mount_point))).total_bytes > 100 * MIB
