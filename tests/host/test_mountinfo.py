"""mountinfo parsing against hand-written lines in the kernel's format (proc(5))."""

from __future__ import annotations

import pytest

from rds_csi.host.mountinfo import (
    MountInfoError,
    find_by_device,
    find_by_mount_point,
    mounts_at,
    parse_mountinfo,
    unescape,
)

SAMPLE = "\n".join(
    [
        "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme9n1p2 rw,errors=remount-ro",
        "25 22 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4008924k",
        # A staging mount whose path holds a space, a tab, a newline and a backslash.
        r"101 22 259:7 / /var/lib/kubelet/plugins/kubernetes.io/csi/rds.csi.srvlab.io/"
        r"a\040b\011c\012d\134e/globalmount rw,noatime shared:50 master:3 - ext4 /dev/nvme2n1 "
        r"rw,stripe=16",
        # A bind mount of a sub-directory: root is not "/".
        "102 22 259:7 /pvc/data /var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pvc/mount "
        "ro,relatime shared:50 - ext4 /dev/nvme2n1 rw",
        # No optional fields at all.
        "103 22 7:3 / /mnt/x rw - xfs /dev/loop3 rw,attr2,inode64",
        # Two mounts stacked on one mount point: the later one is visible.
        "104 22 7:4 / /mnt/stacked rw - ext4 /dev/loop4 rw",
        "105 104 7:5 / /mnt/stacked rw - ext4 /dev/loop5 rw",
    ]
)


def test_fields_of_a_plain_line() -> None:
    root = parse_mountinfo(SAMPLE)[0]
    assert (root.mount_id, root.parent_id, root.major, root.minor) == (22, 1, 259, 2)
    assert root.root == "/" and root.mount_point == "/"
    assert root.options == ("rw", "relatime")
    assert root.optional_fields == ("shared:1",)
    assert root.fs_type == "ext4"
    assert root.source == "/dev/nvme9n1p2"
    assert root.super_options == ("rw", "errors=remount-ro")
    assert not root.is_bind and not root.read_only


def test_octal_escapes_are_decoded_in_paths() -> None:
    staging = parse_mountinfo(SAMPLE)[2]
    assert staging.mount_point == (
        "/var/lib/kubelet/plugins/kubernetes.io/csi/rds.csi.srvlab.io/a b\tc\nd\\e/globalmount"
    )
    assert staging.optional_fields == ("shared:50", "master:3")
    assert staging.device_number == (259, 7)


def test_bind_mount_has_a_root_below_the_filesystem_root() -> None:
    bind = parse_mountinfo(SAMPLE)[3]
    assert bind.root == "/pvc/data"
    assert bind.is_bind and bind.read_only
    assert bind.super_options == ("rw",)  # the filesystem itself is rw, only this view is ro


def test_line_without_optional_fields() -> None:
    entry = parse_mountinfo(SAMPLE)[4]
    assert entry.optional_fields == ()
    assert (entry.fs_type, entry.source) == ("xfs", "/dev/loop3")


def test_lookup_by_mount_point_normalises_and_prefers_the_top_of_a_stack() -> None:
    entries = parse_mountinfo(SAMPLE)
    assert find_by_mount_point(entries, "/mnt/x/") is entries[4]
    assert find_by_mount_point(entries, "/mnt/x/../x") is entries[4]
    assert find_by_mount_point(entries, "/mnt/nothing") is None
    stacked = mounts_at(entries, "/mnt/stacked")
    assert [m.source for m in stacked] == ["/dev/loop4", "/dev/loop5"]
    assert find_by_mount_point(entries, "/mnt/stacked") is stacked[-1]


def test_lookup_by_device_number_finds_the_staging_mount_and_its_binds() -> None:
    entries = parse_mountinfo(SAMPLE)
    found = find_by_device(entries, device_number=(259, 7))
    assert [m.mount_id for m in found] == [101, 102]
    assert [m.mount_id for m in find_by_device(entries, source="/dev/loop3")] == [103]
    assert find_by_device(entries, device_number=(8, 0)) == []


def test_unescape_leaves_plain_text_and_unknown_backslashes_alone() -> None:
    assert unescape("/plain") == "/plain"
    assert unescape(r"a\040b") == "a b"
    assert unescape(r"a\x") == r"a\x"


@pytest.mark.parametrize(
    "line",
    [
        "22 1 259:2 / / rw shared:1 ext4 /dev/sda rw",  # no separator
        "x 1 259:2 / / rw - ext4 /dev/sda rw",  # mount id not a number
        "22 1 2592 / / rw - ext4 /dev/sda rw",  # no major:minor
        "22 1 259:2 / / rw -",  # nothing after the separator
    ],
)
def test_malformed_lines_are_rejected(line: str) -> None:
    with pytest.raises(MountInfoError):
        parse_mountinfo(line)
