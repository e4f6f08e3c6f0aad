"""The subprocess runner: argv only, timeouts that kill the whole process group, clean errors."""

from __future__ import annotations

import asyncio
import os
import select
import sys
from pathlib import Path

import pytest

from rds_csi.host.errors import CommandFailed, CommandTimeout, InvalidInput, ToolNotFound
from rds_csi.host.runner import CommandRunner

PY = sys.executable


async def test_captures_output_and_exit_code_in_the_c_locale() -> None:
    runner = CommandRunner()
    script = "import os, sys; print(os.environ['LC_ALL']); print('warn', file=sys.stderr)"
    result = await runner.run([PY, "-c", script], timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "C\n", "warn\n")
    assert result.argv == (PY, "-c", script)


async def test_failure_names_the_tool_the_code_and_the_first_lines_of_stderr() -> None:
    runner = CommandRunner(tools={"mount": PY})
    script = (
        "import sys; sys.stderr.write('\\nmount: /x: wrong fs type\\n  dmesg(1) may have more\\n"
        "third line\\n'); sys.exit(32)"
    )
    with pytest.raises(CommandFailed) as caught:
        await runner.run(["mount", "-c", script], timeout=30)
    error = caught.value
    assert error.returncode == 32
    assert error.argv[0] == PY  # the configured binary really ran
    assert "exited with code 32: mount: /x: wrong fs type | dmesg(1) may have more" in str(error)
    assert "third line" not in str(error)
    assert "third line" in error.stderr


async def test_accepted_exit_codes_and_unchecked_runs_return_the_result() -> None:
    runner = CommandRunner()
    exit2 = [PY, "-c", "import sys; sys.exit(2)"]
    assert (await runner.run(exit2, ok_codes=(0, 2))).returncode == 2
    assert (await runner.run(exit2, check=False)).returncode == 2


async def test_stdin_is_passed_and_output_is_bounded() -> None:
    runner = CommandRunner(max_output_bytes=1000)
    script = "import sys; data = sys.stdin.read(); sys.stdout.write(data * 5000)"
    result = await runner.run([PY, "-c", script], stdin=b"0123456789", timeout=30)
    assert result.stdout == "0123456789" * 100
    assert result.truncated


def _wait_for_exit(pidfd: int) -> bool:
    ready, _, _ = select.select([pidfd], [], [], 10)  # safety net; returns when the pid exits
    return bool(ready)


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """The tool and a grandchild it started are both gone when CommandTimeout is raised."""
    fifo = tmp_path / "pids"
    os.mkfifo(fifo)
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"with open({str(fifo)!r}, 'w') as f: f.write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)\n"
    )
    runner = CommandRunner()
    task = asyncio.ensure_future(runner.run([PY, "-c", script], timeout=1.0))
    pids = (await asyncio.to_thread(fifo.read_text)).split()
    pidfds = [os.pidfd_open(int(pid)) for pid in pids]
    try:
        with pytest.raises(CommandTimeout, match=r"did not finish within 1 s and was killed"):
            await task
        for pidfd in pidfds:
            assert await asyncio.to_thread(_wait_for_exit, pidfd)
    finally:
        for pidfd in pidfds:
            os.close(pidfd)


async def test_cancelling_the_caller_kills_the_tool(tmp_path: Path) -> None:
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    script = (
        f"import os, time\nwith open({str(fifo)!r}, 'w') as f: f.write(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    task = asyncio.ensure_future(CommandRunner().run([PY, "-c", script], timeout=60))
    pidfd = os.pidfd_open(int(await asyncio.to_thread(fifo.read_text)))
    try:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Already reaped by the time cancellation propagated: nothing runs behind our back.
        assert select.select([pidfd], [], [], 0)[0]
    finally:
        os.close(pidfd)


async def test_missing_tool_and_bad_arguments_are_reported_before_running(tmp_path: Path) -> None:
    runner = CommandRunner(tools={"nvme": str(tmp_path / "no-such-nvme")})
    with pytest.raises(ToolNotFound, match="required tool 'nvme' not found"):
        await runner.run(["nvme", "list"])
    with pytest.raises(InvalidInput):
        await runner.run(["echo", "a\0b"])
    with pytest.raises(InvalidInput):
        await runner.run([])
    assert runner.which("nvme") is None
    assert runner.missing_tools(["nvme", "sh"]) == ["nvme"]


async def test_no_shell_interprets_the_arguments(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = await CommandRunner().run(["echo", f"x; touch {marker}", "$(id)"], timeout=30)
    assert result.stdout == f"x; touch {marker} $(id)\n"
    assert not marker.exists()
