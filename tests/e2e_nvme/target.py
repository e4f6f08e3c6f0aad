"""The kernel NVMe-oF target (nvmet) driven through configfs, for the guest test.

It plays the RDS appliance: subsystems with MikroTik-shaped NQNs, namespaces backed by RAM or loop
disks, and a TCP port. The methods that take things away (a namespace, a port link, a whole port)
exist so the guest test can pull storage out from under a mounted volume and give it back, which is
how a stale mount happens in production.

configfs rules this follows: mkdir creates an object, rmdir removes it; a namespace is configured
(device_path) before it is enabled; a subsystem is exposed on a port by a symlink in
`ports/<id>/subsystems/`, and every such link must go before the port or subsystem can be removed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NVMET_ROOT", "NvmetTarget", "Port"]

NVMET_ROOT = Path("/sys/kernel/config/nvmet")


@dataclass(frozen=True)
class Port:
    port_id: int
    traddr: str = "127.0.0.1"
    trsvcid: int = 4420
    adrfam: str = "ipv4"


class NvmetTarget:
    """Thin, explicit wrapper over `/sys/kernel/config/nvmet`; it keeps no state of its own."""

    def __init__(self, root: Path = NVMET_ROOT) -> None:
        if not root.is_dir():
            raise RuntimeError(f"{root} missing: is configfs mounted and nvmet loaded?")
        self.root = root

    # --- subsystems ----------------------------------------------------------------------------

    def subsystem_dir(self, nqn: str) -> Path:
        return self.root / "subsystems" / nqn

    def add_subsystem(self, nqn: str, *, allow_any_host: bool = True) -> Path:
        path = self.subsystem_dir(nqn)
        path.mkdir(exist_ok=True)
        (path / "attr_allow_any_host").write_text("1" if allow_any_host else "0")
        return path

    def remove_subsystem(self, nqn: str) -> None:
        path = self.subsystem_dir(nqn)
        if not path.exists():
            return
        for port_dir in (self.root / "ports").iterdir():
            link = port_dir / "subsystems" / nqn
            if link.is_symlink():
                link.unlink()
        for nsid in self.namespace_ids(nqn):
            self.remove_namespace(nqn, nsid)
        path.rmdir()

    def subsystems(self) -> list[str]:
        return sorted(p.name for p in (self.root / "subsystems").iterdir())

    # --- namespaces ----------------------------------------------------------------------------

    def namespace_dir(self, nqn: str, nsid: int) -> Path:
        return self.subsystem_dir(nqn) / "namespaces" / str(nsid)

    def namespace_ids(self, nqn: str) -> list[int]:
        return sorted(int(p.name) for p in (self.subsystem_dir(nqn) / "namespaces").iterdir())

    def add_namespace(self, nqn: str, nsid: int, device_path: str, *, enable: bool = True) -> Path:
        """Export device_path (absolute: a block device or a file) as namespace nsid."""
        if not os.path.isabs(device_path):
            raise ValueError(f"nvmet needs an absolute device path, got {device_path!r}")
        path = self.namespace_dir(nqn, nsid)
        path.mkdir(exist_ok=True)
        (path / "device_path").write_text(device_path)
        if enable:
            self.set_namespace_enabled(nqn, nsid, True)
        return path

    def set_namespace_enabled(self, nqn: str, nsid: int, enabled: bool) -> None:
        """Disabling takes the namespace away from connected hosts without deleting it."""
        (self.namespace_dir(nqn, nsid) / "enable").write_text("1" if enabled else "0")

    def namespace_enabled(self, nqn: str, nsid: int) -> bool:
        return (self.namespace_dir(nqn, nsid) / "enable").read_text().strip() == "1"

    def remove_namespace(self, nqn: str, nsid: int) -> None:
        path = self.namespace_dir(nqn, nsid)
        if path.exists():
            if self.namespace_enabled(nqn, nsid):
                self.set_namespace_enabled(nqn, nsid, False)
            path.rmdir()

    # --- ports ---------------------------------------------------------------------------------

    def port_dir(self, port_id: int) -> Path:
        return self.root / "ports" / str(port_id)

    def add_port(self, port: Port) -> Path:
        """Create the port; an existing one must already match (nvmet refuses to change an
        enabled port's address)."""
        path = self.port_dir(port.port_id)
        wanted = {
            "addr_trtype": "tcp",
            "addr_adrfam": port.adrfam,
            "addr_traddr": port.traddr,
            "addr_trsvcid": str(port.trsvcid),
        }
        if path.exists():
            actual = {name: (path / name).read_text().strip() for name in wanted}
            if actual != wanted:
                raise RuntimeError(f"port {port.port_id} exists as {actual}, wanted {wanted}")
            return path
        path.mkdir()
        for name, value in wanted.items():
            (path / name).write_text(value)
        return path

    def remove_port(self, port_id: int) -> None:
        """Close the listener: connected hosts lose their controllers and start reconnecting."""
        path = self.port_dir(port_id)
        if not path.exists():
            return
        for link in (path / "subsystems").iterdir():
            link.unlink()
        path.rmdir()

    def expose(self, port_id: int, nqn: str) -> None:
        link = self.port_dir(port_id) / "subsystems" / nqn
        if not link.is_symlink():
            link.symlink_to(self.subsystem_dir(nqn))

    def unexpose(self, port_id: int, nqn: str) -> None:
        """Take one subsystem off the port: its host controllers are torn down by the target."""
        link = self.port_dir(port_id) / "subsystems" / nqn
        if link.is_symlink():
            link.unlink()

    def exposed(self, port_id: int) -> list[str]:
        return sorted(p.name for p in (self.port_dir(port_id) / "subsystems").iterdir())

    def ports(self) -> list[int]:
        return sorted(int(p.name) for p in (self.root / "ports").iterdir())

    # --- whole target --------------------------------------------------------------------------

    def teardown(self) -> None:
        """Remove every port and subsystem (ports first: links pin subsystems)."""
        for port_id in self.ports():
            self.remove_port(port_id)
        for nqn in self.subsystems():
            self.remove_subsystem(nqn)
