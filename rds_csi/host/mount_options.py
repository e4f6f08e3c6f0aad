"""Validation of user-supplied mount flags (CSI MountVolume.mount_flags).

The flags come from a StorageClass or PV, so they are untrusted: each one must be a known flag or
a known key=value option with a value of the expected shape.  Anything else is rejected,
including a ',' (it would smuggle extra options into -o), 'remount'/'bind'/'move' (they change
what mount(8) does), and options that need quoting (SELinux contexts).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from rds_csi.host.errors import InvalidInput

__all__ = ["FLAG_OPTIONS", "FORBIDDEN_OPTIONS", "VALUED_OPTIONS", "validate_mount_options"]

# Flags accepted by mount(8), ext4 or xfs without a value.
FLAG_OPTIONS = frozenset(
    {
        "defaults",
        "ro",
        "rw",
        "sync",
        "async",
        "dirsync",
        "atime",
        "noatime",
        "diratime",
        "nodiratime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "lazytime",
        "nolazytime",
        "exec",
        "noexec",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "iversion",
        "noiversion",
        "discard",
        "nodiscard",
        "acl",
        "noacl",
        "user_xattr",
        "nouser_xattr",
        "barrier",
        "nobarrier",
        "norecovery",
        "noload",
        "delalloc",
        "nodelalloc",
        "journal_checksum",
        "nojournal_checksum",
        "journal_async_commit",
        "auto_da_alloc",
        "noauto_da_alloc",
        "block_validity",
        "noblock_validity",
        "init_itable",
        "noinit_itable",
        "nombcache",
        "dax",
        "grpid",
        "nogrpid",
        "bsdgroups",
        "sysvgroups",
        "quota",
        "noquota",
        "usrquota",
        "grpquota",
        "prjquota",
        "uquota",
        "gquota",
        "pquota",
        "uqnoenforce",
        "gqnoenforce",
        "pqnoenforce",
        "inode32",
        "inode64",
        "largeio",
        "nolargeio",
        "nouuid",
        "attr2",
        "noattr2",
        "ikeep",
        "noikeep",
        "swalloc",
        "wsync",
        "filestreams",
    }
)

_UINT = re.compile(r"^[0-9]{1,10}\Z")
_SIZE = re.compile(r"^[0-9]{1,12}[kKmMgG]?\Z")


def _one_of(*choices: str) -> Callable[[str], bool]:
    return lambda value: value in choices


def _uint(low: int = 0, high: int = 2**32 - 1) -> Callable[[str], bool]:
    return lambda value: bool(_UINT.match(value)) and low <= int(value) <= high


VALUED_OPTIONS: dict[str, Callable[[str], bool]] = {
    "data": _one_of("ordered", "writeback", "journal"),
    "errors": _one_of("continue", "remount-ro", "panic"),
    "barrier": _one_of("0", "1"),
    "commit": _uint(0, 86400),
    "stripe": _uint(),
    "resuid": _uint(),
    "resgid": _uint(),
    "journal_ioprio": _uint(0, 7),
    "min_batch_time": _uint(),
    "max_batch_time": _uint(),
    "inode_readahead_blks": _uint(0, 2**31),
    "init_itable": _uint(),
    "dax": _one_of("always", "never", "inode"),
    "allocsize": lambda value: bool(_SIZE.match(value)),
    "logbsize": lambda value: bool(_SIZE.match(value)),
    "logbufs": _uint(2, 8),
    "sunit": _uint(),
    "swidth": _uint(),
}

# Options that change what mount(8) does, or that this plugin must control itself.
FORBIDDEN_OPTIONS = frozenset(
    {
        "remount",
        "bind",
        "rbind",
        "move",
        "loop",
        "offset",
        "sizelimit",
        "encryption",
        "owner",
        "group",
        "user",
        "users",
        "nouser",
        "auto",
        "noauto",
        "nofail",
        "_netdev",
        "context",
        "fscontext",
        "defcontext",
        "rootcontext",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "private",
        "rprivate",
        "unbindable",
        "runbindable",
    }
)

_PRINTABLE = re.compile(r"^[\x21-\x7e]+\Z")


def _check_one(option: str) -> str:
    if not option:
        raise InvalidInput("empty mount option")
    if not _PRINTABLE.match(option):
        raise InvalidInput(f"mount option {option!r} contains whitespace or control characters")
    if "," in option:
        raise InvalidInput(
            f"mount option {option!r} contains ',': pass each option as its own flag"
        )
    key, has_value, value = option.partition("=")
    base = key.lower()
    if base in FORBIDDEN_OPTIONS or base.startswith(("make-", "x-")):
        raise InvalidInput(f"mount option {option!r} is not allowed")
    if not has_value:
        if key not in FLAG_OPTIONS:
            raise InvalidInput(f"unknown mount option {option!r}")
        return option
    check = VALUED_OPTIONS.get(key)
    if check is None:
        raise InvalidInput(f"mount option {key!r} does not take a value (got {option!r})")
    if not check(value):
        raise InvalidInput(f"invalid value {value!r} for mount option {key!r}")
    return option


def validate_mount_options(options: Iterable[str]) -> list[str]:
    """The options as given (duplicates dropped), or InvalidInput naming the bad one."""
    seen: list[str] = []
    for option in options:
        if not isinstance(option, str):
            raise InvalidInput(f"mount option {option!r} is not a string")
        checked = _check_one(option)
        if checked not in seen:
            seen.append(checked)
    return seen
