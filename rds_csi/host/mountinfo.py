"""Parse /proc/self/mountinfo (proc(5)) and look mounts up by mount point or device.

Reading mountinfo never touches the mounted filesystems, so it is safe on dead mounts, unlike
stat() or findmnt --target.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "MOUNTINFO_PATH",
    "MountInfo",
    "MountInfoError",
    "find_by_device",
    "find_by_mount_point",
    "mounts_at",
    "normalize_path",
    "parse_mountinfo",
    "read_mountinfo",
    "unescape",
]

MOUNTINFO_PATH = "/proc/self/mountinfo"

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


class MountInfoError(ValueError):
    """A mountinfo line does not have the documented shape."""


@dataclass(frozen=True, slots=True)
class MountInfo:
    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    options: tuple[str, ...]
    optional_fields: tuple[str, ...]
    fs_type: str
    source: str
    super_options: tuple[str, ...]

    @property
    def device_number(self) -> tuple[int, int]:
        """major:minor of the mounted filesystem (st_dev of every file in it)."""
        return (self.major, self.minor)

    @property
    def is_bind(self) -> bool:
        """True when only a subtree of the filesystem is mounted here (root is not "/")."""
        return self.root != "/"

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def unescape(field: str) -> str:
    """Undo the kernel's octal escapes (\\040 space, \\011 tab, \\012 newline, \\134 backslash)."""
    if "\\" not in field:
        return field
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _parse_line(line: str) -> MountInfo:
    fields = line.split(" ")
    try:
        separator = fields.index("-", 6)
    except ValueError:
        raise MountInfoError(f"no ' - ' separator in mountinfo line: {line!r}") from None
    if len(fields) < separator + 3:
        raise MountInfoError(f"too few fields in mountinfo line: {line!r}")
    try:
        major_text, minor_text = fields[2].split(":")
        mount_id, parent_id = int(fields[0]), int(fields[1])
        major, minor = int(major_text), int(minor_text)
    except ValueError:
        raise MountInfoError(f"bad ids or major:minor in mountinfo line: {line!r}") from None
    return MountInfo(
        mount_id=mount_id,
        parent_id=parent_id,
        major=major,
        minor=minor,
        root=unescape(fields[3]),
        mount_point=unescape(fields[4]),
        options=tuple(fields[5].split(",")),
        optional_fields=tuple(fields[6:separator]),
        fs_type=unescape(fields[separator + 1]),
        source=unescape(fields[separator + 2]),
        super_options=tuple(fields[separator + 3].split(","))
        if len(fields) > separator + 3
        else (),
    )


def parse_mountinfo(text: str) -> list[MountInfo]:
    """Parse mountinfo text, in kernel order (a later entry for a mount point covers earlier)."""
    return [_parse_line(line) for line in text.splitlines() if line.strip()]


def read_mountinfo(path: str = MOUNTINFO_PATH) -> list[MountInfo]:
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return parse_mountinfo(handle.read())


def normalize_path(path: str) -> str:
    """Absolute, normalised, without resolving symlinks (resolving could hang on a dead mount)."""
    return os.path.normpath(os.path.abspath(path))


def mounts_at(entries: Iterable[MountInfo], mount_point: str) -> list[MountInfo]:
    """Every mount stacked at `mount_point`, bottom first."""
    wanted = normalize_path(mount_point)
    return [entry for entry in entries if entry.mount_point == wanted]


def find_by_mount_point(entries: Iterable[MountInfo], mount_point: str) -> MountInfo | None:
    """The visible (top-most) mount at `mount_point`, or None."""
    stacked = mounts_at(entries, mount_point)
    return stacked[-1] if stacked else None


def find_by_device(
    entries: Sequence[MountInfo],
    *,
    device_number: tuple[int, int] | None = None,
    source: str | None = None,
) -> list[MountInfo]:
    """Mounts of a block device, matched by major:minor and/or by the source path."""
    return [
        entry
        for entry in entries
        if (device_number is not None and entry.device_number == device_number)
        or (source is not None and entry.source == source)
    ]
