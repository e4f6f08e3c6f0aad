"""The Node service as an operator runs it: the real NodeService behind CsiServer on a unix
socket, called through an independent grpcio client, over the real host layer (loop devices and
mounts as root, or the nvme-tcp connector with the recording `nvme` stand-in), with the real
event pipeline posting to the API-server emulator.

The host helpers (root check and clean-up, sparse images, the nvme stand-in) come from
tests/host/conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from rds_csi import __version__
from rds_csi.cli import Config, parse_config
from rds_csi.daemon import build_node_service
from rds_csi.event_pipeline import EventPipeline, start_event_pipeline
from rds_csi.events import PVC_NAME_KEY, PVC_NAMESPACE_KEY, EventPoster
from rds_csi.gen.csi import v1 as csi
from rds_csi.grpc_server import CsiServer
from rds_csi.host import (
    CommandResult,
    CommandRunner,
    Connector,
    LoopConnector,
    Mounter,
    MounterTimeouts,
    MountRecoverer,
    NvmeTcpConfig,
    NvmeTcpConnector,
    OrphanCleanup,
    Prober,
    StaleChecker,
    VolumeTarget,
)
from rds_csi.host.mountinfo import mounts_at, read_mountinfo
from rds_csi.identity_server import IdentityService, Readiness
from rds_csi.node_server import NodeService
from rds_csi.testing.apiserver import ApiServerEmulator
from tests.host.conftest import NvmeStandin, make_image, require_root
from tests.support.grpcio_csi import load_grpcio_csi
from tests.support.sockets import server_connections_closed

__all__ = [  # require_root is re-exported so that pytest sees the fixture here too
    "DRIVER",
    "NODE_ID",
    "ZONE",
    "CsiClient",
    "GatedConnector",
    "LosetupStandin",
    "NoSleep",
    "NvmeStandin",
    "Plugin",
    "PluginFactory",
    "RecordingRunner",
    "loop_devices_of",
    "make_image",
    "make_node",
    "mount_count",
    "nvme_context",
    "pvc_context",
    "require_root",
    "serving",
    "wait_for_event",
]

DRIVER = "rds.csi.srvlab.io"
NODE_ID = "node-1"
ZONE = "rack-1"
LOSETUP = shutil.which("losetup") or "/usr/sbin/losetup"


# ---- the client: grpcio, a stack that shares no code with the server ----------------------


class CsiClient:
    """Sync grpcio stubs called from a worker thread, so the server keeps the event loop."""

    def __init__(self, socket_path: Path) -> None:
        self.pb, pb_grpc = load_grpcio_csi()
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.node = pb_grpc.NodeStub(self.channel)
        self.identity = pb_grpc.IdentityStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def request(self, method: str, **fields: Any) -> Any:
        return getattr(self.pb, f"{method}Request")(**fields)

    async def call(self, method: str, *, timeout: float = 60.0, **fields: Any) -> Any:
        stub = self.identity if method in ("GetPluginInfo", "Probe") else self.node
        rpc = getattr(stub, method)
        request = self.request(method, **fields)
        return await asyncio.to_thread(rpc, request, timeout=timeout)

    async def fails(
        self, method: str, code: grpc.StatusCode, *, timeout: float = 60.0, **fields: Any
    ) -> str:
        """Call `method`, expect `code`; returns the status message."""
        with pytest.raises(grpc.RpcError) as raised:
            await self.call(method, timeout=timeout, **fields)
        error = raised.value
        assert error.code() == code, f"{method}: {error.code()} {error.details()}"
        return str(error.details())

    # -- request parts ---------------------------------------------------------------------

    def mode(self, name: str) -> Any:
        return self.pb.VolumeCapability.AccessMode(
            mode=getattr(self.pb.VolumeCapability.AccessMode, name)
        )

    def mount_cap(
        self, fs_type: str = "ext4", flags: Sequence[str] = (), mode: str = "SINGLE_NODE_WRITER"
    ) -> Any:
        return self.pb.VolumeCapability(
            mount=self.pb.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(flags)),
            access_mode=self.mode(mode),
        )

    def block_cap(self, mode: str = "SINGLE_NODE_WRITER") -> Any:
        return self.pb.VolumeCapability(
            block=self.pb.VolumeCapability.BlockVolume(), access_mode=self.mode(mode)
        )


# ---- host-layer test doubles ----------------------------------------------------------------


class RecordingRunner(CommandRunner):
    """The real runner, remembering every argv it was asked to run."""

    def __init__(self, tools: Mapping[str, str] | None = None) -> None:
        super().__init__(tools, default_timeout=60.0)
        self.calls: list[list[str]] = []

    async def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        self.calls.append(list(argv))
        return await super().run(argv, **kwargs)

    def ran(self, tool: str) -> list[list[str]]:
        return [argv for argv in self.calls if argv[0] == tool]


class NoSleep:
    """The recoverer's backoff, recorded instead of slept."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class LosetupStandin:
    """A `losetup` that passes everything to the real one, except that attaching
    (`losetup --find`) fails while `failing` is set: a volume that cannot be attached."""

    def __init__(self, directory: Path) -> None:
        self.flag = directory / "losetup-fails"
        self.path = directory / "losetup"
        self.path.write_text(
            "#!/bin/sh\n"
            f'if [ -e "{self.flag}" ]; then\n'
            '  for arg in "$@"; do\n'
            '    if [ "$arg" = "--find" ]; then\n'
            '      echo "losetup: cannot find an unused loop device: No such device" >&2\n'
            "      exit 1\n"
            "    fi\n"
            "  done\n"
            "fi\n"
            f'exec "{LOSETUP}" "$@"\n'
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)

    @property
    def failing(self) -> bool:
        return self.flag.exists()

    @failing.setter
    def failing(self, value: bool) -> None:
        if value:
            self.flag.touch()
        else:
            self.flag.unlink(missing_ok=True)


class GatedConnector:
    """Wraps a connector; `connect` waits for `gate` (and says so through `entered`), so a
    test holds an operation mid-flight for as long as it needs."""

    def __init__(self, inner: Connector) -> None:
        self.inner = inner
        self.name = inner.name
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.connects = 0

    def parse_target(self, volume_id: str, volume_context: Mapping[str, str]) -> VolumeTarget:
        return self.inner.parse_target(volume_id, volume_context)

    def target_for_volume_id(self, volume_id: str) -> VolumeTarget | None:
        return self.inner.target_for_volume_id(volume_id)

    async def connect(self, target: VolumeTarget) -> str:
        self.entered.set()
        await self.gate.wait()
        self.connects += 1
        return await self.inner.connect(target)

    async def disconnect(self, target: VolumeTarget) -> None:
        await self.inner.disconnect(target)

    async def resolve_device(self, target: VolumeTarget) -> str | None:
        return await self.inner.resolve_device(target)

    async def rescan(self, target: VolumeTarget) -> None:
        await self.inner.rescan(target)

    async def cleanup_orphans(self) -> OrphanCleanup:
        return await self.inner.cleanup_orphans()

    def required_tools(self) -> list[str]:
        return self.inner.required_tools()


# ---- host facts the tests assert on ---------------------------------------------------------


def mount_count(path: Path | str) -> int:
    """How many mounts are stacked at `path` (2 would be a mount on top of a mount)."""
    return len(mounts_at(read_mountinfo(), os.path.normpath(str(path))))


def loop_devices_of(image: Path) -> list[str]:
    """Loop devices still attached to `image` (including released ones still in use)."""
    done = subprocess.run(
        [LOSETUP, "--noheadings", "--output", "NAME", "--associated", str(image)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.split()


def pvc_context(name: str = "data", namespace: str = "apps") -> dict[str, str]:
    return {PVC_NAME_KEY: name, PVC_NAMESPACE_KEY: namespace}


async def wait_for_event(
    api: ApiServerEmulator, reason: str, namespace: str = "apps", timeout: float = 10.0
) -> dict[str, Any]:
    """The first stored Event with `reason`, waiting on the emulator's request log."""
    async with asyncio.timeout(timeout):
        while True:
            answered = len(api.requests)  # read before looking: no request can slip between
            found: list[dict[str, Any]] = [
                e for e in api.events(namespace) if e["reason"] == reason
            ]
            if found:
                return found[0]
            await api.wait_for_requests(answered + 1, timeout=timeout)


# ---- the plugin behind a socket -------------------------------------------------------------


@dataclass
class Plugin:
    node: NodeService
    client: CsiClient
    volumes: Path  # the loop connector's backing directory (<volume id>.img)
    root: Path  # tmp_path: every staging and target path lives under it
    runner: RecordingRunner | None = None
    pipeline: EventPipeline | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def image(self, volume_id: str, size_mib: int) -> Path:
        return make_image(self.volumes, f"{volume_id}.img", size_mib)

    def staging(self, volume_id: str) -> Path:
        return self.root / "plugins" / "staging" / volume_id

    def target(self, volume_id: str, pod: str = "pod-a") -> Path:
        return self.root / "pods" / pod / "volumes" / volume_id / "mount"


@contextlib.asynccontextmanager
async def serving(node: NodeService, config: Config | None = None) -> AsyncIterator[CsiClient]:
    """Serve `node` (with Identity and an UNIMPLEMENTED Controller, as the daemon does) on a
    fresh unix socket and yield a client for it."""
    socket_dir = Path(tempfile.mkdtemp(prefix="rds-node-", dir="/tmp"))  # short: sun_path
    readiness = Readiness()
    readiness.set_ready()
    identity = IdentityService(
        driver_name=config.driver_name if config else DRIVER,
        vendor_version=__version__,
        readiness=readiness,
        missing_tools=lambda: node.mounter.runner.missing_tools(node.connector.required_tools()),
        connector_name=node.connector.name,
    )
    server = CsiServer([identity, node, csi.ControllerBase()])
    await server.start(socket_dir / "csi.sock")
    client = CsiClient(socket_dir / "csi.sock")
    try:
        yield client
    finally:
        client.close()
        await server.stop(grace=5.0)
        await node.operations.wait_idle(30.0)
        await server_connections_closed(socket_dir / "csi.sock")
        shutil.rmtree(socket_dir, ignore_errors=True)


def fast_mounter(runner: CommandRunner) -> Mounter:
    """The daemon's mounter, but a busy unmount falls back to lazy after 0.5 s, not 10 s."""
    return Mounter(runner, Prober(timeout=5.0), timeouts=MounterTimeouts(unmount_settle=0.5))


def make_node(
    *,
    connector: Connector,
    runner: CommandRunner,
    poster: EventPoster | None = None,
    sleep: NoSleep | None = None,
) -> NodeService:
    """A NodeService wired like the daemon's, with the recoverer's backoff recorded."""
    mounter = fast_mounter(runner)
    return NodeService(
        node_id=NODE_ID,
        connector=connector,
        mounter=mounter,
        checker=StaleChecker(mounter),
        recoverer=MountRecoverer(mounter, sleep=sleep or NoSleep()),
        poster=poster,
        zone=ZONE,
    )


@pytest.fixture
async def api() -> AsyncIterator[ApiServerEmulator]:
    async with ApiServerEmulator() as emulator:
        yield emulator


@pytest.fixture
async def pipeline(api: ApiServerEmulator) -> AsyncIterator[EventPipeline]:
    """The daemon's event pipeline (log sink + the real KubeSink) posting to the emulator."""
    started = await start_event_pipeline(
        node_id=NODE_ID, driver_name=DRIVER, kube_configuration=api.configuration()
    )
    try:
        yield started
    finally:
        await started.aclose(timeout=5.0)


def daemon_config(tmp_path: Path, volumes: Path) -> Config:
    return parse_config(
        [
            "--endpoint",
            f"unix://{tmp_path}/unused.sock",
            "--node-id",
            NODE_ID,
            "--connector",
            "loop",
            "--loop-backing-dir",
            str(volumes),
            "--topology-zone",
            ZONE,
        ],
        env={},
    )


PluginFactory = Callable[..., Awaitable[Plugin]]


@pytest.fixture
async def loop_plugin(
    require_root: None, tmp_path: Path, pipeline: EventPipeline
) -> AsyncIterator[PluginFactory]:
    """Start the plugin with the loop connector (root).  `start()` wires it as the daemon does
    (build_node_service); `start(losetup_fails=...)`, `start(gated=True)` swap in test doubles
    on the same host layer."""
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    stack = contextlib.AsyncExitStack()

    async def start(*, standin_losetup: bool = False, gated: bool = False) -> Plugin:
        extras: dict[str, Any] = {}
        if not (standin_losetup or gated):
            config = daemon_config(tmp_path, volumes)
            node = build_node_service(config, pipeline)
            runner = None
        else:
            tools: dict[str, str] = {}
            if standin_losetup:
                extras["losetup"] = LosetupStandin(tmp_path)
                tools["losetup"] = str(extras["losetup"].path)
            runner = RecordingRunner(tools)
            connector: Connector = LoopConnector(runner, backing_dir=str(volumes))
            if gated:
                connector = extras["gate"] = GatedConnector(connector)
            extras["sleep"] = NoSleep()
            node = make_node(
                connector=connector, runner=runner, poster=pipeline.poster, sleep=extras["sleep"]
            )
            config = None
        client = await stack.enter_async_context(serving(node, config))
        return Plugin(node, client, volumes, tmp_path, runner, pipeline, extras)

    try:
        yield start
    finally:
        await stack.aclose()


NQN_PREFIX = "nqn.2000-02.com.mikrotik:"


def nvme_context(volume_id: str, **overrides: str) -> dict[str, str]:
    """The volume_context the rds-csi controller writes for an NVMe/TCP volume."""
    return {
        "nqn": NQN_PREFIX + volume_id,
        "nvmeAddress": "10.0.0.5",
        "nvmePort": "4420",
        **overrides,
    }


@pytest.fixture
async def nvme_plugin(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Plugin]]]:
    """Start the plugin with the production nvme-tcp connector, its `nvme` being the recording
    stand-in over a fabricated sysfs (no root needed).  The plugin's runner records every
    other command.  `start(poster=pipeline.poster)` posts events."""
    standin = NvmeStandin(tmp_path)
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    stack = contextlib.AsyncExitStack()

    async def start(*, poster: EventPoster | None = None) -> Plugin:
        runner = RecordingRunner({"nvme": str(standin.path)})
        connector = NvmeTcpConnector(
            runner,
            sys_root=str(standin.sys_root),
            dev_root=str(standin.dev_root),
            config=NvmeTcpConfig(device_timeout=5.0),
        )
        node = make_node(connector=connector, runner=runner, poster=poster)
        client = await stack.enter_async_context(serving(node))
        return Plugin(node, client, volumes, tmp_path, runner, None, {"nvme": standin})

    try:
        yield start
    finally:
        await stack.aclose()
