"""rds-csi: a CSI node plugin for MikroTik RDS storage over NVMe/TCP."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rds-csi")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+unknown"

DEFAULT_DRIVER_NAME = "rds.csi.srvlab.io"

__all__ = ["DEFAULT_DRIVER_NAME", "__version__"]
