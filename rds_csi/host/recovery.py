"""Recover a stale staged mount: unmount it, find the volume's device again, mount that.

Each attempt moves through states the kernel makes atomic (mounted old -> not mounted -> mounted
new), and every step first reads mountinfo, so a cancelled or failed attempt leaves either the
old mount or no mount, and the next attempt (or a later call) completes from there.  Never:
* while processes use the mount (refused, not retried: waiting will not make them let go);
* on top of an existing mount (Mounter.mount refuses to stack);
* when the filesystem needs repair (remounting damaged metadata makes it worse).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from rds_csi.host.errors import (
    DeviceBusy,
    DeviceNotFound,
    FilesystemNeedsRepair,
    HostError,
    InvalidInput,
    MountError,
)
from rds_csi.host.mounter import Mounter
from rds_csi.host.mountinfo import normalize_path
from rds_csi.host.stale import DeviceResolver

__all__ = ["MountRecoverer", "RecoveryResult"]

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# Failures a retry cannot fix.
_FINAL = (DeviceBusy, FilesystemNeedsRepair, InvalidInput)


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    path: str
    recovered: bool
    attempts: int
    old_device: str | None
    new_device: str | None
    error: HostError | None = None

    def raise_for_error(self) -> None:
        if self.error is not None:
            raise self.error


class MountRecoverer:
    def __init__(
        self,
        mounter: Mounter,
        *,
        max_attempts: int = 3,
        initial_backoff: float = 1.0,
        max_backoff: float = 8.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.mounter = mounter
        self.max_attempts = max_attempts
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._sleep = sleep

    async def recover(
        self,
        path: str,
        *,
        fs_type: str,
        resolve_device: DeviceResolver,
        options: Sequence[str] = (),
        readonly: bool = False,
    ) -> RecoveryResult:
        """Remount `path` from the volume's current device.  Never raises a HostError: the
        result carries the attempts made and the last error (CancelledError propagates)."""
        path = normalize_path(path)
        before = self.mounter.mount_of(path)
        old_device = before.source if before is not None else None
        last_error: HostError | None = None
        new_device: str | None = None
        delay = self.initial_backoff
        for attempt in range(1, self.max_attempts + 1):
            try:
                new_device = await self._attempt(
                    path, fs_type, resolve_device, options, readonly=readonly
                )
            except _FINAL as exc:
                log.warning("mount_recovery_refused", path=path, attempt=attempt, error=str(exc))
                return RecoveryResult(path, False, attempt, old_device, new_device, exc)
            except HostError as exc:
                last_error = exc
                log.warning(
                    "mount_recovery_attempt_failed", path=path, attempt=attempt, error=str(exc)
                )
            else:
                log.info(
                    "mount_recovered",
                    path=path,
                    attempts=attempt,
                    old_device=old_device,
                    new_device=new_device,
                )
                return RecoveryResult(path, True, attempt, old_device, new_device)
            if attempt < self.max_attempts:
                await self._sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        return RecoveryResult(path, False, self.max_attempts, old_device, new_device, last_error)

    async def _attempt(
        self,
        path: str,
        fs_type: str,
        resolve_device: DeviceResolver,
        options: Sequence[str],
        *,
        readonly: bool,
    ) -> str:
        if self.mounter.is_mounted(path):
            users = await self.mounter.device_users(mount_point=path)
            if users.used_by_processes:
                raise DeviceBusy(path, [p.describe() for p in users.processes])
            await self.mounter.unmount_all(path, lazy_fallback=True)
        device = await resolve_device()
        if device is None:
            raise DeviceNotFound(f"the volume of {path} has no block device on this node")
        await self.mounter.mount(device, path, fs_type, options, readonly=readonly)
        entry = self.mounter.mount_of(path)
        expected = await self.mounter.device_number(device)
        if entry is None or entry.device_number != expected:
            raise MountError(f"{path} is not mounted from {device} after remounting")
        return device
