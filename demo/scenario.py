"""The walk-through: a volume's life on a node as kubelet drives it, with a real stale mount in
the middle and a real failed stage, then the events the plugin left on the claim.

Kubelet's paths are mirrored under the work directory: staging at
plugins/kubernetes.io/csi/<driver>/<sha256(volume id)>/globalmount, publish targets at
pods/<pod uid>/volumes/kubernetes.io~csi/<pv>/mount.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from demo import host
from demo.cluster import Claim, DemoCluster, new_volume_id, start_cluster
from demo.daemon import DaemonProcess
from demo.kubectl import describe_pvc, get_events_table
from demo.progress import Progress, StepFailed, describe_grpc_error
from rds_csi import DEFAULT_DRIVER_NAME
from rds_csi.events import MOUNT_FAILURE, STALE_MOUNT_DETECTED
from rds_csi.gen.csi import v1 as csi

__all__ = ["NODE_ID", "Scenario"]

NODE_ID = "demo-node"
VOLUME_MIB = 128
BROKEN_VOLUME_MIB = 64
RPC_TIMEOUT = 60.0
READY_TIMEOUT = 60.0
EVENTS_TIMEOUT = 20.0
PAYLOAD = "hello from the rds-csi demo\n"

Action = Callable[[], Awaitable[str]]


def _capability() -> csi.VolumeCapability:
    return csi.VolumeCapability(
        mount=csi.VolumeCapabilityMountVolume(fs_type="ext4"),
        access_mode=csi.VolumeCapabilityAccessMode(
            mode=csi.VolumeCapabilityAccessModeMode.SINGLE_NODE_WRITER
        ),
    )


def _size(value: int) -> str:
    if value < 1024 * 1024:
        return f"{value / 1024:.0f} KiB"
    return f"{value / (1024 * 1024):.1f} MiB"


class Scenario:
    def __init__(self, workdir: Path, repo: Path, out: TextIO) -> None:
        self.workdir = workdir
        self.repo = repo
        self.out = out
        self.claim = Claim("default", "data", new_volume_id())
        self.broken_id = new_volume_id()  # a second volume whose filesystem is damaged
        self.volumes = workdir / "volumes"
        self.kubelet = workdir / "kubelet"
        self.socket = workdir / "csi.sock"
        self.log_path = workdir / "daemon.log"
        self.pods = [str(uuid.uuid4()), str(uuid.uuid4())]  # the first pod, and its successor
        self.cluster: DemoCluster | None = None
        self.daemon: DaemonProcess | None = None
        self.channel: Channel | None = None
        self._node: csi.NodeStub | None = None
        self.first_device = ""  # the loop device the volume was staged on
        self.first_device_number = (0, 0)
        self.second_device = ""  # the one it came back on after the hand-made "reconnect"
        self.events: list[dict[str, Any]] = []

    # ---- paths ---------------------------------------------------------------------------

    def image(self, volume_id: str) -> Path:
        return self.volumes / f"{volume_id}.img"

    def staging(self, volume_id: str) -> Path:
        digest = hashlib.sha256(volume_id.encode()).hexdigest()
        return (
            self.kubelet
            / "plugins/kubernetes.io/csi"
            / DEFAULT_DRIVER_NAME
            / digest
            / "globalmount"
        )

    def target(self, pod: str, volume_id: str) -> Path:
        return self.kubelet / "pods" / pod / "volumes/kubernetes.io~csi" / volume_id / "mount"

    def short(self, path: Path | str) -> str:
        """A path relative to the work directory, to keep the progress lines readable."""
        return os.path.relpath(path, self.workdir)

    @property
    def node(self) -> csi.NodeStub:
        if self._node is None:
            raise StepFailed("no connection to the plugin")
        return self._node

    # ---- the run -------------------------------------------------------------------------

    def volume_steps(self) -> list[tuple[str, Action]]:
        vol = self.claim.volume_id
        return [
            ("start the Kubernetes API server emulator", self.start_api),
            ("start the plugin: python -m rds_csi", self.start_daemon),
            ("NodeGetInfo", self.get_info),
            ("NodeStageVolume (format ext4, mount)", self.stage),
            ("NodePublishVolume (pod 1)", lambda: self.publish(self.pods[0])),
            ("write a file through the target", self.write_file),
            ("NodeGetVolumeStats", lambda: self.stats(self.pods[0], expect_abnormal=False)),
            ("make the staged mount stale (losetup -d, re-attach)", self.make_stale),
            ("NodeGetVolumeStats (stale)", lambda: self.stats(self.pods[0], expect_abnormal=True)),
            ("NodeUnpublishVolume (pod 1 deleted)", lambda: self.unpublish(self.pods[0])),
            ("NodePublishVolume (pod 2: recovers the mount)", self.publish_recovering),
            ("read the file back through the new target", self.read_file),
            (
                "NodeGetVolumeStats (after recovery)",
                lambda: self.stats(self.pods[1], expect_abnormal=False),
            ),
            ("NodeStageVolume, second volume (corrupted ext4)", self.stage_broken),
            ("NodeUnpublishVolume (pod 2 deleted)", lambda: self.unpublish(self.pods[1])),
            (f"NodeUnstageVolume {vol[:12]}...", self.unstage),
            ("events reach the API server", self.wait_for_events),
        ]

    def shutdown_steps(self) -> list[tuple[str, Action]]:
        return [
            ("stop the plugin with SIGTERM", self.stop_daemon),
            ("stop the emulator; nothing left on the host", self.stop_api),
        ]

    def print_header(self) -> None:
        lines = [
            "rds-csi demo: the node plugin with the loop connector and a Kubernetes API "
            "emulator (no cluster)",
            f"  work directory  {self.workdir}",
            f"  daemon log      {self.log_path}",
            f"  claim           {self.claim.namespace}/{self.claim.name} -> PV "
            f"{self.claim.volume_id}",
            f"  second volume   {self.broken_id} (corrupted ext4 on purpose; its volume_context "
            "names the same claim)",
            "",
        ]
        print("\n".join(lines), file=self.out, flush=True)

    async def run(self) -> None:
        """Every step, the event tables, a clean stop.  Raises StepFailed on the first step that
        does not behave; `close()` must run afterwards in any case."""
        self.print_header()
        volume_steps, shutdown_steps = self.volume_steps(), self.shutdown_steps()
        progress = Progress(len(volume_steps) + len(shutdown_steps), self.out)
        for title, action in volume_steps:
            await progress.step(title, action)
        await self.print_events()
        for title, action in shutdown_steps:
            await progress.step(title, action)

    async def close(self) -> None:
        """Stop whatever still runs (after a failure or Ctrl-C); idempotent."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        try:
            if self.daemon is not None and self.daemon.running:
                await self.daemon.stop()  # before the emulator: it flushes events on the way out
        finally:
            if self.cluster is not None:
                await self.cluster.close()

    # ---- steps ---------------------------------------------------------------------------

    async def start_api(self) -> str:
        self.cluster = await start_cluster(self.workdir, self.claim)
        return (
            f"{self.cluster.url}, PVC {self.claim.namespace}/{self.claim.name} Bound to PV "
            f"{self.claim.volume_id[:12]}..., kubeconfig written"
        )

    async def start_daemon(self) -> str:
        assert self.cluster is not None
        self.volumes.mkdir()
        args = [
            "--connector",
            "loop",
            "--loop-backing-dir",
            str(self.volumes),
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            "--endpoint",
            f"unix://{self.socket}",
            "--node-id",
            NODE_ID,
            "--log-format",
            "json",
        ]
        self.daemon = DaemonProcess(args, self.log_path, cwd=self.repo)
        started = time.perf_counter()
        await self.daemon.start()
        await self.daemon.wait_for_log("ready", READY_TIMEOUT)
        ready_ms = (time.perf_counter() - started) * 1000
        if (
            self.daemon.find(lambda line: line.get("event") == "posting events to Kubernetes")
            is None
        ):
            raise StepFailed(
                f"the plugin did not set up its Kubernetes event sink; see {self.log_path}"
            )
        self.channel = Channel(path=str(self.socket))
        self._node = csi.NodeStub(self.channel)
        return (
            f"pid {self.daemon.pid}, logged 'ready' after {ready_ms:.0f} ms, listening on csi.sock"
        )

    async def get_info(self) -> str:
        info = await self.node.node_get_info(csi.NodeGetInfoRequest(), timeout=RPC_TIMEOUT)
        if info.node_id != NODE_ID:
            raise StepFailed(f"node_id is {info.node_id!r}, expected {NODE_ID!r}")
        segments = dict(info.accessible_topology.segments) if info.accessible_topology else {}
        topology = ", ".join(f"{k}={v}" for k, v in segments.items())
        return f"node_id={info.node_id}, {topology}"

    def _mounted_from_our_loop(self, path: Path, volume_id: str) -> str:
        entry = host.mount_at(path)
        if entry is None:
            raise StepFailed(f"{self.short(path)} is not mounted")
        if entry.fs_type != "ext4":
            raise StepFailed(f"{self.short(path)} is mounted as {entry.fs_type}, expected ext4")
        backing = host.backing_file_of(entry.source)
        if backing != str(self.image(volume_id)):
            raise StepFailed(f"{entry.source} is backed by {backing}, not the volume's file")
        return entry.source

    async def stage(self) -> str:
        vol = self.claim.volume_id
        host.make_sparse_file(self.image(vol), VOLUME_MIB)
        self.staging(vol).parent.mkdir(parents=True)  # kubelet creates the parent
        await self.node.node_stage_volume(
            csi.NodeStageVolumeRequest(
                volume_id=vol,
                staging_target_path=str(self.staging(vol)),
                volume_capability=_capability(),
                volume_context=self.claim.volume_context(),
            ),
            timeout=RPC_TIMEOUT,
        )
        device = self._mounted_from_our_loop(self.staging(vol), vol)
        entry = host.mount_at(self.staging(vol))
        assert entry is not None
        self.first_device, self.first_device_number = device, (entry.major, entry.minor)
        return (
            f"ext4 on {device} (sparse {VOLUME_MIB} MiB volumes/{vol[:12]}....img), "
            f"mounted at the staging path"
        )

    async def _publish(self, pod: str) -> Path:
        vol = self.claim.volume_id
        target = self.target(pod, vol)
        await self.node.node_publish_volume(
            csi.NodePublishVolumeRequest(
                volume_id=vol,
                staging_target_path=str(self.staging(vol)),
                target_path=str(target),
                volume_capability=_capability(),
                volume_context=self.claim.volume_context(),
            ),
            timeout=RPC_TIMEOUT,
        )
        staged, published = host.mount_at(self.staging(vol)), host.mount_at(target)
        if published is None:
            raise StepFailed(f"{self.short(target)} is not mounted")
        if staged is None or (published.major, published.minor) != (staged.major, staged.minor):
            raise StepFailed(f"{self.short(target)} is not a bind mount of the staged volume")
        return target

    async def publish(self, pod: str) -> str:
        await self._publish(pod)
        return f"bind mount of the staged volume at pods/{pod[:8]}.../mount"

    async def write_file(self) -> str:
        target = self.target(self.pods[0], self.claim.volume_id)

        def write() -> int:
            path = target / "hello.txt"
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(PAYLOAD)
                handle.flush()
                os.fsync(handle.fileno())
            return path.stat().st_size

        size = await asyncio.to_thread(write)
        return f"hello.txt, {size} bytes, fsync'd"

    async def stats(self, pod: str, *, expect_abnormal: bool) -> str:
        vol = self.claim.volume_id
        response = await self.node.node_get_volume_stats(
            csi.NodeGetVolumeStatsRequest(
                volume_id=vol,
                volume_path=str(self.target(pod, vol)),
                staging_target_path=str(self.staging(vol)),
            ),
            timeout=RPC_TIMEOUT,
        )
        condition = response.volume_condition
        if condition is None:
            raise StepFailed("no volume_condition in the response")
        if condition.abnormal != expect_abnormal:
            state = "abnormal" if condition.abnormal else "normal"
            raise StepFailed(f"volume condition is {state}: {condition.message}")
        if expect_abnormal:
            if "stale" not in condition.message.lower():
                raise StepFailed(f"abnormal, but not for a stale mount: {condition.message}")
            return f"abnormal=true, {condition.message!r}"
        by_unit = {usage.unit: usage for usage in response.usage}
        size = by_unit.get(csi.VolumeUsageUnit.BYTES)
        inodes = by_unit.get(csi.VolumeUsageUnit.INODES)
        if size is None or inodes is None or size.total <= 0:
            raise StepFailed("no byte and inode usage for a healthy volume")
        return (
            f"abnormal=false, {condition.message!r}, used {_size(size.used)} of "
            f"{_size(size.total)}, inodes {inodes.used}/{inodes.total}"
        )

    async def make_stale(self) -> str:
        """What a reconnect does to an NVMe volume: the device under the mount goes away and the
        volume comes back as another device.  `losetup -d` on a mounted loop device only sets
        autoclear, so the mount keeps the old device while the volume resolves to the new one."""
        vol = self.claim.volume_id
        old = self.first_device
        await host.run("losetup", "-d", old)
        new = (await host.run("losetup", "--find", "--show", "--", str(self.image(vol)))).strip()
        entry = host.mount_at(self.staging(vol))
        if entry is None or entry.source != old:
            raise StepFailed("the staged mount changed while making it stale")
        if new == old:
            raise StepFailed(f"the volume came back on the same device {new}")
        self.second_device = new
        return f"{old} released under the mount (autoclear), the volume is now {new}"

    async def unpublish(self, pod: str) -> str:
        vol = self.claim.volume_id
        target = self.target(pod, vol)
        await self.node.node_unpublish_volume(
            csi.NodeUnpublishVolumeRequest(volume_id=vol, target_path=str(target)),
            timeout=RPC_TIMEOUT,
        )
        if host.mount_at(target) is not None or target.exists():
            raise StepFailed(f"{self.short(target)} is still mounted or still exists")
        return "target unmounted and removed"

    async def publish_recovering(self) -> str:
        """Kubelet unpublished the old pod first; recovering under its live bind mount would
        mount one ext4 through two devices at once."""
        vol = self.claim.volume_id
        old, new = self.first_device, self.second_device
        await self._publish(self.pods[1])
        staged = self._mounted_from_our_loop(self.staging(vol), vol)
        if staged != new:
            raise StepFailed(f"the staging path is mounted from {staged}, expected {new}")
        # The kernel frees an autoclear loop device after its last user, possibly a moment
        # later (and another process may take the number right away): what must hold now is
        # that none of our mounts uses the old device.
        still = host.mounts_of_device(self.workdir, self.first_device_number)
        if still:
            raise StepFailed(f"{old} is still mounted at {', '.join(map(self.short, still))}")
        return (
            f"staged mount remounted from {new}, nothing uses {old} any more, bind mount for pod 2"
        )

    async def read_file(self) -> str:
        path = self.target(self.pods[1], self.claim.volume_id) / "hello.txt"
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        if text != PAYLOAD:
            raise StepFailed(f"hello.txt reads {text!r}, expected {PAYLOAD!r}")
        return f"hello.txt intact: {text.strip()!r}"

    async def stage_broken(self) -> str:
        vol = self.broken_id
        image = self.image(vol)
        host.make_sparse_file(image, BROKEN_VOLUME_MIB)
        await host.corrupt_ext4(image)
        staging = self.staging(vol)
        staging.parent.mkdir(parents=True)
        try:
            await self.node.node_stage_volume(
                csi.NodeStageVolumeRequest(
                    volume_id=vol,
                    staging_target_path=str(staging),
                    volume_capability=_capability(),
                    # The same claim's keys, so that its MountFailure lands on default/data.
                    volume_context=self.claim.volume_context(),
                ),
                timeout=RPC_TIMEOUT,
            )
        except GRPCError as err:
            if err.status is not Status.FAILED_PRECONDITION or "needs repair" not in (
                err.message or ""
            ):
                raise StepFailed(
                    f"expected FAILED_PRECONDITION (needs repair), got {describe_grpc_error(err)}"
                ) from err
            error = err
        else:
            raise StepFailed("a volume with a corrupted filesystem was staged")
        if host.mount_at(staging) is not None:
            raise StepFailed("the corrupted volume is mounted after the failure")
        left = host.attached_to(image)
        if left:
            raise StepFailed(f"the failed stage left {', '.join(left)} attached")
        return f"as expected, {describe_grpc_error(error)}; its loop device was detached again"

    async def unstage(self) -> str:
        vol = self.claim.volume_id
        await self.node.node_unstage_volume(
            csi.NodeUnstageVolumeRequest(volume_id=vol, staging_target_path=str(self.staging(vol))),
            timeout=RPC_TIMEOUT,
        )
        if host.mount_at(self.staging(vol)) is not None:
            raise StepFailed("the staging path is still mounted")
        left = host.attached_to(self.image(vol))
        if left:
            raise StepFailed(f"{', '.join(left)} still attached to the volume's file")
        return f"staging path unmounted, {self.second_device} detached"

    def _check_events(self, events: list[dict[str, Any]]) -> str:
        """Exactly the two events the run provokes, on the claim, in the plugin's format."""
        expected = {
            STALE_MOUNT_DETECTED: ("Normal", self.claim.volume_id),
            MOUNT_FAILURE: ("Warning", self.broken_id),
        }
        reasons = sorted(str(event.get("reason")) for event in events)
        if reasons != sorted(expected):
            raise StepFailed(f"events {reasons}, expected {sorted(expected)}")
        for event in events:
            type_, volume_id = expected[event["reason"]]
            involved = event.get("involvedObject", {})
            where = f"{involved.get('kind')}/{involved.get('name')}"
            prefix = f"[{volume_id}] on [{NODE_ID}]: "
            if event.get("type") != type_:
                raise StepFailed(f"{event['reason']} is {event.get('type')}, expected {type_}")
            if where != f"PersistentVolumeClaim/{self.claim.name}" or not involved.get("uid"):
                raise StepFailed(f"{event['reason']} is on {where} (uid {involved.get('uid')!r})")
            if not str(event.get("message", "")).startswith(prefix):
                raise StepFailed(f"{event['reason']} message {event.get('message')!r}")
        return ", ".join(f"{event['reason']} ({event['type']})" for event in events)

    async def wait_for_events(self) -> str:
        """The plugin posts events in the background; wait until both are stored."""
        assert self.cluster is not None
        cluster = self.cluster
        wanted = {STALE_MOUNT_DETECTED, MOUNT_FAILURE}

        def arrived() -> bool:
            return wanted <= {event.get("reason") for event in cluster.stored_events()}

        try:
            async with asyncio.timeout(EVENTS_TIMEOUT):
                while not arrived():
                    await cluster.api.wait_for_requests(
                        len(cluster.api.requests) + 1, EVENTS_TIMEOUT
                    )
        except TimeoutError:
            have = sorted(str(event.get("reason")) for event in cluster.stored_events())
            raise StepFailed(f"after {EVENTS_TIMEOUT:.0f} s the API server holds {have}") from None
        self.events = await cluster.list_events()
        summary = self._check_events(self.events)
        return f"{len(self.events)} events on persistentvolumeclaim/{self.claim.name}: {summary}"

    async def print_events(self) -> None:
        assert self.cluster is not None
        pvc = await self.cluster.read_claim()
        claim_events = await self.cluster.claim_events(pvc)
        namespace, name = self.claim.namespace, self.claim.name
        blocks = [
            "",
            f"$ kubectl get events -n {namespace}",
            get_events_table(await self.cluster.list_events()),
            "",
            f"$ kubectl describe pvc {name} -n {namespace}",
            describe_pvc(pvc, claim_events),
            "",
        ]
        print("\n".join(blocks), file=self.out, flush=True)
        if len(claim_events) != len(self.events):
            raise StepFailed(
                f"describe shows {len(claim_events)} of the claim's {len(self.events)} events "
                "(involvedObject.uid does not match the claim)"
            )

    async def stop_daemon(self) -> str:
        assert self.daemon is not None and self.cluster is not None
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        started = time.perf_counter()
        code = await self.daemon.stop()
        took = (time.perf_counter() - started) * 1000
        if code != 0:
            raise StepFailed(f"exit status {code}; see {self.log_path}")
        if self.socket.exists():
            raise StepFailed(f"{self.short(self.socket)} is still there")
        stopped = self.daemon.find(lambda line: line.get("event") == "stopped")
        if stopped is None:
            raise StepFailed("no 'stopped' log line")
        if stopped.get("events_undelivered"):
            raise StepFailed(f"{stopped['events_undelivered']} events undelivered")
        errors = self.daemon.errors()
        if errors:
            raise StepFailed(f"the plugin logged {len(errors)} error(s), first: {errors[0]}")
        self._check_events(self.cluster.stored_events())  # nothing new arrived on the way out
        return f"exit 0 after {took:.0f} ms, socket removed, 0 events undelivered, no errors logged"

    async def stop_api(self) -> str:
        assert self.cluster is not None
        await self.cluster.close()
        left = host.leftovers(self.workdir)
        if left:
            raise StepFailed(f"left behind: {left.describe()}")
        return "no mount and no loop device left under the work directory"
