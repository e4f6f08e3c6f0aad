"""Is a staged (or published) mount still backed by the volume's current device, and alive?

Two independent kinds of evidence:
1. device identity (the Go driver's rules, done by major:minor rather than by name): the path is
   not mounted; the mount's source node is gone or now belongs to another device; the volume now
   resolves to a different device (controller renumbered after a reconnect) or to none.
2. errno probes with a timeout (mount-utils IsCorruptedMnt plus EUCLEAN): stat, statvfs,
   readdir and a name lookup of the mount point.  EUCLEAN/EBADMSG mean the filesystem itself is
   damaged: a distinct verdict, because remounting it blindly makes things worse.
A probe that does not return in time gives "unresponsive" (a dead transport with
ctrl_loss_tmo=-1 blocks forever).
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from rds_csi.host import filesystem
from rds_csi.host.errors import ProbeTimeout
from rds_csi.host.mounter import Mounter
from rds_csi.host.mountinfo import MountInfo, normalize_path
from rds_csi.host.probes import ErrnoClass, classify_errno, errno_name

__all__ = ["DeviceResolver", "HealthState", "MountHealth", "StaleChecker", "StaleReason"]

log = structlog.get_logger(__name__)

DeviceResolver = Callable[[], Awaitable[str | None]]

PROBE_NAME = ".rds-csi-health-probe"

_VolumeDevice = tuple[str, tuple[int, int]]  # path and major:minor the volume resolves to


class HealthState(enum.Enum):
    HEALTHY = "healthy"
    STALE = "stale"
    NEEDS_REPAIR = "needs_repair"
    NOT_MOUNTED = "not_mounted"
    UNRESPONSIVE = "unresponsive"


class StaleReason:
    MOUNT_NOT_FOUND = "mount_not_found"
    DEVICE_GONE = "device_disappeared"
    DEVICE_REPLACED = "device_node_reused"
    DEVICE_MISMATCH = "device_path_mismatch"
    VOLUME_NOT_ATTACHED = "volume_device_missing"
    IO_ERROR = "io_error"


@dataclass(frozen=True, slots=True)
class MountHealth:
    """The verdict.  `message` is written for a VolumeCondition or an event."""

    state: HealthState
    path: str
    reason: str = ""
    detail: str = ""
    old_device: str | None = None
    new_device: str | None = None
    errno: int | None = None

    @property
    def healthy(self) -> bool:
        return self.state is HealthState.HEALTHY

    @property
    def abnormal(self) -> bool:
        return self.state is not HealthState.HEALTHY

    @property
    def recoverable(self) -> bool:
        """Stale mounts are remounted; damaged or hanging ones are not (see module doc)."""
        return self.state is HealthState.STALE

    @property
    def message(self) -> str:
        if self.state is HealthState.HEALTHY:
            return "Volume is healthy"
        if self.state is HealthState.NOT_MOUNTED:
            return f"{self.path} is not mounted"
        if self.state is HealthState.STALE:
            text = f"Stale mount detected ({self.reason}): {self.detail}"
            if self.old_device or self.new_device:
                text += (
                    f"; old device: {self.old_device or '-'}, new device: {self.new_device or '-'}"
                )
            return text
        if self.state is HealthState.NEEDS_REPAIR:
            return f"Filesystem needs repair (fsck): {self.detail}"
        return f"Volume is unresponsive: {self.detail}"


class StaleChecker:
    def __init__(self, mounter: Mounter, *, probe_timeout: float | None = None) -> None:
        self.mounter = mounter
        self.prober = mounter.prober
        self.probe_timeout = probe_timeout

    async def check(
        self, path: str, *, resolve_device: DeviceResolver | None = None
    ) -> MountHealth:
        """Classify the mount at `path`.  `resolve_device` gives the volume's device now
        (e.g. functools.partial(connector.resolve_device, target)); its HostErrors propagate."""
        path = normalize_path(path)
        entry = self.mounter.mount_of(path)
        if entry is None:
            return MountHealth(HealthState.NOT_MOUNTED, path, StaleReason.MOUNT_NOT_FOUND)
        try:
            verdict, volume = await self._check_identity(path, entry, resolve_device)
            if verdict is None:
                verdict = await self._check_errno(path, volume)
        except ProbeTimeout as exc:
            verdict = MountHealth(HealthState.UNRESPONSIVE, path, "probe_timeout", str(exc))
        if verdict.abnormal:
            log.warning(
                "mount_abnormal",
                path=path,
                state=verdict.state.value,
                reason=verdict.reason,
                detail=verdict.detail,
                old_device=verdict.old_device,
                new_device=verdict.new_device,
            )
        return verdict

    async def _check_identity(
        self, path: str, entry: MountInfo, resolve_device: DeviceResolver | None
    ) -> tuple[MountHealth | None, _VolumeDevice | None]:
        """A stale verdict, or None plus the device the volume resolves to (when known)."""
        mounted = entry.device_number
        source = entry.source
        block_backed = entry.fs_type in filesystem.MOUNTABLE_FS and source.startswith("/")
        if block_backed:
            try:
                st = await self.prober.stat(source, timeout=self.probe_timeout)
            except OSError as exc:
                return _stale(
                    path,
                    StaleReason.DEVICE_GONE,
                    f"mount source {source}: {exc.strerror or errno_name(exc.errno)}",
                    old_device=source,
                    errno=exc.errno,
                )
            if stat.S_ISBLK(st.st_mode) and _rdev(st) != mounted:
                return _stale(
                    path,
                    StaleReason.DEVICE_REPLACED,
                    f"{source} is now device {_fmt(_rdev(st))}, the mount uses {_fmt(mounted)}",
                    old_device=source,
                    new_device=source,
                )
        if resolve_device is None:
            return None, None
        current = await resolve_device()
        old = source if block_backed else _fmt(mounted)
        if current is None:
            return _stale(
                path,
                StaleReason.VOLUME_NOT_ATTACHED,
                "the volume has no block device on this node any more",
                old_device=old,
            )
        try:
            current_st = await self.prober.stat(current, timeout=self.probe_timeout)
        except OSError as exc:
            return _stale(
                path,
                StaleReason.VOLUME_NOT_ATTACHED,
                f"{current}: {exc.strerror or errno_name(exc.errno)}",
                old_device=old,
                new_device=current,
                errno=exc.errno,
            )
        # A bind-mounted block device (raw block publish) lives on devtmpfs: its identity is the
        # rdev of the node at `path`, checked in the errno pass.
        if block_backed and _rdev(current_st) != mounted:
            return _stale(
                path,
                StaleReason.DEVICE_MISMATCH,
                f"mounted from {_fmt(mounted)}, the volume is now {current} "
                f"({_fmt(_rdev(current_st))})",
                old_device=old,
                new_device=current,
            )
        return None, (current, _rdev(current_st))

    async def _check_errno(self, path: str, volume: _VolumeDevice | None) -> MountHealth:
        try:
            st = await self.prober.probe_mount_point(
                path, lookup_name=PROBE_NAME, timeout=self.probe_timeout
            )
        except OSError as exc:
            return _errno_verdict(path, exc)
        if stat.S_ISBLK(st.st_mode) and volume is not None and _rdev(st) != volume[1]:
            return MountHealth(
                HealthState.STALE,
                path,
                StaleReason.DEVICE_MISMATCH,
                f"{path} is device {_fmt(_rdev(st))}, the volume is now {volume[0]} "
                f"({_fmt(volume[1])})",
                old_device=_fmt(_rdev(st)),
                new_device=volume[0],
            )
        return MountHealth(HealthState.HEALTHY, path)


def _stale(
    path: str,
    reason: str,
    detail: str,
    *,
    old_device: str | None = None,
    new_device: str | None = None,
    errno: int | None = None,
) -> tuple[MountHealth, None]:
    verdict = MountHealth(HealthState.STALE, path, reason, detail, old_device, new_device, errno)
    return verdict, None


def _errno_verdict(path: str, exc: OSError) -> MountHealth:
    name = errno_name(exc.errno)
    detail = f"{exc.filename or path}: {exc.strerror or name} ({name})"
    if classify_errno(exc.errno) is ErrnoClass.NEEDS_REPAIR:
        return MountHealth(
            HealthState.NEEDS_REPAIR, path, "filesystem_corrupted", detail, errno=exc.errno
        )
    return MountHealth(HealthState.STALE, path, StaleReason.IO_ERROR, detail, errno=exc.errno)


def _rdev(st: os.stat_result) -> tuple[int, int]:
    return (os.major(st.st_rdev), os.minor(st.st_rdev))


def _fmt(number: tuple[int, int]) -> str:
    return f"{number[0]}:{number[1]}"
