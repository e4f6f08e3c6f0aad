"""The daemon as an operator runs it: a subprocess, a unix socket, a grpcio client, signals."""

from __future__ import annotations

import os
import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from rds_csi import __version__
from rds_csi.cli import parse_config
from rds_csi.daemon import build_identity_service
from rds_csi.gen.csi import v1 as csi
from rds_csi.host import (
    CommandRunner,
    Mounter,
    MountRecoverer,
    NvmeTcpConnector,
    Prober,
    StaleChecker,
)
from rds_csi.identity_server import Readiness
from rds_csi.node_server import NodeService
from tests.support.daemon import DaemonProcess
from tests.support.grpcio_csi import load_grpcio_csi


@pytest.fixture(scope="module")
def pb() -> tuple[Any, Any]:
    return load_grpcio_csi()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(tmp_path / "csi.sock", ["--connector", "loop"]).start()
    proc.wait_for_log("ready")
    yield proc
    proc.kill()


def channel(path: Path) -> grpc.Channel:
    return grpc.insecure_channel(f"unix://{path}")


def test_identity_over_the_socket(daemon: DaemonProcess, pb: tuple[Any, Any]) -> None:
    csi_pb2, csi_pb2_grpc = pb
    with channel(daemon.socket_path) as ch:
        identity = csi_pb2_grpc.IdentityStub(ch)
        info = identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=10)
        assert info.name == "rds.csi.srvlab.io"
        assert info.vendor_version == __version__
        assert info.manifest["connector"] == "loop"

        caps = identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest(), timeout=10)
        services = {c.service.type for c in caps.capabilities if c.HasField("service")}
        assert csi_pb2.PluginCapability.Service.VOLUME_ACCESSIBILITY_CONSTRAINTS in services
        assert csi_pb2.PluginCapability.Service.CONTROLLER_SERVICE not in services

        probe = identity.Probe(csi_pb2.ProbeRequest(), timeout=10)
        assert probe.HasField("ready") and probe.ready.value is True


def test_controller_calls_answer_unimplemented(daemon: DaemonProcess, pb: tuple[Any, Any]) -> None:
    csi_pb2, csi_pb2_grpc = pb
    with channel(daemon.socket_path) as ch:
        controller = csi_pb2_grpc.ControllerStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            controller.ControllerGetCapabilities(
                csi_pb2.ControllerGetCapabilitiesRequest(), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as err:
            controller.CreateVolume(csi_pb2.CreateVolumeRequest(name="v"), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_socket_is_not_world_accessible(daemon: DaemonProcess) -> None:
    mode = stat.S_IMODE(os.stat(daemon.socket_path).st_mode)
    assert mode == 0o660


def test_every_rpc_is_one_log_line(daemon: DaemonProcess, pb: tuple[Any, Any]) -> None:
    csi_pb2, csi_pb2_grpc = pb
    with channel(daemon.socket_path) as ch:
        csi_pb2_grpc.IdentityStub(ch).GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=10)
    line = daemon.wait_for_log("rpc")
    assert line["method"] == "GetPluginInfo"
    assert line["code"] == "OK"
    assert isinstance(line["duration_ms"], float)


def test_secrets_never_reach_the_log(tmp_path: Path, pb: tuple[Any, Any]) -> None:
    csi_pb2, csi_pb2_grpc = pb
    proc = DaemonProcess(tmp_path / "csi.sock", ["--connector", "loop", "--log-level", "debug"])
    proc.start()
    try:
        proc.wait_for_log("ready")
        request = csi_pb2.NodeStageVolumeRequest(
            volume_id="pvc-secret-test",
            staging_target_path=str(tmp_path / "staging"),
            secrets={"password": "hunter2-do-not-log"},
        )
        with channel(proc.socket_path) as ch, pytest.raises(grpc.RpcError):
            csi_pb2_grpc.NodeStub(ch).NodeStageVolume(request, timeout=10)
        rpc_line = proc.wait_for_log("rpc")
        assert rpc_line["volume_id"] == "pvc-secret-test"
        request_line = next(line for line in proc.lines if line.get("event") == "rpc request")
        assert request_line["request"]["secrets"] == {"password": "***"}
    finally:
        proc.terminate()
    assert "hunter2-do-not-log" not in proc.output()


def test_sigterm_exits_0_and_removes_the_socket(daemon: DaemonProcess) -> None:
    assert daemon.socket_path.exists()
    assert daemon.terminate(signal.SIGTERM) == 0
    assert not daemon.socket_path.exists()
    events = [line.get("event") for line in daemon.lines]
    assert "stopping" in events and "stopped" in events


def test_sigint_is_a_clean_stop_too(daemon: DaemonProcess) -> None:
    assert daemon.terminate(signal.SIGINT) == 0
    assert not daemon.socket_path.exists()


def test_starts_over_a_stale_socket_left_by_a_crash(tmp_path: Path, pb: tuple[Any, Any]) -> None:
    path = tmp_path / "csi.sock"
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(path))
    crashed.close()  # the file stays behind, nobody listens: what a SIGKILL leaves
    assert stat.S_ISSOCK(os.lstat(path).st_mode)

    proc = DaemonProcess(path, ["--connector", "loop"]).start()
    try:
        proc.wait_for_log("ready")
        assert any(line.get("event") == "removed stale socket" for line in proc.lines)
        csi_pb2, csi_pb2_grpc = pb
        with channel(path) as ch:
            probe = csi_pb2_grpc.IdentityStub(ch).Probe(csi_pb2.ProbeRequest(), timeout=10)
        assert probe.ready.value is True
    finally:
        assert proc.terminate() == 0


def test_refuses_a_socket_another_instance_serves(daemon: DaemonProcess) -> None:
    second = DaemonProcess(daemon.socket_path, ["--connector", "loop"]).start()
    line = second.wait_for_log("cannot listen")
    assert "already serving" in line["error"]
    assert second.wait() == 1
    assert daemon.socket_path.exists()  # the live instance keeps its socket


async def test_probe_fails_precondition_when_a_host_tool_is_missing(tmp_path: Path) -> None:
    # The daemon's own wiring, with nvme pointed at a path where there is none: hiding a tool
    # from PATH is not enough, since the runner also searches the sbin directories.
    config = parse_config(
        ["--endpoint", f"unix://{tmp_path}/csi.sock", "--connector", "nvme-tcp"], env={}
    )
    runner = CommandRunner(tools={"nvme": str(tmp_path / "bin" / "nvme")})
    mounter = Mounter(runner, Prober())
    node = NodeService(
        node_id="test-node",
        connector=NvmeTcpConnector(runner),
        mounter=mounter,
        checker=StaleChecker(mounter),
        recoverer=MountRecoverer(mounter),
    )
    readiness = Readiness()
    readiness.set_ready()
    identity = build_identity_service(config, node, readiness)
    with pytest.raises(GRPCError) as err:
        await identity.probe(csi.ProbeRequest())
    assert err.value.status == Status.FAILED_PRECONDITION
    assert "nvme" in (err.value.message or "")


def test_probe_finds_host_tools_where_commands_run_even_if_path_lacks_sbin(
    tmp_path: Path, pb: tuple[Any, Any]
) -> None:
    """A container's PATH may lack the sbin directories; the command runner still finds the
    tools there, so Probe must not call them missing (kubelet would restart a working plugin)."""
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    proc = DaemonProcess(
        tmp_path / "csi.sock", ["--connector", "nvme-tcp"], env={"PATH": str(empty_bin)}
    )
    proc.start()
    try:
        proc.wait_for_log("ready")
        csi_pb2, csi_pb2_grpc = pb
        with channel(proc.socket_path) as ch:
            probe = csi_pb2_grpc.IdentityStub(ch).Probe(csi_pb2.ProbeRequest(), timeout=10)
        assert probe.ready.value is True
    finally:
        proc.terminate()
