"""CSI Node service: stage, publish, stats, expand and their undo, over an injected connector
and mounter, with PVC events posted on failures.

The handlers validate in the spec's order and turn host-layer exceptions into status codes;
the host layer does the work.  Every mutating call holds the volume (a second one gets ABORTED)
and runs in a task that survives a cancelled caller (see volume_operations).  Events go through
the EventPoster, which returns at once: nothing here waits on the Kubernetes API.
"""

from __future__ import annotations

import functools
import os
import stat
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

import structlog
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from rds_csi import volume_capability
from rds_csi.events import EventPoster
from rds_csi.gen.csi import v1 as csi
from rds_csi.host import (
    AlreadyMounted,
    CommandTimeout,
    ConnectError,
    Connector,
    DeviceBusy,
    DeviceNotFound,
    DeviceResolver,
    DisconnectRefused,
    FilesystemNeedsRepair,
    FormatRefused,
    HealthState,
    HostError,
    InvalidInput,
    Mounter,
    MountHealth,
    MountRecoverer,
    ProbeTimeout,
    StaleChecker,
    ToolNotFound,
    VolumeTarget,
)
from rds_csi.host.mountinfo import MountInfo
from rds_csi.volume_capability import CapabilityError, VolumeSpec
from rds_csi.volume_operations import VolumeBusy, VolumeOperations

__all__ = ["TOPOLOGY_ZONE_KEY", "NodeService", "NodeStats", "status_for"]

log = structlog.get_logger("rds_csi.node")

T = TypeVar("T")

TOPOLOGY_ZONE_KEY = "topology.rds.csi.srvlab.io/zone"
_MAX_ID_BYTES = 128 * 1024  # a generous bound: ids are opaque, but not megabytes

_CAPABILITIES = (
    csi.NodeServiceCapabilityRpcType.STAGE_UNSTAGE_VOLUME,
    csi.NodeServiceCapabilityRpcType.GET_VOLUME_STATS,
    csi.NodeServiceCapabilityRpcType.EXPAND_VOLUME,
    csi.NodeServiceCapabilityRpcType.VOLUME_CONDITION,
)


@dataclass
class NodeStats:
    """Counters for the metrics endpoint."""

    stale_detected: int = 0
    stale_recovered: int = 0
    recovery_failed: int = 0
    # (operation, "ok" | "error") -> count, e.g. ("connect", "ok").
    connector_ops: Counter[tuple[str, str]] = field(default_factory=Counter)


def status_for(error: HostError) -> Status:
    """The gRPC code for a host-layer failure."""
    if isinstance(error, InvalidInput):
        return Status.INVALID_ARGUMENT
    if isinstance(error, DeviceNotFound):
        return Status.NOT_FOUND
    if isinstance(error, ConnectError):
        return Status.UNAVAILABLE
    if isinstance(error, CommandTimeout | ProbeTimeout):
        return Status.DEADLINE_EXCEEDED
    if isinstance(
        error, DeviceBusy | FilesystemNeedsRepair | FormatRefused | ToolNotFound | DisconnectRefused
    ):
        return Status.FAILED_PRECONDITION
    if isinstance(error, AlreadyMounted):
        return Status.ALREADY_EXISTS
    return Status.INTERNAL


def _fail(code: Status, message: str) -> NoReturn:
    raise GRPCError(code, message)


def _require(value: str, name: str) -> str:
    if not value:
        _fail(Status.INVALID_ARGUMENT, f"{name} is required")
    if len(value.encode()) > _MAX_ID_BYTES or "\0" in value:
        _fail(Status.INVALID_ARGUMENT, f"{name} is malformed")
    return value


def _absolute_path(value: str, name: str) -> str:
    _require(value, name)
    if not value.startswith("/") or "\n" in value:
        _fail(Status.INVALID_ARGUMENT, f"{name} must be an absolute path, got {value!r}")
    return os.path.normpath(value)


def _volume_path(volume_id: str, value: str) -> str:
    """NodeGetVolumeStats/NodeExpandVolume: a path that cannot be a volume is NOT_FOUND."""
    _require(value, "volume_path")
    if not value.startswith("/"):
        _fail(Status.NOT_FOUND, f"volume {volume_id} does not exist at {value}")
    return os.path.normpath(value)


def _spec(capability: csi.VolumeCapability | None) -> VolumeSpec:
    if capability is None:
        _fail(Status.INVALID_ARGUMENT, "volume_capability is required")
    try:
        return volume_capability.parse(capability)
    except CapabilityError as err:
        _fail(Status.INVALID_ARGUMENT if err.invalid else Status.FAILED_PRECONDITION, str(err))


class NodeService(csi.NodeBase):
    def __init__(
        self,
        *,
        node_id: str,
        connector: Connector,
        mounter: Mounter,
        checker: StaleChecker,
        recoverer: MountRecoverer,
        poster: EventPoster | None = None,
        zone: str = "default",
        stats: NodeStats | None = None,
    ) -> None:
        self.node_id = node_id
        self.connector = connector
        self.mounter = mounter
        self.checker = checker
        self.recoverer = recoverer
        self.poster = poster or EventPoster(None, node_id)
        self.zone = zone
        self.stats = stats or NodeStats()
        self.operations = VolumeOperations()
        # Staging paths whose stale mount a failed recovery took down (path -> volume id): the
        # next NodePublish completes the recovery there instead of refusing an unstaged volume,
        # since kubelet never calls NodeStage again for a volume it staged.
        self._recovery_pending: dict[str, str] = {}

    # ---- helpers ---------------------------------------------------------------------------

    def _target(self, volume_id: str, volume_context: Mapping[str, str]) -> VolumeTarget:
        try:
            return self.connector.parse_target(volume_id, volume_context)
        except InvalidInput as err:
            _fail(Status.INVALID_ARGUMENT, f"volume_context: {err}")

    async def _exclusive(
        self, volume_id: str, name: str, operation: Callable[[], Awaitable[T]]
    ) -> T:
        try:
            return await self.operations.run(volume_id, name, operation)
        except VolumeBusy as err:
            _fail(Status.ABORTED, str(err))
        except HostError as err:
            _fail(status_for(err), str(err))

    def _resolver(self, target: VolumeTarget) -> DeviceResolver:
        return functools.partial(self.connector.resolve_device, target)

    async def _connect(
        self, volume_id: str, volume_context: Mapping[str, str], target: VolumeTarget
    ) -> str:
        try:
            device = await self.connector.connect(target)
        except HostError as err:
            self.stats.connector_ops["connect", "error"] += 1
            await self.poster.post_connection_failure(
                volume_id, volume_context, target.describe(), str(err)
            )
            raise
        self.stats.connector_ops["connect", "ok"] += 1
        return device

    async def _check_and_recover(
        self,
        volume_id: str,
        volume_context: Mapping[str, str],
        target: VolumeTarget,
        path: str,
        spec: VolumeSpec,
        *,
        republish: str | None = None,
    ) -> None:
        """Stage and publish use a staged mount only when it is healthy; a stale one is
        remounted from the volume's current device.

        `republish` is the target a NodePublishVolume asks for: a bind of the stale mount there
        comes off first.  It would be replaced anyway, and while it holds the old filesystem
        instance xfs refuses the remount ("duplicate UUID").
        """
        health = await self.checker.check(path, resolve_device=self._resolver(target))
        if health.healthy:
            return
        if health.state is HealthState.NOT_MOUNTED:
            if self._recovery_pending.get(path) != volume_id:
                return
            log.info("completing an earlier failed recovery", staging=path)
        elif health.state is HealthState.NEEDS_REPAIR:
            await self.poster.post_mount_failure(volume_id, volume_context, health.message)
            _fail(Status.FAILED_PRECONDITION, health.message)
        elif health.state is HealthState.UNRESPONSIVE:
            await self.poster.post_mount_failure(volume_id, volume_context, health.message)
            _fail(Status.UNAVAILABLE, health.message)
        else:
            self.stats.stale_detected += 1
        # The device may be gone for good (controller lost): connect again first.  The event
        # names the device the volume has now, which the check may not have seen yet.
        new_device = health.new_device
        try:
            new_device = await self._connect(volume_id, volume_context, target)
        except HostError as err:
            log.warning("reconnect before recovery failed", error=str(err))
        if health.state is HealthState.STALE:
            await self.poster.post_stale_mount_detected(
                volume_id, volume_context, health.old_device or "", new_device or ""
            )
        if republish is not None:
            await self._unmount_if_stale(republish, target)
        result = await self.recoverer.recover(
            path,
            fs_type=spec.fs_type,
            resolve_device=self._resolver(target),
            options=spec.mount_flags,
        )
        if result.recovered:
            self._recovery_pending.pop(path, None)
            self.stats.stale_recovered += 1
            return
        if not self.mounter.is_mounted(path):
            self._recovery_pending[path] = volume_id
        self.stats.recovery_failed += 1
        error = result.error or HostError("unknown error")
        await self.poster.post_recovery_failed(
            volume_id, volume_context, result.attempts, str(error)
        )
        # No device (yet): UNAVAILABLE, a retry may find it back; NOT_FOUND would tell kubelet
        # the volume does not exist.
        code = (
            Status.UNAVAILABLE
            if isinstance(error, DeviceNotFound | ConnectError)
            else status_for(error)
        )
        _fail(
            code,
            f"stale mount at {path} could not be recovered after {result.attempts} "
            f"attempt(s): {error}",
        )

    async def _unmount_if_stale(self, target_path: str, target: VolumeTarget) -> None:
        if self.mounter.mount_of(target_path) is None:
            return
        health = await self.checker.check(target_path, resolve_device=self._resolver(target))
        if health.state is HealthState.STALE:
            log.warning("unmounting a stale publish before recovery", target=target_path)
            await self.mounter.unmount_all(target_path, lazy_fallback=True)

    # ---- NodeStageVolume -------------------------------------------------------------------

    async def node_stage_volume(
        self, message: csi.NodeStageVolumeRequest
    ) -> csi.NodeStageVolumeResponse:
        volume_id = _require(message.volume_id, "volume_id")
        spec = _spec(message.volume_capability)  # before the staging path: csi-sanity order
        staging = _absolute_path(message.staging_target_path, "staging_target_path")
        context = dict(message.volume_context)
        target = self._target(volume_id, context)
        await self._exclusive(
            volume_id,
            "NodeStageVolume",
            functools.partial(self._stage, volume_id, context, target, staging, spec),
        )
        return csi.NodeStageVolumeResponse()

    async def _stage(
        self,
        volume_id: str,
        context: Mapping[str, str],
        target: VolumeTarget,
        staging: str,
        spec: VolumeSpec,
    ) -> None:
        existing = self.mounter.mount_of(staging)
        if spec.block:
            if existing is not None:
                _fail(
                    Status.ALREADY_EXISTS,
                    f"{staging} holds a filesystem mount; the volume is staged as a filesystem",
                )
            await self._connect(volume_id, context, target)
            return
        if existing is not None:
            if existing.fs_type != spec.fs_type:
                _fail(
                    Status.ALREADY_EXISTS,
                    f"{staging} is already mounted as {existing.fs_type}, "
                    f"the volume capability asks for {spec.fs_type}",
                )
            await self._check_and_recover(volume_id, context, target, staging, spec)
            log.info("already staged", staging=staging)
            return
        was_attached = await self.connector.resolve_device(target) is not None
        device = await self._connect(volume_id, context, target)
        try:
            await self._format_and_mount(device, staging, spec)
        except HostError as err:
            await self.poster.post_mount_failure(volume_id, context, str(err))
            if not was_attached:
                await self._disconnect_quietly(target)
            raise
        self._recovery_pending.pop(staging, None)

    async def _format_and_mount(self, device: str, staging: str, spec: VolumeSpec) -> None:
        content = await self.mounter.probe_device(device)
        if content.empty:
            await self.mounter.format(device, spec.fs_type)
        elif content.fs_type != spec.fs_type:
            found = content.fs_type or f"a {content.partition_table} partition table"
            raise FormatRefused(
                f"{device} already holds {found}; the volume capability asks for {spec.fs_type}"
            )
        else:
            await self.mounter.check_filesystem(device, spec.fs_type)
        await self.mounter.make_mount_target(staging)
        await self.mounter.mount(device, staging, spec.fs_type, spec.mount_flags)

    async def _disconnect_quietly(self, target: VolumeTarget) -> None:
        try:
            await self.connector.disconnect(target)
            self.stats.connector_ops["disconnect", "ok"] += 1
        except HostError as err:
            self.stats.connector_ops["disconnect", "error"] += 1
            log.warning("disconnect after failed stage failed", error=str(err))

    # ---- NodeUnstageVolume -----------------------------------------------------------------

    async def node_unstage_volume(
        self, message: csi.NodeUnstageVolumeRequest
    ) -> csi.NodeUnstageVolumeResponse:
        volume_id = _require(message.volume_id, "volume_id")
        staging = _absolute_path(message.staging_target_path, "staging_target_path")
        await self._exclusive(
            volume_id, "NodeUnstageVolume", functools.partial(self._unstage, volume_id, staging)
        )
        return csi.NodeUnstageVolumeResponse()

    async def _unstage(self, volume_id: str, staging: str) -> None:
        self._recovery_pending.pop(staging, None)
        # mountinfo decides, never stat(): a corrupted mount must still come off.
        if self.mounter.is_mounted(staging):
            await self.mounter.unmount_all(staging, lazy_fallback=True)
        target = self.connector.target_for_volume_id(volume_id)
        if target is None:
            log.info("volume id does not name an attachment; nothing to disconnect")
            return
        device = await self.connector.resolve_device(target)
        if device is None:
            return
        users = await self.mounter.device_users(device)
        if users.in_use:
            _fail(
                Status.FAILED_PRECONDITION,
                f"{device} is still in use ({'; '.join(users.describe())}); not disconnecting",
            )
        try:
            await self.connector.disconnect(target)
        except DisconnectRefused as err:
            log.warning("disconnect refused", error=str(err))
            return
        except HostError:
            self.stats.connector_ops["disconnect", "error"] += 1
            raise
        self.stats.connector_ops["disconnect", "ok"] += 1

    # ---- NodePublishVolume -----------------------------------------------------------------

    async def node_publish_volume(
        self, message: csi.NodePublishVolumeRequest
    ) -> csi.NodePublishVolumeResponse:
        volume_id = _require(message.volume_id, "volume_id")
        target_path = _absolute_path(message.target_path, "target_path")
        spec = _spec(message.volume_capability)
        if not message.staging_target_path:
            _fail(
                Status.FAILED_PRECONDITION,
                "staging_target_path is required: the plugin has STAGE_UNSTAGE_VOLUME",
            )
        staging = _absolute_path(message.staging_target_path, "staging_target_path")
        context = dict(message.volume_context)
        target = self._target(volume_id, context)
        readonly = message.readonly or spec.read_only_mode
        await self._exclusive(
            volume_id,
            "NodePublishVolume",
            functools.partial(
                self._publish, volume_id, context, target, staging, target_path, spec, readonly
            ),
        )
        return csi.NodePublishVolumeResponse()

    async def _publish(
        self,
        volume_id: str,
        context: Mapping[str, str],
        target: VolumeTarget,
        staging: str,
        target_path: str,
        spec: VolumeSpec,
        readonly: bool,
    ) -> None:
        if spec.block:
            device = await self.connector.resolve_device(target)
            if device is None:
                _fail(
                    Status.FAILED_PRECONDITION,
                    f"volume {volume_id} has no block device on this node: stage it first",
                )
            source_number = await self.mounter.device_number(device)
        else:
            staged = self.mounter.mount_of(staging)
            if staged is None and self._recovery_pending.get(staging) != volume_id:
                _fail(Status.FAILED_PRECONDITION, f"volume {volume_id} is not staged at {staging}")
            await self._check_and_recover(
                volume_id, context, target, staging, spec, republish=target_path
            )
            staged = self.mounter.mount_of(staging)
            if staged is None:
                _fail(Status.INTERNAL, f"{staging} is not mounted after recovering it")
            device = staging
            source_number = staged.device_number

        existing = self.mounter.mount_of(target_path)
        replaced = False
        if existing is not None:
            replaced = await self._replace_stale_publish(
                volume_id, context, target, target_path, existing, spec, source_number
            )
            if not replaced:
                self._check_existing_publish(target_path, existing, readonly)
                log.info("already published", target=target_path)
                return
        if spec.single_writer_only:
            others = self._published_elsewhere(source_number, staging, target_path, spec)
            if others:
                _fail(
                    Status.FAILED_PRECONDITION,
                    f"volume {volume_id} is SINGLE_NODE_SINGLE_WRITER and already published at "
                    f"{others[0]}",
                )
        await self.mounter.make_mount_target(target_path, is_file=spec.block)
        await self.mounter.bind_mount(device, target_path, readonly=readonly)
        if replaced and spec.block:
            self.stats.stale_recovered += 1

    async def _replace_stale_publish(
        self,
        volume_id: str,
        context: Mapping[str, str],
        target: VolumeTarget,
        target_path: str,
        existing: MountInfo,
        spec: VolumeSpec,
        source_number: tuple[int, int],
    ) -> bool:
        """True when the target held a stale publish of this volume (the device it was bound
        from is gone or replaced) and has been unmounted, so that it can be bound again.

        kubelet publishes the same target again after the volume's device changed (e.g. when it
        remounts a pod's volumes); the staged mount is recovered above, but the old bind would
        otherwise stay behind it forever.  A healthy mount of something else is left alone.
        """
        if spec.block:
            try:
                if await self.mounter.device_number(target_path) == source_number:
                    return False
            except HostError:
                pass  # the node is unreadable: the checker says why
        elif existing.device_number == source_number:
            return False
        health = await self.checker.check(target_path, resolve_device=self._resolver(target))
        if health.state is not HealthState.STALE:
            _fail(
                Status.ALREADY_EXISTS,
                f"{target_path} is already mounted from another source ({existing.source})",
            )
        log.warning(
            "replacing a stale publish", volume=volume_id, target=target_path, why=health.message
        )
        if spec.block:
            # No staged mount to recover first: this is where a raw block volume's device
            # change shows (a filesystem's was reported when its staging mount was recovered).
            self.stats.stale_detected += 1
            await self.poster.post_stale_mount_detected(
                volume_id, context, health.old_device or "", health.new_device or ""
            )
        await self.mounter.unmount_all(target_path, lazy_fallback=True)
        return True

    @staticmethod
    def _check_existing_publish(target_path: str, existing: MountInfo, readonly: bool) -> None:
        if existing.read_only != readonly:
            mode = "read-only" if existing.read_only else "read-write"
            _fail(Status.ALREADY_EXISTS, f"{target_path} is already published {mode}")

    def _published_elsewhere(
        self, source: tuple[int, int], staging: str, target_path: str, spec: VolumeSpec
    ) -> list[str]:
        if spec.block:
            return []  # device-node binds are not attributable through mountinfo
        return [
            entry.mount_point
            for entry in self.mounter.mounts_of_device(source)
            if entry.mount_point not in (staging, target_path)
        ]

    # ---- NodeUnpublishVolume ---------------------------------------------------------------

    async def node_unpublish_volume(
        self, message: csi.NodeUnpublishVolumeRequest
    ) -> csi.NodeUnpublishVolumeResponse:
        volume_id = _require(message.volume_id, "volume_id")
        target_path = _absolute_path(message.target_path, "target_path")
        await self._exclusive(
            volume_id,
            "NodeUnpublishVolume",
            functools.partial(self.mounter.cleanup_mount_point, target_path),
        )
        return csi.NodeUnpublishVolumeResponse()

    # ---- NodeGetVolumeStats ----------------------------------------------------------------

    async def node_get_volume_stats(
        self, message: csi.NodeGetVolumeStatsRequest
    ) -> csi.NodeGetVolumeStatsResponse:
        volume_id = _require(message.volume_id, "volume_id")
        path = _volume_path(volume_id, message.volume_path)
        entry = self.mounter.mount_of(path)
        if entry is None:
            if await self._path_exists(path):
                _fail(Status.NOT_FOUND, f"volume {volume_id} is not mounted at {path}")
            _fail(Status.NOT_FOUND, f"volume {volume_id} does not exist at {path}")

        # Raw block publishes are checked too: their device node can outlive the device.
        target = self.connector.target_for_volume_id(volume_id)
        resolver = self._resolver(target) if target is not None else None
        try:
            health = await self.checker.check(path, resolve_device=resolver)
        except HostError as err:
            health = MountHealth(HealthState.UNRESPONSIVE, path, "check_failed", str(err))
        if health.abnormal:
            if health.state is HealthState.STALE:
                self.stats.stale_detected += 1
            return self._abnormal(health.message)
        try:
            if await self._is_block_device(path):
                size = await self.mounter.device_size(path)
                return csi.NodeGetVolumeStatsResponse(
                    usage=[csi.VolumeUsage(total=size, unit=csi.VolumeUsageUnit.BYTES)],
                    volume_condition=csi.VolumeCondition(abnormal=False, message=health.message),
                )
        except HostError as err:
            return self._abnormal(f"volume path {path} is not accessible: {err}")
        try:
            usage = await self.mounter.usage(path)
        except (HostError, OSError) as err:
            return self._abnormal(f"volume path {path} is not accessible: {err}")
        return csi.NodeGetVolumeStatsResponse(
            usage=[
                csi.VolumeUsage(
                    available=usage.available_bytes,
                    total=usage.total_bytes,
                    used=usage.used_bytes,
                    unit=csi.VolumeUsageUnit.BYTES,
                ),
                csi.VolumeUsage(
                    available=usage.available_inodes,
                    total=usage.total_inodes,
                    used=usage.used_inodes,
                    unit=csi.VolumeUsageUnit.INODES,
                ),
            ],
            volume_condition=csi.VolumeCondition(abnormal=False, message=health.message),
        )

    @staticmethod
    def _abnormal(reason: str) -> csi.NodeGetVolumeStatsResponse:
        return csi.NodeGetVolumeStatsResponse(
            usage=[], volume_condition=csi.VolumeCondition(abnormal=True, message=reason)
        )

    async def _path_exists(self, path: str) -> bool:
        try:
            await self.mounter.prober.lstat(path)
        except FileNotFoundError:
            return False
        except (OSError, HostError):
            return True  # present but unreadable: a broken mount, not a missing path
        return True

    async def _is_block_device(self, path: str) -> bool:
        """A published raw block volume is a device node bind-mounted onto a file."""
        try:
            st = await self.mounter.prober.stat(path)
        except OSError:
            return False  # unreadable: the stale checker says why
        return stat.S_ISBLK(st.st_mode)

    # ---- NodeExpandVolume ------------------------------------------------------------------

    async def node_expand_volume(
        self, message: csi.NodeExpandVolumeRequest
    ) -> csi.NodeExpandVolumeResponse:
        volume_id = _require(message.volume_id, "volume_id")
        _require(message.volume_path, "volume_path")
        if message.volume_capability is not None:
            _spec(message.volume_capability)
        path = _volume_path(volume_id, message.volume_path)
        required = message.capacity_range.required_bytes if message.capacity_range else 0
        limit = message.capacity_range.limit_bytes if message.capacity_range else 0
        if required < 0 or limit < 0 or (limit and required > limit):
            _fail(Status.INVALID_ARGUMENT, "capacity_range is not a valid range")
        capacity = await self._exclusive(
            volume_id,
            "NodeExpandVolume",
            functools.partial(self._expand, volume_id, path, required, limit),
        )
        return csi.NodeExpandVolumeResponse(capacity_bytes=capacity)

    async def _expand(self, volume_id: str, path: str, required: int, limit: int) -> int:
        entry = self.mounter.mount_of(path)
        if entry is None:
            _fail(Status.NOT_FOUND, f"volume {volume_id} is not mounted at {path}")
        target = self.connector.target_for_volume_id(volume_id)
        if target is not None:
            await self.connector.rescan(target)
        if await self._is_block_device(path):
            size = await self.mounter.device_size(path)
            self._check_range(size, required, limit)
            return size
        device = entry.source
        size = await self.mounter.device_size(device)
        self._check_range(size, required, limit)
        await self.mounter.resize(device, path, entry.fs_type)
        return size

    @staticmethod
    def _check_range(size: int, required: int, limit: int) -> None:
        if required and size < required:
            _fail(
                Status.OUT_OF_RANGE,
                f"the device is {size} bytes, smaller than the {required} bytes required: "
                "expand the volume on the storage first",
            )
        if limit and size > limit:
            _fail(Status.OUT_OF_RANGE, f"the device is {size} bytes, over the {limit} byte limit")

    # ---- capabilities and info -------------------------------------------------------------

    async def node_get_capabilities(
        self, message: csi.NodeGetCapabilitiesRequest
    ) -> csi.NodeGetCapabilitiesResponse:
        return csi.NodeGetCapabilitiesResponse(
            capabilities=[
                csi.NodeServiceCapability(rpc=csi.NodeServiceCapabilityRpc(type=cap))
                for cap in _CAPABILITIES
            ]
        )

    async def node_get_info(self, message: csi.NodeGetInfoRequest) -> csi.NodeGetInfoResponse:
        return csi.NodeGetInfoResponse(
            node_id=self.node_id,
            max_volumes_per_node=0,
            accessible_topology=csi.Topology(segments={TOPOLOGY_ZONE_KEY: self.zone}),
        )
