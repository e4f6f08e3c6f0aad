"""Validation of volume_context values: pure functions raising InvalidInput with clear messages.

Everything here runs before any command, so a hostile or mistyped StorageClass parameter never
reaches nvme-cli or losetup.  The messages name the volume_context key and the rule it broke.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat

from rds_csi.host.errors import InvalidInput

__all__ = [
    "NQN_MAX_BYTES",
    "parse_address",
    "parse_int",
    "parse_port",
    "validate_backing_file",
    "validate_nqn",
]

NQN_MAX_BYTES = 223

# NVMe base spec 4.5: "nqn." yyyy "-" mm "." reverse-domain ":" user-string, UTF-8, <= 223 bytes.
_NQN = re.compile(
    r"^nqn\.(?P<year>[0-9]{4})-(?P<month>[0-9]{2})\."
    r"(?P<domain>[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)"
    r":(?P<rest>.+)\Z"
)
# After the ':' nvme-cli writes the NQN into "nqn=...,transport=..." for the kernel, so ',' and
# '=' would inject fabrics options; keep to the characters real NQNs use.
_NQN_USER = re.compile(r"^[A-Za-z0-9._:+@/-]+\Z")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_INTEGER = re.compile(r"^-?[0-9]{1,10}\Z")


def validate_nqn(value: str, key: str = "nqn") -> str:
    if not value:
        raise InvalidInput(f"volume_context[{key!r}] is required")
    if any(ch.isspace() for ch in value) or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InvalidInput(
            f"volume_context[{key!r}] {value!r} contains whitespace or control characters"
        )
    if len(value.encode("utf-8")) > NQN_MAX_BYTES:
        raise InvalidInput(
            f"volume_context[{key!r}] is {len(value.encode('utf-8'))} bytes long; "
            f"an NQN is at most {NQN_MAX_BYTES}"
        )
    match = _NQN.match(value)
    if match is None:
        raise InvalidInput(
            f"volume_context[{key!r}] {value!r} is not an NQN of the form "
            "nqn.yyyy-mm.reverse.domain:name"
        )
    month = int(match.group("month"))
    if not 1 <= month <= 12:
        raise InvalidInput(f"volume_context[{key!r}] {value!r} has an invalid month {month:02d}")
    if not _NQN_USER.match(match.group("rest")):
        raise InvalidInput(
            f"volume_context[{key!r}] {value!r} contains characters outside "
            "[A-Za-z0-9._:+@/-] after the domain"
        )
    return value


def parse_address(value: str, key: str = "nvmeAddress") -> str:
    """An IPv4/IPv6 literal (brackets around IPv6 allowed) or an RFC 1123 host name."""
    if not value:
        raise InvalidInput(f"volume_context[{key!r}] is required")
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if len(text) > 253 or text.endswith("."):
        raise InvalidInput(f"volume_context[{key!r}] {value!r} is not a valid address")
    labels = text.split(".")
    if not all(_HOST_LABEL.match(label) for label in labels):
        raise InvalidInput(
            f"volume_context[{key!r}] {value!r} is neither an IP address nor a valid host name"
        )
    if labels[-1].isdigit():
        # "10.0.0.256" or "1234": an IP address gone wrong, not a host name.
        raise InvalidInput(f"volume_context[{key!r}] {value!r} is not a valid IP address")
    return text.lower()


def parse_int(
    value: str | None, key: str, *, default: int | None, low: int, high: int
) -> int | None:
    if value is None or value == "":
        return default
    if not _INTEGER.match(value.strip()):
        raise InvalidInput(f"volume_context[{key!r}] {value!r} is not an integer")
    number = int(value.strip())
    if not low <= number <= high:
        raise InvalidInput(f"volume_context[{key!r}] {number} is out of range [{low}, {high}]")
    return number


def parse_port(value: str | None, key: str = "nvmePort", *, default: int = 4420) -> int:
    port = parse_int(value, key, default=default, low=1, high=65535)
    assert port is not None
    return port


def validate_backing_file(value: str, key: str = "backingFile") -> str:
    """An absolute, normalised path to an existing regular file."""
    if not value:
        raise InvalidInput(f"volume_context[{key!r}] is required")
    if "\0" in value or any(ord(ch) < 0x20 for ch in value):
        raise InvalidInput(f"volume_context[{key!r}] {value!r} contains control characters")
    if not value.startswith("/"):
        raise InvalidInput(f"volume_context[{key!r}] {value!r} must be an absolute path")
    if os.path.normpath(value) != value or "//" in value:
        raise InvalidInput(
            f"volume_context[{key!r}] {value!r} must be normalised (no '..', '//' or trailing '/')"
        )
    try:
        st = os.stat(value)
    except FileNotFoundError:
        raise InvalidInput(f"volume_context[{key!r}] {value!r} does not exist") from None
    except OSError as exc:
        raise InvalidInput(f"volume_context[{key!r}] {value!r}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(f"volume_context[{key!r}] {value!r} is not a regular file")
    return value
