"""Block-device facts from sysfs and /proc: size, holders, and which processes use a device.

These functions block (they read /proc and sysfs, and stat open files), so callers run them
through a Prober.  They never open the device itself.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterator
from dataclasses import dataclass

__all__ = [
    "DeviceUsers",
    "ProcessUse",
    "block_device_number",
    "read_holders",
    "read_sysfs_size_bytes",
    "scan_process_users",
]

_SECTOR = 512


@dataclass(frozen=True, slots=True)
class ProcessUse:
    pid: int
    command: str
    how: str  # "fd 3: /path", "cwd: /path", "mmap: /lib/x.so"

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command}) {self.how}"


@dataclass(frozen=True, slots=True)
class DeviceUsers:
    """Who still uses a device or a mount: other mounts, stacked block devices, processes."""

    mounts: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()
    processes: tuple[ProcessUse, ...] = ()

    @property
    def in_use(self) -> bool:
        return bool(self.mounts or self.holders or self.processes)

    @property
    def used_by_processes(self) -> bool:
        return bool(self.processes)

    def describe(self) -> list[str]:
        return (
            [f"mounted at {m}" for m in self.mounts]
            + [f"held by {h}" for h in self.holders]
            + [p.describe() for p in self.processes]
        )


def block_device_number(path: str) -> tuple[int, int] | None:
    """major:minor of a block device node, or None when `path` is not a block device."""
    st = os.stat(path)
    if not stat.S_ISBLK(st.st_mode):
        return None
    return (os.major(st.st_rdev), os.minor(st.st_rdev))


def _sysfs_dir(sys_root: str, number: tuple[int, int]) -> str:
    return os.path.join(sys_root, "dev", "block", f"{number[0]}:{number[1]}")


def read_sysfs_size_bytes(sys_root: str, number: tuple[int, int]) -> int | None:
    try:
        with open(os.path.join(_sysfs_dir(sys_root, number), "size"), encoding="ascii") as f:
            return int(f.read().strip()) * _SECTOR
    except (OSError, ValueError):
        return None


def read_holders(sys_root: str, number: tuple[int, int]) -> list[str]:
    """Block devices stacked on this one (device-mapper, md): /sys/dev/block/M:m/holders."""
    try:
        return sorted(os.listdir(os.path.join(_sysfs_dir(sys_root, number), "holders")))
    except OSError:
        return []


def _pids(proc_root: str) -> Iterator[int]:
    try:
        names = os.listdir(proc_root)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def _read_comm(proc_root: str, pid: int) -> str:
    try:
        with open(os.path.join(proc_root, str(pid), "comm"), encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _under(path: str, mount_point: str | None) -> bool:
    if mount_point is None:
        return False
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def _link_uses(
    link: str, target: str, mount_point: str | None, device: tuple[int, int] | None
) -> bool:
    if _under(target, mount_point):
        return True
    if device is None or not target.startswith("/"):
        return False
    # The path may belong to another mount namespace (a pod): compare the device numbers.
    try:
        st = os.stat(link)
    except OSError:
        return False
    if (os.major(st.st_dev), os.minor(st.st_dev)) == device:
        return True
    return stat.S_ISBLK(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == device


def _maps_use(proc_root: str, pid: int, device: tuple[int, int]) -> str | None:
    wanted = f"{device[0]:02x}:{device[1]:02x}"
    try:
        with open(os.path.join(proc_root, str(pid), "maps"), encoding="utf-8") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) >= 4 and parts[3] == wanted:
                    return parts[5].strip() if len(parts) == 6 else "(anonymous)"
    except OSError:
        return None
    return None


def scan_process_users(
    proc_root: str,
    *,
    mount_point: str | None = None,
    device: tuple[int, int] | None = None,
    exclude_pids: Collection[int] = (),
) -> list[ProcessUse]:
    """Processes with an open file, cwd, root or mapping on the mount point or the device."""
    found: list[ProcessUse] = []
    for pid in _pids(proc_root):
        if pid in exclude_pids:
            continue
        base = os.path.join(proc_root, str(pid))
        use = _first_use(base, pid, proc_root, mount_point, device)
        if use is not None:
            found.append(ProcessUse(pid, _read_comm(proc_root, pid), use))
    return found


def _first_use(
    base: str,
    pid: int,
    proc_root: str,
    mount_point: str | None,
    device: tuple[int, int] | None,
) -> str | None:
    for name in ("cwd", "root", "exe"):
        link = os.path.join(base, name)
        try:
            target = os.readlink(link)
        except OSError:
            continue
        if name == "root" and target == "/":
            continue
        if _link_uses(link, target, mount_point, device):
            return f"{name}: {target}"
    fd_dir = os.path.join(base, "fd")
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        fds = []
    for fd in fds:
        link = os.path.join(fd_dir, fd)
        try:
            target = os.readlink(link)
        except OSError:
            continue
        if _link_uses(link, target, mount_point, device):
            return f"fd {fd}: {target}"
    if device is not None:
        mapped = _maps_use(proc_root, pid, device)
        if mapped is not None:
            return f"mmap: {mapped}"
    return None
