"""Probes off the event loop: errno classification, timeouts on a really hung mount, and the
bound on abandoned threads."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from rds_csi.host.errors import ProbeTimeout
from rds_csi.host.probes import ErrnoClass, Prober, classify_errno
from tests.host.conftest import HungFuse


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENOTCONN, ErrnoClass.CORRUPTED_MOUNT),
        (errno.ESTALE, ErrnoClass.CORRUPTED_MOUNT),
        (errno.EIO, ErrnoClass.CORRUPTED_MOUNT),
        (errno.EACCES, ErrnoClass.CORRUPTED_MOUNT),
        (errno.EHOSTDOWN, ErrnoClass.CORRUPTED_MOUNT),
        (errno.EWOULDBLOCK, ErrnoClass.CORRUPTED_MOUNT),
        (errno.ENODEV, ErrnoClass.CORRUPTED_MOUNT),
        (errno.EUCLEAN, ErrnoClass.NEEDS_REPAIR),
        (errno.EBADMSG, ErrnoClass.NEEDS_REPAIR),
        (errno.ENOENT, ErrnoClass.NOT_FOUND),
        (errno.EPERM, ErrnoClass.OTHER),
        (None, ErrnoClass.OTHER),
    ],
)
def test_errno_classification(code: int | None, expected: ErrnoClass) -> None:
    assert classify_errno(code) is expected


async def test_probes_return_results_and_raise_os_errors_unchanged(tmp_path: Path) -> None:
    prober = Prober(timeout=5)
    (tmp_path / "a").write_text("x")
    assert (await prober.stat(str(tmp_path / "a"))).st_size == 1
    assert await prober.read_first_entry(str(tmp_path)) == "a"
    assert await prober.lookup(str(tmp_path), "a") is True
    assert await prober.lookup(str(tmp_path), "nothing") is False
    assert (await prober.statvfs(str(tmp_path))).f_bsize > 0
    with pytest.raises(FileNotFoundError):
        await prober.stat(str(tmp_path / "missing"))
    assert prober.stuck == 0


@pytest.mark.root
async def test_hung_mount_times_out_and_fails_fast_while_stuck(hung_fuse: HungFuse) -> None:
    prober = Prober(timeout=0.3)
    path = str(hung_fuse.path)
    with pytest.raises(ProbeTimeout, match="unresponsive"):
        await prober.stat(path)
    assert prober.stuck == 1 and prober.stuck_paths() == [path]

    # A second probe of the same path does not start another doomed thread.
    threads_before = _thread_count()
    with pytest.raises(ProbeTimeout):
        await prober.statvfs(path, timeout=30)
    assert prober.stuck == 1
    assert _thread_count() == threads_before

    # When the mount's server goes away the stuck thread returns and is forgotten.
    hung_fuse.disconnect()
    assert await asyncio.to_thread(prober.wait_idle, 10)
    assert prober.stuck == 0
    with pytest.raises(OSError) as caught:
        await prober.stat(path)
    assert caught.value.errno == errno.ENOTCONN


@pytest.mark.root
async def test_stuck_threads_are_bounded(hung_fuse: HungFuse, tmp_path: Path) -> None:
    prober = Prober(timeout=0.2, max_stuck=1)
    with pytest.raises(ProbeTimeout):
        await prober.read_first_entry(str(hung_fuse.path))
    # Past the bound even a healthy path is refused instead of risking another stuck thread.
    with pytest.raises(ProbeTimeout):
        await prober.stat(str(tmp_path))
    hung_fuse.disconnect()
    assert await asyncio.to_thread(prober.wait_idle, 10)
    assert (await prober.stat(str(tmp_path))).st_ino == os.stat(tmp_path).st_ino


def _thread_count() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/task"))
