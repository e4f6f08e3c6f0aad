"""Event storms against the API-server emulator: API writes and stored counts, next to what
client-go's tools/record would do with the same input, and memory over many distinct objects.

client-go's outcome is computed in the same run by simulating its rules on the same stream:
one spam bucket per source+object+type (burst 25, one token per 300 s), one API write per
accepted occurrence, and the stored count is the count carried by the last accepted one (the
held-back rest is never written).  The server is healthy, so its retries play no part.

The sink runs without a client-side rate limit (qps=0) so that the number of writes is not
reduced by throttling: coalescing is what is measured.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from kubernetes_asyncio.client import ApiClient

from bench.common import Row, measure_in_child, module_main, row, rss_bytes
from rds_csi.pipeline.correlator import CorrelatorOptions
from rds_csi.pipeline.kube_api import ApiResponse
from rds_csi.pipeline.kube_sink import KubeSink, KubeSinkOptions
from rds_csi.pipeline.model import Event, ObjectRef
from rds_csi.pipeline.ratelimit import TokenBucket
from rds_csi.testing.apiserver import ApiServerEmulator

STORM_EVENTS = 10_000
FLEET_PVCS = 1_000
FLEET_EVENTS = 10
BATCH = 100  # events per sink.write, as the broadcaster batches them
EMIT_SECONDS = 1.0  # each input is spread over about this long
MEMORY_OBJECTS = 100_000
MEMORY_SAMPLE_AT = 10_000

SINK_OPTIONS = KubeSinkOptions(qps=0, seed=1)
T0 = 1_790_000_000 * 10**9


def pvc(i: int) -> ObjectRef:
    return ObjectRef("PersistentVolumeClaim", f"data-{i}", "apps", f"uid-{i}", "v1")


def failure(ref: ObjectRef, at_ns: int) -> Event:
    return Event(
        name=f"{ref.name}.{at_ns:x}",
        namespace=ref.namespace,
        involved=ref,
        type="Warning",
        reason="NodeStageFailed",
        message="nvme connect failed: exit status 1",
        source_component="rds-csi-node",
        source_host="node-1",
        reporting_controller="rds.csi.srvlab.io",
        reporting_instance="node-1",
        first_timestamp_ns=at_ns,
        last_timestamp_ns=at_ns,
    )


def storm_stream() -> list[list[ObjectRef]]:
    """Batches of references: 10,000 occurrences about one PVC."""
    return [[pvc(0)] * BATCH for _ in range(STORM_EVENTS // BATCH)]


def fleet_stream() -> list[list[ObjectRef]]:
    """1,000 PVCs x 10 occurrences each, round after round."""
    refs = [pvc(i) for i in range(FLEET_PVCS)] * FLEET_EVENTS
    return [refs[i : i + BATCH] for i in range(0, len(refs), BATCH)]


def client_go(batches: Sequence[Sequence[ObjectRef]]) -> tuple[int, Counter[str]]:
    """API writes and stored count per object under client-go's rules for this stream."""
    gap = EMIT_SECONDS / len(batches)
    buckets: dict[str, TokenBucket] = {}
    seen: Counter[str] = Counter()
    stored: Counter[str] = Counter()
    writes = 0
    for n, batch in enumerate(batches):
        now = n * gap
        for ref in batch:
            seen[ref.name] += 1
            bucket = buckets.setdefault(ref.name, TokenBucket(1 / 300, 25, now))
            if bucket.try_take(now):
                writes += 1
                stored[ref.name] = seen[ref.name]
    return writes, stored


async def run_sink(batches: Sequence[Sequence[ObjectRef]]) -> dict[str, Any]:
    """Emit the stream into a KubeSink over HTTP; writes, stored counts and drain time."""
    async with ApiServerEmulator(token="bench") as api, ApiClient(api.configuration()) as client:
        sink = KubeSink(client, options=SINK_OPTIONS)
        loop = asyncio.get_running_loop()
        gap = EMIT_SECONDS / len(batches)
        start = loop.time()
        for n, batch in enumerate(batches):
            at_ns = T0 + int(n * gap * 1e9)
            await sink.write([failure(ref, at_ns) for ref in batch])
            await asyncio.sleep(max(0.0, start + (n + 1) * gap - loop.time()))
        undelivered = await sink.aclose(loop.time() + 120)
        elapsed = loop.time() - start
        stored: Counter[str] = Counter()
        for event in api.events():
            stored[event["involvedObject"]["name"]] += event["count"]
        writes = sum(1 for r in api.requests if r.method in ("POST", "PATCH"))
        return {
            "writes": writes,
            "stored": stored,
            "elapsed": elapsed,
            "undelivered": undelivered,
            "coalesced": sink.stats.coalesced,
        }


async def bench_storm() -> list[Row]:
    batches = storm_stream()
    go_writes, go_stored = client_go(batches)
    ours = await run_sink(batches)
    stored = ours["stored"]["data-0"]
    return [
        row(
            f"storm {STORM_EVENTS:,} identical, 1 PVC: API writes",
            ours["writes"],
            "writes",
            go_writes,
            "<= 3",
            ours["writes"] <= 3,
        ),
        row(
            f"storm {STORM_EVENTS:,} identical, 1 PVC: stored count",
            stored,
            "count",
            go_stored["data-0"],
            f"== {STORM_EVENTS:,}",
            stored == STORM_EVENTS,
        ),
        row("storm: emit + flush time", ours["elapsed"], "s", None),
    ]


async def bench_fleet() -> list[Row]:
    batches = fleet_stream()
    go_writes, go_stored = client_go(batches)
    ours = await run_sink(batches)
    exact = all(ours["stored"][f"data-{i}"] == FLEET_EVENTS for i in range(FLEET_PVCS))
    label = f"{FLEET_PVCS:,} PVCs x {FLEET_EVENTS}"
    return [
        row(
            f"{label}: API writes",
            ours["writes"],
            "writes",
            go_writes,
            "<= client-go",
            ours["writes"] <= go_writes,
        ),
        row(
            f"{label}: stored counts (sum)",
            sum(ours["stored"].values()),
            "count",
            sum(go_stored.values()),
            f"each == {FLEET_EVENTS}",
            exact,
        ),
        row(f"{label}: emit + flush time", ours["elapsed"], "s", None),
    ]


class InstantApi:
    """Answers every call at once and keeps nothing, so only the sink's memory is measured."""

    async def create_event(self, group: str, namespace: str, body: dict[str, Any]) -> ApiResponse:
        return ApiResponse(201, None)

    async def patch_event(
        self, group: str, namespace: str, name: str, body: dict[str, Any]
    ) -> ApiResponse:
        return ApiResponse(200, None)

    async def get_object(self, kind: str, namespace: str, name: str) -> ApiResponse:
        return ApiResponse(404, None)


async def memory_run(lru_size: int) -> float:
    """RSS growth (MiB) from MEMORY_SAMPLE_AT to MEMORY_OBJECTS distinct objects."""
    sink = KubeSink(
        None,
        transport=InstantApi(),
        options=dataclasses.replace(SINK_OPTIONS, max_pending=10**9),
        correlator_options=CorrelatorOptions(lru_cache_size=lru_size),
    )
    before = 0
    for start in range(0, MEMORY_OBJECTS, 1000):
        await sink.write([failure(pvc(i), T0 + i) for i in range(start, start + 1000)])
        await sink.wait_idle()
        if start + 1000 == MEMORY_SAMPLE_AT:
            gc.collect()
            before = rss_bytes()
    gc.collect()
    growth = rss_bytes() - before
    await sink.aclose(asyncio.get_running_loop().time() + 5)
    return growth / 2**20


async def memory_child() -> dict[str, float]:
    bounded = await memory_run(4096)
    unbounded = await memory_run(10**9)
    return {"bounded": bounded, "unbounded": unbounded}


async def bench_memory() -> list[Row]:
    result = await measure_in_child("bench.bench_storm")
    growth = result["bounded"]
    return [
        row(
            f"RSS growth, correlator+sink, {MEMORY_SAMPLE_AT:,} -> {MEMORY_OBJECTS:,} objects",
            growth,
            "MiB",
            result["unbounded"],
            "<= 16 MiB (baseline: LRU unbounded)",
            growth <= 16,
        )
    ]


async def main() -> list[Row]:
    started = time.perf_counter()
    rows = await bench_storm()
    rows += await bench_fleet()
    rows += await bench_memory()
    print(f"bench_storm took {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return rows


if __name__ == "__main__":
    module_main(main, memory_child)
