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
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []

    def start(self) -> DaemonProcess:
        self.proc = subprocess.Popen(
            self.args,
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self

    def wait_for_log(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        """Read log lines until one whose event is `event`; fail if the process exits first."""
        for line in self.lines:
            if line.get("event") == event:
                return line
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    break
                raw = self.proc.stdout.readline()
                if raw == "":
                    raise AssertionError(
                        f"daemon exited ({self.proc.wait()}) before logging {event!r}:\n"
                        + "".join(self.raw)
                    )
                self.raw.append(raw)
                try:
                    parsed = json.loads(raw)
                except json.JSONDecodeError:
                    parsed = {"event": None, "raw": raw}
                self.lines.append(parsed)
                if parsed.get("event") == event:
                    return parsed
        raise AssertionError(f"no {event!r} log line within {timeout}s:\n" + "".join(self.raw))

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=timeout)
        for raw in out.splitlines(keepends=True):
            self.raw.append(raw)
            try:
                self.lines.append(json.loads(raw))
            except json.JSONDecodeError:
                self.lines.append({"event": None, "raw": raw})
        return self.proc.returncode

    def output(self) -> str:
        return "".join(self.raw)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
