"""Mount flag validation: known flags pass, injection and mount-mode changes do not."""

from __future__ import annotations

import pytest

from rds_csi.host.errors import InvalidInput
from rds_csi.host.mount_options import validate_mount_options


def test_known_flags_and_key_values_pass_in_order_without_duplicates() -> None:
    flags = [
        "noatime",
        "discard",
        "data=ordered",
        "errors=remount-ro",
        "commit=30",
        "noatime",
        "logbsize=256k",
        "nouuid",
    ]
    assert validate_mount_options(flags) == [
        "noatime",
        "discard",
        "data=ordered",
        "errors=remount-ro",
        "commit=30",
        "logbsize=256k",
        "nouuid",
    ]


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("rw,remount", "contains ','"),
        ("noatime,bind", "contains ','"),
        ("remount", "not allowed"),
        ("bind", "not allowed"),
        ("rbind", "not allowed"),
        ("move", "not allowed"),
        ("make-shared", "not allowed"),
        ("rshared", "not allowed"),
        ("x-mount.mkdir", "not allowed"),
        ("loop", "not allowed"),
        ("context=system_u:object_r:foo_t:s0", "not allowed"),
        ("uid=0", "does not take a value"),
        ("noatime=1", "does not take a value"),
        ("data=evil", "invalid value"),
        ("commit=-1", "invalid value"),
        ("commit=99999999999", "invalid value"),
        ("logbufs=100", "invalid value"),
        ("frobnicate", "unknown mount option"),
        ("", "empty mount option"),
        ("no atime", "whitespace or control"),
        ("noatime\n", "whitespace or control"),
    ],
)
def test_bad_flags_are_rejected_with_a_reason(flag: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_mount_options(["noatime", flag])
