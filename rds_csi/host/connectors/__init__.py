"""Connectors attach a volume to this node and find its block device.

nvme-tcp is the production connector; loop runs the same CSI cycle on any Linux host (CI, demos).
"""

from rds_csi.host.connectors.base import Connector, OrphanCleanup, VolumeTarget
from rds_csi.host.connectors.loop import LoopConnector, LoopTarget
from rds_csi.host.connectors.nvme_tcp import (
    DEFAULT_MANAGED_NQN_PREFIX,
    NvmeTcpConfig,
    NvmeTcpConnector,
    NvmeTcpTarget,
)

__all__ = [
    "CONNECTOR_NAMES",
    "DEFAULT_MANAGED_NQN_PREFIX",
    "Connector",
    "LoopConnector",
    "LoopTarget",
    "NvmeTcpConfig",
    "NvmeTcpConnector",
    "NvmeTcpTarget",
    "OrphanCleanup",
    "VolumeTarget",
]

CONNECTOR_NAMES = (NvmeTcpConnector.name, LoopConnector.name)
