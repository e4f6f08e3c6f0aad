"""The default connector: NVMe over TCP with nvme-cli, devices resolved from sysfs by NQN.

volume_context keys are those the rds-csi controller writes: nqn, nvmeAddress (falling back to
rdsAddress), nvmePort, ctrlLossTmo, reconnectDelay, keepAliveTmo.

Disconnect is guarded by the managed NQN prefix: a node may boot from NVMe/TCP itself (diskless
nodes mount /var that way), and disconnecting that subsystem takes the node down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from rds_csi import RDS_NQN_BASE
from rds_csi.host.connectors.base import OrphanCleanup, VolumeTarget
from rds_csi.host.connectors.nvme_sysfs import NvmeSysfs
from rds_csi.host.connectors.validation import parse_address, parse_int, parse_port, validate_nqn
from rds_csi.host.errors import (
    CommandFailed,
    CommandTimeout,
    ConnectError,
    DeviceNotFound,
    DisconnectRefused,
    HostError,
    InvalidInput,
)
from rds_csi.host.runner import CommandRunner

__all__ = [
    "DEFAULT_MANAGED_NQN_PREFIX",
    "RDS_NQN_BASE",
    "NvmeTcpConfig",
    "NvmeTcpConnector",
    "NvmeTcpTarget",
    "build_connect_argv",
    "parse_nvme_tcp_target",
]

log = structlog.get_logger(__name__)

DEFAULT_MANAGED_NQN_PREFIX = RDS_NQN_BASE
DEFAULT_PORT = 4420
DEFAULT_CTRL_LOSS_TMO = -1  # reconnect forever: a lost controller must not turn the fs read-only
DEFAULT_RECONNECT_DELAY = 5
EALREADY = 114

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class NvmeTcpTarget:
    nqn: str
    address: str | None  # None: built from a volume ID only (enough to resolve and disconnect)
    port: int = DEFAULT_PORT
    ctrl_loss_tmo: int = DEFAULT_CTRL_LOSS_TMO
    reconnect_delay: int = DEFAULT_RECONNECT_DELAY
    keep_alive_tmo: int | None = None

    @property
    def key(self) -> str:
        return self.nqn

    def describe(self) -> str:
        where = f"{self.address}:{self.port}" if self.address else "unknown portal"
        return f"{self.nqn} at {where}"

    def to_volume_context(self) -> dict[str, str]:
        context = {
            "nqn": self.nqn,
            "nvmePort": str(self.port),
            "ctrlLossTmo": str(self.ctrl_loss_tmo),
            "reconnectDelay": str(self.reconnect_delay),
        }
        if self.address:
            context["nvmeAddress"] = self.address
        if self.keep_alive_tmo is not None:
            context["keepAliveTmo"] = str(self.keep_alive_tmo)
        return context


def parse_nvme_tcp_target(volume_context: Mapping[str, str]) -> NvmeTcpTarget:
    """Validate the rds-csi volume_context keys (pure: runs before any command)."""
    nqn = validate_nqn(volume_context.get("nqn", ""), "nqn")
    address_key = "nvmeAddress" if volume_context.get("nvmeAddress") else "rdsAddress"
    raw_address = volume_context.get(address_key, "")
    if not raw_address:
        raise InvalidInput("volume_context['nvmeAddress'] (or 'rdsAddress') is required")
    address = parse_address(raw_address, address_key)
    port = parse_port(volume_context.get("nvmePort"), "nvmePort", default=DEFAULT_PORT)
    ctrl_loss = parse_int(
        volume_context.get("ctrlLossTmo"),
        "ctrlLossTmo",
        default=DEFAULT_CTRL_LOSS_TMO,
        low=-1,
        high=31_536_000,
    )
    delay = parse_int(
        volume_context.get("reconnectDelay"),
        "reconnectDelay",
        default=DEFAULT_RECONNECT_DELAY,
        low=1,
        high=3600,
    )
    keep_alive = parse_int(
        volume_context.get("keepAliveTmo"), "keepAliveTmo", default=None, low=1, high=3600
    )
    assert ctrl_loss is not None and delay is not None
    return NvmeTcpTarget(
        nqn=nqn,
        address=address,
        port=port,
        ctrl_loss_tmo=ctrl_loss,
        reconnect_delay=delay,
        keep_alive_tmo=keep_alive,
    )


def build_connect_argv(target: NvmeTcpTarget) -> list[str]:
    if target.address is None:
        raise InvalidInput(f"cannot connect {target.nqn}: no nvmeAddress known")
    argv = [
        "nvme",
        "connect",
        "-t",
        "tcp",
        "-a",
        target.address,
        "-s",
        str(target.port),
        "-n",
        target.nqn,
        "-l",
        str(target.ctrl_loss_tmo),
        "-c",
        str(target.reconnect_delay),
    ]
    if target.keep_alive_tmo is not None:
        argv += ["-k", str(target.keep_alive_tmo)]
    return argv


def _already_connected(exc: CommandFailed) -> bool:
    text = exc.stderr.lower()
    return (
        exc.returncode == EALREADY
        or "already connected" in text
        or "operation already in progress" in text
    )


@dataclass(frozen=True, slots=True)
class NvmeTcpConfig:
    managed_nqn_prefix: str = DEFAULT_MANAGED_NQN_PREFIX
    connect_timeout: float = 30.0
    disconnect_timeout: float = 15.0
    rescan_timeout: float = 15.0
    # How long to wait for the block device to appear after a successful connect.
    device_timeout: float = 30.0
    poll_initial: float = 0.05
    poll_max: float = 1.0
    # How long to wait for the subsystem to leave sysfs after a disconnect (not an error).
    disconnect_wait: float = 5.0
    # A connected subsystem without a block device: disconnect and connect once more.
    reconnect_orphaned: bool = True


class NvmeTcpConnector:
    name = "nvme-tcp"

    def __init__(
        self,
        runner: CommandRunner,
        *,
        sys_root: str = "/sys",
        dev_root: str = "/dev",
        config: NvmeTcpConfig | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.runner = runner
        self.config = config or NvmeTcpConfig()
        self.sysfs = NvmeSysfs(sys_root, dev_root)
        self._sleep = sleep

    def required_tools(self) -> list[str]:
        return ["nvme"]

    def is_managed(self, nqn: str) -> bool:
        return nqn.startswith(self.config.managed_nqn_prefix)

    def parse_target(self, volume_id: str, volume_context: Mapping[str, str]) -> NvmeTcpTarget:
        return parse_nvme_tcp_target(volume_context)

    def target_for_volume_id(self, volume_id: str) -> NvmeTcpTarget | None:
        """The rds-csi convention: nqn = RDS_NQN_BASE + volume ID.

        Independent of the managed prefix, so that an operator can narrow the disconnect guard
        (e.g. to "...mikrotik:pvc-" when nodes boot from the same appliance) without changing
        which NQN a volume id names.
        """
        try:
            nqn = validate_nqn(RDS_NQN_BASE + volume_id, "nqn")
        except InvalidInput:
            return None
        return NvmeTcpTarget(nqn=nqn, address=None)

    @staticmethod
    def _target(target: VolumeTarget) -> NvmeTcpTarget:
        if not isinstance(target, NvmeTcpTarget):
            raise InvalidInput(f"the nvme-tcp connector cannot handle {target.describe()}")
        return target

    async def resolve_device(self, target: VolumeTarget) -> str | None:
        return self.sysfs.device_path(self._target(target).nqn)

    async def connect(self, target: VolumeTarget) -> str:
        nvme_target = self._target(target)
        existing = await self.resolve_device(nvme_target)
        if existing is not None:
            log.info("nvme_already_attached", nqn=nvme_target.nqn, device=existing)
            return existing
        await self._connect_once(nvme_target)
        try:
            return await self._wait_for_device(nvme_target)
        except DeviceNotFound:
            subsystem = self.sysfs.find(nvme_target.nqn)
            if not (
                self.config.reconnect_orphaned
                and subsystem is not None
                and not subsystem.block_devices
                and self.is_managed(nvme_target.nqn)
            ):
                raise
        # Connected, but no namespace ever showed up: a half-dead controller from an earlier
        # life of this volume.  Start over once.
        log.warning("nvme_orphaned_subsystem_reconnect", nqn=nvme_target.nqn)
        await self._disconnect_command(nvme_target.nqn)
        await self._connect_once(nvme_target)
        return await self._wait_for_device(nvme_target)

    async def _connect_once(self, target: NvmeTcpTarget) -> None:
        argv = build_connect_argv(target)
        try:
            await self.runner.run(argv, timeout=self.config.connect_timeout)
        except CommandFailed as exc:
            if not _already_connected(exc):
                raise ConnectError(
                    f"nvme connect to {target.address}:{target.port} for {target.nqn} failed: {exc}"
                ) from exc
            log.info("nvme_connect_already_connected", nqn=target.nqn)
        except CommandTimeout as exc:
            raise ConnectError(
                f"nvme connect to {target.address}:{target.port} for {target.nqn} timed out "
                f"after {exc.timeout:g} s"
            ) from exc
        else:
            log.info("nvme_connected", nqn=target.nqn, address=target.address, port=target.port)

    async def _wait_for_device(self, target: NvmeTcpTarget) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.device_timeout
        delay = self.config.poll_initial
        while True:
            device = self.sysfs.device_path(target.nqn)
            if device is not None:
                return device
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeviceNotFound(
                    f"no block device for {target.nqn} appeared within "
                    f"{self.config.device_timeout:g} s after nvme connect"
                )
            await self._sleep(min(delay, remaining))
            delay = min(delay * 2, self.config.poll_max)

    async def disconnect(self, target: VolumeTarget) -> None:
        nqn = self._target(target).nqn
        if not self.is_managed(nqn):
            raise DisconnectRefused(
                f"refusing to disconnect {nqn}: it does not start with the managed prefix "
                f"{self.config.managed_nqn_prefix!r}"
            )
        if self.sysfs.find(nqn) is None:
            log.debug("nvme_disconnect_not_connected", nqn=nqn)
            return
        await self._disconnect_command(nqn)
        await self._wait_gone(nqn)

    async def _disconnect_command(self, nqn: str) -> None:
        if not self.is_managed(nqn):  # the one place that runs nvme disconnect
            raise DisconnectRefused(f"refusing to disconnect unmanaged {nqn}")
        await self.runner.run(
            ["nvme", "disconnect", "-n", nqn], timeout=self.config.disconnect_timeout
        )
        log.info("nvme_disconnected", nqn=nqn)

    async def _wait_gone(self, nqn: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.disconnect_wait
        delay = self.config.poll_initial
        while self.sysfs.find(nqn) is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("nvme_subsystem_lingers_after_disconnect", nqn=nqn)
                return
            await self._sleep(min(delay, remaining))
            delay = min(delay * 2, self.config.poll_max)

    async def rescan(self, target: VolumeTarget) -> None:
        """nvme ns-rescan on every controller of the subsystem (picks up a grown namespace)."""
        nqn = self._target(target).nqn
        subsystem = self.sysfs.find(nqn)
        if subsystem is None or not subsystem.controllers:
            raise DeviceNotFound(f"{nqn} is not connected")
        for controller in subsystem.controllers:
            device = f"{self.sysfs.dev_root.rstrip('/')}/{controller}"
            await self.runner.run(["nvme", "ns-rescan", device], timeout=self.config.rescan_timeout)

    async def cleanup_orphans(self) -> OrphanCleanup:
        """Disconnect managed subsystems that have no block device; leave all others alone."""
        report = OrphanCleanup()
        for subsystem in self.sysfs.subsystems():
            if not self.is_managed(subsystem.nqn) or subsystem.block_devices:
                report.skipped.append(subsystem.nqn)
                continue
            try:
                await self._disconnect_command(subsystem.nqn)
            except HostError as exc:
                report.failed[subsystem.nqn] = str(exc)
                log.warning("nvme_orphan_disconnect_failed", nqn=subsystem.nqn, error=str(exc))
            else:
                report.detached.append(subsystem.nqn)
        log.info(
            "nvme_orphan_cleanup",
            detached=report.detached,
            skipped=len(report.skipped),
            failed=list(report.failed),
        )
        return report
