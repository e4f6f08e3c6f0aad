"""Fixtures for the host-layer tests: real loop devices and mounts (root only, always cleaned
up), a FUSE mount whose server never answers (a real hung filesystem), a fabricated NVMe sysfs
tree and a recording `nvme` stand-in."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rds_csi.host.mounter import Mounter, MounterTimeouts
from rds_csi.host.mountinfo import read_mountinfo
from rds_csi.host.probes import Prober
from rds_csi.host.runner import CommandRunner
from tests.host import fake_sysfs

REPO_DIR = Path(__file__).resolve().parents[2]
HOST_TOOLS = ("losetup", "mount", "umount", "blkid", "mkfs.ext4", "mkfs.xfs", "debugfs")
MNT_DETACH = 2


def _root_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (loop devices and real mounts)"
    if not os.path.exists("/dev/loop-control"):
        return "needs /dev/loop-control (no loop device support)"
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing host tools: {', '.join(missing)}"
    return None


def _cleanup_host(scope: Path) -> None:
    """Unmount everything under `scope`, then detach loop devices backed by files in it."""
    prefix = str(scope).rstrip("/") + "/"
    mounts = [m for m in read_mountinfo() if m.mount_point.startswith(prefix)]
    for entry in reversed(mounts):
        done = subprocess.run(["umount", entry.mount_point], capture_output=True, timeout=30)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", entry.mount_point], capture_output=True, timeout=30)
    listing = subprocess.run(
        ["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if listing.stdout.strip():
        for device in json.loads(listing.stdout).get("loopdevices", []):
            back = str(device.get("back-file") or "")
            if back.startswith(prefix):
                subprocess.run(["losetup", "-d", device["name"]], capture_output=True, timeout=30)


@pytest.fixture
def require_root(tmp_path: Path) -> Iterator[None]:
    """Skip unless root with loop support; afterwards unmount and detach all we made."""
    reason = _root_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    try:
        yield
    finally:
        _cleanup_host(tmp_path)


@pytest.fixture
def runner() -> CommandRunner:
    return CommandRunner(default_timeout=60.0)


@pytest.fixture
def prober() -> Prober:
    return Prober(timeout=3.0)


@pytest.fixture
def mounter(runner: CommandRunner, prober: Prober) -> Mounter:
    return Mounter(runner, prober, timeouts=MounterTimeouts(unmount_settle=0.3))


def make_image(directory: Path, name: str, size_mib: int) -> Path:
    """A sparse backing file."""
    path = directory / name
    with open(path, "wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    return path


def attach(image: Path) -> str:
    done = subprocess.run(
        ["losetup", "--find", "--show", "--", str(image)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def mkfs(fs_type: str, device: str, *extra: str) -> None:
    subprocess.run(
        [f"mkfs.{fs_type}", "-q", *extra, device], check=True, timeout=60, capture_output=True
    )


@dataclass
class Volume:
    image: Path
    device: str
    mount_point: Path


@pytest.fixture
def ext4_volume(require_root: None, tmp_path: Path) -> Volume:
    """A 64 MiB ext4 filesystem on a loop device (not mounted), and an empty mount point."""
    image = make_image(tmp_path, "ext4.img", 64)
    device = attach(image)
    mkfs("ext4", device)
    point = tmp_path / "mnt"
    point.mkdir()
    return Volume(image, device, point)


# ---- a FUSE mount whose server never answers ------------------------------------------------


@dataclass
class HungFuse:
    """A FUSE mount with no server loop: every request blocks until `disconnect()`, after which
    every request fails with ENOTCONN ("Transport endpoint is not connected")."""

    path: Path
    fd: int | None

    def disconnect(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@pytest.fixture
def hung_fuse(require_root: None, tmp_path: Path) -> Iterator[HungFuse]:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse")
    point = tmp_path / "fuse"
    point.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(b"hungfuse", str(point).encode(), b"fuse", 0, options) != 0:
        code = ctypes.get_errno()
        os.close(fd)
        pytest.skip(f"cannot mount FUSE: {os.strerror(code)}")
    fuse = HungFuse(point, fd)
    try:
        yield fuse
    finally:
        fuse.disconnect()  # releases every thread blocked in the mount
        if libc.umount2(str(point).encode(), MNT_DETACH) != 0:
            assert ctypes.get_errno() in (errno.EINVAL, errno.ENOENT)


# ---- NVMe: fabricated sysfs and the recording stand-in ----------------------------------------


class NvmeStandin:
    """Drives the stand-in: plan its answers per NQN, read back the argv it was called with."""

    def __init__(self, base: Path) -> None:
        self.state = base / "standin"
        self.state.mkdir()
        self.sys_root = base / "sys"
        self.dev_root = base / "dev"
        self.sys_root.mkdir()
        self.dev_root.mkdir()
        self.path = base / "nvme"
        self.path.write_text(
            f"#!{sys.executable} -S\n"
            "import sys\n"
            f"sys.path.insert(0, {str(REPO_DIR)!r})\n"
            "from tests.host import nvme_standin\n"
            f"sys.exit(nvme_standin.main({str(self.state)!r}, sys.argv[1:]))\n"
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)
        self._plan: dict[str, Any] = {
            "sys_root": str(self.sys_root),
            "dev_root": str(self.dev_root),
            "connect": {},
            "disconnect": {},
        }
        self._save()

    def _save(self) -> None:
        (self.state / "plan.json").write_text(json.dumps(self._plan))

    def plan_connect(self, nqn: str, *responses: dict[str, Any]) -> None:
        """Each connect of `nqn` takes the next response (the last one repeats):
        {"rc": int, "stderr": str, "appear": {subsys, controllers, namespaces, multipath} or
        None for no device, "delay": seconds before the entries appear}."""
        self._plan["connect"][nqn] = list(responses)
        self._save()

    def plan_disconnect(self, nqn: str, *responses: dict[str, Any]) -> None:
        self._plan["disconnect"][nqn] = list(responses)
        self._save()

    def calls(self) -> list[list[str]]:
        log = self.state / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line)["argv"] for line in log.read_text().splitlines()]

    def add_subsystem(self, **kwargs: Any) -> None:
        fake_sysfs.add_subsystem(self.sys_root, self.dev_root, **kwargs)

    def remove_nqn(self, nqn: str) -> None:
        fake_sysfs.remove_nqn(self.sys_root, self.dev_root, nqn)


@pytest.fixture
def nvme(tmp_path: Path) -> NvmeStandin:
    return NvmeStandin(tmp_path)


@contextlib.contextmanager
def open_file_in_child(path: Path) -> Iterator[int]:
    """A separate process holding `path` open (the plugin excludes its own pid from users)."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; f = open(sys.argv[1], 'rb'); print('ok', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ok"  # the file is open now
        yield child.pid
    finally:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.wait(timeout=30)
        child.stdout.close()
