"""The demo's own host work: checks before it starts, backing files, the hand-made stale mount,
and the clean-up that leaves no mount or loop device behind whatever happened.

Everything the demo creates lives under one work directory, so "ours" is decided by path: a
mount point under it, or a loop device whose backing file is under it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rds_csi.host.connectors.loop import LoopDevice, parse_losetup_json
from rds_csi.host.mountinfo import MountInfo, find_by_mount_point, read_mountinfo

__all__ = [
    "REQUIRED_TOOLS",
    "Leftovers",
    "LoopDevice",
    "attached_to",
    "backing_file_of",
    "clean_up",
    "corrupt_ext4",
    "leftovers",
    "loop_devices",
    "make_sparse_file",
    "mount_at",
    "mounts_of_device",
    "preflight",
    "run",
]

REQUIRED_TOOLS = ("losetup", "mount", "umount", "blkid", "mkfs.ext4", "fsck.ext4", "debugfs")


def preflight() -> str | None:
    """Why the demo cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root for loop devices and real mounts (try: sudo make demo)"
    if not os.path.exists("/dev/loop-control"):
        return "no loop device support on this host (/dev/loop-control is missing)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing host tools: {', '.join(missing)} (util-linux, e2fsprogs)"
    probe = subprocess.run(["losetup", "--find"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        why = probe.stderr.strip() or f"exit code {probe.returncode}"
        return f"no free loop device can be used: losetup --find: {why}"
    return None


async def run(*argv: str, timeout: float = 60.0) -> str:
    """Run a host tool without blocking the event loop (the API emulator shares it)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {detail}")
    return out.decode()


def make_sparse_file(path: Path, size_mib: int) -> None:
    with open(path, "wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)


async def corrupt_ext4(image: Path) -> None:
    """An ext4 filesystem whose root inode is cleared and whose state says "not cleanly
    unmounted": what the kernel leaves after it detected corruption.  blkid still calls it
    ext4, so the plugin must not format it, and `fsck.ext4 -n` finds the damage."""
    await run("mkfs.ext4", "-q", "-F", str(image))
    for request in ("clri <2>", "ssv state 0"):
        await run("debugfs", "-w", "-R", request, str(image))


def loop_devices() -> list[LoopDevice]:
    done = subprocess.run(
        ["losetup", "--list", "--json", "--output", "NAME,AUTOCLEAR,BACK-FILE"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return parse_losetup_json(done.stdout)


def attached_to(image: Path) -> list[str]:
    """Loop devices that still serve `image`.  One that `losetup -d` released while something
    held it open has autoclear set and goes when its last user does; it no longer counts."""
    return [d.path for d in loop_devices() if d.backing_file == str(image) and not d.autoclear]


def backing_file_of(device: str) -> str | None:
    """The file a loop device reads, from sysfs (None when the device is not a bound loop)."""
    try:
        text = Path(f"/sys/block/{Path(device).name}/loop/backing_file").read_text()
    except OSError:
        return None
    return text.strip().removesuffix(" (deleted)")


def mount_at(path: Path) -> MountInfo | None:
    """The top mount at `path`, from mountinfo (never stat: a stale mount may not answer)."""
    return find_by_mount_point(read_mountinfo(), str(path))


def mounts_of_device(scope: Path, number: tuple[int, int]) -> list[str]:
    """Mount points under `scope` on the block device `number` (major, minor)."""
    return [
        m.mount_point
        for m in read_mountinfo()
        if (m.major, m.minor) == number and _under(m.mount_point, scope)
    ]


def _under(path: str, scope: Path) -> bool:
    return path == str(scope) or path.startswith(str(scope).rstrip("/") + "/")


@dataclass(frozen=True)
class Leftovers:
    mounts: list[str]
    loops: list[str]

    def __bool__(self) -> bool:
        return bool(self.mounts or self.loops)

    def describe(self) -> str:
        parts = [f"mount {m}" for m in self.mounts] + [f"loop device {d}" for d in self.loops]
        return ", ".join(parts) or "nothing"


def leftovers(scope: Path) -> Leftovers:
    mounts = [m.mount_point for m in read_mountinfo() if _under(m.mount_point, scope)]
    loops = [d.path for d in loop_devices() if _under(d.backing_file, scope)]
    return Leftovers(mounts, loops)


def clean_up(scope: Path) -> Leftovers:
    """Unmount everything under `scope` (deepest first), detach loop devices backed by files in
    it; returns what it found to remove.  Synchronous on purpose: it also runs after the event
    loop is gone (Ctrl-C)."""
    found = leftovers(scope)
    for point in sorted(found.mounts, key=len, reverse=True):
        done = subprocess.run(["umount", point], capture_output=True, timeout=30)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
    for device in loop_devices():
        if _under(device.backing_file, scope) and not device.autoclear:
            subprocess.run(["losetup", "-d", device.path], capture_output=True, timeout=30)
    return found
