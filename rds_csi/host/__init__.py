"""The host layer: connectors that attach volumes, the mounter, and stale-mount detection.

Nothing in here knows about gRPC or CSI messages; errors are plain Python exceptions that the
CSI layer maps to status codes.

Wiring (one of each per process, injected into the node service):
    runner = CommandRunner()                          # every tool runs with a timeout
    prober = Prober(timeout=5.0)                      # probes of possibly dead paths
    mounter = Mounter(runner, prober)
    connector = NvmeTcpConnector(runner)              # or LoopConnector(runner, backing_dir=...)
    checker = StaleChecker(mounter)
    recoverer = MountRecoverer(mounter)
"""

from rds_csi.host.connectors import (
    Connector,
    LoopConnector,
    LoopTarget,
    NvmeTcpConfig,
    NvmeTcpConnector,
    NvmeTcpTarget,
    OrphanCleanup,
    VolumeTarget,
)
from rds_csi.host.devices import DeviceUsers, ProcessUse
from rds_csi.host.errors import (
    AlreadyMounted,
    CommandFailed,
    CommandTimeout,
    ConnectError,
    DeviceBusy,
    DeviceNotFound,
    DisconnectRefused,
    FilesystemNeedsRepair,
    FormatRefused,
    HostError,
    InvalidInput,
    MountError,
    ProbeTimeout,
    ToolNotFound,
)
from rds_csi.host.filesystem import DeviceContent
from rds_csi.host.mounter import FsckReport, Mounter, MounterTimeouts, VolumeUsage
from rds_csi.host.mountinfo import MountInfo
from rds_csi.host.probes import Prober
from rds_csi.host.recovery import MountRecoverer, RecoveryResult
from rds_csi.host.runner import CommandResult, CommandRunner
from rds_csi.host.stale import DeviceResolver, HealthState, MountHealth, StaleChecker

__all__ = [
    "AlreadyMounted",
    "CommandFailed",
    "CommandResult",
    "CommandRunner",
    "CommandTimeout",
    "ConnectError",
    "Connector",
    "DeviceBusy",
    "DeviceContent",
    "DeviceNotFound",
    "DeviceResolver",
    "DeviceUsers",
    "DisconnectRefused",
    "FilesystemNeedsRepair",
    "FormatRefused",
    "FsckReport",
    "HealthState",
    "HostError",
    "InvalidInput",
    "LoopConnector",
    "LoopTarget",
    "MountError",
    "MountHealth",
    "MountInfo",
    "MountRecoverer",
    "Mounter",
    "MounterTimeouts",
    "NvmeTcpConfig",
    "NvmeTcpConnector",
    "NvmeTcpTarget",
    "OrphanCleanup",
    "ProbeTimeout",
    "Prober",
    "ProcessUse",
    "RecoveryResult",
    "StaleChecker",
    "ToolNotFound",
    "VolumeTarget",
    "VolumeUsage",
]
