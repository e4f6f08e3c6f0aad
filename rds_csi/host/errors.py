"""Typed failures of the host layer.

The CSI layer maps these to gRPC status codes; nothing here knows about gRPC.  Every message is
meant for a human reading a kubectl event: it names the tool or path and says what went wrong,
never more than the first lines of a tool's stderr.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AlreadyMounted",
    "CommandFailed",
    "CommandTimeout",
    "ConnectError",
    "DeviceBusy",
    "DeviceNotFound",
    "DisconnectRefused",
    "FilesystemNeedsRepair",
    "FormatRefused",
    "HostError",
    "InvalidInput",
    "MountError",
    "ProbeTimeout",
    "ToolNotFound",
]

STDERR_SUMMARY_LINES = 2
STDERR_SUMMARY_CHARS = 400


def summarize_stderr(stderr: str) -> str:
    """The first non-empty lines of a tool's stderr, short enough for an error message."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    text = " | ".join(lines[:STDERR_SUMMARY_LINES])
    if len(text) > STDERR_SUMMARY_CHARS:
        text = text[: STDERR_SUMMARY_CHARS - 3] + "..."
    return text


class HostError(Exception):
    """Base of every failure raised by rds_csi.host."""


class InvalidInput(HostError):
    """A volume context, path or option failed validation before any command ran."""


class ToolNotFound(HostError):
    """A host binary the operation needs is not installed (or not at the configured path)."""

    def __init__(self, tool: str, path: str) -> None:
        self.tool = tool
        self.path = path
        super().__init__(f"required tool {tool!r} not found (looked for {path!r})")


class CommandFailed(HostError):
    """A command exited with a code its caller does not accept."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        summary = summarize_stderr(stderr) or "no error output"
        super().__init__(f"{self.tool} exited with code {returncode}: {summary}")

    @property
    def tool(self) -> str:
        return self.argv[0].rsplit("/", 1)[-1] if self.argv else "?"


class CommandTimeout(HostError):
    """A command ran past its timeout; its whole process group was killed."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        tool = self.argv[0].rsplit("/", 1)[-1] if self.argv else "?"
        super().__init__(f"{tool} did not finish within {timeout:g} s and was killed")


class ProbeTimeout(HostError):
    """A filesystem or device probe did not return in time: the path is unresponsive."""

    def __init__(self, what: str, path: str, timeout: float) -> None:
        self.what = what
        self.path = path
        self.timeout = timeout
        super().__init__(f"{what} of {path} did not return within {timeout:g} s (unresponsive)")


class DeviceNotFound(HostError):
    """The block device of a volume is not (or no longer) present on this node."""


class ConnectError(HostError):
    """Attaching a volume (nvme connect, losetup) failed."""


class DisconnectRefused(HostError):
    """Refused to detach something this plugin does not manage (e.g. the node's boot disk)."""


class MountError(HostError):
    """mount, umount or a bind mount failed."""


class AlreadyMounted(MountError):
    """The target is already a mount point; mounting again would stack a second mount."""

    def __init__(self, target: str, source: str) -> None:
        self.target = target
        self.source = source
        super().__init__(f"{target} is already mounted (from {source}); refusing to stack")


class FilesystemNeedsRepair(HostError):
    """The filesystem reports corruption (EUCLEAN / fsck errors): repair it, never remount."""

    def __init__(self, device: str, detail: str) -> None:
        self.device = device
        self.detail = detail
        super().__init__(f"filesystem on {device} needs repair: {detail}")


class FormatRefused(HostError):
    """mkfs was asked to format a device that already holds data."""


class DeviceBusy(HostError):
    """A device or mount is in use by processes, holders or other mounts."""

    def __init__(self, what: str, users: Sequence[str]) -> None:
        self.what = what
        self.users = list(users)
        shown = ", ".join(self.users[:5])
        more = f" and {len(self.users) - 5} more" if len(self.users) > 5 else ""
        super().__init__(f"{what} is in use ({shown}{more})")
