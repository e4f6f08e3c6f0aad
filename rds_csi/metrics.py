"""Prometheus metrics and a health endpoint, over a tiny HTTP/1.1 server on plain asyncio.

Off unless --metrics-address is given.  Nothing is counted twice: the event pipeline and the
node service already keep counters (PipelineStats, NodeStats); this module reads them when
scraped.  Only RPC durations are recorded here, through CsiServer's `on_rpc_done` hook.

GET /metrics  text exposition format 0.0.4
GET /healthz  200 once start-up (orphan clean-up) has finished, 503 before and while stopping;
              the DaemonSet's readiness and startup probes use it.

No client library: the format is a few lines of text, and a hand-written server keeps the
daemon's start-up free of aiohttp's import cost.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from grpclib.const import Status

from rds_csi.pipeline.stats import PipelineStats

__all__ = [
    "CONTENT_TYPE",
    "RPC_DURATION_BUCKETS",
    "Exposition",
    "MetricsServer",
    "NodeCounters",
    "PluginMetrics",
    "RpcDurations",
]

log = structlog.get_logger("rds_csi.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds.  Identity calls take about a millisecond; NodeStage can wait 30 s for an NVMe
# device and a stale-mount recovery several more: 1 ms .. 60 s covers both ends.
RPC_DURATION_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

_REQUEST_TIMEOUT = 5.0  # a client gets this long to send its request line and headers
_MAX_LINE = 8192
_MAX_HEADERS = 100


class NodeCounters(Protocol):
    """What is read from the node service's NodeStats."""

    @property
    def stale_detected(self) -> int: ...

    @property
    def stale_recovered(self) -> int: ...

    @property
    def recovery_failed(self) -> int: ...

    @property
    def connector_ops(self) -> Mapping[tuple[str, str], int]: ...


# ------------------------------------------------------------------------- exposition format


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


Sample = tuple[str, Mapping[str, str], float]
"""(name suffix such as "" or "_bucket", labels, value)."""


class Exposition:
    """Builds the text format: one HELP and TYPE line per family, then its samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def add(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            if labels:
                rendered = ",".join(
                    f'{key}="{escape_label_value(val)}"' for key, val in labels.items()
                )
                self._lines.append(f"{name}{suffix}{{{rendered}}} {format_value(value)}")
            else:
                self._lines.append(f"{name}{suffix} {format_value(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


# ------------------------------------------------------------------------- RPC durations


@dataclass
class _Histogram:
    buckets: list[int]  # per bucket, not cumulative; the +Inf overflow is count - sum(buckets)
    total: float = 0.0
    count: int = 0


@dataclass
class RpcDurations:
    """Duration histograms by (method, code); `observe` is CsiServer's on_rpc_done hook."""

    bounds: Sequence[float] = RPC_DURATION_BUCKETS
    _series: dict[tuple[str, str], _Histogram] = field(default_factory=dict)

    def observe(self, method: str, status: Status, seconds: float) -> None:
        key = (method, status.name)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Histogram([0] * len(self.bounds))
        index = bisect.bisect_left(self.bounds, seconds)  # first bound >= seconds ("le")
        if index < len(self.bounds):
            series.buckets[index] += 1
        series.total += seconds
        series.count += 1

    def samples(self) -> Iterable[Sample]:
        for (method, code), series in sorted(self._series.items()):
            cumulative = 0
            for bound, hits in zip(self.bounds, series.buckets, strict=True):
                cumulative += hits
                labels = {"method": method, "code": code, "le": format_value(bound)}
                yield "_bucket", labels, cumulative
            yield "_bucket", {"method": method, "code": code, "le": "+Inf"}, series.count
            yield "_sum", {"method": method, "code": code}, series.total
            yield "_count", {"method": method, "code": code}, series.count


# ------------------------------------------------------------------------- what is exported


class PluginMetrics:
    """Renders every rds_csi_* metric from the live counters at scrape time."""

    def __init__(
        self,
        *,
        rpc: RpcDurations,
        pipeline: PipelineStats | None = None,
        node: NodeCounters | None = None,
        ready: Callable[[], bool] = lambda: False,
        rpcs_in_flight: Callable[[], int] = lambda: 0,
        info: Mapping[str, str] | None = None,
    ) -> None:
        self.rpc = rpc
        self._pipeline = pipeline
        self._node = node
        self._ready = ready
        self._in_flight = rpcs_in_flight
        self._info = dict(info or {})

    def render(self) -> str:
        out = Exposition()
        out.add(
            "rds_csi_build_info",
            "gauge",
            "Always 1; the labels say which plugin build and configuration runs.",
            [("", self._info, 1)],
        )
        out.add(
            "rds_csi_ready",
            "gauge",
            "1 once start-up (orphan NVMe clean-up) has finished and until shutdown begins.",
            [("", {}, int(self._ready()))],
        )
        out.add(
            "rds_csi_rpc_in_flight",
            "gauge",
            "CSI RPCs being handled right now.",
            [("", {}, self._in_flight())],
        )
        out.add(
            "rds_csi_rpc_duration_seconds",
            "histogram",
            "Duration of CSI RPCs by method and gRPC status code.",
            self.rpc.samples(),
        )
        if self._pipeline is not None:
            self._render_pipeline(out, self._pipeline)
        if self._node is not None:
            self._render_node(out, self._node)
        return out.text()

    @staticmethod
    def _render_pipeline(out: Exposition, stats: PipelineStats) -> None:
        out.add(
            "rds_csi_events_emitted_total",
            "counter",
            "Kubernetes event occurrences accepted by the event pipeline.",
            [("", {}, stats.emitted)],
        )
        out.add(
            "rds_csi_events_dropped_total",
            "counter",
            "Event occurrences that never reached the API, by cause.",
            [("", {"cause": cause}, n) for cause, n in sorted(stats.dropped.items())],
        )
        out.add(
            "rds_csi_event_api_requests_total",
            "counter",
            "Kubernetes API calls of the event sink (create, patch; get for uid lookups), by "
            "HTTP status, or 'timeout'/'error' when no answer came.",
            [
                ("", {"verb": verb, "status": status}, n)
                for (verb, status), n in sorted(stats.written.items())
            ],
        )
        out.add(
            "rds_csi_event_retries_total",
            "counter",
            "Event writes retried after a timeout, 429 or 5xx.",
            [("", {}, stats.retried)],
        )
        out.add(
            "rds_csi_events_coalesced_total",
            "counter",
            "Occurrences folded into an event write that was already pending.",
            [("", {}, stats.coalesced)],
        )
        out.add(
            "rds_csi_event_format_errors_total",
            "counter",
            "Events whose message format did not fit its arguments (sent unformatted).",
            [("", {}, stats.format_errors)],
        )
        out.add(
            "rds_csi_event_queue_depth",
            "gauge",
            "Event occurrences waiting in the broadcaster queue.",
            [("", {}, stats.queue_depth())],
        )

    @staticmethod
    def _render_node(out: Exposition, node: NodeCounters) -> None:
        out.add(
            "rds_csi_stale_mounts_detected_total",
            "counter",
            "Mounts found stale (device gone, renumbered, or I/O errors).",
            [("", {}, node.stale_detected)],
        )
        out.add(
            "rds_csi_stale_mounts_recovered_total",
            "counter",
            "Stale mounts recovered by remounting the current device.",
            [("", {}, node.stale_recovered)],
        )
        out.add(
            "rds_csi_stale_mount_recovery_failures_total",
            "counter",
            "Stale-mount recoveries that failed (the RPC failed; a RecoveryFailed event went "
            "to the PVC).",
            [("", {}, node.recovery_failed)],
        )
        out.add(
            "rds_csi_connector_operations_total",
            "counter",
            "Volume attach and detach operations of the connector, by operation and result.",
            [
                ("", {"operation": op, "result": result}, n)
                for (op, result), n in sorted(node.connector_ops.items())
            ],
        )


# ------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    extra_headers: tuple[tuple[str, str], ...] = ()


class _BadRequest(Exception):
    pass


class MetricsServer:
    """GET /metrics and GET /healthz on a TCP port; one request per connection."""

    def __init__(self, render: Callable[[], str], ready: Callable[[], bool]) -> None:
        self._render = render
        self._ready = ready
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when 0 was asked for."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the metrics server is not listening")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._serve, host, port, limit=_MAX_LINE, reuse_address=True
        )
        log.info("metrics listening", address=f"{host}:{self.address[1]}")

    async def aclose(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            try:
                async with asyncio.timeout(_REQUEST_TIMEOUT):
                    method, path = await self._read_request(reader)
            except (_BadRequest, ValueError, asyncio.IncompleteReadError, TimeoutError):
                response, method = _Response(400, "Bad Request", b"bad request\n"), "GET"
            else:
                response = self._answer(method, path)
            writer.write(_encode(response, head_only=method == "HEAD"))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                self._connections.discard(task)

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
        request_line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(request_line)
        for _ in range(_MAX_HEADERS):
            line = await reader.readline()
            if not line.endswith(b"\n"):
                raise _BadRequest("truncated headers")
            if line in (b"\r\n", b"\n"):
                return parts[0], parts[1].split("?", 1)[0]
        raise _BadRequest("too many headers")

    def _answer(self, method: str, path: str) -> _Response:
        if path not in ("/metrics", "/healthz"):
            return _Response(404, "Not Found", b"not found: try /metrics or /healthz\n")
        if method not in ("GET", "HEAD"):
            return _Response(
                405,
                "Method Not Allowed",
                b"method not allowed\n",
                extra_headers=(("Allow", "GET, HEAD"),),
            )
        if path == "/healthz":
            if self._ready():
                return _Response(200, "OK", b"ok\n")
            return _Response(503, "Service Unavailable", b"not ready\n")
        try:
            body = self._render().encode()
        except Exception:  # a scrape must never take the daemon down
            log.exception("rendering metrics failed")
            return _Response(500, "Internal Server Error", b"rendering metrics failed\n")
        return _Response(200, "OK", body, CONTENT_TYPE)


def _encode(response: _Response, *, head_only: bool) -> bytes:
    headers = [
        f"HTTP/1.1 {response.status} {response.reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in response.extra_headers),
    ]
    head = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body
