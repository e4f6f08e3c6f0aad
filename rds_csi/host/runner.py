"""Run host tools as subprocesses: argv lists only, always with a timeout.

Every command gets its own session (process group), so a timeout or a cancelled caller kills the
tool *and* anything it spawned.  After a kill the runner waits (briefly, shielded) for the tool to
be reaped: a killed `mount` that finishes its syscall after we returned would otherwise stack a
second mount under a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from rds_csi.host.errors import CommandFailed, CommandTimeout, InvalidInput, ToolNotFound

__all__ = ["DEFAULT_PATH", "CommandResult", "CommandRunner"]

log = structlog.get_logger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_READ_CHUNK = 64 * 1024
_REAP_GRACE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float
    truncated: bool = False


class _BoundedSink:
    """Keeps the first `limit` bytes of a stream and drains (and counts) the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.kept = 0
        self.dropped = 0

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_READ_CHUNK):
            room = self.limit - self.kept
            if room > 0:
                self.chunks.append(chunk[:room])
                self.kept += min(room, len(chunk))
            self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")


class CommandRunner:
    """Runs tools by logical name; `tools` maps a name to a binary path (tests use stand-ins)."""

    def __init__(
        self,
        tools: Mapping[str, str] | None = None,
        *,
        default_timeout: float = 30.0,
        max_output_bytes: int = 1 << 20,
        search_path: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self._tools = dict(tools or {})
        self.default_timeout = default_timeout
        self.max_output_bytes = max_output_bytes
        self._search_path = search_path or os.environ.get("PATH") or DEFAULT_PATH
        if DEFAULT_PATH not in self._search_path:
            # Host tools live in sbin directories that a container's PATH may lack.
            self._search_path = f"{self._search_path}:{DEFAULT_PATH}"
        self._env = {"PATH": self._search_path, "LC_ALL": "C", "LANG": "C"}
        self._env.update(extra_env or {})

    def tool_path(self, tool: str) -> str:
        """The path or name that `run([tool, ...])` executes."""
        return self._tools.get(tool, tool)

    def which(self, tool: str) -> str | None:
        """Absolute path of `tool`, or None when it is not installed."""
        path = self.tool_path(tool)
        if os.sep in path:
            return path if os.access(path, os.X_OK) and os.path.isfile(path) else None
        return shutil.which(path, path=self._search_path)

    def missing_tools(self, tools: Iterable[str]) -> list[str]:
        return [tool for tool in tools if self.which(tool) is None]

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = True,
        ok_codes: Container[int] = (0,),
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Run argv (argv[0] is a tool name) and return its result.

        Raises CommandFailed when `check` is set and the exit code is not in `ok_codes`,
        CommandTimeout when the timeout expires, ToolNotFound when the binary is missing.
        """
        if not argv:
            raise InvalidInput("empty command")
        for arg in argv:
            if not isinstance(arg, str) or "\0" in arg:
                raise InvalidInput(f"invalid command argument {arg!r}")
        limit = self.default_timeout if timeout is None else timeout
        exec_argv = [self.tool_path(argv[0]), *argv[1:]]
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *exec_argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                start_new_session=True,
                close_fds=True,
            )
        except FileNotFoundError as exc:
            raise ToolNotFound(argv[0], exec_argv[0]) from exc
        except PermissionError as exc:
            raise ToolNotFound(argv[0], exec_argv[0]) from exc

        out, err = _BoundedSink(self.max_output_bytes), _BoundedSink(self.max_output_bytes)
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            asyncio.ensure_future(out.drain(proc.stdout)),
            asyncio.ensure_future(err.drain(proc.stderr)),
        ]
        try:
            async with asyncio.timeout(limit):
                if stdin is not None and proc.stdin is not None:
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        proc.stdin.write(stdin)
                        await proc.stdin.drain()
                    proc.stdin.close()
                await asyncio.gather(*readers)
                returncode = await proc.wait()
        except TimeoutError:
            await _kill_and_reap(proc, readers)
            log.warning("command_timeout", argv=exec_argv, timeout=limit)
            raise CommandTimeout(exec_argv, limit) from None
        except BaseException:
            # Cancelled (or anything else): never leave the tool running behind our back.
            await _kill_and_reap(proc, readers)
            raise

        result = CommandResult(
            argv=tuple(exec_argv),
            returncode=returncode,
            stdout=out.text(),
            stderr=err.text(),
            duration=time.monotonic() - started,
            truncated=bool(out.dropped or err.dropped),
        )
        log.debug("command_done", argv=exec_argv, returncode=returncode, duration=result.duration)
        if check and returncode not in ok_codes:
            raise CommandFailed(exec_argv, returncode, result.stderr or result.stdout)
        return result


async def _kill_and_reap(
    proc: asyncio.subprocess.Process, readers: Sequence[asyncio.Future[None]]
) -> None:
    """SIGKILL the whole process group, then wait (shielded, bounded) until it is reaped."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    reaped = asyncio.ensure_future(proc.wait())
    try:
        await asyncio.wait_for(asyncio.shield(reaped), _REAP_GRACE_SECONDS)
    except (TimeoutError, asyncio.CancelledError):
        log.warning("command_not_reaped", pid=proc.pid)
    finally:
        for reader in readers:
            reader.cancel()
        if not reaped.done():
            reaped.cancel()
