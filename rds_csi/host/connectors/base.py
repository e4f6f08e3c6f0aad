"""What every connector offers the node service: attach a volume, find its device, detach it.

A connector first turns the CSI volume_context into a validated target (pure: no command has run
yet, so bad input is an InvalidInput before anything touches the host), then works on that
target.  connect and disconnect are idempotent, as CSI requires of Stage and Unstage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Connector", "OrphanCleanup", "VolumeTarget"]


@runtime_checkable
class VolumeTarget(Protocol):
    """A validated description of where a volume lives."""

    @property
    def key(self) -> str:
        """Stable identity of the volume on this node (the NQN, the backing file)."""
        ...

    def describe(self) -> str:
        """Human-readable, for events and logs (never contains secrets)."""
        ...

    def to_volume_context(self) -> dict[str, str]:
        """The volume_context keys that parse back into an equal target (for persisting)."""
        ...


@dataclass(slots=True)
class OrphanCleanup:
    """What cleanup_orphans did at start-up."""

    detached: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # present but not ours, or still in use
    failed: dict[str, str] = field(default_factory=dict)


class Connector(Protocol):
    name: str

    def parse_target(self, volume_id: str, volume_context: Mapping[str, str]) -> VolumeTarget:
        """Validate volume_context; raise InvalidInput with a message naming the bad key."""
        ...

    def target_for_volume_id(self, volume_id: str) -> VolumeTarget | None:
        """A target good enough to resolve and disconnect when only the volume ID is known
        (NodeUnstageVolume carries no volume_context).  None when the ID is not enough."""
        ...

    async def connect(self, target: VolumeTarget) -> str:
        """Attach the volume and return its block device path; an attached volume returns its
        existing device.  Raises ConnectError, DeviceNotFound, CommandTimeout."""
        ...

    async def disconnect(self, target: VolumeTarget) -> None:
        """Detach the volume; no-op when it is not attached.  DisconnectRefused for a target
        this plugin does not manage.  Callers check that the device is unused first."""
        ...

    async def resolve_device(self, target: VolumeTarget) -> str | None:
        """The volume's block device as of now, or None when it is not attached."""
        ...

    async def rescan(self, target: VolumeTarget) -> None:
        """Make the kernel re-read the device size after the volume grew."""
        ...

    async def cleanup_orphans(self) -> OrphanCleanup:
        """Detach managed attachments that have no block device left (start-up, best effort)."""
        ...

    def required_tools(self) -> list[str]:
        """Host binaries this connector runs (for the Identity Probe)."""
        ...
