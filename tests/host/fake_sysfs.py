"""Builds the sysfs and /dev entries the kernel creates for NVMe-oF subsystems, in a tmp dir.

Imported by the tests and by the recording `nvme` stand-in (which runs as its own process), so
this module uses only the standard library.  The layout follows the kernel's:
* /sys/devices/virtual/nvme-subsystem/nvme-subsys<S>/{subsysnqn, nvme<C> -> controller,
  nvme<S>n<N>/} with /sys/class/nvme-subsystem/nvme-subsys<S> -> that directory;
* /sys/devices/virtual/nvme-fabrics/ctl/nvme<C>/{subsysnqn, transport, state,
  nvme<S>c<C>n<N>/ (multipath) or nvme<C>n<N>/ (no multipath)} with /sys/class/nvme/nvme<C>.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SUBSYS_DEVICES = Path("devices/virtual/nvme-subsystem")
CTRL_DEVICES = Path("devices/virtual/nvme-fabrics/ctl")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent))


def add_subsystem(
    sys_root: Path,
    dev_root: Path,
    *,
    subsys: int,
    nqn: str,
    controllers: list[int],
    namespaces: list[int] | None = None,
    multipath: bool = True,
    dev_nodes: bool = True,
) -> None:
    """One subsystem with its controllers and namespaces (namespaces=[] makes an orphan)."""
    namespaces = [1] if namespaces is None else namespaces
    subsys_dir = sys_root / SUBSYS_DEVICES / f"nvme-subsys{subsys}"
    _write(subsys_dir / "subsysnqn", nqn + "\n")
    _link(sys_root / "class/nvme-subsystem" / f"nvme-subsys{subsys}", subsys_dir)
    dev_root.mkdir(parents=True, exist_ok=True)
    for ctrl in controllers:
        ctrl_dir = sys_root / CTRL_DEVICES / f"nvme{ctrl}"
        _write(ctrl_dir / "subsysnqn", nqn + "\n")
        _write(ctrl_dir / "transport", "tcp\n")
        _write(ctrl_dir / "state", "live\n")
        _link(sys_root / "class/nvme" / f"nvme{ctrl}", ctrl_dir)
        _link(subsys_dir / f"nvme{ctrl}", ctrl_dir)
        if dev_nodes:
            (dev_root / f"nvme{ctrl}").write_text("")  # the controller's char device
        for ns in namespaces:
            if multipath:
                _write(ctrl_dir / f"nvme{subsys}c{ctrl}n{ns}" / "dev", f"259:{ns}\n")
            else:
                _write(ctrl_dir / f"nvme{ctrl}n{ns}" / "dev", f"259:{ns}\n")
                if dev_nodes:
                    (dev_root / f"nvme{ctrl}n{ns}").write_text("")
    if multipath:
        for ns in namespaces:
            _write(subsys_dir / f"nvme{subsys}n{ns}" / "dev", f"259:{100 + ns}\n")
            if dev_nodes:
                (dev_root / f"nvme{subsys}n{ns}").write_text("")


def _nqn_of(directory: Path) -> str | None:
    try:
        return (directory / "subsysnqn").read_text().strip()
    except OSError:
        return None


def _namespace_dirs(directory: Path) -> list[Path]:
    # The only real directories under a controller or subsystem are namespaces.
    return [c for c in directory.iterdir() if c.is_dir() and not c.is_symlink()]


def remove_nqn(sys_root: Path, dev_root: Path, nqn: str) -> int:
    """Remove every subsystem and controller of `nqn` (what nvme disconnect makes the kernel
    do); return how many controllers went away."""
    removed = 0
    for class_name, devices in (("nvme", CTRL_DEVICES), ("nvme-subsystem", SUBSYS_DEVICES)):
        class_dir = sys_root / "class" / class_name
        if not class_dir.is_dir():
            continue
        for link in sorted(class_dir.iterdir()):
            target = sys_root / devices / link.name
            if _nqn_of(target) != nqn:
                continue
            for child in _namespace_dirs(target):
                (dev_root / child.name).unlink(missing_ok=True)
            if class_name == "nvme":
                (dev_root / link.name).unlink(missing_ok=True)
                removed += 1
            shutil.rmtree(target)
            link.unlink()
    return removed


def remove_namespaces(sys_root: Path, dev_root: Path, nqn: str) -> None:
    """Drop the namespaces of `nqn` but keep its controllers: an orphaned subsystem."""
    for devices in (sys_root / CTRL_DEVICES, sys_root / SUBSYS_DEVICES):
        if not devices.is_dir():
            continue
        for directory in devices.iterdir():
            if _nqn_of(directory) != nqn:
                continue
            for child in _namespace_dirs(directory):
                shutil.rmtree(child)
                (dev_root / child.name).unlink(missing_ok=True)
