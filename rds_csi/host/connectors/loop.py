"""A connector that attaches a regular file as a loop device: the full CSI cycle on any Linux.

volume_context key: backingFile (absolute path to an existing regular file).  With a backing
directory configured, backingFile defaults to <dir>/<volume_id>.img and a volume ID alone is
enough to find the volume again (NodeUnstageVolume carries no volume_context).

A loop device that `losetup -d` released while still mounted keeps existing with autoclear set
until its last user goes away; it is no longer the volume's device, so resolution skips it.
That is how the tests make a real stale mount.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from rds_csi.host.connectors.base import OrphanCleanup, VolumeTarget
from rds_csi.host.connectors.validation import validate_backing_file
from rds_csi.host.errors import (
    CommandFailed,
    CommandTimeout,
    ConnectError,
    DeviceNotFound,
    HostError,
    InvalidInput,
)
from rds_csi.host.mountinfo import MOUNTINFO_PATH, find_by_device, read_mountinfo
from rds_csi.host.runner import CommandRunner

__all__ = ["LoopConnector", "LoopDevice", "LoopTarget", "parse_losetup_json"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LoopTarget:
    backing_file: str

    @property
    def key(self) -> str:
        return self.backing_file

    def describe(self) -> str:
        return f"loop file {self.backing_file}"

    def to_volume_context(self) -> dict[str, str]:
        return {"backingFile": self.backing_file}


@dataclass(frozen=True, slots=True)
class LoopDevice:
    path: str
    backing_file: str
    autoclear: bool

    @property
    def number(self) -> int:
        digits = self.path.rsplit("loop", 1)[-1]
        return int(digits) if digits.isdigit() else 1 << 30


class LoopConnector:
    name = "loop"

    def __init__(
        self,
        runner: CommandRunner,
        *,
        backing_dir: str | None = None,
        timeout: float = 15.0,
        mountinfo_path: str = MOUNTINFO_PATH,
    ) -> None:
        if backing_dir is not None and not backing_dir.startswith("/"):
            raise InvalidInput(f"loop backing directory must be absolute, got {backing_dir!r}")
        self.runner = runner
        self.backing_dir = os.path.normpath(backing_dir) if backing_dir else None
        self.timeout = timeout
        self.mountinfo_path = mountinfo_path

    def required_tools(self) -> list[str]:
        return ["losetup"]

    def parse_target(self, volume_id: str, volume_context: Mapping[str, str]) -> LoopTarget:
        path = volume_context.get("backingFile", "")
        if not path and self.backing_dir is not None:
            default = self._default_file(volume_id)
            if default is not None:
                path = default
        return LoopTarget(validate_backing_file(path, "backingFile"))

    def target_for_volume_id(self, volume_id: str) -> LoopTarget | None:
        path = self._default_file(volume_id)
        return LoopTarget(path) if path is not None else None

    def _default_file(self, volume_id: str) -> str | None:
        if (
            self.backing_dir is None
            or not volume_id
            or "/" in volume_id
            or volume_id in {".", ".."}
        ):
            return None
        if any(ord(ch) < 0x20 for ch in volume_id):
            return None
        return os.path.join(self.backing_dir, f"{volume_id}.img")

    @staticmethod
    def _target(target: VolumeTarget) -> LoopTarget:
        if not isinstance(target, LoopTarget):
            raise InvalidInput(f"the loop connector cannot handle {target.describe()}")
        return target

    async def attached_devices(self, backing_file: str) -> list[LoopDevice]:
        """Loop devices backed by the file (losetup compares device and inode, not names)."""
        if not os.path.exists(backing_file):
            return []
        result = await self.runner.run(
            [
                "losetup",
                "--list",
                "--json",
                "--output",
                "NAME,AUTOCLEAR,BACK-FILE",
                "--associated",
                backing_file,
            ],
            timeout=self.timeout,
        )
        return sorted(parse_losetup_json(result.stdout), key=lambda d: d.number)

    async def resolve_device(self, target: VolumeTarget) -> str | None:
        live = [
            d
            for d in await self.attached_devices(self._target(target).backing_file)
            if not d.autoclear
        ]
        return live[0].path if live else None

    async def connect(self, target: VolumeTarget) -> str:
        loop_target = self._target(target)
        existing = await self.resolve_device(loop_target)
        if existing is not None:
            log.info("loop_already_attached", file=loop_target.backing_file, device=existing)
            return existing
        try:
            result = await self.runner.run(
                ["losetup", "--find", "--show", "--", loop_target.backing_file],
                timeout=self.timeout,
            )
        except (CommandFailed, CommandTimeout) as exc:
            raise ConnectError(f"attaching {loop_target.backing_file} failed: {exc}") from exc
        device = result.stdout.strip()
        if not device.startswith("/dev/loop"):
            raise ConnectError(f"losetup printed an unexpected device name {device!r}")
        log.info("loop_attached", file=loop_target.backing_file, device=device)
        return device

    async def disconnect(self, target: VolumeTarget) -> None:
        loop_target = self._target(target)
        for device in await self.attached_devices(loop_target.backing_file):
            if device.autoclear:
                continue  # already released; the kernel frees it when its last user goes
            await self.runner.run(["losetup", "-d", device.path], timeout=self.timeout)
            log.info("loop_detached", file=loop_target.backing_file, device=device.path)

    async def rescan(self, target: VolumeTarget) -> None:
        """losetup -c: re-read the backing file's size after it grew."""
        device = await self.resolve_device(target)
        if device is None:
            raise DeviceNotFound(f"{self._target(target).backing_file} is not attached")
        await self.runner.run(["losetup", "-c", device], timeout=self.timeout)

    async def cleanup_orphans(self) -> OrphanCleanup:
        """Detach loop devices backed by files in the backing directory that nothing mounts.

        Without a backing directory nothing is known to be ours, so nothing is touched.
        """
        report = OrphanCleanup()
        if self.backing_dir is None:
            return report
        result = await self.runner.run(
            ["losetup", "--list", "--json", "--output", "NAME,AUTOCLEAR,BACK-FILE"],
            timeout=self.timeout,
        )
        mounts = read_mountinfo(self.mountinfo_path)
        prefix = self.backing_dir.rstrip("/") + "/"
        for device in parse_losetup_json(result.stdout):
            if not device.backing_file.startswith(prefix) or device.autoclear:
                continue
            try:
                st = os.stat(device.path)
                in_use = bool(
                    find_by_device(
                        mounts, device_number=(os.major(st.st_rdev), os.minor(st.st_rdev))
                    )
                )
                if in_use:
                    report.skipped.append(device.path)
                    continue
                await self.runner.run(["losetup", "-d", device.path], timeout=self.timeout)
            except (HostError, OSError) as exc:
                report.failed[device.path] = str(exc)
            else:
                report.detached.append(device.path)
        return report


def parse_losetup_json(stdout: str) -> list[LoopDevice]:
    """`losetup --list --json` output (NAME, AUTOCLEAR, BACK-FILE columns) as LoopDevices."""
    if not stdout.strip():
        return []
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise HostError(f"cannot parse losetup --json output: {exc}") from exc
    devices = []
    for entry in data.get("loopdevices", []):
        back = str(entry.get("back-file") or "")
        if back.endswith(" (deleted)"):
            back = back[: -len(" (deleted)")]
        devices.append(
            LoopDevice(
                path=str(entry.get("name", "")),
                backing_file=back,
                autoclear=entry.get("autoclear") in (True, 1, "1", "true"),
            )
        )
    return devices
