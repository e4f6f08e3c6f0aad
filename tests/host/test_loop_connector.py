"""The loop connector against real loop devices (root only)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rds_csi.host.connectors.loop import LoopConnector
from rds_csi.host.runner import CommandRunner
from tests.host.conftest import make_image

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("require_root")]


def backing_file_of(device: str) -> str:
    name = os.path.basename(device)
    with open(f"/sys/class/block/{name}/loop/backing_file", encoding="utf-8") as f:
        return f.read().strip()


async def test_attach_reuse_resolve_detach(tmp_path: Path) -> None:
    image = make_image(tmp_path, "vol.img", 16)
    connector = LoopConnector(CommandRunner())
    target = connector.parse_target("vol", {"backingFile": str(image)})
    assert await connector.resolve_device(target) is None

    device = await connector.connect(target)
    assert device.startswith("/dev/loop")
    assert backing_file_of(device) == str(image)
    assert await connector.connect(target) == device  # reused, no second loop device
    assert [d.path for d in await connector.attached_devices(str(image))] == [device]
    assert await connector.resolve_device(target) == device

    await connector.disconnect(target)
    assert await connector.resolve_device(target) is None
    assert not os.path.exists(f"/sys/class/block/{os.path.basename(device)}/loop")
    await connector.disconnect(target)  # idempotent


async def test_rescan_picks_up_a_grown_file(tmp_path: Path) -> None:
    image = make_image(tmp_path, "grow.img", 16)
    connector = LoopConnector(CommandRunner())
    target = connector.parse_target("grow", {"backingFile": str(image)})
    device = await connector.connect(target)
    os.truncate(image, 32 * 1024 * 1024)
    await connector.rescan(target)
    with open(f"/sys/class/block/{os.path.basename(device)}/size", encoding="ascii") as f:
        assert int(f.read()) * 512 == 32 * 1024 * 1024


async def test_cleanup_detaches_only_unmounted_devices_of_the_backing_dir(tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    connector = LoopConnector(CommandRunner(), backing_dir=str(volumes))
    orphan = await connector.connect(
        connector.parse_target(
            "orphan", {"backingFile": str(make_image(volumes, "orphan.img", 16))}
        )
    )
    mounted_image = make_image(volumes, "mounted.img", 16)
    mounted = await connector.connect(connector.parse_target("mounted", {}))
    subprocess.run(["mkfs.ext4", "-q", mounted], check=True, timeout=60, capture_output=True)
    point = tmp_path / "mnt"
    point.mkdir()
    subprocess.run(["mount", mounted, str(point)], check=True, timeout=30)
    foreign = await connector.connect(
        connector.parse_target("x", {"backingFile": str(make_image(tmp_path, "foreign.img", 16))})
    )

    report = await connector.cleanup_orphans()
    assert report.detached == [orphan]
    assert report.skipped == [mounted]
    assert report.failed == {}
    assert await connector.resolve_device(connector.parse_target("mounted", {})) == mounted
    assert backing_file_of(foreign) == str(tmp_path / "foreign.img")
    assert mounted_image.exists()
