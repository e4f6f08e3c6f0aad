"""Filesystem tools: what argv to run and how to read their exit codes.

Pure functions, so the rules (which exit code means "no filesystem", "needs repair" or "the
journal is just not replayed yet") are tested without running anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rds_csi.host.errors import InvalidInput

__all__ = [
    "FORMATTABLE_FS",
    "MOUNTABLE_FS",
    "DeviceContent",
    "FsckOutcome",
    "blkid_argv",
    "fsck_argv",
    "interpret_fsck",
    "mkfs_argv",
    "parse_blkid_export",
    "resize_argv",
]

FORMATTABLE_FS = ("ext4", "xfs")
MOUNTABLE_FS = ("ext2", "ext3", "ext4", "xfs")
EXT_FAMILY = ("ext2", "ext3", "ext4")

BLKID_NOTHING_FOUND = 2
_LABEL = re.compile(r"^[A-Za-z0-9_.-]+\Z")
_LABEL_MAX = {"ext4": 16, "xfs": 12}


@dataclass(frozen=True, slots=True)
class DeviceContent:
    """What blkid found on a device: a filesystem, a partition table, or nothing."""

    fs_type: str | None = None
    partition_table: str | None = None
    uuid: str | None = None
    label: str | None = None

    @property
    def empty(self) -> bool:
        return self.fs_type is None and self.partition_table is None


def blkid_argv(device: str) -> list[str]:
    # -p: low-level probe of the device itself, never the (possibly stale) blkid cache.
    return ["blkid", "-p", "-o", "export", "--", device]


def parse_blkid_export(stdout: str) -> DeviceContent:
    values: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return DeviceContent(
        fs_type=values.get("TYPE") or None,
        partition_table=values.get("PTTYPE") or None,
        uuid=values.get("UUID") or None,
        label=values.get("LABEL") or None,
    )


def mkfs_argv(fs_type: str, device: str, label: str | None = None) -> list[str]:
    """mkfs without -F/-f: the caller has just confirmed the device is empty."""
    if fs_type not in FORMATTABLE_FS:
        raise InvalidInput(
            f"unsupported filesystem {fs_type!r}: only {', '.join(FORMATTABLE_FS)} can be created"
        )
    argv = [f"mkfs.{fs_type}", "-q"]
    if label is not None:
        if not _LABEL.match(label) or len(label) > _LABEL_MAX[fs_type]:
            raise InvalidInput(f"invalid {fs_type} label {label!r}")
        argv += ["-L", label]
    return [*argv, "--", device]


def fsck_argv(fs_type: str, device: str) -> list[str]:
    """A read-only check: -n answers "no" to every repair (never writes)."""
    if fs_type in EXT_FAMILY:
        return ["fsck.ext4", "-n", "--", device]
    if fs_type == "xfs":
        return ["xfs_repair", "-n", "--", device]
    raise InvalidInput(f"no filesystem check for {fs_type!r}")


def resize_argv(fs_type: str, device: str, mount_point: str | None) -> list[str]:
    if fs_type in EXT_FAMILY:
        return ["resize2fs", "--", device]
    if fs_type == "xfs":
        if not mount_point:
            raise InvalidInput("xfs can only grow while mounted: a mount point is required")
        return ["xfs_growfs", "--", mount_point]
    raise InvalidInput(f"cannot resize a {fs_type!r} filesystem")


@dataclass(frozen=True, slots=True)
class FsckOutcome:
    clean: bool
    journal_pending: bool  # unreplayed journal/log: mounting replays it, errors may be spurious
    operational_error: bool  # the checker itself failed (exit 8 / xfs_repair other codes)


_JOURNAL_PENDING_EXT = ("skipping journal recovery", "needs_recovery", "recovering journal")
_JOURNAL_PENDING_XFS = ("valuable metadata changes in a log", "log is dirty", "dirty log")


def interpret_fsck(fs_type: str, returncode: int, output: str) -> FsckOutcome:
    """Map a read-only check's exit code to clean / needs repair / journal pending / failed."""
    text = output.lower()
    if fs_type in EXT_FAMILY:
        # e2fsck(8): 0 clean, 1 corrected, 2 reboot, 4 uncorrected errors, 8 operational error.
        pending = any(marker in text for marker in _JOURNAL_PENDING_EXT)
        if returncode & 4:
            return FsckOutcome(clean=False, journal_pending=pending, operational_error=False)
        if returncode & ~0b11:
            return FsckOutcome(clean=False, journal_pending=False, operational_error=True)
        return FsckOutcome(clean=True, journal_pending=False, operational_error=False)
    if fs_type == "xfs":
        # xfs_repair(8) -n: 0 clean, 1 corruption found; 2 dirty log.
        pending = any(marker in text for marker in _JOURNAL_PENDING_XFS)
        if returncode == 0:
            return FsckOutcome(clean=True, journal_pending=False, operational_error=False)
        if returncode in (1, 2):
            return FsckOutcome(
                clean=False, journal_pending=pending or returncode == 2, operational_error=False
            )
        return FsckOutcome(clean=False, journal_pending=False, operational_error=True)
    raise InvalidInput(f"no filesystem check for {fs_type!r}")
