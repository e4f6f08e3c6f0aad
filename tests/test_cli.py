"""Bad command lines end with exit status 2 and one clear line, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rds_csi.cli import DEFAULT_ENDPOINT, parse_config

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("CSI_ENDPOINT", "KUBECONFIG")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "rds_csi", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--connector", "iscsi"], "invalid choice: 'iscsi'"),
        (["--endpoint", "tcp://127.0.0.1:10000"], "only unix:///absolute/path.sock"),
        (["--endpoint", "unix:///no/such/dir/csi.sock"], "directory /no/such/dir does not exist"),
        (["--endpoint", "unix://relative/csi.sock"], "must be absolute"),
        (["--log-format", "xml"], "invalid choice: 'xml'"),
        (["--log-level", "loud"], "invalid choice: 'loud'"),
        (["--node-id", "  "], "--node-id must not be empty"),
        (["--node-id", "n" * 257], "longer than 256 bytes"),
        (["--driver-name", "bad_name_"], "--driver-name 'bad_name_'"),
        (["--kubeconfig", "/no/such/kubeconfig"], "no such file"),
        (["--metrics-address", "9809"], "expected host:port"),
        (["--managed-nqn-prefix", "iqn.2000"], "must start with 'nqn.'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    base = ["--endpoint", f"unix://{tmp_path}/csi.sock"]
    result = run_cli(*base, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rds-csi-node: error: ")
    assert expected in lines[0]
    assert result.stdout == ""


def test_endpoint_that_is_a_regular_file_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "csi.sock"
    victim.write_text("precious")
    result = run_cli("--endpoint", f"unix://{victim}")
    assert result.returncode == 2
    assert "is not a socket" in result.stderr
    assert victim.read_text() == "precious"


def test_environment_supplies_endpoint_and_node_id(tmp_path: Path) -> None:
    config = parse_config(
        [], env={"CSI_ENDPOINT": f"unix://{tmp_path}/x.sock", "NODE_ID": "worker-7"}
    )
    assert config.socket_path == tmp_path / "x.sock"
    assert config.node_id == "worker-7"
    assert config.connector == "nvme-tcp"
    assert config.driver_name == "rds.csi.srvlab.io"
    assert config.metrics_address is None


def test_flags_override_environment(tmp_path: Path) -> None:
    config = parse_config(
        [
            "--endpoint",
            f"unix://{tmp_path}/flag.sock",
            "--node-id",
            "from-flag",
            "--metrics-address",
            "127.0.0.1:9809",
            "--connector",
            "loop",
        ],
        env={"CSI_ENDPOINT": f"unix://{tmp_path}/env.sock", "NODE_ID": "from-env"},
    )
    assert config.socket_path == tmp_path / "flag.sock"
    assert config.node_id == "from-flag"
    assert config.metrics_address == ("127.0.0.1", 9809)
    assert config.connector == "loop"


def test_default_endpoint_is_the_kubelet_plugin_directory() -> None:
    assert DEFAULT_ENDPOINT == "unix:///var/lib/kubelet/plugins/rds.csi.srvlab.io/csi.sock"


def test_help_lists_every_flag() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in (
        "--endpoint",
        "--node-id",
        "--driver-name",
        "--kubeconfig",
        "--log-format",
        "--log-level",
        "--connector",
        "--metrics-address",
    ):
        assert flag in result.stdout
