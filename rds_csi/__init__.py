"""rds-csi: a CSI node plugin for MikroTik RDS storage over NVMe/TCP."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rds-csi")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+unknown"

DEFAULT_DRIVER_NAME = "rds.csi.srvlab.io"
# The rds-csi controller names every subsystem RDS_NQN_BASE + volume id.  Here, not in the
# connector, so that the CLI can offer it as a default without importing the host layer.
RDS_NQN_BASE = "nqn.2000-02.com.mikrotik:"

__all__ = ["DEFAULT_DRIVER_NAME", "RDS_NQN_BASE", "__version__"]
