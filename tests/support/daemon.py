"""Run the real daemon as a subprocess and wait on what it logs, never on the clock."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class DaemonProcess:
    """`python -m rds_csi` with JSON logs on stdout, parsed line by line."""

    def __init__(
        self, socket_path: Path, extra_args: Sequence[str] = (), env: dict[str, str] | None = None
    ):
        self.socket_path = socket_path
        self.args = [
            sys.executable,
            "-m",
            "rds_csi",
            "--endpoint",
            f"unix://{socket_path}",
            "--log-format",
            "json",
            "--node-id",
            "test-node",
            *extra_args,
        ]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.env.pop("KUBECONFIG", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self._pending = b""
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []

    def start(self) -> DaemonProcess:
        self.proc = subprocess.Popen(
            self.args,
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._pending = b""
        return self

    def _take_line(self, raw: str) -> dict[str, Any]:
        self.raw.append(raw)
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = {"event": None, "raw": raw}
        self.lines.append(parsed)
        return parsed

    def wait_for_log(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        """Read log lines until one whose event is `event`; fail if the process exits first.

        Reads the pipe with os.read, because a buffered readline can hold a complete line in
        its buffer while select() waits for more bytes that never come.
        """
        for line in self.lines:
            if line.get("event") == event:
                return line
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in self._pending:
                    raw, self._pending = self._pending.split(b"\n", 1)
                    if self._take_line(raw.decode() + "\n").get("event") == event:
                        return self.lines[-1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(timeout=remaining):
                    break
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(
                        f"daemon exited ({self.proc.wait()}) before logging {event!r}:\n"
                        + self.output()
                    )
                self._pending += chunk
        raise AssertionError(f"no {event!r} log line within {timeout}s:\n" + self.output())

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit on its own; collect the rest of its output."""
        assert self.proc is not None
        out, _ = self.proc.communicate(timeout=timeout)
        rest = (self._pending + out).decode()
        self._pending = b""
        for raw in rest.splitlines(keepends=True):
            self._take_line(raw)
        return self.proc.returncode

    def output(self) -> str:
        return "".join(self.raw)

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
