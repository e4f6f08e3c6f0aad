"""One operation per volume at a time, and operations that outlive a cancelled caller.

kubelet cancels an RPC when its deadline passes and then retries it.  A mount or mkfs cut off
half-way could leave a state the retry has to untangle, so each operation runs in its own task:
the handler awaits it through `asyncio.shield`, a cancelled handler leaves it running, and the
retry gets ABORTED until it has finished, then finds the work done (every step is idempotent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

__all__ = ["VolumeBusy", "VolumeOperations"]

log = structlog.get_logger("rds_csi.node")

T = TypeVar("T")


class VolumeBusy(Exception):
    def __init__(self, volume_id: str, running: str) -> None:
        super().__init__(
            f"an operation on volume {volume_id} is already in progress ({running}); retry later"
        )


class VolumeOperations:
    def __init__(self) -> None:
        self._running: dict[str, tuple[str, asyncio.Task[object]]] = {}

    def busy(self, volume_id: str) -> str | None:
        """The name of the operation running on the volume, if any."""
        entry = self._running.get(volume_id)
        return entry[0] if entry else None

    async def run(self, volume_id: str, name: str, operation: Callable[[], Awaitable[T]]) -> T:
        running = self.busy(volume_id)
        if running is not None:
            raise VolumeBusy(volume_id, running)

        async def body() -> T:
            return await operation()

        task: asyncio.Task[T] = asyncio.get_running_loop().create_task(body())
        self._running[volume_id] = (name, task)
        task.add_done_callback(lambda t: self._finished(volume_id, name, t))
        return await asyncio.shield(task)

    def _finished(self, volume_id: str, name: str, task: asyncio.Task[T]) -> None:
        self._running.pop(volume_id, None)
        if task.cancelled():
            return
        error = task.exception()  # retrieved here, so a caller that gave up leaves no warning
        if error is not None:
            log.debug("volume operation ended with an error", operation=name, error=str(error))

    async def wait_idle(self, timeout: float) -> bool:
        """Wait for running operations (e.g. at shutdown); False if some are still running."""
        tasks = [task for _, task in self._running.values()]
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        return not pending
