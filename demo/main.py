"""Entry point: check the host, run the scenario, and always leave the host as it was.

Exit status: 0 every step behaved as expected; 1 a step did not (or something was left behind);
2 the demo cannot run here (not root, no loop devices, missing tools); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from demo import host

if TYPE_CHECKING:
    from demo.scenario import Scenario

__all__ = ["EXIT_CANNOT_RUN", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANNOT_RUN = 2
EXIT_INTERRUPTED = 130

REPO = Path(__file__).resolve().parents[1]


async def _run(scenario: Scenario) -> str | None:
    """None when every step behaved, else why not."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    from demo.progress import StepFailed

    try:
        await scenario.run()
        return None
    except StepFailed as err:
        return str(err)
    finally:
        await scenario.close()


def _tidy(workdir: Path) -> None:
    """Remove the work directory except the daemon's log; never over a mount still there."""
    for child in workdir.iterdir():
        if child.name == "daemon.log":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="The rds-csi node plugin end to end with loop devices and a Kubernetes API "
        "emulator: no cluster needed, root needed.",
    )
    parser.parse_args(argv)
    reason = host.preflight()
    if reason is not None:
        print(f"demo: cannot run: {reason}", file=sys.stderr, flush=True)
        return EXIT_CANNOT_RUN

    from demo.scenario import Scenario  # after the checks: a refusal stays instant

    workdir = Path(tempfile.mkdtemp(prefix="rds-csi-demo-"))
    scenario = Scenario(workdir, REPO, sys.stdout)
    failure: str | None = "interrupted"
    found = remaining = host.Leftovers([], [])
    try:
        failure = asyncio.run(_run(scenario))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ndemo: interrupted, cleaning up", flush=True)
    finally:
        if scenario.daemon is not None:
            scenario.daemon.kill_now()
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C must not skip this
            found = host.clean_up(workdir)
            remaining = host.leftovers(workdir)
        if found:
            print(f"clean-up: removed {found.describe()}", flush=True)
        if remaining:
            print(f"clean-up: COULD NOT REMOVE {remaining.describe()}", flush=True)
        else:
            _tidy(workdir)

    log = workdir / "daemon.log"
    if failure == "interrupted":
        print(f"daemon log: {log}", flush=True)
        return EXIT_INTERRUPTED
    if failure is not None or found or remaining:
        print(f"demo FAILED: {failure or 'mounts or loop devices were left behind'}")
        print(f"daemon log: {log}", flush=True)
        return EXIT_FAILED
    print(f"demo OK: every step behaved as expected; daemon log kept at {log}", flush=True)
    return EXIT_OK
