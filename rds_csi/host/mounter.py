"""Mount, unmount, format, check and grow filesystems on this node.

Rules this module enforces so that callers cannot get them wrong:
* never stack a mount: mounting onto a mount point raises AlreadyMounted;
* never format a device that holds anything blkid recognises (filesystem or partition table),
  and never pass -F/-f to mkfs;
* never fsck a mounted device;
* never lazily unmount while processes still use the mount;
* every command has a timeout and every probe of a possibly dead path runs in a Prober thread.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from rds_csi.host import devices, filesystem
from rds_csi.host.errors import (
    AlreadyMounted,
    CommandFailed,
    CommandTimeout,
    DeviceBusy,
    FilesystemNeedsRepair,
    FormatRefused,
    HostError,
    InvalidInput,
    MountError,
)
from rds_csi.host.filesystem import DeviceContent
from rds_csi.host.mount_options import validate_mount_options
from rds_csi.host.mountinfo import (
    MOUNTINFO_PATH,
    MountInfo,
    find_by_device,
    find_by_mount_point,
    mounts_at,
    normalize_path,
    read_mountinfo,
)
from rds_csi.host.probes import Prober
from rds_csi.host.runner import CommandRunner

__all__ = ["FsckReport", "Mounter", "MounterTimeouts", "VolumeUsage"]

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# Per-mount flags a bind remount may change; anything else belongs to the filesystem mount.
_BIND_FLAGS = frozenset(
    {
        "ro",
        "rw",
        "nosuid",
        "suid",
        "nodev",
        "dev",
        "noexec",
        "exec",
        "noatime",
        "atime",
        "nodiratime",
        "diratime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "defaults",
    }
)
_NEEDS_CLEANING = "structure needs cleaning"


@dataclass(frozen=True, slots=True)
class MounterTimeouts:
    mount: float = 60.0
    unmount: float = 30.0
    blkid: float = 15.0
    mkfs: float = 600.0
    fsck: float = 600.0
    resize: float = 600.0
    # How long a busy mount may take to become free before the lazy unmount fallback.
    unmount_settle: float = 10.0


@dataclass(frozen=True, slots=True)
class VolumeUsage:
    total_bytes: int
    used_bytes: int
    available_bytes: int
    total_inodes: int
    used_inodes: int
    available_inodes: int


@dataclass(frozen=True, slots=True)
class FsckReport:
    device: str
    fs_type: str
    clean: bool
    journal_pending: bool
    returncode: int
    output: str


def _require_absolute(path: str, what: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or "\n" in path:
        raise InvalidInput(f"{what} must be an absolute path, got {path!r}")
    return normalize_path(path)


class Mounter:
    """Everything the node service does to filesystems and mount points."""

    def __init__(
        self,
        runner: CommandRunner,
        prober: Prober,
        *,
        mountinfo_path: str = MOUNTINFO_PATH,
        proc_root: str = "/proc",
        sys_root: str = "/sys",
        timeouts: MounterTimeouts | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.runner = runner
        self.prober = prober
        self.mountinfo_path = mountinfo_path
        self.proc_root = proc_root
        self.sys_root = sys_root
        self.timeouts = timeouts or MounterTimeouts()
        self._sleep = sleep

    @staticmethod
    def required_tools() -> list[str]:
        return [
            "mount",
            "umount",
            "blkid",
            "mkfs.ext4",
            "mkfs.xfs",
            "fsck.ext4",
            "xfs_repair",
            "resize2fs",
            "xfs_growfs",
        ]

    # ---- the mount table -------------------------------------------------------------------

    def mount_table(self) -> list[MountInfo]:
        return read_mountinfo(self.mountinfo_path)

    def mount_of(self, path: str) -> MountInfo | None:
        """The visible mount at `path` (top of any stack), read from mountinfo: never hangs."""
        return find_by_mount_point(self.mount_table(), path)

    def is_mounted(self, path: str) -> bool:
        return self.mount_of(path) is not None

    def mounts_of_device(self, device_number: tuple[int, int]) -> list[MountInfo]:
        return find_by_device(self.mount_table(), device_number=device_number)

    # ---- devices ---------------------------------------------------------------------------

    async def device_number(self, device: str) -> tuple[int, int]:
        """major:minor of a block device node; InvalidInput if it is not a block device."""
        number = await self.prober.call("stat", device, lambda: devices.block_device_number(device))
        if number is None:
            raise InvalidInput(f"{device} is not a block device")
        return number

    async def device_size(self, device: str) -> int:
        """Size in bytes: /sys/dev/block/M:m/size, else the BLKGETSIZE64 ioctl."""
        number = await self.device_number(device)
        size = devices.read_sysfs_size_bytes(self.sys_root, number)
        if size is not None:
            return size
        return await self.prober.block_device_size(device)

    async def device_users(
        self, device: str | None = None, *, mount_point: str | None = None
    ) -> devices.DeviceUsers:
        """Mounts, holders and processes using a device and/or a mount point."""
        number: tuple[int, int] | None = None
        if device is not None:
            number = await self.device_number(device)
        elif mount_point is not None:
            entry = self.mount_of(mount_point)
            number = entry.device_number if entry is not None else None
        point = normalize_path(mount_point) if mount_point is not None else None
        mounts: list[str] = []
        holders: list[str] = []
        if number is not None:
            mounts = [m.mount_point for m in self.mounts_of_device(number)]
            if device is not None:
                holders = devices.read_holders(self.sys_root, number)
        exclude = {os.getpid()}
        processes = await self.prober.call(
            "scan-processes",
            f"users:{point or device}",
            lambda: devices.scan_process_users(
                self.proc_root, mount_point=point, device=number, exclude_pids=exclude
            ),
            timeout=max(self.prober.timeout, 10.0),
        )
        return devices.DeviceUsers(
            mounts=tuple(m for m in mounts if m != point),
            holders=tuple(holders),
            processes=tuple(processes),
        )

    # ---- mounting --------------------------------------------------------------------------

    async def mount(
        self,
        source: str,
        target: str,
        fs_type: str,
        options: Sequence[str] = (),
        *,
        readonly: bool = False,
    ) -> None:
        """mount -t fs_type -o options source target.  Refuses to stack on a mount point."""
        source = _require_absolute(source, "mount source")
        target = _require_absolute(target, "mount target")
        if fs_type not in filesystem.MOUNTABLE_FS:
            raise InvalidInput(
                f"unsupported filesystem {fs_type!r} (supported: "
                f"{', '.join(filesystem.MOUNTABLE_FS)})"
            )
        flags = validate_mount_options([*options, *(["ro"] if readonly else [])])
        self._refuse_stacking(target)
        argv = ["mount", "-t", fs_type]
        if flags:
            argv += ["-o", ",".join(flags)]
        await self._run_mount([*argv, "--", source, target], source)
        log.info("mounted", source=source, target=target, fs_type=fs_type, options=flags)

    async def bind_mount(
        self,
        source: str,
        target: str,
        *,
        readonly: bool = False,
        options: Sequence[str] = (),
    ) -> None:
        """mount --bind, then remount,bind with ro/nosuid/... (a bind ignores -o on creation)."""
        source = _require_absolute(source, "bind source")
        target = _require_absolute(target, "bind target")
        flags = validate_mount_options([*options, *(["ro"] if readonly else [])])
        not_per_mount = [flag for flag in flags if flag not in _BIND_FLAGS]
        if not_per_mount:
            raise InvalidInput(f"mount options {not_per_mount} cannot be applied to a bind mount")
        self._refuse_stacking(target)
        await self._run_mount(["mount", "--bind", "--", source, target], source)
        if flags:
            remount = ["mount", "-o", ",".join(["remount", "bind", *flags]), "--", target]
            try:
                await self._run_mount(remount, source)
            except BaseException:
                # Do not leave a writable bind behind a failed read-only request.
                await self._rollback_bind(target)
                raise
        log.info("bind_mounted", source=source, target=target, options=flags)

    async def _rollback_bind(self, target: str) -> None:
        try:
            await asyncio.shield(
                self.runner.run(["umount", "--", target], timeout=self.timeouts.unmount)
            )
        except HostError as exc:
            log.error("bind_rollback_failed", target=target, error=str(exc))

    def _refuse_stacking(self, target: str) -> None:
        existing = self.mount_of(target)
        if existing is not None:
            raise AlreadyMounted(target, existing.source)

    async def _run_mount(self, argv: list[str], source: str) -> None:
        try:
            await self.runner.run(argv, timeout=self.timeouts.mount)
        except CommandFailed as exc:
            if _NEEDS_CLEANING in exc.stderr.lower():
                raise FilesystemNeedsRepair(
                    source, "mount reported 'Structure needs cleaning'"
                ) from exc
            raise MountError(str(exc)) from exc

    async def unmount(self, target: str) -> bool:
        """Unmount the top mount at `target`.  False when nothing was mounted (idempotent).

        A busy mount raises DeviceBusy listing its users.
        """
        target = _require_absolute(target, "unmount target")
        if not self.is_mounted(target):
            return False
        try:
            await self.runner.run(["umount", "--", target], timeout=self.timeouts.unmount)
        except CommandFailed as exc:
            text = exc.stderr.lower()
            if "not mounted" in text and not self.is_mounted(target):
                return False
            if "busy" in text:
                users = await self._users_for_message(target)
                raise DeviceBusy(target, users or ["the kernel reports the target busy"]) from exc
            raise MountError(str(exc)) from exc
        log.info("unmounted", target=target)
        return True

    async def lazy_unmount(self, target: str) -> bool:
        """umount -l: detach now, finish when unused.  Refused while processes use the mount."""
        target = _require_absolute(target, "unmount target")
        if not self.is_mounted(target):
            return False
        users = await self.device_users(mount_point=target)
        if users.used_by_processes:
            raise DeviceBusy(target, [p.describe() for p in users.processes])
        try:
            await self.runner.run(["umount", "-l", "--", target], timeout=self.timeouts.unmount)
        except CommandFailed as exc:
            if "not mounted" in exc.stderr.lower() and not self.is_mounted(target):
                return False
            raise MountError(str(exc)) from exc
        log.warning("lazily_unmounted", target=target)
        return True

    async def unmount_all(self, target: str, *, lazy_fallback: bool = True) -> int:
        """Unmount every mount stacked at `target`; return how many were removed.

        A busy or hanging unmount is retried until `timeouts.unmount_settle`, then (with
        lazy_fallback) detached lazily, which itself is refused while processes use it.
        """
        target = _require_absolute(target, "unmount target")
        removed = 0
        limit = len(mounts_at(self.mount_table(), target)) + 1
        for _ in range(limit):
            if not self.is_mounted(target):
                break
            if await self._unmount_settling(target, lazy_fallback=lazy_fallback):
                removed += 1
        if self.is_mounted(target):
            raise MountError(f"{target} is still mounted after {removed} unmount(s)")
        return removed

    async def _unmount_settling(self, target: str, *, lazy_fallback: bool) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeouts.unmount_settle
        delay = 0.1
        last: HostError | None = None
        while True:
            try:
                return await self.unmount(target)
            except (DeviceBusy, CommandTimeout) as exc:
                last = exc
            remaining = deadline - loop.time()
            if remaining <= 0 or isinstance(last, CommandTimeout):
                break
            await self._sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)
        assert last is not None
        if not lazy_fallback:
            raise last
        log.warning("unmount_falling_back_to_lazy", target=target, error=str(last))
        return await self.lazy_unmount(target)

    async def _users_for_message(self, target: str) -> list[str]:
        try:
            return (await self.device_users(mount_point=target)).describe()
        except HostError:
            return []

    async def make_mount_target(self, path: str, *, is_file: bool = False) -> None:
        """Create a directory (or an empty file, for a block volume) to mount on; idempotent."""
        path = _require_absolute(path, "mount target")

        def create() -> None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if is_file:
                fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o640)
                os.close(fd)
            else:
                os.makedirs(path, exist_ok=True)

        await self.prober.call("create", path, create)

    async def cleanup_mount_point(self, path: str) -> None:
        """Unmount everything at `path` and remove it (mount-utils CleanupMountPoint).

        Works on a corrupted mount: the decision uses mountinfo, never stat() of the path.
        Only an empty directory or a regular file is removed; anything else raises MountError.
        """
        path = _require_absolute(path, "mount point")
        await self.unmount_all(path)

        def remove() -> None:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(path)
            else:
                os.unlink(path)

        try:
            await self.prober.call("remove", path, remove)
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                raise MountError(f"{path} is not empty after unmount; not removing it") from exc
            raise MountError(f"cannot remove {path}: {exc.strerror}") from exc

    # ---- filesystems -----------------------------------------------------------------------

    async def probe_device(self, device: str) -> DeviceContent:
        """blkid -p: what the device holds.  Exit 2 means nothing; other failures raise."""
        device = _require_absolute(device, "device")
        result = await self.runner.run(
            filesystem.blkid_argv(device),
            timeout=self.timeouts.blkid,
            ok_codes=(0, filesystem.BLKID_NOTHING_FOUND),
        )
        if result.returncode == filesystem.BLKID_NOTHING_FOUND:
            return DeviceContent()
        return filesystem.parse_blkid_export(result.stdout)

    async def get_fs_type(self, device: str) -> str | None:
        return (await self.probe_device(device)).fs_type

    async def format(self, device: str, fs_type: str, *, label: str | None = None) -> None:
        """mkfs.<fs_type> on an empty device.  FormatRefused if blkid finds anything on it."""
        device = _require_absolute(device, "device")
        argv = filesystem.mkfs_argv(fs_type, device, label)
        content = await self.probe_device(device)
        if not content.empty:
            found = content.fs_type or f"a {content.partition_table} partition table"
            raise FormatRefused(f"refusing to format {device}: it already holds {found}")
        await self.runner.run(argv, timeout=self.timeouts.mkfs)
        log.info("formatted", device=device, fs_type=fs_type)

    async def check_filesystem(self, device: str, fs_type: str) -> FsckReport:
        """Read-only fsck before mounting an existing filesystem.

        Raises FilesystemNeedsRepair on errors, DeviceBusy if the device is mounted.  Errors
        seen while a journal/log is still unreplayed are reported (journal_pending) but not
        raised: mounting replays the journal, and the read-only check cannot.
        """
        device = _require_absolute(device, "device")
        argv = filesystem.fsck_argv(fs_type, device)
        number = await self.device_number(device)
        mounted = self.mounts_of_device(number)
        if mounted:
            raise DeviceBusy(
                f"filesystem check of {device}", [f"mounted at {m.mount_point}" for m in mounted]
            )
        result = await self.runner.run(argv, timeout=self.timeouts.fsck, check=False)
        output = (result.stdout + "\n" + result.stderr).strip()
        outcome = filesystem.interpret_fsck(fs_type, result.returncode, output)
        if outcome.operational_error:
            raise CommandFailed(result.argv, result.returncode, output)
        report = FsckReport(
            device=device,
            fs_type=fs_type,
            clean=outcome.clean,
            journal_pending=outcome.journal_pending,
            returncode=result.returncode,
            output=output[-4000:],
        )
        if not outcome.clean and not outcome.journal_pending:
            detail = _fsck_detail(output) or f"exit code {result.returncode}"
            raise FilesystemNeedsRepair(device, f"{argv[0]} -n found errors: {detail}")
        if not outcome.clean:
            log.warning("fsck_journal_pending", device=device, fs_type=fs_type)
        return report

    async def resize(self, device: str, mount_point: str | None, fs_type: str) -> None:
        """Grow the filesystem to the device size (resize2fs <dev>, xfs_growfs <mountpoint>)."""
        device = _require_absolute(device, "device")
        if mount_point is not None:
            mount_point = _require_absolute(mount_point, "mount point")
        argv = filesystem.resize_argv(fs_type, device, mount_point)
        await self.runner.run(argv, timeout=self.timeouts.resize)
        log.info("resized", device=device, fs_type=fs_type)

    async def usage(self, path: str) -> VolumeUsage:
        """Bytes and inodes of the filesystem at `path` (statvfs in a probe thread)."""
        st = await self.prober.statvfs(path)
        block = st.f_frsize or st.f_bsize
        return VolumeUsage(
            total_bytes=st.f_blocks * block,
            used_bytes=(st.f_blocks - st.f_bfree) * block,
            available_bytes=st.f_bavail * block,
            total_inodes=st.f_files,
            used_inodes=st.f_files - st.f_ffree,
            available_inodes=st.f_favail,
        )


def _fsck_detail(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    interesting = [
        line
        for line in lines
        if "?" in line or "error" in line.lower() or "corrupt" in line.lower()
    ]
    return " | ".join((interesting or lines)[:3])[:400]
