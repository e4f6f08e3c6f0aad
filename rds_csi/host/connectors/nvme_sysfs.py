"""Find an NVMe subsystem's block device in sysfs, by subsystem NQN.

Two kernel layouts exist:
* native multipath (CONFIG_NVME_MULTIPATH=y, the Debian default): the controller directory
  /sys/class/nvme/nvme0/ holds only the hidden path node nvme0c0n1; the block device nvme0n1
  (the multipath head) is listed under /sys/class/nvme-subsystem/nvme-subsys0/.
* no multipath: the block device nvme0n1 sits directly under /sys/class/nvme/nvme0/.
Controller and subsystem numbers change on every reconnect (and a discovery controller takes a
number for a moment), so nothing is cached by number: every lookup starts from subsysnqn.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

__all__ = ["NvmeSubsystem", "NvmeSysfs"]

_HEAD = re.compile(r"^nvme(?P<subsys>[0-9]+)n(?P<ns>[0-9]+)\Z")
_PATH_NODE = re.compile(r"^nvme(?P<subsys>[0-9]+)c(?P<ctrl>[0-9]+)n(?P<ns>[0-9]+)\Z")
_CONTROLLER = re.compile(r"^nvme[0-9]+\Z")


@dataclass(frozen=True, slots=True)
class NvmeSubsystem:
    """One subsystem as sysfs shows it now."""

    nqn: str
    name: str | None  # nvme-subsys<N>, None when only controllers were found
    controllers: tuple[str, ...]
    block_devices: tuple[str, ...]  # preferred first: multipath heads, then direct namespaces


@dataclass(slots=True)
class _Builder:
    name: str | None = None
    controllers: set[str] = field(default_factory=set)
    heads: set[str] = field(default_factory=set)
    direct: set[str] = field(default_factory=set)

    def build(self, nqn: str) -> NvmeSubsystem:
        ordered = sorted(self.heads, key=_ns_sort_key)
        ordered += sorted(self.direct - self.heads, key=_ns_sort_key)
        return NvmeSubsystem(
            nqn=nqn,
            name=self.name,
            controllers=tuple(sorted(self.controllers, key=lambda c: int(c[4:]))),
            block_devices=tuple(ordered),
        )


def _read_attr(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip().strip("\0").strip()
    except OSError:
        return None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _ns_sort_key(name: str) -> tuple[int, int, str]:
    match = _HEAD.match(name)
    if match is None:
        return (1 << 30, 1 << 30, name)
    return (int(match.group("ns")), int(match.group("subsys")), name)


class NvmeSysfs:
    """Read-only view of /sys/class/nvme and /sys/class/nvme-subsystem (roots injectable)."""

    def __init__(self, sys_root: str = "/sys", dev_root: str = "/dev") -> None:
        self.sys_root = sys_root
        self.dev_root = dev_root

    @property
    def _subsys_class(self) -> str:
        return os.path.join(self.sys_root, "class", "nvme-subsystem")

    @property
    def _ctrl_class(self) -> str:
        return os.path.join(self.sys_root, "class", "nvme")

    def subsystems(self) -> list[NvmeSubsystem]:
        """Every subsystem with a subsysnqn, merged from both sysfs classes."""
        found: dict[str, _Builder] = {}
        for subsys in _listdir(self._subsys_class):
            directory = os.path.join(self._subsys_class, subsys)
            nqn = _read_attr(os.path.join(directory, "subsysnqn"))
            if not nqn:
                continue
            builder = found.setdefault(nqn, _Builder())
            builder.name = subsys
            for child in _listdir(directory):
                if _HEAD.match(child):
                    builder.heads.add(child)
                elif _CONTROLLER.match(child):
                    builder.controllers.add(child)

        for ctrl in _listdir(self._ctrl_class):
            if _CONTROLLER.match(ctrl):
                nqn = _read_attr(os.path.join(self._ctrl_class, ctrl, "subsysnqn"))
                if nqn:
                    found.setdefault(nqn, _Builder()).controllers.add(ctrl)

        for builder in found.values():
            for ctrl in builder.controllers:
                for child in _listdir(os.path.join(self._ctrl_class, ctrl)):
                    path_node = _PATH_NODE.match(child)
                    if path_node is not None:
                        # nvme<S>c<C>n<N> is a hidden path of the head nvme<S>n<N>.
                        builder.heads.add(f"nvme{path_node['subsys']}n{path_node['ns']}")
                    elif _HEAD.match(child):
                        builder.direct.add(child)

        return [found[nqn].build(nqn) for nqn in sorted(found)]

    def find(self, nqn: str) -> NvmeSubsystem | None:
        for subsystem in self.subsystems():
            if subsystem.nqn == nqn:
                return subsystem
        return None

    def device_path(self, nqn: str) -> str | None:
        """/dev/<block device> of the subsystem, the first candidate whose node exists."""
        subsystem = self.find(nqn)
        if subsystem is None:
            return None
        for name in subsystem.block_devices:
            path = os.path.join(self.dev_root, name)
            if os.path.exists(path):
                return path
        return None
