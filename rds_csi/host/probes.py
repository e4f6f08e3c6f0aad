"""Probes that can hang on a dead device, run off the event loop with a timeout.

A dead NVMe/TCP transport with ctrl_loss_tmo=-1 (the default) blocks I/O forever, and a thread
stuck in the kernel cannot be killed.  So every probe runs in its own daemon thread: on timeout
the caller gets ProbeTimeout ("unresponsive") and the thread is abandoned.  Abandoned threads
are counted; while one is stuck on a path, new probes of that path fail fast instead of piling
up, and past `max_stuck` every probe fails fast.  Daemon threads (not an executor) so that a
stuck probe never blocks interpreter exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import fcntl
import os
import stat
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

import structlog

from rds_csi.host.errors import ProbeTimeout

__all__ = [
    "CORRUPTED_MOUNT_ERRNOS",
    "NEEDS_REPAIR_ERRNOS",
    "ErrnoClass",
    "Prober",
    "classify_errno",
    "errno_name",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

# kubernetes/mount-utils IsCorruptedMnt: the mount is there but its backing is gone.
CORRUPTED_MOUNT_ERRNOS = frozenset(
    {
        errno.ENOTCONN,
        errno.ESTALE,
        errno.EIO,
        errno.EACCES,
        errno.EHOSTDOWN,
        errno.EWOULDBLOCK,
        errno.ENODEV,
    }
)
# EUCLEAN is the kernel's EFSCORRUPTED ("Structure needs cleaning"), EBADMSG its EFSBADCRC
# (metadata checksum mismatch): the filesystem itself is damaged and needs fsck.
NEEDS_REPAIR_ERRNOS = frozenset({errno.EUCLEAN, errno.EBADMSG})

BLKGETSIZE64 = 0x80081272


class ErrnoClass(enum.Enum):
    CORRUPTED_MOUNT = "corrupted_mount"
    NEEDS_REPAIR = "needs_repair"
    NOT_FOUND = "not_found"
    OTHER = "other"


def classify_errno(code: int | None) -> ErrnoClass:
    if code in NEEDS_REPAIR_ERRNOS:
        return ErrnoClass.NEEDS_REPAIR
    if code in CORRUPTED_MOUNT_ERRNOS:
        return ErrnoClass.CORRUPTED_MOUNT
    if code == errno.ENOENT:
        return ErrnoClass.NOT_FOUND
    return ErrnoClass.OTHER


def errno_name(code: int | None) -> str:
    if code is None:
        return "unknown"
    return errno.errorcode.get(code, str(code))


class Prober:
    """Runs blocking probes in abandonable daemon threads with a timeout."""

    def __init__(self, *, timeout: float = 5.0, max_stuck: int = 16) -> None:
        self.timeout = timeout
        self.max_stuck = max_stuck
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._stuck_by_path: dict[str, int] = {}

    @property
    def stuck(self) -> int:
        """Threads that timed out and have not returned yet."""
        with self._lock:
            return sum(self._stuck_by_path.values())

    def stuck_paths(self) -> list[str]:
        with self._lock:
            return sorted(self._stuck_by_path)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no abandoned probe is left (True) or the timeout passes (False).

        Blocking: call it through asyncio.to_thread, e.g. at shutdown.
        """
        with self._released:
            return self._released.wait_for(lambda: not self._stuck_by_path, timeout)

    async def call(
        self, what: str, path: str, fn: Callable[[], T], *, timeout: float | None = None
    ) -> T:
        """Run fn() in a fresh daemon thread; raise ProbeTimeout if it does not return in time.

        OSError from fn propagates unchanged (classify it with classify_errno).
        """
        limit = self.timeout if timeout is None else timeout
        with self._lock:
            if self._stuck_by_path.get(path):
                raise ProbeTimeout(what, path, limit)
            if sum(self._stuck_by_path.values()) >= self.max_stuck:
                log.warning("probe_refused_too_many_stuck", what=what, path=path)
                raise ProbeTimeout(what, path, limit)

        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        state = {"abandoned": False}

        def deliver(ok: bool, value: object) -> None:
            if future.done():
                return
            if ok:
                future.set_result(value)  # type: ignore[arg-type]
            else:
                future.set_exception(value)  # type: ignore[arg-type]

        def body() -> None:
            try:
                value: object = fn()
                ok = True
            except BaseException as exc:  # delivered to the awaiting coroutine
                value, ok = exc, False
            with self._lock:
                if state["abandoned"]:
                    self._release(path)
                    log.info("stuck_probe_returned", what=what, path=path)
                    return
            with contextlib.suppress(RuntimeError):  # the loop closed while we were blocked
                loop.call_soon_threadsafe(deliver, ok, value)

        thread = threading.Thread(target=body, name=f"probe-{what}", daemon=True)
        thread.start()
        try:
            return await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            with self._lock:
                if not future.done():
                    state["abandoned"] = True
                    self._stuck_by_path[path] = self._stuck_by_path.get(path, 0) + 1
            if state["abandoned"]:
                log.warning("probe_timeout", what=what, path=path, timeout=limit)
                raise ProbeTimeout(what, path, limit) from None
            return future.result()
        except asyncio.CancelledError:
            with self._lock:
                if not future.done():
                    state["abandoned"] = True
                    self._stuck_by_path[path] = self._stuck_by_path.get(path, 0) + 1
            raise

    def _release(self, path: str) -> None:
        remaining = self._stuck_by_path.get(path, 0) - 1
        if remaining > 0:
            self._stuck_by_path[path] = remaining
        else:
            self._stuck_by_path.pop(path, None)
        self._released.notify_all()

    async def stat(self, path: str, *, timeout: float | None = None) -> os.stat_result:
        return await self.call("stat", path, lambda: os.stat(path), timeout=timeout)

    async def lstat(self, path: str, *, timeout: float | None = None) -> os.stat_result:
        return await self.call("lstat", path, lambda: os.lstat(path), timeout=timeout)

    async def statvfs(self, path: str, *, timeout: float | None = None) -> os.statvfs_result:
        return await self.call("statvfs", path, lambda: os.statvfs(path), timeout=timeout)

    async def read_first_entry(self, path: str, *, timeout: float | None = None) -> str | None:
        """readdir() the directory and return its first entry name (None when empty)."""

        def first() -> str | None:
            with os.scandir(path) as entries:
                for entry in entries:
                    return entry.name
            return None

        return await self.call("readdir", path, first, timeout=timeout)

    async def lookup(self, directory: str, name: str, *, timeout: float | None = None) -> bool:
        """Look a name up in a directory (forces a directory read); ENOENT is a healthy False."""
        target = os.path.join(directory, name)

        def look() -> bool:
            try:
                os.lstat(target)
            except FileNotFoundError:
                return False
            return True

        return await self.call("lookup", directory, look, timeout=timeout)

    async def probe_mount_point(
        self, path: str, *, lookup_name: str, timeout: float | None = None
    ) -> os.stat_result:
        """Touch a mount point the ways a dead or damaged filesystem fails, in one thread:
        stat; for a directory statvfs, readdir and a lookup of `lookup_name` (which forces a
        directory read; ENOENT is healthy); for a block device node open + BLKGETSIZE64.
        The first OSError propagates (its filename says which step failed)."""

        def probe() -> os.stat_result:
            st = os.stat(path)
            if stat.S_ISBLK(st.st_mode):
                _block_size(path)
                return st
            os.statvfs(path)
            if stat.S_ISDIR(st.st_mode):
                with os.scandir(path) as entries:
                    next(entries, None)
                with contextlib.suppress(FileNotFoundError):
                    os.lstat(os.path.join(path, lookup_name))
            return st

        return await self.call("probe", path, probe, timeout=timeout)

    async def block_device_size(self, device: str, *, timeout: float | None = None) -> int:
        """Size in bytes through the BLKGETSIZE64 ioctl (opening a dead device can hang)."""

        return await self.call("open", device, lambda: _block_size(device), timeout=timeout)


def _block_size(device: str) -> int:
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        raw = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
    finally:
        os.close(fd)
    return int(struct.unpack("Q", raw)[0])
