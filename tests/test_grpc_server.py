"""The transport in-process: error mapping, per-RPC logs and the drain on shutdown."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog

from rds_csi.gen.csi import v1 as csi
from rds_csi.grpc_server import CsiServer, SocketInUseError, bind_unix_socket
from rds_csi.logs import configure_logging
from tests.support.grpcio_csi import load_grpcio_csi
from tests.support.sockets import server_connections_closed


class GatedNode(csi.NodeBase):
    """A node service whose NodeGetInfo waits for the test to open a gate."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def node_get_info(self, message: csi.NodeGetInfoRequest) -> csi.NodeGetInfoResponse:
        self.entered.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return csi.NodeGetInfoResponse(node_id="gated")

    async def node_get_capabilities(
        self, message: csi.NodeGetCapabilitiesRequest
    ) -> csi.NodeGetCapabilitiesResponse:
        password = "hunter2-local-variable"
        raise ValueError(f"boom {len(password)}")


@pytest.fixture(scope="module")
def pb() -> tuple[Any, Any]:
    return load_grpcio_csi()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(fmt="json", level="info", stream=stream, cache_loggers=False)
    yield stream
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in stream.getvalue().splitlines() if raw.startswith("{")]


async def call(path: Path, pb: tuple[Any, Any], method: str, timeout: float = 20) -> Any:
    csi_pb2, csi_pb2_grpc = pb

    def blocking() -> Any:
        with grpc.insecure_channel(f"unix://{path}") as ch:
            stub = csi_pb2_grpc.NodeStub(ch)
            request = getattr(csi_pb2, f"{method}Request")()
            return getattr(stub, method)(request, timeout=timeout)

    return await asyncio.to_thread(blocking)


async def test_unexpected_exception_is_internal_without_traceback_or_locals(
    tmp_path: Path, pb: tuple[Any, Any], log_stream: io.StringIO
) -> None:
    server = CsiServer([GatedNode()])
    await server.start(tmp_path / "csi.sock")
    try:
        with pytest.raises(grpc.RpcError) as err:
            await call(tmp_path / "csi.sock", pb, "NodeGetCapabilities")
    finally:
        await server.stop(grace=1)
        await server_connections_closed(tmp_path / "csi.sock")
    assert err.value.code() == grpc.StatusCode.INTERNAL
    details = err.value.details() or ""
    assert "ValueError" in details and "Traceback" not in details and "boom" not in details
    logged = lines(log_stream)
    failure = next(line for line in logged if line["event"] == "rpc raised an unexpected exception")
    assert "exception" in failure  # the traceback is kept locally...
    assert "hunter2-local-variable" not in log_stream.getvalue()  # ...without local variables
    done = next(line for line in logged if line["event"] == "rpc")
    assert done["code"] == "INTERNAL" and done["method"] == "NodeGetCapabilities"


async def test_stop_lets_in_flight_calls_finish_and_refuses_new_ones(
    tmp_path: Path, pb: tuple[Any, Any], log_stream: io.StringIO
) -> None:
    node = GatedNode()
    server = CsiServer([node])
    path = tmp_path / "csi.sock"
    await server.start(path)
    in_flight = asyncio.create_task(call(path, pb, "NodeGetInfo"))
    await node.entered.wait()
    stopping = asyncio.create_task(server.stop(grace=30))
    # The socket goes first, so nothing new can connect while the call finishes.
    while path.exists():
        await asyncio.sleep(0)
    assert not stopping.done()
    node.gate.set()
    response = await in_flight
    assert response.node_id == "gated"
    assert await stopping is True
    await server_connections_closed(path)


async def test_stop_cancels_calls_that_outlive_the_grace_period(
    tmp_path: Path, pb: tuple[Any, Any], log_stream: io.StringIO
) -> None:
    node = GatedNode()
    server = CsiServer([node])
    path = tmp_path / "csi.sock"
    await server.start(path)
    in_flight = asyncio.create_task(call(path, pb, "NodeGetInfo", timeout=3))
    await node.entered.wait()
    assert await server.stop(grace=0.2) is False
    assert node.cancelled.is_set()  # the handler was cancelled, not left running
    with pytest.raises(grpc.RpcError):
        await in_flight
    await server_connections_closed(path)


def test_bind_refuses_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "csi.sock"
    path.write_text("not a socket")
    with pytest.raises(SocketInUseError, match="not a socket"):
        bind_unix_socket(path)
    assert path.read_text() == "not a socket"


async def test_a_failing_rpc_hook_does_not_change_the_result(
    tmp_path: Path, pb: tuple[Any, Any], log_stream: io.StringIO
) -> None:
    def broken_hook(method: str, status: Any, seconds: float) -> None:
        raise RuntimeError("metrics backend exploded")

    node = GatedNode()
    node.gate.set()
    server = CsiServer([node], on_rpc_done=broken_hook)
    path = tmp_path / "csi.sock"
    await server.start(path)
    try:
        response = await call(path, pb, "NodeGetInfo")
    finally:
        await server.stop(grace=1)
        await server_connections_closed(path)
    assert response.node_id == "gated"
    assert any(line["event"] == "rpc hook failed" for line in lines(log_stream))
