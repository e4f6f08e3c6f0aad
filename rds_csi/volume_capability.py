"""A CSI VolumeCapability turned into what the node service acts on, validated up front."""

from __future__ import annotations

from dataclasses import dataclass

import betterproto2

from rds_csi.gen.csi import v1 as csi
from rds_csi.host.errors import InvalidInput
from rds_csi.host.mount_options import validate_mount_options

__all__ = ["DEFAULT_FS_TYPE", "SUPPORTED_FS_TYPES", "CapabilityError", "VolumeSpec", "parse"]

DEFAULT_FS_TYPE = "ext4"
SUPPORTED_FS_TYPES = ("ext4", "xfs")

Mode = csi.VolumeCapabilityAccessModeMode
_SINGLE_NODE = frozenset(
    {
        Mode.SINGLE_NODE_WRITER,
        Mode.SINGLE_NODE_READER_ONLY,
        Mode.SINGLE_NODE_SINGLE_WRITER,
        Mode.SINGLE_NODE_MULTI_WRITER,
    }
)
_MULTI_NODE = frozenset(
    {
        Mode.MULTI_NODE_READER_ONLY,
        Mode.MULTI_NODE_SINGLE_WRITER,
        Mode.MULTI_NODE_MULTI_WRITER,
    }
)
_READ_ONLY = frozenset({Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY})


class CapabilityError(ValueError):
    """`invalid` is True for malformed input (INVALID_ARGUMENT) and False for a well-formed
    capability this plugin cannot give (FAILED_PRECONDITION)."""

    def __init__(self, message: str, *, invalid: bool) -> None:
        super().__init__(message)
        self.invalid = invalid


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    block: bool
    fs_type: str
    mount_flags: tuple[str, ...]
    mode: Mode

    @property
    def read_only_mode(self) -> bool:
        return self.mode in _READ_ONLY

    @property
    def single_writer_only(self) -> bool:
        """SINGLE_NODE_SINGLE_WRITER: one publish target at a time on this node."""
        return self.mode == Mode.SINGLE_NODE_SINGLE_WRITER


def parse(capability: csi.VolumeCapability) -> VolumeSpec:
    access, detail = betterproto2.which_one_of(capability, "access_type")
    if access not in ("block", "mount"):
        raise CapabilityError(
            "volume_capability must set access_type (block or mount)", invalid=True
        )
    if capability.access_mode is None:
        raise CapabilityError("volume_capability.access_mode is required", invalid=True)
    mode = capability.access_mode.mode
    if mode not in _SINGLE_NODE and mode not in _MULTI_NODE:
        raise CapabilityError(f"unsupported access mode {mode!r}", invalid=True)
    if access == "block":
        return VolumeSpec(block=True, fs_type="", mount_flags=(), mode=mode)
    assert isinstance(detail, csi.VolumeCapabilityMountVolume)
    if mode in _MULTI_NODE:
        # A block filesystem mounted read-write on two nodes corrupts it.
        raise CapabilityError(
            f"access mode {mode.name} is only supported for raw block volumes", invalid=False
        )
    fs_type = detail.fs_type or DEFAULT_FS_TYPE
    if fs_type not in SUPPORTED_FS_TYPES:
        raise CapabilityError(
            f"unsupported fs_type {fs_type!r} (supported: {', '.join(SUPPORTED_FS_TYPES)})",
            invalid=True,
        )
    if detail.volume_mount_group:
        raise CapabilityError(
            "volume_mount_group is not supported (no VOLUME_MOUNT_GROUP capability)",
            invalid=True,
        )
    try:
        flags = tuple(validate_mount_options(detail.mount_flags))
    except InvalidInput as err:
        raise CapabilityError(str(err), invalid=True) from err
    return VolumeSpec(block=False, fs_type=fs_type, mount_flags=flags, mode=mode)
