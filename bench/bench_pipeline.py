"""Recorder and broadcaster: emit cost, end-to-end throughput and memory.

Every number is set against a baseline measured in the same run: a bare `asyncio.Queue`
doing the equivalent work.  The memory benchmark runs in a child process so that what other
benchmarks allocated (and freed) in this one does not hide or inflate the growth.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import Row, measure_in_child, module_main, percentile, row, rss_bytes
from rds_csi.broadcaster import EventBroadcaster
from rds_csi.pipeline.model import Event, ObjectRef
from rds_csi.pipeline.stats import PipelineStats
from rds_csi.recorder import EventRecorder

EMIT_BATCH = 100  # calls timed together: perf_counter_ns itself costs ~50 ns
EMIT_ROUNDS = 3000
THROUGHPUT_EVENTS = 300_000
PRODUCER_CHUNK = 500
MEMORY_EVENTS = 1_000_000
MEMORY_OBJECTS = 100_000

PVC = ObjectRef(kind="PersistentVolumeClaim", name="data", namespace="apps", uid="u-1")


class CountingSink:
    """An in-memory sink that only counts, so the pipeline is all that is measured."""

    name = "counting"

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.reached = asyncio.Event()

    async def write(self, batch: Sequence[Event]) -> None:
        self.count += len(batch)
        if self.count >= self.target:
            self.reached.set()

    async def aclose(self, deadline: float) -> int:
        return 0

    async def wait_for(self, count: int) -> None:
        self.target = count
        if self.count < count:
            self.reached.clear()
            await self.reached.wait()


def make_event() -> Event:
    return EventRecorder(_Keep(), component="c", host="h")._build(
        PVC, "Normal", "Staged", "volume staged", "", None, None
    )


class _Keep:
    def emit(self, event: Event) -> bool:
        return True


def new_pipeline() -> tuple[EventBroadcaster, EventRecorder, CountingSink]:
    stats = PipelineStats()
    sink = CountingSink()
    broadcaster = EventBroadcaster([sink], stats=stats)
    recorder = EventRecorder(broadcaster, component="rds-csi-node", host="node-1", stats=stats)
    broadcaster.start()
    return broadcaster, recorder, sink


async def time_batches(run_batch: Callable[[], None], drain: Callable[[], Any]) -> list[float]:
    """Per-call ns of `run_batch` (EMIT_BATCH calls), one sample per round."""
    gc.collect()
    samples = []
    for _ in range(EMIT_ROUNDS):
        start = time.perf_counter_ns()
        run_batch()
        samples.append((time.perf_counter_ns() - start) / EMIT_BATCH)
        await drain()
    return samples


async def bench_emit_cost() -> list[Row]:
    event = make_event()
    calls = range(EMIT_BATCH)

    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=1000)
    put = queue.put_nowait

    def queue_batch() -> None:
        for _ in calls:
            put(event)

    async def queue_drain() -> None:
        while not queue.empty():
            queue.get_nowait()

    broadcaster, recorder, sink = new_pipeline()
    emit = broadcaster.emit
    record = recorder.event

    def emit_batch() -> None:
        for _ in calls:
            emit(event)

    def record_batch() -> None:
        for _ in calls:
            record(PVC, "Normal", "Staged", "volume staged")

    async def pipeline_drain() -> None:
        await sink.wait_for(broadcaster.stats.emitted)

    # Warm-up, then interleave measurements so that both see the same machine state.
    await time_batches(queue_batch, queue_drain)
    await time_batches(emit_batch, pipeline_drain)
    base = await time_batches(queue_batch, queue_drain)
    emitted = await time_batches(emit_batch, pipeline_drain)
    recorded = await time_batches(record_batch, pipeline_drain)
    dropped = broadcaster.stats.dropped_total
    await broadcaster.aclose(5)
    assert dropped == 0, broadcaster.stats.dropped

    rows = []
    for quantile in (50, 99):
        b = percentile(base, quantile)
        e = percentile(emitted, quantile)
        target = "<= 3000 ns" if quantile == 50 else None
        met = e <= 3000 if quantile == 50 else None
        rows.append(row(f"broadcaster.emit p{quantile}", e, "ns/call", b, target, met))
    for quantile in (50, 99):
        b = percentile(base, quantile)
        r = percentile(recorded, quantile)
        rows.append(row(f"recorder.event p{quantile}", r, "ns/call", b))
    return rows


async def produce(emit_chunk: Callable[[], None], total: int) -> None:
    for _ in range(total // PRODUCER_CHUNK):
        emit_chunk()
        await asyncio.sleep(0)  # let the consumer side run, as a real caller's awaits do


async def queue_throughput(event: Event) -> float:
    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=1000)
    put = queue.put_nowait

    def chunk() -> None:
        for _ in range(PRODUCER_CHUNK):
            put(event)

    async def consume() -> None:
        for _ in range(THROUGHPUT_EVENTS):
            await queue.get()

    gc.collect()
    start = time.perf_counter()
    consumer = asyncio.create_task(consume())
    await produce(chunk, THROUGHPUT_EVENTS)
    await consumer
    return THROUGHPUT_EVENTS / (time.perf_counter() - start)


async def pipeline_throughput(event: Event, via_recorder: bool) -> float:
    broadcaster, recorder, sink = new_pipeline()
    emit = broadcaster.emit
    record = recorder.event

    def emit_chunk() -> None:
        for _ in range(PRODUCER_CHUNK):
            emit(event)

    def record_chunk() -> None:
        for _ in range(PRODUCER_CHUNK):
            record(PVC, "Normal", "Staged", "volume staged")

    gc.collect()
    start = time.perf_counter()
    await produce(record_chunk if via_recorder else emit_chunk, THROUGHPUT_EVENTS)
    await sink.wait_for(THROUGHPUT_EVENTS)
    rate = THROUGHPUT_EVENTS / (time.perf_counter() - start)
    assert broadcaster.stats.dropped_total == 0, broadcaster.stats.dropped
    await broadcaster.aclose(5)
    return rate


async def bench_throughput() -> list[Row]:
    event = make_event()
    await queue_throughput(event)  # warm-up
    base = await queue_throughput(event)
    emitted = await pipeline_throughput(event, via_recorder=False)
    recorded = await pipeline_throughput(event, via_recorder=True)
    return [
        row(
            "emit -> sink throughput",
            emitted,
            "events/s",
            base,
            ">= 100000",
            emitted >= 100_000,
        ),
        row(
            "recorder.event -> sink throughput",
            recorded,
            "events/s",
            base,
            ">= 100000",
            recorded >= 100_000,
        ),
    ]


async def memory_child() -> dict[str, float]:
    """Runs in a fresh interpreter: RSS growth of 1M events over 100k objects."""
    objects = [
        ObjectRef(
            kind="PersistentVolumeClaim",
            name=f"pvc-{i:06d}",
            namespace=f"ns-{i % 100}",
            uid=f"00000000-0000-0000-0000-{i:012d}",
        )
        for i in range(MEMORY_OBJECTS)
    ]
    reasons = ("Staged", "Published", "FailedMount", "Unstaged")
    rounds = MEMORY_EVENTS // MEMORY_OBJECTS

    queue: asyncio.Queue[tuple[ObjectRef, str]] = asyncio.Queue(maxsize=1000)

    async def queue_run() -> None:
        async def consume() -> None:
            for _ in range(MEMORY_EVENTS):
                await queue.get()

        consumer = asyncio.create_task(consume())
        for r in range(rounds):
            reason = reasons[r % len(reasons)]
            for start in range(0, MEMORY_OBJECTS, PRODUCER_CHUNK):
                for obj in objects[start : start + PRODUCER_CHUNK]:
                    queue.put_nowait((obj, reason))
                await asyncio.sleep(0)
        await consumer

    async def pipeline_run() -> None:
        broadcaster, recorder, sink = new_pipeline()
        for r in range(rounds):
            reason = reasons[r % len(reasons)]
            kind = "Warning" if reason.startswith("Failed") else "Normal"
            for start in range(0, MEMORY_OBJECTS, PRODUCER_CHUNK):
                for obj in objects[start : start + PRODUCER_CHUNK]:
                    recorder.event(obj, kind, reason, f"volume {reason.lower()}")
                await asyncio.sleep(0)
        await sink.wait_for(MEMORY_EVENTS)
        assert broadcaster.stats.dropped_total == 0, broadcaster.stats.dropped
        await broadcaster.aclose(5)

    gc.collect()
    before = rss_bytes()
    await queue_run()
    gc.collect()
    queue_growth = rss_bytes() - before

    gc.collect()
    before = rss_bytes()
    await pipeline_run()
    gc.collect()
    pipeline_growth = rss_bytes() - before
    return {"pipeline": pipeline_growth / 2**20, "queue": queue_growth / 2**20}


async def bench_memory() -> list[Row]:
    result = await measure_in_child("bench.bench_pipeline")
    growth = result["pipeline"]
    return [
        row(
            f"RSS growth, {MEMORY_EVENTS:,} events / {MEMORY_OBJECTS:,} objects",
            growth,
            "MiB",
            result["queue"],
            "<= 64 MiB",
            growth <= 64,
        )
    ]


async def main() -> list[Row]:
    rows = await bench_emit_cost()
    rows += await bench_throughput()
    rows += await bench_memory()
    return rows


if __name__ == "__main__":
    module_main(main, memory_child)
