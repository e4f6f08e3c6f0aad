"""Command line: flags and environment -> a validated `Config`, then the daemon.

Every bad flag or value ends the process with exit status 2 and one readable line on stderr,
before anything touches the host.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from rds_csi import DEFAULT_DRIVER_NAME, RDS_NQN_BASE, __version__

DEFAULT_ENDPOINT = f"unix:///var/lib/kubelet/plugins/{DEFAULT_DRIVER_NAME}/csi.sock"
CONNECTORS = ("nvme-tcp", "loop")
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
EVENT_APIS = ("core/v1", "events.k8s.io/v1")

# CSI GetPluginInfo: at most 63 characters, alphanumeric at both ends, '-', '.', '_' inside.
_DRIVER_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_MAX_NODE_ID_BYTES = 256


@dataclass(frozen=True)
class Config:
    socket_path: Path
    node_id: str
    driver_name: str
    kubeconfig: Path | None
    log_format: str
    log_level: str
    connector: str
    managed_nqn_prefix: str
    event_api: str
    metrics_address: tuple[str, int] | None
    shutdown_grace: float
    event_flush_timeout: float
    topology_zone: str
    loop_backing_dir: Path | None


class UsageError(Exception):
    """A flag or value that the daemon cannot start with."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rds-csi-node",
        description="CSI node plugin for MikroTik RDS volumes over NVMe/TCP.",
    )
    add = parser.add_argument
    add("--version", action="version", version=f"%(prog)s {__version__}")
    add(
        "--endpoint",
        default=env.get("CSI_ENDPOINT", DEFAULT_ENDPOINT),
        help="CSI socket, unix:///path only (env CSI_ENDPOINT; default %(default)s)",
    )
    add(
        "--node-id",
        default=env.get("NODE_ID") or socket.gethostname(),
        help="node name reported to the CO and used in event messages (env NODE_ID; "
        "default: the host name)",
    )
    add("--driver-name", default=DEFAULT_DRIVER_NAME, help="CSI driver name (%(default)s)")
    add(
        "--kubeconfig",
        default=env.get("KUBECONFIG") or None,
        help="kubeconfig for posting events (env KUBECONFIG); in a pod the in-cluster "
        "config is used; with neither, events are only logged",
    )
    add(
        "--log-format",
        choices=LOG_FORMATS,
        default="console" if sys.stdout.isatty() else "json",
        help="json (default when stdout is not a terminal) or console",
    )
    add("--log-level", choices=LOG_LEVELS, default="info")
    add(
        "--connector",
        choices=CONNECTORS,
        default="nvme-tcp",
        help="how volumes are attached: nvme-tcp (production) or loop (backing files, for "
        "tests and demos)",
    )
    add(
        "--managed-nqn-prefix",
        default=env.get("RDS_MANAGED_NQN_PREFIX", RDS_NQN_BASE),
        help="only NVMe subsystems with this NQN prefix are ever disconnected "
        "(env RDS_MANAGED_NQN_PREFIX; default %(default)s)",
    )
    add(
        "--event-api",
        choices=EVENT_APIS,
        default="core/v1",
        help="API group the Kubernetes events are written to (default %(default)s)",
    )
    add(
        "--metrics-address",
        default=env.get("METRICS_ADDRESS") or None,
        help="host:port for the Prometheus endpoint (env METRICS_ADDRESS; off by default)",
    )
    add(
        "--shutdown-grace",
        type=float,
        default=20.0,
        help="seconds that in-flight RPCs get to finish on SIGTERM (%(default)s)",
    )
    add(
        "--topology-zone",
        default=env.get("RDS_TOPOLOGY_ZONE", "default"),
        help="value of topology.rds.csi.srvlab.io/zone in NodeGetInfo (env RDS_TOPOLOGY_ZONE; "
        "default %(default)s)",
    )
    add(
        "--loop-backing-dir",
        default=None,
        help="loop connector: directory holding <volume id>.img backing files, so that "
        "NodeUnstageVolume can find a volume from its id alone",
    )
    add(
        "--event-flush-timeout",
        type=float,
        default=5.0,
        help="seconds the event pipeline gets on shutdown to write what it holds (%(default)s)",
    )
    return parser


def _socket_path(endpoint: str) -> Path:
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme != "unix":
        raise UsageError(f"--endpoint {endpoint!r}: only unix:///absolute/path.sock is supported")
    path = Path(rest)
    if not rest or not path.is_absolute():
        raise UsageError(f"--endpoint {endpoint!r}: the socket path must be absolute")
    if not path.parent.is_dir():
        raise UsageError(f"--endpoint {endpoint!r}: directory {path.parent} does not exist")
    if path.exists() and not path.is_socket():
        raise UsageError(f"--endpoint {endpoint!r}: {path} exists and is not a socket")
    return path


def _metrics_address(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--metrics-address {value!r}: expected host:port, e.g. 0.0.0.0:9809")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an explicit operator choice


def parse_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Config:
    """Parse and validate; raises SystemExit(2) with one line for any bad input."""
    environ = os.environ if env is None else env
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    try:
        node_id = str(args.node_id).strip()
        if not node_id:
            raise UsageError("--node-id must not be empty")
        if len(node_id.encode()) > _MAX_NODE_ID_BYTES:
            raise UsageError(f"--node-id is longer than {_MAX_NODE_ID_BYTES} bytes")
        if not _DRIVER_NAME.match(args.driver_name):
            raise UsageError(
                f"--driver-name {args.driver_name!r}: at most 63 characters, letters, digits, "
                "'-', '.', '_', starting and ending with a letter or digit"
            )
        kubeconfig = Path(args.kubeconfig) if args.kubeconfig else None
        if kubeconfig is not None and not kubeconfig.is_file():
            raise UsageError(f"--kubeconfig {kubeconfig}: no such file")
        if not args.managed_nqn_prefix.startswith("nqn."):
            raise UsageError(
                f"--managed-nqn-prefix {args.managed_nqn_prefix!r}: must start with 'nqn.'"
            )
        if not 0 < args.shutdown_grace <= 300:
            raise UsageError("--shutdown-grace must be between 0 and 300 seconds")
        if not 0 < args.event_flush_timeout <= 300:
            raise UsageError("--event-flush-timeout must be between 0 and 300 seconds")
        loop_dir = Path(args.loop_backing_dir) if args.loop_backing_dir else None
        if loop_dir is not None and not (loop_dir.is_absolute() and loop_dir.is_dir()):
            raise UsageError(f"--loop-backing-dir {loop_dir}: not an existing absolute directory")
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?", args.topology_zone):
            raise UsageError(f"--topology-zone {args.topology_zone!r}: not a valid label value")
        return Config(
            socket_path=_socket_path(args.endpoint),
            node_id=node_id,
            driver_name=args.driver_name,
            kubeconfig=kubeconfig,
            log_format=args.log_format,
            log_level=args.log_level,
            connector=args.connector,
            managed_nqn_prefix=args.managed_nqn_prefix,
            event_api=args.event_api,
            metrics_address=_metrics_address(args.metrics_address),
            shutdown_grace=args.shutdown_grace,
            event_flush_timeout=args.event_flush_timeout,
            topology_zone=args.topology_zone,
            loop_backing_dir=loop_dir,
        )
    except UsageError as err:
        parser.error(str(err))


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(sys.argv[1:] if argv is None else argv)
    from rds_csi.daemon import run  # imported late: --help and bad flags stay fast

    return run(config)


if __name__ == "__main__":
    sys.exit(main())
