"""The exit-code rules of blkid and the read-only checkers, without running anything."""

from __future__ import annotations

import pytest

from rds_csi.host.errors import InvalidInput
from rds_csi.host.filesystem import (
    DeviceContent,
    FsckOutcome,
    fsck_argv,
    interpret_fsck,
    mkfs_argv,
    parse_blkid_export,
    resize_argv,
)


def test_blkid_export_output_is_parsed() -> None:
    out = (
        "DEVNAME=/dev/loop0\nUUID=9cb5\nVERSION=1.0\nBLOCK_SIZE=1024\nTYPE=ext4\nUSAGE=filesystem\n"
    )
    assert parse_blkid_export(out) == DeviceContent(fs_type="ext4", uuid="9cb5")
    table = parse_blkid_export("DEVNAME=/dev/loop0\nPTUUID=abc\nPTTYPE=dos\n")
    assert table.partition_table == "dos" and table.fs_type is None and not table.empty
    assert DeviceContent().empty


def test_mkfs_never_forces_and_only_knows_ext4_and_xfs() -> None:
    assert mkfs_argv("ext4", "/dev/x") == ["mkfs.ext4", "-q", "--", "/dev/x"]
    assert mkfs_argv("xfs", "/dev/x", "data") == ["mkfs.xfs", "-q", "-L", "data", "--", "/dev/x"]
    for fs in ("btrfs", "ext3", "vfat"):
        with pytest.raises(InvalidInput, match="only ext4, xfs"):
            mkfs_argv(fs, "/dev/x")
    with pytest.raises(InvalidInput, match="label"):
        mkfs_argv("xfs", "/dev/x", "much-too-long-label")


def test_checks_and_resizes_use_the_documented_tools() -> None:
    assert fsck_argv("ext4", "/dev/x") == ["fsck.ext4", "-n", "--", "/dev/x"]
    assert fsck_argv("xfs", "/dev/x") == ["xfs_repair", "-n", "--", "/dev/x"]
    assert resize_argv("ext4", "/dev/x", None) == ["resize2fs", "--", "/dev/x"]
    assert resize_argv("xfs", "/dev/x", "/mnt") == ["xfs_growfs", "--", "/mnt"]
    with pytest.raises(InvalidInput, match="mount point is required"):
        resize_argv("xfs", "/dev/x", None)


@pytest.mark.parametrize(
    ("fs", "code", "output", "expected"),
    [
        ("ext4", 0, "clean", FsckOutcome(True, False, False)),
        ("ext4", 4, "Root inode is not a directory.  Clear? no", FsckOutcome(False, False, False)),
        ("ext4", 12, "Cannot proceed without a root inode.", FsckOutcome(False, False, False)),
        (
            "ext4",
            4,
            "Warning: skipping journal recovery because doing a read-only filesystem check.",
            FsckOutcome(False, True, False),
        ),
        ("ext4", 8, "e2fsck: No such file or directory", FsckOutcome(False, False, True)),
        ("xfs", 0, "No modify flag set", FsckOutcome(True, False, False)),
        ("xfs", 1, "agi unlinked bucket 5 is 69 in ag 0", FsckOutcome(False, False, False)),
        (
            "xfs",
            1,
            "ALERT: The filesystem has valuable metadata changes in a log which is being ignored",
            FsckOutcome(False, True, False),
        ),
        ("xfs", 4, "fatal error", FsckOutcome(False, False, True)),
    ],
)
def test_fsck_exit_codes(fs: str, code: int, output: str, expected: FsckOutcome) -> None:
    assert interpret_fsck(fs, code, output) == expected
