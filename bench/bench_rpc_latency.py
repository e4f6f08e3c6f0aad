"""Does event work ever slow an RPC?  NodeStageVolume latency while the API server is hung.

Each call is a NodeStageVolume that fails the way a real one does (mkfs cannot format the
device) and posts a MountFailure event to the PVC, through the daemon's real pipeline (recorder,
broadcaster, KubeSink) to the API-server emulator.  The same calls run against a healthy
emulator (the baseline) and against one that hangs every request (Fault(hang=True,
times=None)); the ratio hung/healthy of p50 and p99 should stay about 1.0.  Two ways of
finding the PVC are measured: its name in volume_context, and a lookup of the PersistentVolume
named after the volume (a GET that hangs too).

The host layer is real (blkid and mkfs.ext4 run; the device is an empty file, so mkfs fails);
only the connector is an in-process stand-in, so no root is needed.  Calls go through the unix
socket with an in-process grpclib client; healthy and hung blocks alternate so that machine
noise hits both alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from bench.common import Row, percentile, row
from rds_csi.event_pipeline import EventPipeline, start_event_pipeline
from rds_csi.events import PVC_NAME_KEY, PVC_NAMESPACE_KEY
from rds_csi.gen.csi import v1 as csi
from rds_csi.grpc_server import CsiServer
from rds_csi.host import (
    CommandRunner,
    Mounter,
    MountRecoverer,
    OrphanCleanup,
    Prober,
    StaleChecker,
)
from rds_csi.node_server import NodeService
from rds_csi.testing.apiserver import ApiServerEmulator, Fault

DRIVER = "rds.csi.srvlab.io"
NODE = "bench-node"
WARMUP = 5
BLOCK = 20  # calls per block; healthy and hung blocks alternate
BLOCKS = 5  # per mode and path: 100 measured calls each
P50_TARGET = 1.2
P99_TARGET = 1.5


@dataclass(frozen=True, slots=True)
class FileTarget:
    device: str

    @property
    def key(self) -> str:
        return self.device

    def describe(self) -> str:
        return f"bench device {self.device}"

    def to_volume_context(self) -> dict[str, str]:
        return {}


class FileConnector:
    """Attaches nothing: every volume's "device" is an empty file (mkfs fails on it)."""

    name = "bench"

    def __init__(self, device: str) -> None:
        self.device = device
        self.attached = False

    def parse_target(self, volume_id: str, volume_context: Mapping[str, str]) -> FileTarget:
        return FileTarget(self.device)

    def target_for_volume_id(self, volume_id: str) -> FileTarget:
        return FileTarget(self.device)

    async def connect(self, target: Any) -> str:
        self.attached = True
        return self.device

    async def disconnect(self, target: Any) -> None:
        self.attached = False

    async def resolve_device(self, target: Any) -> str | None:
        return self.device if self.attached else None

    async def rescan(self, target: Any) -> None:
        return None

    async def cleanup_orphans(self) -> OrphanCleanup:
        return OrphanCleanup()

    def required_tools(self) -> list[str]:
        return []


class Rig:
    """Emulator + pipeline + node service + server + client, for one mode."""

    def __init__(self, workdir: Path, hung: bool) -> None:
        self.workdir = workdir
        self.hung = hung
        self.api = ApiServerEmulator()
        self.pipeline: EventPipeline | None = None
        self.server: CsiServer | None = None
        self.channel: Channel | None = None
        self.stub: csi.NodeStub | None = None
        self.fault: Fault | None = None

    async def start(self) -> None:
        await self.api.start()
        self.pvc_uid = self.api.add_pvc("apps", "data")["metadata"]["uid"]
        self.pipeline = await start_event_pipeline(
            node_id=NODE, driver_name=DRIVER, kube_configuration=self.api.configuration()
        )
        device = self.workdir / "device"
        device.touch()
        runner = CommandRunner()
        mounter = Mounter(runner, Prober(timeout=5.0))
        node = NodeService(
            node_id=NODE,
            connector=FileConnector(str(device)),
            mounter=mounter,
            checker=StaleChecker(mounter),
            recoverer=MountRecoverer(mounter),
            poster=self.pipeline.poster,
        )
        self.server = CsiServer([node])
        socket_path = self.workdir / "csi.sock"
        await self.server.start(socket_path)
        self.channel = Channel(path=str(socket_path))
        self.stub = csi.NodeStub(self.channel)
        if self.hung:
            self.fault = self.api.inject(Fault(status=None, hang=True, times=None))

    def request(self, by_pv: bool) -> csi.NodeStageVolumeRequest:
        volume_id = f"pvc-{uuid.uuid4()}"
        context: dict[str, str] = {}
        if by_pv:
            self.api.add_pv(volume_id, claim=("apps", "data", self.pvc_uid))
        else:
            context = {PVC_NAME_KEY: "data", PVC_NAMESPACE_KEY: "apps"}
        return csi.NodeStageVolumeRequest(
            volume_id=volume_id,
            staging_target_path=str(self.workdir / "staging" / volume_id),
            volume_capability=csi.VolumeCapability(
                mount=csi.VolumeCapabilityMountVolume(fs_type="ext4"),
                access_mode=csi.VolumeCapabilityAccessMode(
                    mode=csi.VolumeCapabilityAccessModeMode.SINGLE_NODE_WRITER
                ),
            ),
            volume_context=context,
        )

    async def call(self, by_pv: bool) -> float:
        """Seconds for one failing NodeStageVolume."""
        assert self.stub is not None
        request = self.request(by_pv)
        started = time.perf_counter()
        try:
            await self.stub.node_stage_volume(request, timeout=60)
        except GRPCError as err:
            if "mkfs.ext4" not in (err.message or ""):
                raise RuntimeError(f"unexpected failure: {err.status} {err.message}") from err
        else:
            raise RuntimeError("NodeStageVolume was expected to fail (mkfs)")
        return time.perf_counter() - started

    async def close(self) -> dict[str, int]:
        """Tear down; returns what reached the emulator (stored events, hung requests)."""
        if self.channel is not None:
            self.channel.close()
        if self.server is not None:
            await self.server.stop(grace=5.0)
        hung = self.fault.fired if self.fault is not None else 0
        self.api.clear_faults()
        self.api.release_hangs()
        if self.pipeline is not None:
            await self.pipeline.aclose(timeout=10.0)
        stored = len(self.api.events("apps"))
        await self.api.close()
        return {"stored": stored, "hung": hung}


def ms_row(name: str, value: float, baseline: float, target: float) -> Row:
    """Seconds in, milliseconds out, met when value/baseline <= target."""
    met = value / baseline <= target
    return row(name, value * 1000, "ms", baseline * 1000, f"ratio <= {target:g}", met)


async def measure(by_pv: bool) -> list[Row]:
    workdir = Path(tempfile.mkdtemp(prefix="rds-bench-", dir="/tmp"))
    rigs = {"healthy": Rig(workdir / "healthy", hung=False), "hung": Rig(workdir / "hung", True)}
    samples: dict[str, list[float]] = {name: [] for name in rigs}
    outcome: dict[str, dict[str, int]] = {}
    try:
        for rig in rigs.values():
            rig.workdir.mkdir()
            await rig.start()
        for rig in rigs.values():
            for _ in range(WARMUP):
                await rig.call(by_pv)
        for _ in range(BLOCKS):
            for name, rig in rigs.items():
                for _ in range(BLOCK):
                    samples[name].append(await rig.call(by_pv))
    finally:
        for name, rig in rigs.items():
            with contextlib.suppress(Exception):
                outcome[name] = await rig.close()
        shutil.rmtree(workdir, ignore_errors=True)
    # A benchmark that measured nothing must not report a ratio.
    if outcome["healthy"]["stored"] == 0:
        raise RuntimeError("the healthy API server stored no event: nothing was measured")
    if outcome["hung"]["hung"] == 0:
        raise RuntimeError("no request was held by the hung API server: nothing was measured")
    path = "PV lookup" if by_pv else "PVC in volume_context"
    healthy, hung = samples["healthy"], samples["hung"]
    return [
        ms_row(
            f"NodeStage failing + MountFailure event, p50 hung/healthy API ({path})",
            percentile(hung, 50),
            percentile(healthy, 50),
            P50_TARGET,
        ),
        ms_row(
            f"NodeStage failing + MountFailure event, p99 hung/healthy API ({path})",
            percentile(hung, 99),
            percentile(healthy, 99),
            P99_TARGET,
        ),
    ]


async def main() -> list[Row]:
    previous = structlog.get_config()
    # Per-RPC log lines would dominate what is measured and flood the report.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        return await measure(by_pv=False) + await measure(by_pv=True)
    finally:
        structlog.configure(**previous)


if __name__ == "__main__":
    from bench.run import print_table

    print_table(asyncio.run(main()))
