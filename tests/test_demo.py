"""`python -m demo` as a user runs it: its output, its exit status, and the host it leaves.

The end-to-end runs need root and loop devices; the kubectl-style rendering and the refusal to
run without root are checked anywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from demo import host
from demo.kubectl import describe_pvc, get_events_table, human_duration

REPO = Path(__file__).resolve().parents[1]
STEP = re.compile(r"^\[\s*(\d+)/(\d+)\] (.+?) \.{3,} (OK|FAILED) \((\d+) ms\)(?:: (.*))?$")
STEPS = 19


# ---- kubectl rendering -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600 + 60, "3h1m"),
        (8 * 3600, "8h"),
        (50 * 3600, "2d2h"),
        (10 * 86400, "10d"),
        (3 * 365 * 86400 + 86400, "3y1d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_ages_read_like_kubectl(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


def _event(reason: str, type_: str, message: str, *, seen: datetime, count: int = 1) -> Any:
    stamp = seen.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": type_,
        "reason": reason,
        "message": message,
        "count": count,
        "firstTimestamp": (seen - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
        if count > 1
        else stamp,
        "lastTimestamp": stamp,
        "involvedObject": {"kind": "PersistentVolumeClaim", "name": "data"},
        "source": {"component": "rds-csi-node", "host": "node-1"},
    }


def test_events_table_has_kubectl_columns_and_aligned_rows() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    events = [
        _event("StaleMountDetected", "Normal", "m1", seen=now - timedelta(seconds=4)),
        _event("MountFailure", "Warning", "m2", seen=now - timedelta(seconds=2), count=3),
    ]
    lines = get_events_table(events, now).splitlines()
    assert lines[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert lines[1].split() == [
        "4s",
        "Normal",
        "StaleMountDetected",
        "persistentvolumeclaim/data",
        "m1",
    ]
    assert lines[2].startswith("2s (x3 over 3m2s)   Warning")
    # tabwriter alignment: every column starts at the same offset on every line
    for column in ("TYPE", "REASON", "OBJECT", "MESSAGE"):
        offset = lines[0].index(column)
        assert all(line[offset - 1] == " " and line[offset] != " " for line in lines)
    assert get_events_table([], now) == "No resources found."


def test_describe_sorts_by_last_seen_and_shows_the_source_component() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = _event("MountFailure", "Warning", "late", seen=now - timedelta(seconds=1))
    earlier = _event("StaleMountDetected", "Normal", "early", seen=now - timedelta(seconds=9))
    pvc = {
        "metadata": {"name": "data", "namespace": "default"},
        "spec": {"storageClassName": "rds-nvme", "volumeName": "pvc-1", "volumeMode": "Block"},
        "status": {
            "phase": "Bound",
            "accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "1Gi"},
        },
    }
    text = describe_pvc(pvc, [later, earlier], now)
    lines = text.splitlines()
    assert "Access Modes:  RWO" in lines and "VolumeMode:    Block" in lines
    events_at = lines.index("Events:")
    assert lines[events_at + 1].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert lines[events_at + 3].split() == [
        "Normal",
        "StaleMountDetected",
        "9s",
        "rds-csi-node",
        "early",
    ]
    assert lines[events_at + 4].split() == ["Warning", "MountFailure", "1s", "rds-csi-node", "late"]
    assert describe_pvc(pvc, [], now).endswith("Events:  <none>")


# ---- refusing to run -----------------------------------------------------------------------


def test_without_root_it_says_why_in_one_line_and_exits_2() -> None:
    argv = [sys.executable, "-m", "demo"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv is not available to drop privileges")
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("demo: cannot run: needs root")


# ---- the real run --------------------------------------------------------------------------


@pytest.fixture
def as_root() -> None:
    reason = host.preflight()
    if reason is not None:
        pytest.skip(reason)


def _run_demo(tmp_path: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    if extra_path is not None:
        env["PATH"] = f"{extra_path}:{env.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _steps(output: str) -> list[re.Match[str]]:
    return [m for line in output.splitlines() if (m := STEP.match(line))]


def _assert_nothing_left(tmp_path: Path) -> None:
    left = host.leftovers(tmp_path)
    assert not left, f"left behind: {left.describe()}"
    workdirs = list(tmp_path.glob("rds-csi-demo-*"))
    assert len(workdirs) == 1
    assert [p.name for p in workdirs[0].iterdir()] == ["daemon.log"]


def _daemon_pid(output: str) -> int:
    match = re.search(r"OK \(\d+ ms\): pid (\d+),", output)
    assert match, output
    return int(match.group(1))


def _is_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # exited; the demo is gone, so only a reaper is missing


def _table(output: str, header: str) -> list[list[str]]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip(), maxsplit=4))
    return rows


@pytest.mark.root
def test_demo_walks_a_volume_through_staleness_recovery_and_failure(
    as_root: None, tmp_path: Path
) -> None:
    done = _run_demo(tmp_path)
    output = done.stdout
    assert done.returncode == 0, output + done.stderr

    steps = _steps(output)
    assert [int(m.group(1)) for m in steps] == list(range(1, STEPS + 1))
    assert {int(m.group(2)) for m in steps} == {STEPS}
    assert all(m.group(4) == "OK" for m in steps), output
    by_title = {m.group(3): m.group(6) or "" for m in steps}
    for rpc in ("NodeGetInfo", "NodeStageVolume", "NodePublishVolume", "NodeGetVolumeStats"):
        assert any(title.startswith(rpc) for title in by_title), rpc
    assert "node_id=demo-node" in by_title["NodeGetInfo"]
    assert by_title["NodeGetVolumeStats"].startswith("abnormal=false")
    stale = by_title["NodeGetVolumeStats (stale)"]
    assert stale.startswith("abnormal=true") and "Stale mount detected" in stale
    assert "remounted from /dev/loop" in by_title["NodePublishVolume (pod 2: recovers the mount)"]
    assert "intact" in by_title["read the file back through the new target"]
    failed_stage = by_title["NodeStageVolume, second volume (corrupted ext4)"]
    assert "FAILED_PRECONDITION" in failed_stage and "needs repair" in failed_stage
    assert any(t.startswith("NodeUnpublishVolume") for t in by_title)
    assert any(t.startswith("NodeUnstageVolume") for t in by_title)
    assert "exit 0" in by_title["stop the plugin with SIGTERM"]

    volume = re.search(r"claim\s+default/data -> PV (pvc-[0-9a-f-]{36})", output)
    second = re.search(r"second volume\s+(pvc-[0-9a-f-]{36})", output)
    assert volume and second
    events = _table(output, "LAST SEEN")
    by_reason = {row[2]: row for row in events}
    assert sorted(by_reason) == ["MountFailure", "StaleMountDetected"]
    seen, type_, _, obj, message = by_reason["StaleMountDetected"]
    assert re.fullmatch(r"\d+s", seen)
    assert (type_, obj) == ("Normal", "persistentvolumeclaim/data")
    assert message.startswith(f"[{volume.group(1)}] on [demo-node]: stale mount detected")
    _, type_, _, obj, message = by_reason["MountFailure"]
    assert (type_, obj) == ("Warning", "persistentvolumeclaim/data")
    assert message.startswith(f"[{second.group(1)}] on [demo-node]: stage volume failed:")

    described = {row[1]: row for row in _table(output, "  Type")[1:]}
    assert described["StaleMountDetected"][0] == "Normal"
    assert described["MountFailure"][0] == "Warning"
    assert {row[3] for row in described.values()} == {"rds-csi-node"}
    assert output.rstrip().splitlines()[-1].startswith("demo OK")

    _assert_nothing_left(tmp_path)
    assert _is_gone(_daemon_pid(output))
    log = next(tmp_path.glob("rds-csi-demo-*")) / "daemon.log"
    logged = [json.loads(line).get("event") for line in log.read_text().splitlines()]
    assert "ready" in logged and "stopped" in logged


@pytest.mark.root
def test_a_step_that_misbehaves_fails_the_demo_and_everything_is_still_cleaned_up(
    as_root: None, tmp_path: Path
) -> None:
    """A broken fsck (exit 8) turns the expected FAILED_PRECONDITION into INTERNAL: the demo
    must say FAILED, exit 1, and still remove the first volume's staged and published mounts."""
    tools = tmp_path / "bin"
    tools.mkdir()
    fsck = tools / "fsck.ext4"
    fsck.write_text("#!/bin/sh\necho 'fsck.ext4: stand-in: cannot check' >&2\nexit 8\n")
    fsck.chmod(0o755)

    done = _run_demo(tmp_path, extra_path=tools)
    output = done.stdout
    assert done.returncode == 1, output + done.stderr

    steps = _steps(output)
    assert [m.group(4) for m in steps] == ["OK"] * 13 + ["FAILED"]
    assert "expected FAILED_PRECONDITION (needs repair), got INTERNAL" in (steps[-1].group(6) or "")
    assert "demo OK" not in output
    assert "demo FAILED: step 14" in output
    assert "clean-up: removed mount" in output  # the volume was still staged and published
    _assert_nothing_left(tmp_path)
    assert _is_gone(_daemon_pid(output))
