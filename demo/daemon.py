"""The plugin as kubelet would run it: `python -m rds_csi` in its own process, JSON logs.

Its output is copied line by line to a log file and parsed on the way, so the demo waits on
what the daemon says ("ready", "stopped"), never on the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["DaemonExited", "DaemonProcess"]

LogLine = dict[str, Any]


class DaemonExited(Exception):
    """The daemon ended before it logged what the demo waited for."""


class DaemonProcess:
    def __init__(self, args: Sequence[str], log_path: Path, *, cwd: Path) -> None:
        self.argv = [sys.executable, "-m", "rds_csi", *args]
        self.log_path = log_path
        self.cwd = cwd
        self.lines: list[LogLine] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._log: IO[str] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._eof = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KUBECONFIG", None)  # the demo passes --kubeconfig; nothing else may leak in
        # A local file, closed in stop() or kill_now().
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: ASYNC230, SIM115
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=self.cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Its own session: a Ctrl-C reaches only the demo, which then stops the daemon in
            # the right order (before the clean-up of mounts and loop devices).
            start_new_session=True,
            limit=1 << 20,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None and self._log is not None
        while raw := await self.proc.stdout.readline():
            text = raw.decode(errors="replace")
            self._log.write(text)
            self._log.flush()
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = {"event": None, "raw": text.rstrip("\n")}
            if not isinstance(parsed, dict):
                parsed = {"event": None, "raw": text.rstrip("\n")}
            async with self._changed:
                self.lines.append(parsed)
                self._changed.notify_all()
        async with self._changed:
            self._eof = True
            self._changed.notify_all()

    def find(self, predicate: Callable[[LogLine], bool]) -> LogLine | None:
        return next((line for line in self.lines if predicate(line)), None)

    async def wait_for_log(self, event: str, timeout: float) -> LogLine:
        """The first log line whose event is `event`; DaemonExited if the output ends first."""

        def found() -> bool:
            return self._eof or self.find(lambda line: line.get("event") == event) is not None

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(found)
        line = self.find(lambda line: line.get("event") == event)
        if line is None:
            code = await self.proc.wait() if self.proc is not None else None
            raise DaemonExited(
                f"the daemon exited (status {code}) before logging {event!r}; see {self.log_path}"
            )
        return line

    def errors(self) -> list[LogLine]:
        return [line for line in self.lines if line.get("level") in ("error", "critical")]

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the daemon and wait for it to exit (SIGKILL after `timeout`)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await self._reader
        if self._log is not None:
            self._log.close()
            self._log = None
        assert self.proc.returncode is not None
        return self.proc.returncode

    def kill_now(self) -> None:
        """Last resort outside the event loop (an interrupted run): no orphaned daemon."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
