"""The NVMe/TCP end-to-end test, run INSIDE the QEMU guest by stage2.sh (never by pytest).

`python -m tests.e2e_nvme.guest_test` with the checkout's virtualenv, as root, on a kernel with
nvmet-tcp and nvme-tcp loaded and configfs mounted. It sets up an nvmet target on 127.0.0.1:4420
that looks like an RDS appliance, then runs each scenario in order. Every scenario prints one
`E2E-NVME PASS|FAIL|SKIP <name>` line; between scenarios the target and the host are put back to
the baseline, so one failure does not cascade. The exit status is the number of failures (capped).

Scenario groups, in order: the raw tools (nvme-cli, mkfs, mount) with the target taken away
under a mount; the plugin's NvmeTcpConnector called directly; a grpclib probe; then the real
daemon (`python -m rds_csi`, started once, shared) driven over its unix socket by NodeStub and
IdentityStub, stopped with SIGTERM at the end (reported as daemon_shutdown).

Environment: E2E_ONLY=name,name runs a subset; E2E_DAEMON_IMPORTTIME=1 reports the daemon's
slowest imports; E2E_PYTHON_LAUNCH_UPTIME (set by stage2.sh) lets the test report how long the
interpreter took to start. The harness passes these with --only and --guest-env.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e_nvme.target import NvmetTarget, Port

MANAGED_PREFIX = "nqn.2000-02.com.mikrotik:pvc-"
BOOT_NQN = "nqn.2019-08.org.example.diskless:node-var"  # a node that boots from NVMe/TCP
# A diskless node's own disk on the same appliance: what a too-wide prefix guard would hit.
SAME_VENDOR_BOOT_NQN = "nqn.2000-02.com.mikrotik:node-var"
MANAGED_DEVICE = "/dev/ram0"
BOOT_DEVICE = "/dev/ram1"
HEALTHY_DEVICE = "/dev/ram2"
BACKING_BYTES = 64 * 1024 * 1024  # brd rd_size=65536 (KiB), see build.MODULE_PARAMS
PORT = Port(port_id=1, traddr="127.0.0.1", trsvcid=4420)
WORKDIR = Path("/tmp/e2e-nvme")
DAEMON_SOCKET = Path("/run/e2e-nvme/csi.sock")
READY_EVENT = "ready"
PVC_KEYS = {"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "e2e"}
CONNECTOR_MODULE = "rds_csi.host.connectors.nvme_tcp"
SYS_NVME = Path("/sys/class/nvme")
SYS_SUBSYS = Path("/sys/class/nvme-subsystem")
RPC_TIMEOUT = 120.0  # the slowest RPC (publish with recovery) under TCG stays well below
WAIT_TIMEOUT = 30.0  # safety net only: every wait returns as soon as its condition holds
POLL = 0.05

REPO = Path(__file__).resolve().parents[2]


def say(line: str) -> None:
    print(f"E2E-NVME {line}", flush=True)


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


class Skip(Exception):
    """Raised by a scenario that cannot run in this checkout (for instance, code not landed)."""


# --- host-side plumbing ------------------------------------------------------------------------


def run(argv: list[str], *, timeout: float = 60.0, check: bool = True) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}: {output}")
    return result.stdout + result.stderr


async def wait_for(
    predicate: Callable[[], object], what: str, timeout: float = WAIT_TIMEOUT
) -> object:
    """Poll a kernel-visible condition (sysfs has no change notification for most of it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(POLL)


def read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def subsystem_of(nqn: str) -> Path | None:
    """The nvme-subsystem class entry for nqn; NQNs are unique, controller numbers are not."""
    for entry in SYS_SUBSYS.glob("nvme-subsys*"):
        if read(entry / "subsysnqn") == nqn:
            return entry
    return None


def subsystem_block_devices(nqn: str) -> list[str]:
    """Namespace block devices (nvme<S>n<N>) of nqn, as listed under the nvme-subsystem class.

    With CONFIG_NVME_MULTIPATH the controller directory holds only the hidden per-path node
    nvme<S>c<C>n<N>; the usable block device is a child of the subsystem, which is why this
    looks here.
    """
    entry = subsystem_of(nqn)
    if entry is None:
        return []
    return sorted(p.name for p in entry.iterdir() if re.fullmatch(r"nvme\d+n\d+", p.name))


def controllers_of(nqn: str) -> list[str]:
    return sorted(p.name for p in SYS_NVME.glob("nvme*") if read(p / "subsysnqn") == nqn)


def controller_state(name: str) -> str:
    return read(SYS_NVME / name / "state")


def connected_nqns() -> set[str]:
    return {read(p / "subsysnqn") for p in SYS_NVME.glob("nvme*")}


def nvme_connect(nqn: str, *extra: str) -> str:
    address = ["-t", "tcp", "-a", PORT.traddr, "-s", str(PORT.trsvcid)]
    return run(["nvme", "connect", *address, "-n", nqn, *extra])


def mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


async def connected_device(nqn: str) -> str:
    names = await wait_for(lambda: subsystem_block_devices(nqn), f"a block device for {nqn}")
    assert isinstance(names, list)
    device = f"/dev/{names[0]}"
    await wait_for(lambda: os.path.exists(device), f"{device} in devtmpfs")
    return device


def write_synced(path: Path, payload: bytes) -> None:
    with open(path, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


# --- scenario registry -------------------------------------------------------------------------


@dataclass
class Context:
    target: NvmetTarget
    managed_nqn: str
    boot_nqn: str = BOOT_NQN
    timings: dict[str, float] = field(default_factory=dict)
    daemon: Daemon | None = None

    def mountpoint(self, name: str) -> Path:
        path = WORKDIR / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def running_daemon(self) -> Daemon:
        """One daemon for every scenario that needs it: its start-up is paid once."""
        if self.daemon is None:
            self.daemon = Daemon(DAEMON_SOCKET)
            self.timings["daemon_start_to_ready"] = await self.daemon.start()
        assert self.daemon.proc is not None and self.daemon.proc.returncode is None, (
            f"the daemon has exited: {self.daemon.log[-5:]}"
        )
        return self.daemon


IMPORT_TIMINGS: dict[str, float] = {}  # first-import costs measured where the imports happen
ScenarioFunc = Callable[[Context], Awaitable[None]]
SCENARIOS: list[tuple[str, ScenarioFunc]] = []


def scenario(func: ScenarioFunc) -> ScenarioFunc:
    SCENARIOS.append((func.__name__, func))
    return func


def baseline_target(target: NvmetTarget, managed_nqn: str) -> None:
    """Port 1 on 127.0.0.1:4420 exposing the managed volume and the boot disk, both enabled."""
    for nqn, device in ((managed_nqn, MANAGED_DEVICE), (BOOT_NQN, BOOT_DEVICE)):
        target.add_subsystem(nqn)
        if 1 in target.namespace_ids(nqn):
            target.set_namespace_enabled(nqn, 1, True)
        else:
            target.add_namespace(nqn, 1, device)
    target.add_port(PORT)
    for nqn in (managed_nqn, BOOT_NQN):
        target.expose(PORT.port_id, nqn)


async def reset_host_and_target(ctx: Context) -> None:
    """Undo whatever a scenario left behind: mounts under WORKDIR, controllers, target changes."""
    with open("/proc/self/mountinfo") as f:
        stale = [line.split()[4] for line in f if line.split()[4].startswith(str(WORKDIR))]
    for path in sorted(stale, reverse=True):
        run(["umount", "-l", path], check=False)
    if list(SYS_NVME.glob("nvme*")):
        run(["nvme", "disconnect-all"], check=False)
    await wait_for(lambda: not list(SYS_NVME.glob("nvme*")), "every controller to go away")
    for nqn in ctx.target.subsystems():
        if nqn not in (ctx.managed_nqn, ctx.boot_nqn):
            ctx.target.remove_subsystem(nqn)  # a scenario's extra subsystem
    baseline_target(ctx.target, ctx.managed_nqn)


def _nvme_children(path: Path) -> list[str]:
    return sorted(c.name for c in path.iterdir() if c.name.startswith("nvme"))


def diagnostics() -> None:
    """What the kernel holds right now, printed after a failure."""
    for p in sorted(SYS_NVME.glob("nvme*")):
        say(f"DIAG {p}: state={read(p / 'state')} nqn={read(p / 'subsysnqn')} {_nvme_children(p)}")
    for p in sorted(SYS_SUBSYS.glob("nvme-subsys*")):
        say(f"DIAG {p}: nqn={read(p / 'subsysnqn')} {_nvme_children(p)}")
    for line in run(["dmesg"], check=False).splitlines()[-25:]:
        say("DIAG dmesg " + line)


# --- scenarios: the raw path -------------------------------------------------------------------


@scenario
async def raw_tools_path(ctx: Context) -> None:
    """nvme connect -> device by subsysnqn -> mkfs -> mount -> write -> read back -> disconnect."""
    nqn = ctx.managed_nqn
    nvme_connect(nqn)
    device = await connected_device(nqn)

    # The layout that makes a naive lookup fail: prove the guest really has it.
    assert read(Path("/sys/module/nvme_core/parameters/multipath")) == "Y", "multipath is off"
    (controller,) = controllers_of(nqn)
    in_controller = sorted(
        p.name
        for p in (SYS_NVME / controller).iterdir()
        if re.fullmatch(r"nvme\d+(c\d+)?n\d+", p.name)
    )
    say(
        f"INFO layout: /sys/class/nvme/{controller} holds {in_controller}; "
        f"{subsystem_of(nqn)} lists {subsystem_block_devices(nqn)}"
    )
    assert in_controller and all("c" in name.removeprefix("nvme") for name in in_controller), (
        f"expected only hidden path nodes nvme<S>c<C>n<N> under the controller, got {in_controller}"
    )

    run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", device])
    assert run(["blkid", "-o", "value", "-s", "TYPE", device]).strip() == "ext4"
    mnt = ctx.mountpoint("raw")
    payload = os.urandom(256 * 1024)
    run(["mount", "-t", "ext4", device, str(mnt)])
    write_synced(mnt / "data", payload)
    run(["umount", str(mnt)])
    run(["mount", "-t", "ext4", "-o", "ro", device, str(mnt)])
    assert (mnt / "data").read_bytes() == payload, "data read back after remount differs"
    run(["umount", str(mnt)])

    out = run(["nvme", "disconnect", "-n", nqn])
    assert "disconnected 1 controller" in out, out
    await wait_for(lambda: subsystem_of(nqn) is None, f"{nqn} to leave sysfs")
    assert not os.path.exists(device), f"{device} still exists after disconnect"


@scenario
async def namespace_loss_under_mount(ctx: Context) -> None:
    """Take the namespace away under a mount, then give it back (the stale-mount case)."""
    nqn = ctx.managed_nqn
    nvme_connect(nqn)
    device = await connected_device(nqn)
    run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", device])
    mnt = ctx.mountpoint("nsloss")
    run(["mount", "-t", "ext4", device, str(mnt)])
    before = os.urandom(64 * 1024)
    write_synced(mnt / "before", before)

    ctx.target.set_namespace_enabled(nqn, 1, False)
    await wait_for(lambda: not subsystem_block_devices(nqn), "the block device to disappear")
    assert controllers_of(nqn), "the controller should stay connected without its namespace"
    try:
        write_synced(mnt / "after", b"x" * 4096)
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0)
        say(f"INFO fsync on the stale mount failed as expected: {code}")
    else:
        raise AssertionError("fsync on a mount whose namespace is gone succeeded")
    assert mounted(mnt), "the stale mount should still be in mountinfo"

    ctx.target.set_namespace_enabled(nqn, 1, True)
    new_device = await connected_device(nqn)
    say(f"INFO namespace back: {device} -> {new_device}")
    fresh = ctx.mountpoint("nsloss-fresh")
    run(["mount", "-t", "ext4", new_device, str(fresh)])  # replays the journal
    assert (fresh / "before").read_bytes() == before, "data written before the loss is gone"
    run(["umount", str(fresh)])
    run(["umount", "-l", str(mnt)])
    run(["nvme", "disconnect", "-n", nqn])


@scenario
async def port_loss_and_reconnect(ctx: Context) -> None:
    """Remove the target port under a mount: the controller reconnects once it is back."""
    nqn = ctx.managed_nqn
    nvme_connect(nqn, "--reconnect-delay=1", "--ctrl-loss-tmo=60")
    device = await connected_device(nqn)
    (controller,) = controllers_of(nqn)
    run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", device])
    mnt = ctx.mountpoint("portloss")
    run(["mount", "-t", "ext4", device, str(mnt)])
    write_synced(mnt / "before", b"b" * 4096)

    ctx.target.remove_port(PORT.port_id)
    await wait_for(
        lambda: controller_state(controller) in {"resetting", "connecting"},
        f"{controller} to notice the port is gone",
    )
    ctx.target.add_port(PORT)
    ctx.target.expose(PORT.port_id, nqn)
    ctx.target.expose(PORT.port_id, ctx.boot_nqn)
    await wait_for(lambda: controller_state(controller) == "live", f"{controller} to reconnect")
    assert subsystem_block_devices(nqn) == [device.removeprefix("/dev/")], "device name changed"
    write_synced(mnt / "after", b"a" * 4096)
    run(["umount", str(mnt)])
    run(["nvme", "disconnect", "-n", nqn])


# --- scenarios: the plugin's connector -----------------------------------------------------------


def require_connector() -> None:
    source = REPO / Path(*CONNECTOR_MODULE.split(".")).with_suffix(".py")
    if not source.exists():
        raise Skip(f"{source.relative_to(REPO)} is not in this checkout yet")


def make_connector() -> Any:
    """The production connector with production settings, on the real runner."""
    require_connector()
    started = time.monotonic()
    from rds_csi.host.connectors.nvme_tcp import NvmeTcpConnector
    from rds_csi.host.runner import CommandRunner

    IMPORT_TIMINGS.setdefault("import_rds_csi_connector", time.monotonic() - started)

    return NvmeTcpConnector(CommandRunner())


def volume_context(nqn: str) -> dict[str, str]:
    """What the rds-csi controller puts in volume_context for a volume on this target."""
    return {"nqn": nqn, "nvmeAddress": PORT.traddr, "nvmePort": str(PORT.trsvcid)}


def volume_id(nqn: str) -> str:
    return nqn.split(":", 1)[1]


def block_device_bytes(device: str) -> int:
    name = device.removeprefix("/dev/")
    return int(read(Path("/sys/class/block") / name / "size")) * 512


@scenario
async def connector_connect_disconnect(ctx: Context) -> None:
    """connect twice (one controller, same device), resolve, disconnect twice."""
    connector = make_connector()
    nqn = ctx.managed_nqn
    target = connector.parse_target(volume_id(nqn), volume_context(nqn))

    device = await connector.connect(target)
    expected = [f"/dev/{name}" for name in subsystem_block_devices(nqn)]
    assert device in expected, f"connector said {device}, sysfs lists {expected}"
    assert os.path.exists(device), f"{device} does not exist"
    assert block_device_bytes(device) == BACKING_BYTES, "device size differs from the namespace"
    controllers = controllers_of(nqn)
    assert len(controllers) == 1, f"expected one controller, got {controllers}"

    again = await connector.connect(target)
    assert again == device, f"second connect returned {again}, first {device}"
    assert controllers_of(nqn) == controllers, "second connect created another controller"
    assert await connector.resolve_device(target) == device

    # NodeUnstageVolume knows only the volume ID.
    by_id = connector.target_for_volume_id(volume_id(nqn))
    assert by_id is not None, "target_for_volume_id gave nothing for a managed volume ID"
    assert await connector.resolve_device(by_id) == device

    await connector.disconnect(by_id)
    assert subsystem_of(nqn) is None, f"{nqn} still in sysfs after disconnect returned"
    assert not controllers_of(nqn), "controller left behind"
    await wait_for(lambda: not os.path.exists(device), f"{device} to leave /dev")
    await connector.disconnect(target)  # idempotent: nothing attached
    assert await connector.resolve_device(target) is None


@scenario
async def connector_disconnect_guard(ctx: Context) -> None:
    """The connector refuses to disconnect a subsystem outside the managed prefix."""
    connector = make_connector()
    from rds_csi.host.errors import DisconnectRefused

    nvme_connect(ctx.boot_nqn)
    await connected_device(ctx.boot_nqn)
    foreign = connector.parse_target("boot", volume_context(ctx.boot_nqn))
    try:
        await connector.disconnect(foreign)
    except DisconnectRefused as exc:
        say(f"INFO refused as expected: {exc}")
    else:
        raise AssertionError(f"disconnect of {ctx.boot_nqn} was not refused")
    assert controllers_of(ctx.boot_nqn), f"{ctx.boot_nqn} was disconnected"
    for nqn in (SAME_VENDOR_BOOT_NQN, ctx.managed_nqn):
        say(f"INFO is_managed({nqn}) = {connector.is_managed(nqn)}")


@scenario
async def connector_orphan_cleanup(ctx: Context) -> None:
    """A managed subsystem without a block device is disconnected; a healthy managed volume
    and an orphaned subsystem of another prefix (the node's own boot disk) are left alone."""
    connector = make_connector()
    healthy_nqn = f"{MANAGED_PREFIX}{uuid.uuid4()}"
    ctx.target.add_subsystem(healthy_nqn)
    ctx.target.add_namespace(healthy_nqn, 1, HEALTHY_DEVICE)
    ctx.target.expose(PORT.port_id, healthy_nqn)

    for nqn in (ctx.managed_nqn, healthy_nqn):
        await connector.connect(connector.parse_target(volume_id(nqn), volume_context(nqn)))
    nvme_connect(ctx.boot_nqn)
    await connected_device(ctx.boot_nqn)

    # Orphans: the controller stays connected, the namespace (and its block device) goes.
    for nqn in (ctx.managed_nqn, ctx.boot_nqn):
        ctx.target.set_namespace_enabled(nqn, 1, False)
    for nqn in (ctx.managed_nqn, ctx.boot_nqn):
        await wait_for(
            lambda nqn=nqn: not subsystem_block_devices(nqn), f"{nqn} to lose its device"
        )
        assert controllers_of(nqn), f"{nqn} lost its controller too"

    report = await connector.cleanup_orphans()
    say(
        f"INFO cleanup report: detached={report.detached} skipped={report.skipped} "
        f"failed={report.failed}"
    )
    assert report.detached == [ctx.managed_nqn], f"detached {report.detached}"
    assert not report.failed, f"failed {report.failed}"
    await wait_for(lambda: not controllers_of(ctx.managed_nqn), "the orphan to be disconnected")
    assert controllers_of(ctx.boot_nqn), "the boot disk's subsystem was disconnected"
    assert subsystem_block_devices(healthy_nqn), "the healthy managed volume lost its device"
    assert ctx.boot_nqn in report.skipped and healthy_nqn in report.skipped, report.skipped


# --- probes: what Python costs in the guest ----------------------------------------------------


@scenario
async def grpc_probe(ctx: Context) -> None:
    """grpclib server + client over a unix socket in the guest: import, start and call costs."""
    started = time.monotonic()
    from grpclib.client import Channel, UnaryUnaryMethod
    from grpclib.const import Cardinality, Handler
    from grpclib.encoding.base import CodecBase
    from grpclib.server import Server, Stream

    ctx.timings["import_grpclib"] = time.monotonic() - started

    class RawCodec(CodecBase):
        __content_subtype__ = "proto"

        def encode(self, message: bytes, message_type: object) -> bytes:
            return message

        def decode(self, data: bytes, message_type: object) -> bytes:
            return data

    class Echo:
        async def call(self, stream: Stream[bytes, bytes]) -> None:
            request = await stream.recv_message()
            assert request is not None
            await stream.send_message(request)

        def __mapping__(self) -> dict[str, Handler]:
            return {"/probe.Echo/Call": Handler(self.call, Cardinality.UNARY_UNARY, bytes, bytes)}

    socket_path = str(WORKDIR / "probe.sock")
    started = time.monotonic()
    server = Server([Echo()], codec=RawCodec())
    await server.start(path=socket_path)
    channel = Channel(path=socket_path, codec=RawCodec())
    call = UnaryUnaryMethod(channel, "/probe.Echo/Call", bytes, bytes)
    try:
        assert await call(b"first") == b"first"
        ctx.timings["grpc_start_and_first_call"] = time.monotonic() - started
        started = time.monotonic()
        for i in range(20):
            assert await call(str(i).encode()) == str(i).encode()
        ctx.timings["grpc_unary_call_avg"] = (time.monotonic() - started) / 20
    finally:
        channel.close()
        server.close()
        await server.wait_closed()

    for module in ("betterproto2", "rds_csi.node_server"):
        if module == "rds_csi.node_server" and not (REPO / "rds_csi" / "node_server.py").exists():
            continue
        started = time.monotonic()
        importlib.import_module(module)
        ctx.timings[f"import_{module}"] = time.monotonic() - started


# --- scenarios: the daemon over its gRPC socket ------------------------------------------------


class Daemon:
    """`python -m rds_csi` in the guest on a unix socket, with a grpclib channel to it.

    Readiness is its own "ready" log line (JSON on stdout; after the start-up orphan clean-up,
    when Probe turns ready), not a poll of the socket.
    """

    def __init__(self, socket_path: Path, *extra: str) -> None:
        self.socket_path = socket_path
        self.argv = [
            sys.executable,
            "-m",
            "rds_csi",
            "--endpoint",
            f"unix://{socket_path}",
            "--node-id",
            "e2e-guest",
            "--connector",
            "nvme-tcp",
            "--log-format",
            "json",
            *extra,
        ]
        self.log: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self.channel: Any = None

    async def start(self, ready_timeout: float = 300.0) -> float:
        """Start and wait for "ready"; returns how long that took."""
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        env = dict(os.environ)
        if os.environ.get("E2E_DAEMON_IMPORTTIME"):
            env["PYTHONPROFILEIMPORTTIME"] = "1"  # lands in self.log as non-JSON lines
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        ready = asyncio.get_running_loop().create_future()
        self._pump = asyncio.create_task(self._read_log(ready))
        await asyncio.wait_for(ready, ready_timeout)
        elapsed = time.monotonic() - started
        from grpclib.client import Channel

        self.channel = Channel(path=str(self.socket_path))
        return elapsed

    async def _read_log(self, ready: asyncio.Future[None]) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            try:
                record = json.loads(text)
            except ValueError:
                record = {"event": text}
            self.log.append(record)
            if record.get("event") == READY_EVENT and not ready.done():
                ready.set_result(None)
        if not ready.done():
            ready.set_exception(AssertionError(f"daemon exited before starting: {self.log[-5:]}"))

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit status (a clean shutdown is 0)."""
        if self.channel is not None:
            self.channel.close()
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            returncode = await asyncio.wait_for(self.proc.wait(), timeout)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        if self._pump is not None:
            await self._pump
        return returncode

    def report_import_times(self, top: int = 15) -> None:
        """With E2E_DAEMON_IMPORTTIME=1: the slowest imports (cumulative) of the daemon."""
        rows = []
        for record in self.log:
            text = str(record.get("event", ""))
            if text.startswith("import time:") and "|" in text:
                _, cumulative, name = text.split("|", 2)
                if cumulative.strip().isdigit():
                    rows.append((int(cumulative), name.rstrip()))
        for cumulative, name in sorted(rows, reverse=True)[:top]:
            say(f"INFO daemon import {cumulative / 1e6:7.3f}s {name}")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [record for record in self.log if record.get("event") == name]

    def kube_events(self, reason: str) -> list[dict[str, Any]]:
        """Kubernetes events as the log sink wrote them (no API server in the guest)."""
        return [r for r in self.events("kubernetes event") if r.get("reason") == reason]


async def make_orphans(ctx: Context, *nqns: str) -> None:
    """Connect each NQN, then take its namespace away: connected, but no block device."""
    for nqn in nqns:
        nvme_connect(nqn)
        await connected_device(nqn)
    for nqn in nqns:
        ctx.target.set_namespace_enabled(nqn, 1, False)
    for nqn in nqns:
        await wait_for(
            lambda nqn=nqn: not subsystem_block_devices(nqn), f"{nqn} to lose its device"
        )


@scenario
async def daemon_startup_orphan_cleanup(ctx: Context) -> None:
    """The daemon disconnects managed orphans before it turns ready, and nothing else."""
    require_connector()
    if ctx.daemon is not None:
        raise Skip("the daemon is already running; this scenario must start it")
    await make_orphans(ctx, ctx.managed_nqn, ctx.boot_nqn)
    daemon = await ctx.running_daemon()
    assert not controllers_of(ctx.managed_nqn), "the managed orphan is still connected"
    assert controllers_of(ctx.boot_nqn), "the boot disk's subsystem was disconnected"
    cleanups = daemon.events("orphan clean-up")
    assert cleanups and cleanups[-1].get("detached") == [ctx.managed_nqn], cleanups


@scenario
async def daemon_identity_over_grpc(ctx: Context) -> None:
    """The real daemon in the guest: start-up cost, then Identity over its socket."""
    daemon = await ctx.running_daemon()
    started = time.monotonic()
    from rds_csi.gen.csi import v1 as csi

    identity = csi.IdentityStub(daemon.channel)
    info = await identity.get_plugin_info(timeout=30)
    ctx.timings["grpc_first_identity_call"] = time.monotonic() - started
    assert info.name, "GetPluginInfo returned no driver name"
    assert info.manifest.get("connector") == "nvme-tcp", info.manifest
    probe = await identity.probe(timeout=30)
    assert probe.ready, f"Probe says not ready: {probe}"
    say(f"INFO daemon {info.name} {info.vendor_version}, probe ready={probe.ready}")


def mounts_at(path: Path) -> list[dict[str, str]]:
    """mountinfo entries whose mount point is path (more than one: stacked mounts)."""
    entries = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == str(path):
                rest = fields[fields.index("-") + 1 :]
                entries.append(
                    {"dev": fields[2], "fstype": rest[0], "source": rest[1], "options": fields[5]}
                )
    return entries


class NodeClient:
    """NodeStub calls with the requests kubelet would send for one ext4 volume."""

    def __init__(self, daemon: Daemon, nqn: str) -> None:
        from rds_csi.gen.csi import v1 as csi

        self.csi = csi
        self.stub = csi.NodeStub(daemon.channel)
        self.volume_id = volume_id(nqn)
        self.context = {**volume_context(nqn), **PVC_KEYS}
        base = WORKDIR / "kubelet" / self.volume_id
        self.staging = base / "globalmount"
        base.mkdir(parents=True, exist_ok=True)
        self.capability = csi.VolumeCapability(
            mount=csi.VolumeCapabilityMountVolume(fs_type="ext4"),
            access_mode=csi.VolumeCapabilityAccessMode(
                mode=csi.VolumeCapabilityAccessModeMode.SINGLE_NODE_WRITER
            ),
        )

    def target(self, pod: str) -> Path:
        pod_dir = WORKDIR / "kubelet" / "pods" / pod
        pod_dir.mkdir(parents=True, exist_ok=True)
        return pod_dir / "mount"

    async def stage(self) -> None:
        await self.stub.node_stage_volume(
            self.csi.NodeStageVolumeRequest(
                volume_id=self.volume_id,
                staging_target_path=str(self.staging),
                volume_capability=self.capability,
                volume_context=self.context,
            ),
            timeout=RPC_TIMEOUT,
        )

    async def unstage(self) -> None:
        await self.stub.node_unstage_volume(
            self.csi.NodeUnstageVolumeRequest(
                volume_id=self.volume_id, staging_target_path=str(self.staging)
            ),
            timeout=RPC_TIMEOUT,
        )

    async def publish(self, target: Path) -> None:
        await self.stub.node_publish_volume(
            self.csi.NodePublishVolumeRequest(
                volume_id=self.volume_id,
                staging_target_path=str(self.staging),
                target_path=str(target),
                volume_capability=self.capability,
                volume_context=self.context,
            ),
            timeout=RPC_TIMEOUT,
        )

    async def unpublish(self, target: Path) -> None:
        await self.stub.node_unpublish_volume(
            self.csi.NodeUnpublishVolumeRequest(volume_id=self.volume_id, target_path=str(target)),
            timeout=RPC_TIMEOUT,
        )

    async def stats(self, path: Path) -> Any:
        return await self.stub.node_get_volume_stats(
            self.csi.NodeGetVolumeStatsRequest(volume_id=self.volume_id, volume_path=str(path)),
            timeout=RPC_TIMEOUT,
        )


def staged_from(client: NodeClient) -> dict[str, str]:
    entries = mounts_at(client.staging)
    assert len(entries) == 1, f"expected one mount at {client.staging}, got {entries}"
    return entries[0]


@scenario
async def node_stage_publish_cycle(ctx: Context) -> None:
    """Stage, publish, write, stats, unpublish, unstage over gRPC; each call twice (idempotent);
    a second stage finds the data (no reformat)."""
    daemon = await ctx.running_daemon()
    node = NodeClient(daemon, ctx.managed_nqn)
    pod = node.target("pod-a")

    await node.stage()
    await node.stage()
    staged = staged_from(node)
    devices = [f"/dev/{name}" for name in subsystem_block_devices(ctx.managed_nqn)]
    assert staged["source"] in devices, f"staged from {staged['source']}, NQN has {devices}"
    assert staged["fstype"] == "ext4", staged

    await node.publish(pod)
    await node.publish(pod)
    published = mounts_at(pod)
    assert len(published) == 1 and published[0]["dev"] == staged["dev"], published
    payload = os.urandom(128 * 1024)
    write_synced(pod / "data", payload)
    assert (node.staging / "data").read_bytes() == payload, "publish is not a view of staging"

    stats = await node.stats(pod)
    by_unit = {usage.unit: usage for usage in stats.usage}
    size = by_unit[node.csi.VolumeUsageUnit.BYTES]
    say(f"INFO stats bytes total={size.total} used={size.used} available={size.available}")
    assert 0 < size.total <= BACKING_BYTES and size.used > 0 and size.available > 0, size
    assert by_unit[node.csi.VolumeUsageUnit.INODES].total > 0, stats
    assert stats.volume_condition is not None and not stats.volume_condition.abnormal, stats

    await node.unpublish(pod)
    await node.unpublish(pod)
    assert not mounts_at(pod), f"{pod} still mounted after unpublish"
    await node.unstage()
    await node.unstage()
    assert not mounts_at(node.staging), "staging still mounted after unstage"
    assert not controllers_of(ctx.managed_nqn), "unstage left the controller connected"

    await node.stage()
    assert (node.staging / "data").read_bytes() == payload, "re-stage lost the data (reformat?)"
    await node.unstage()
    assert not controllers_of(ctx.managed_nqn)


@scenario
async def node_stale_mount_recovery(ctx: Context) -> None:
    """The namespace goes and comes back under a staged volume: stats report it abnormal, the
    next publish remounts staging from the new device and posts StaleMountDetected."""
    daemon = await ctx.running_daemon()
    node = NodeClient(daemon, ctx.managed_nqn)
    pod_a, pod_b = node.target("pod-a"), node.target("pod-b")
    await node.stage()
    await node.publish(pod_a)
    payload = os.urandom(64 * 1024)
    write_synced(pod_a / "before", payload)
    old_device = staged_from(node)["source"]

    ctx.target.set_namespace_enabled(ctx.managed_nqn, 1, False)
    await wait_for(lambda: not subsystem_block_devices(ctx.managed_nqn), "the device to go")
    stats = await node.stats(pod_a)
    say(f"INFO stats on the stale mount: {stats.volume_condition}")
    assert stats.volume_condition is not None and stats.volume_condition.abnormal, stats

    ctx.target.set_namespace_enabled(ctx.managed_nqn, 1, True)
    new_device = await connected_device(ctx.managed_nqn)
    await node.publish(pod_b)
    staged = staged_from(node)
    say(f"INFO recovered: {old_device} -> {staged['source']}")
    assert staged["source"] == new_device, f"staging is on {staged['source']}, not {new_device}"
    assert (pod_b / "before").read_bytes() == payload, "data written before the loss is gone"
    assert daemon.kube_events("StaleMountDetected"), "no StaleMountDetected event"
    healthy = await node.stats(pod_b)
    assert healthy.volume_condition is not None and not healthy.volume_condition.abnormal, healthy

    for pod in (pod_a, pod_b):
        await node.unpublish(pod)
        assert not mounts_at(pod), f"{pod} still mounted"
    await node.unstage()
    assert not controllers_of(ctx.managed_nqn), "unstage left the controller connected"


@scenario
async def node_recovery_failed(ctx: Context) -> None:
    """The appliance is gone for good (namespace, controller and port): publish fails with an
    error, posts RecoveryFailed, and unpublish/unstage still clean up."""
    daemon = await ctx.running_daemon()
    from grpclib.exceptions import GRPCError

    node = NodeClient(daemon, ctx.managed_nqn)
    pod_a, pod_b = node.target("pod-a"), node.target("pod-b")
    await node.stage()
    await node.publish(pod_a)

    ctx.target.set_namespace_enabled(ctx.managed_nqn, 1, False)
    await wait_for(lambda: not subsystem_block_devices(ctx.managed_nqn), "the device to go")
    run(["nvme", "disconnect", "-n", ctx.managed_nqn])  # the controller is lost as well
    ctx.target.remove_port(PORT.port_id)  # and reconnecting is refused

    try:
        await node.publish(pod_b)
    except GRPCError as exc:
        say(f"INFO publish failed as expected: {exc.status.name}: {exc.message}")
    else:
        raise AssertionError("publish on an unrecoverable stale mount succeeded")
    await wait_for(lambda: daemon.kube_events("RecoveryFailed"), "a RecoveryFailed event")
    assert not mounts_at(pod_b), "publish failed but left a mount behind"

    await node.unpublish(pod_a)
    assert not mounts_at(pod_a), f"{pod_a} still mounted"
    await node.unstage()
    assert not mounts_at(node.staging), "staging still mounted after unstage"


async def stop_daemon(ctx: Context) -> bool:
    """SIGTERM the shared daemon (if a scenario started it): it must exit 0 and say 'stopped'."""
    daemon = ctx.daemon
    if daemon is None:
        return True
    started = time.monotonic()
    try:
        returncode = await daemon.stop()
        assert returncode == 0, f"daemon exited {returncode} on SIGTERM"
        assert daemon.events("stopped"), "no 'stopped' log line after SIGTERM"
    except Exception as exc:
        say(f"FAIL daemon_shutdown: {type(exc).__name__}: {exc}")
        for record in daemon.log[-15:]:
            say(f"DIAG daemon {record}")
        return False
    finally:
        daemon.report_import_times()
    say(f"PASS daemon_shutdown ({time.monotonic() - started:.2f}s)")
    return True


# --- driver --------------------------------------------------------------------------------------


async def run_scenarios(
    ctx: Context, selected: list[tuple[str, ScenarioFunc]]
) -> tuple[int, int, int]:
    passed = failed = skipped = 0
    for name, func in selected:
        started = time.monotonic()
        try:
            await func(ctx)
        except Skip as exc:
            skipped += 1
            say(f"SKIP {name}: {exc}")
        except Exception as exc:  # a scenario's failure is reported, the next one still runs
            failed += 1
            say(f"FAIL {name} ({time.monotonic() - started:.2f}s): {type(exc).__name__}: {exc}")
            for line in traceback.format_exc().rstrip().splitlines():
                say("TRACE " + line)
            diagnostics()
        else:
            passed += 1
            say(f"PASS {name} ({time.monotonic() - started:.2f}s)")
        try:
            await reset_host_and_target(ctx)
        except Exception as exc:
            failed += 1
            say(f"FAIL reset-after-{name}: {type(exc).__name__}: {exc}")
            diagnostics()
            break
    return passed, failed, skipped


def interpreter_startup_seconds() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.monotonic() - started


async def main() -> int:
    timings: dict[str, float] = {}
    launched = os.environ.get("E2E_PYTHON_LAUNCH_UPTIME")
    if launched:
        timings["python_launch_to_main"] = uptime() - float(launched)
    timings["bare_interpreter_startup"] = interpreter_startup_seconds()
    say(f"INFO kernel {os.uname().release}, python {sys.version.split()[0]}, repo {REPO}")

    WORKDIR.mkdir(parents=True, exist_ok=True)
    target = NvmetTarget()
    managed_nqn = f"{MANAGED_PREFIX}{uuid.uuid4()}"
    baseline_target(target, managed_nqn)
    ctx = Context(target=target, managed_nqn=managed_nqn, timings=timings)
    say(f"INFO target on {PORT.traddr}:{PORT.trsvcid}: {target.subsystems()}")

    only = {n for n in os.environ.get("E2E_ONLY", "").split(",") if n}
    unknown = only - {name for name, _ in SCENARIOS}
    if unknown:
        say(f"FAIL selection: unknown scenarios {sorted(unknown)}")
        return 1
    selected = [(n, f) for n, f in SCENARIOS if not only or n in only]
    started = time.monotonic()
    passed, failed, skipped = await run_scenarios(ctx, selected)
    if ctx.daemon is not None:
        if await stop_daemon(ctx):
            passed += 1
        else:
            failed += 1
    timings["scenarios_total"] = time.monotonic() - started
    target.teardown()

    timings.update(IMPORT_TIMINGS)
    for key, value in timings.items():
        say(f"TIMING {key}={value:.3f}s")
    say(f"SUMMARY passed={passed} failed={failed} skipped={skipped}")
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
