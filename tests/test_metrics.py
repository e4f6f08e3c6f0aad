"""The metrics endpoint as Prometheus and the kubelet see it: real HTTP scrapes, parsed strictly."""

from __future__ import annotations

import asyncio
import http.client
import math
import re
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from rds_csi import DEFAULT_DRIVER_NAME
from rds_csi.event_pipeline import start_event_pipeline
from rds_csi.events import PVC_NAME_KEY, PVC_NAMESPACE_KEY
from rds_csi.gen.csi import v1 as csi
from rds_csi.grpc_server import CsiServer
from rds_csi.identity_server import IdentityService, Readiness
from rds_csi.metrics import (
    CONTENT_TYPE,
    RPC_DURATION_BUCKETS,
    MetricsServer,
    PluginMetrics,
    RpcDurations,
)
from rds_csi.node_server import NodeStats
from rds_csi.pipeline.stats import PipelineStats
from rds_csi.testing.apiserver import ApiServerEmulator
from tests.support.daemon import DaemonProcess
from tests.support.grpcio_csi import load_grpcio_csi

# --------------------------------------------------------------------------- exposition parser

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}

Labels = frozenset[tuple[str, str]]


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _LABEL_NAME.match(text, pos)
        assert match, f"bad label name at {text[pos:]!r}"
        name = match.group()
        pos = match.end()
        assert text[pos : pos + 2] == '="', f'expected =" after {name} in {text!r}'
        pos += 2
        value = []
        while text[pos] != '"':
            if text[pos] == "\\":
                assert text[pos + 1] in _ESCAPES, f"bad escape in {text!r}"
                value.append(_ESCAPES[text[pos + 1]])
                pos += 2
            else:
                assert text[pos] != "\n"
                value.append(text[pos])
                pos += 1
        pos += 1
        assert name not in labels, f"label {name} twice"
        labels[name] = "".join(value)
        if pos < len(text):
            assert text[pos] == ",", f"expected , in {text!r}"
            pos += 1
    return labels


@dataclass
class Scrape:
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name}{labels}; have {sorted(self.names())}"
        return self.samples[key]

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}

    def series(self, name: str) -> dict[Labels, float]:
        return {labels: v for (n, labels), v in self.samples.items() if n == name}


def family_of(name: str, types: dict[str, str]) -> str:
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and types.get(base) in ("histogram", "summary"):
            return base
    raise AssertionError(f"sample {name} has no TYPE line before it")


def parse_exposition(text: str) -> Scrape:
    """Text format 0.0.4: every line is a HELP/TYPE/comment line or `name{labels} value`."""
    assert text.endswith("\n")
    scrape = Scrape()
    for line in text.splitlines():
        assert line, "empty line in the exposition"
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name) and name not in scrape.helps
            scrape.helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in _TYPES and name not in scrape.types, line
            scrape.types[name] = kind
        elif line.startswith("#"):
            continue
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, raw_labels, raw_value = match.groups()
            family_of(name, scrape.types)
            labels = frozenset(parse_labels(raw_labels or "").items())
            assert (name, labels) not in scrape.samples, f"duplicate sample: {line}"
            scrape.samples[(name, labels)] = float(raw_value)
    for name in scrape.types:
        assert name in scrape.helps, f"{name} has no HELP"
        assert name.startswith("rds_csi_")
    return scrape


def check_histogram(scrape: Scrape, name: str) -> None:
    """Cumulative buckets, the +Inf bucket equal to _count, for every label set."""
    buckets = scrape.series(f"{name}_bucket")
    by_series: dict[Labels, list[tuple[float, float]]] = {}
    for labels, count in buckets.items():
        le = dict(labels)["le"]
        rest = frozenset((k, v) for k, v in labels if k != "le")
        by_series.setdefault(rest, []).append((float(le), count))
    for rest, points in by_series.items():
        points.sort()
        counts = [count for _, count in points]
        assert counts == sorted(counts), f"buckets not cumulative for {dict(rest)}"
        assert points[-1][0] == math.inf
        assert [le for le, _ in points[:-1]] == list(RPC_DURATION_BUCKETS)
        assert scrape.samples[(f"{name}_count", rest)] == counts[-1]
        assert (f"{name}_sum", rest) in scrape.samples


# --------------------------------------------------------------------------- HTTP client


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def request(
    address: tuple[str, int], path: str, method: str = "GET", raw: bytes | None = None
) -> Answer:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(raw or f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if method != "HEAD":
        assert int(headers["content-length"]) == len(body)
    return Answer(int(status_line.split(" ")[1]), headers, body)


async def scrape(address: tuple[str, int]) -> Scrape:
    answer = await request(address, "/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"] == CONTENT_TYPE
    return parse_exposition(answer.body.decode())


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    servers: list[MetricsServer] = []

    async def start(render: Callable[[], str], ready: Callable[[], bool]) -> tuple[str, int]:
        server = MetricsServer(render, ready)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return server.address

    yield start
    for server in servers:
        await server.aclose()


# --------------------------------------------------------------------------- in-process


async def test_healthz_follows_start_up(serve: Callable[..., Any]) -> None:
    readiness = Readiness()
    metrics = PluginMetrics(rpc=RpcDurations(), ready=lambda: readiness.ready)
    address = await serve(metrics.render, lambda: readiness.ready)

    before = await request(address, "/healthz")
    assert before.status == 503
    assert (await scrape(address)).value("rds_csi_ready") == 0

    readiness.set_ready()
    after = await request(address, "/healthz")
    assert (after.status, after.body) == (200, b"ok\n")
    assert (await scrape(address)).value("rds_csi_ready") == 1


async def test_rpcs_through_the_server_hook_are_histograms_by_method_and_code(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    readiness = Readiness()
    readiness.set_ready()
    identity = IdentityService(
        driver_name=DEFAULT_DRIVER_NAME,
        vendor_version="test",
        readiness=readiness,
        missing_tools=lambda: [],
        connector_name="loop",
    )
    durations = RpcDurations()
    server = CsiServer([identity, csi.ControllerBase()], on_rpc_done=durations.observe)
    metrics = PluginMetrics(rpc=durations, rpcs_in_flight=lambda: server.observer.in_flight)
    socket_path = tmp_path / "csi.sock"
    await server.start(socket_path)
    channel = Channel(path=str(socket_path))
    try:
        identity_stub = csi.IdentityStub(channel)
        await identity_stub.probe(csi.ProbeRequest())
        await identity_stub.probe(csi.ProbeRequest())
        await identity_stub.get_plugin_info(csi.GetPluginInfoRequest())
        with pytest.raises(GRPCError) as err:
            await csi.ControllerStub(channel).create_volume(csi.CreateVolumeRequest(name="v"))
        assert err.value.status is Status.UNIMPLEMENTED
    finally:
        channel.close()
        await server.stop(grace=1.0)
    address = await serve(metrics.render, lambda: True)

    result = await scrape(address)
    assert result.types["rds_csi_rpc_duration_seconds"] == "histogram"
    count = "rds_csi_rpc_duration_seconds_count"
    assert result.value(count, method="Probe", code="OK") == 2
    assert result.value(count, method="GetPluginInfo", code="OK") == 1
    assert result.value(count, method="CreateVolume", code="UNIMPLEMENTED") == 1
    assert len(result.series(count)) == 3
    assert 0 < result.value("rds_csi_rpc_duration_seconds_sum", method="Probe", code="OK") < 10
    check_histogram(result, "rds_csi_rpc_duration_seconds")
    assert result.value("rds_csi_rpc_in_flight") == 0


def test_durations_land_in_the_first_bucket_that_holds_them() -> None:
    durations = RpcDurations()
    for seconds in (0.0004, 0.001, 0.0011, 45.0, 61.0):
        durations.observe("NodeStageVolume", Status.OK, seconds)
    result = parse_exposition(PluginMetrics(rpc=durations).render())
    bucket = "rds_csi_rpc_duration_seconds_bucket"
    labels = {"method": "NodeStageVolume", "code": "OK"}
    assert result.value(bucket, le="0.001", **labels) == 2  # le is inclusive
    assert result.value(bucket, le="0.0025", **labels) == 3
    assert result.value(bucket, le="30.0", **labels) == 3
    assert result.value(bucket, le="60.0", **labels) == 4
    assert result.value(bucket, le="+Inf", **labels) == 5
    assert result.value("rds_csi_rpc_duration_seconds_sum", **labels) == pytest.approx(106.0025)


async def test_event_pipeline_counters_after_real_writes(serve: Callable[..., Any]) -> None:
    async with ApiServerEmulator(token="t") as api:
        api.add_pvc("apps", "data", uid="uid-data", volume_name="pvc-1")
        pipeline = await start_event_pipeline(
            node_id="node-1",
            driver_name=DEFAULT_DRIVER_NAME,
            kube_configuration=api.configuration(),
        )
        metrics = PluginMetrics(rpc=RpcDurations(), pipeline=pipeline.stats)
        address = await serve(metrics.render, lambda: True)
        claim = {PVC_NAMESPACE_KEY: "apps", PVC_NAME_KEY: "data"}

        await pipeline.poster.post_mount_failure("pvc-1", claim, "mkfs failed")
        await api.wait_for_requests(2)  # GET the claim's uid, POST the event
        await pipeline.poster.post_mount_failure("pvc-1", claim, "mkfs failed")  # PATCH
        await pipeline.aclose(timeout=5.0)  # flushes: every write is answered and counted
        result = await scrape(address)

        await pipeline.poster.post_mount_failure("pvc-1", claim, "after shutdown")
        after_close = await scrape(address)

    assert result.value("rds_csi_events_emitted_total") == 2
    requests = "rds_csi_event_api_requests_total"
    assert result.value(requests, verb="get", status="200") == 1
    assert result.value(requests, verb="create", status="201") == 1
    assert result.value(requests, verb="patch", status="200") == 1
    assert len(result.series(requests)) == 3
    assert result.series("rds_csi_events_dropped_total") == {}
    assert result.value("rds_csi_event_queue_depth") == 0
    for counter in ("emitted", "coalesced"):
        assert result.types[f"rds_csi_events_{counter}_total"] == "counter"
    assert after_close.value("rds_csi_events_dropped_total", cause="closed") == 1


async def test_node_counters_are_exported(serve: Callable[..., Any]) -> None:
    node = NodeStats()
    metrics = PluginMetrics(rpc=RpcDurations(), node=node)
    address = await serve(metrics.render, lambda: True)
    first = await scrape(address)
    assert first.value("rds_csi_stale_mounts_detected_total") == 0
    assert first.series("rds_csi_connector_operations_total") == {}

    node.stale_detected += 3
    node.stale_recovered += 2
    node.recovery_failed += 1
    node.connector_ops["connect", "ok"] += 4
    node.connector_ops["disconnect", "error"] += 1
    result = await scrape(address)
    assert result.value("rds_csi_stale_mounts_detected_total") == 3
    assert result.value("rds_csi_stale_mounts_recovered_total") == 2
    assert result.value("rds_csi_stale_mount_recovery_failures_total") == 1
    ops = "rds_csi_connector_operations_total"
    assert result.value(ops, operation="connect", result="ok") == 4
    assert result.value(ops, operation="disconnect", result="error") == 1


async def test_label_values_are_escaped(serve: Callable[..., Any]) -> None:
    stats = PipelineStats()
    nasty = 'rejected "quoted" C:\\path\nsecond line'
    stats.drop(nasty, 2)
    metrics = PluginMetrics(rpc=RpcDurations(), pipeline=stats, info={"version": 'v"1'})
    address = await serve(metrics.render, lambda: True)
    result = await scrape(address)
    assert result.value("rds_csi_events_dropped_total", cause=nasty) == 2
    assert result.value("rds_csi_build_info", version='v"1') == 1


async def test_http_errors_are_answered_not_dropped(serve: Callable[..., Any]) -> None:
    address = await serve(PluginMetrics(rpc=RpcDurations()).render, lambda: True)
    assert (await request(address, "/nope")).status == 404
    post = await request(address, "/metrics", method="POST")
    assert post.status == 405 and post.headers["allow"] == "GET, HEAD"
    assert (await request(address, "", raw=b"garbage\r\n\r\n")).status == 400
    head = await request(address, "/metrics", method="HEAD")
    assert head.status == 200 and head.body == b"" and int(head.headers["content-length"]) > 0
    with_query = await request(address, "/metrics?debug=1")
    assert with_query.status == 200


async def test_a_silent_client_does_not_block_scrapes(serve: Callable[..., Any]) -> None:
    address = await serve(PluginMetrics(rpc=RpcDurations()).render, lambda: True)
    _, idle_writer = await asyncio.open_connection(*address)
    try:
        assert (await request(address, "/healthz")).status == 200
    finally:
        idle_writer.close()
        await idle_writer.wait_closed()


async def test_a_failing_render_is_a_500_and_the_server_keeps_serving(
    serve: Callable[..., Any],
) -> None:
    calls = 0

    def render() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return PluginMetrics(rpc=RpcDurations()).render()

    address = await serve(render, lambda: True)
    assert (await request(address, "/metrics")).status == 500
    assert (await request(address, "/metrics")).status == 200


# --------------------------------------------------------------------------- the live daemon


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        conn.close()


def test_the_daemon_serves_metrics_and_health(tmp_path: Path) -> None:
    csi_pb2, csi_pb2_grpc = load_grpcio_csi()
    port = free_port()
    daemon = DaemonProcess(
        tmp_path / "csi.sock", ["--connector", "loop", "--metrics-address", f"127.0.0.1:{port}"]
    )
    daemon.start()
    try:
        daemon.wait_for_log("ready")
        assert http_get(port, "/healthz")[0] == 200
        with grpc.insecure_channel(f"unix://{daemon.socket_path}") as channel:
            csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=10)
            with pytest.raises(grpc.RpcError) as err:
                csi_pb2_grpc.NodeStub(channel).NodeStageVolume(
                    csi_pb2.NodeStageVolumeRequest(), timeout=10
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # The hook runs right after an RPC's log line, without yielding in between.  A failed
        # call is counted before its status goes out; a successful one may answer first, so
        # wait for the Probe's line.
        assert daemon.wait_for_log("rpc")["method"] == "Probe"
        status, content_type, body = http_get(port, "/metrics")
        assert (status, content_type) == (200, CONTENT_TYPE)
        result = parse_exposition(body)
        count = "rds_csi_rpc_duration_seconds_count"
        assert result.value(count, method="Probe", code="OK") == 1
        assert result.value(count, method="NodeStageVolume", code="INVALID_ARGUMENT") == 1
        check_histogram(result, "rds_csi_rpc_duration_seconds")
        info = dict(next(iter(result.series("rds_csi_build_info"))))
        assert info["connector"] == "loop" and info["driver"] == DEFAULT_DRIVER_NAME
        assert result.value("rds_csi_ready") == 1
        assert result.value("rds_csi_events_emitted_total") >= 0
        assert result.value("rds_csi_stale_mounts_detected_total") == 0
    finally:
        code = daemon.terminate(signal.SIGTERM)
    assert code == 0
    assert any(line.get("event") == "stopped" for line in daemon.lines)


def test_the_daemon_refuses_to_start_when_the_metrics_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = DaemonProcess(
            tmp_path / "csi.sock",
            ["--connector", "loop", "--metrics-address", f"127.0.0.1:{port}"],
        )
        daemon.start()
        try:
            line = daemon.wait_for_log("cannot listen for metrics")
            assert daemon.wait() == 1
        finally:
            daemon.kill()
    assert "address already in use" in line["error"].lower()
    assert not (tmp_path / "csi.sock").exists()
