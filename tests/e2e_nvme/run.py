"""Run the NVMe/TCP end-to-end test in a QEMU guest and turn its verdict into an exit status.

    .venv/bin/python -m tests.e2e_nvme.run [--only NAME,...] [--rebuild] [--timeout SECONDS]

Builds (or reuses) the guest from Debian packages, boots it under TCG with the host root shared
read-only over 9p, streams the serial console, and exits 0 only when the guest printed its
result marker with rc=0, the summary counted no failure, and QEMU's isa-debug-exit status agrees.
QEMU exits 0 even when the guest fails, so its own status is never trusted on its own.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e_nvme.build import BuildError, GuestImage, build_guest, log

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO / ".cache" / "e2e-nvme"
# QEMU's whole life: a watchdog for hangs, not the budget (about 100 s on an idle 2-core CI
# machine; three times that when the machine is busy). The harness's own deadline adds a margin.
DEFAULT_TIMEOUT = 480.0
KILL_MARGIN = 15.0
TAIL_LINES = 80

# isa-debug-exit: the guest writes v to port 0xf4 and QEMU exits with (v << 1) | 1.
EXIT_GUEST_PASSED = 1
EXIT_GUEST_FAILED = 3
EXIT_TIMEOUT = 124  # from `timeout`

RESULT_RE = re.compile(r"E2E-NVME-RESULT rc=(\d+)")
SUMMARY_RE = re.compile(r"E2E-NVME SUMMARY passed=(\d+) failed=(\d+) skipped=(\d+)")


def qemu_argv(image: GuestImage, append: str, memory_mib: int, timeout: float) -> list[str]:
    return [
        "timeout", "-k", "5", f"{timeout:.0f}",
        "qemu-system-x86_64",
        "-accel", "tcg",
        "-cpu", "max",  # RDRAND: without it mkfs blocks on getrandom() early after boot
        "-smp", "2",
        "-m", str(memory_mib),
        "-nodefaults", "-no-user-config",
        "-display", "none",
        "-no-reboot",
        "-serial", "stdio",
        "-kernel", str(image.kernel),
        "-initrd", str(image.initrd),
        "-append", append,
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]  # fmt: skip


def kernel_command_line(
    python: str, only: str, guest_timeout: float, guest_env: list[str] | None = None
) -> str:
    """Words with '=' that the kernel does not know reach init's (and so Python's) environment."""
    words = [
        "console=ttyS0",
        "quiet",
        "panic=-1",
        f"E2E_REPO={REPO}",
        f"E2E_PYTHON={python}",
        f"E2E_GUEST_TIMEOUT={guest_timeout:.0f}",
    ]
    if only:
        words.append(f"E2E_ONLY={only}")
    for assignment in guest_env or []:
        if "=" not in assignment or "." in assignment.split("=", 1)[0]:
            raise SystemExit(f"e2e-nvme: --guest-env wants NAME=VALUE, got {assignment!r}")
        words.append(assignment)
    for word in words:
        if any(c.isspace() or c == '"' for c in word):
            raise SystemExit(f"e2e-nvme: cannot pass {word!r} on the kernel command line")
    return " ".join(words)


@dataclass
class GuestRun:
    exit_status: int
    seconds: float
    lines: list[str] = field(default_factory=list)
    killed_by_harness: bool = False


def boot(argv: list[str], deadline: float, echo_all: bool) -> GuestRun:
    """Run QEMU, streaming the console; kill its process group if it outlives the deadline."""
    started = time.monotonic()
    lines: list[str] = []
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n").replace("\r", "")
            lines.append(line)
            if echo_all or line.startswith("E2E-NVME"):
                print(f"guest| {line}", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    killed = False
    try:
        status = proc.wait(timeout=deadline)
    except subprocess.TimeoutExpired:
        killed = True
        os.killpg(proc.pid, signal.SIGKILL)
        status = proc.wait()
    reader.join(timeout=5)
    return GuestRun(status, time.monotonic() - started, lines, killed)


@dataclass
class Verdict:
    passed: bool
    reason: str
    counts: tuple[int, int, int] | None


def judge(run: GuestRun) -> Verdict:
    text = "\n".join(run.lines)
    results = RESULT_RE.findall(text)
    summaries = SUMMARY_RE.findall(text)
    counts = None
    if summaries:
        passed, failed, skipped = summaries[-1]
        counts = (int(passed), int(failed), int(skipped))
    if run.killed_by_harness or run.exit_status == EXIT_TIMEOUT:
        return Verdict(False, f"guest timed out after {run.seconds:.0f}s", counts)
    if not results:
        return Verdict(False, f"no result marker (QEMU exited {run.exit_status})", counts)
    rc = int(results[-1])
    if rc != 0:
        return Verdict(False, f"guest test exited {rc}", counts)
    if run.exit_status != EXIT_GUEST_PASSED:
        return Verdict(False, f"guest said rc=0 but QEMU exited {run.exit_status}", counts)
    if counts is None or counts[1] != 0 or counts[0] == 0:
        return Verdict(False, f"summary missing or not clean: {counts}", counts)
    return Verdict(True, "all scenarios passed", counts)


def precompile() -> None:
    """Byte-compile the code under test on the host: compiling under TCG costs ~16x."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "rds_csi"), str(REPO / "tests")],
        capture_output=True,
        check=False,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e_nvme.run", description=__doc__)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the guest even if cached")
    parser.add_argument("--build-only", action="store_true", help="build the guest, do not boot")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="QEMU time limit")
    parser.add_argument("--memory", type=int, default=512, help="guest RAM in MiB")
    parser.add_argument(
        "--guest-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the guest test, e.g. PYTHONPROFILEIMPORTTIME=1",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="stream only result lines; the console tail on failure"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        image = build_guest(args.cache_dir, force=args.rebuild)
    except BuildError as exc:
        log(f"guest build failed: {exc}")
        print("e2e: 0 passed, 1 failed", flush=True)
        return 1
    log(
        f"guest {'built' if image.built else 'from cache'} in {image.seconds:.1f}s: "
        f"{image.kernel_package.name} {image.kernel_package.version}, {image.kernel.name}"
    )
    if args.build_only:
        return 0

    precompile()
    guest_timeout = max(5.0, args.timeout - 30)  # the guest reports its own hang first
    append = kernel_command_line(sys.executable, args.only, guest_timeout, args.guest_env)
    argv_qemu = qemu_argv(image, append, args.memory, args.timeout)
    run = boot(argv_qemu, deadline=args.timeout + KILL_MARGIN, echo_all=not args.quiet)
    verdict = judge(run)

    if not verdict.passed:
        if args.quiet:  # only result lines were streamed: show the whole tail now
            print("--- e2e-nvme: console tail ---")
            for line in deque(run.lines, maxlen=TAIL_LINES):
                print(f"guest| {line}")
        for line in run.lines:
            if line.startswith("E2E-NVME FAIL"):
                log(line.removeprefix("E2E-NVME "))
    passed, failed, skipped = verdict.counts or (0, 0, 0)
    if not verdict.passed:
        failed = max(failed, 1)
    log(
        f"{'PASS' if verdict.passed else 'FAIL'}: {verdict.reason}; guest ran {run.seconds:.1f}s, "
        f"total {time.monotonic() - started:.1f}s, {skipped} skipped"
    )
    print(f"e2e: {passed} passed, {failed} failed", flush=True)
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
