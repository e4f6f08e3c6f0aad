"""EventPoster: the node service's vocabulary of Kubernetes events, attached to the PVC.

Handlers await these methods on the RPC path, so every method returns at once: the event goes
to the recorder (synchronous, O(1)), and when the PVC has to be found through the
PersistentVolume first, that lookup runs in a bounded background task.  Nothing here can fail an
RPC: a PVC that cannot be found is logged and skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

import structlog

from rds_csi.pipeline.clock import SYSTEM_CLOCK, Clock
from rds_csi.pipeline.lru import LRUCache
from rds_csi.pipeline.model import NORMAL, WARNING, ObjectRef

__all__ = [
    "CONNECTION_FAILURE",
    "MOUNT_FAILURE",
    "PVC_NAMESPACE_KEY",
    "PVC_NAME_KEY",
    "RECOVERY_FAILED",
    "SOURCE_COMPONENT",
    "STALE_MOUNT_DETECTED",
    "ClaimResolver",
    "EventPoster",
    "KubeClaimResolver",
]

log = structlog.get_logger("rds_csi.events")

SOURCE_COMPONENT = "rds-csi-node"

MOUNT_FAILURE = "MountFailure"
CONNECTION_FAILURE = "ConnectionFailure"
RECOVERY_FAILED = "RecoveryFailed"
STALE_MOUNT_DETECTED = "StaleMountDetected"

# Set in volume_context when the external-provisioner runs with --extra-create-metadata and the
# controller copies these parameters into the volume context.
PVC_NAME_KEY = "csi.storage.k8s.io/pvc/name"
PVC_NAMESPACE_KEY = "csi.storage.k8s.io/pvc/namespace"


class Recorder(Protocol):
    def event(self, obj: Any, type: str, reason: str, message: str) -> None: ...


class ClaimResolver(Protocol):
    """Finds the PVC bound to a CSI volume (through its PersistentVolume)."""

    async def claim_for_volume(self, volume_id: str) -> ObjectRef | None: ...


def pvc_from_volume_context(volume_context: Mapping[str, str] | None) -> ObjectRef | None:
    if not volume_context:
        return None
    name = volume_context.get(PVC_NAME_KEY)
    namespace = volume_context.get(PVC_NAMESPACE_KEY)
    if not name or not namespace:
        return None
    return ObjectRef(kind="PersistentVolumeClaim", name=name, namespace=namespace, api_version="v1")


class EventPoster:
    """Posts the node plugin's events to the PVC of a volume.

    With `recorder=None` (no event pipeline) every method is a no-op.
    """

    def __init__(
        self,
        recorder: Recorder | None,
        node_name: str,
        resolver: ClaimResolver | None = None,
        *,
        max_pending_lookups: int = 64,
    ) -> None:
        self._recorder = recorder
        self._node_name = node_name
        self._resolver = resolver
        self._lookups: set[asyncio.Task[None]] = set()
        self._max_pending_lookups = max_pending_lookups

    @property
    def enabled(self) -> bool:
        return self._recorder is not None

    async def post_mount_failure(
        self, volume_id: str, volume_context: Mapping[str, str] | None, error: str
    ) -> None:
        self._post(
            volume_id, volume_context, WARNING, MOUNT_FAILURE, f"stage volume failed: {error}"
        )

    async def post_connection_failure(
        self,
        volume_id: str,
        volume_context: Mapping[str, str] | None,
        target: str,
        error: str,
    ) -> None:
        self._post(
            volume_id,
            volume_context,
            WARNING,
            CONNECTION_FAILURE,
            f"connection to {target} failed: {error}",
        )

    async def post_recovery_failed(
        self,
        volume_id: str,
        volume_context: Mapping[str, str] | None,
        attempts: int,
        error: str,
    ) -> None:
        self._post(
            volume_id,
            volume_context,
            WARNING,
            RECOVERY_FAILED,
            f"stale mount recovery failed after {attempts} attempt(s): {error}",
        )

    async def post_stale_mount_detected(
        self,
        volume_id: str,
        volume_context: Mapping[str, str] | None,
        old_device: str,
        new_device: str,
    ) -> None:
        self._post(
            volume_id,
            volume_context,
            NORMAL,
            STALE_MOUNT_DETECTED,
            f"stale mount detected - old device: {old_device or 'unknown'}, "
            f"new device: {new_device or 'unknown'}",
        )

    def _message(self, volume_id: str, text: str) -> str:
        return f"[{volume_id}] on [{self._node_name}]: {text}"

    def _post(
        self,
        volume_id: str,
        volume_context: Mapping[str, str] | None,
        type_: str,
        reason: str,
        text: str,
    ) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        message = self._message(volume_id, text)
        pvc = pvc_from_volume_context(volume_context)
        if pvc is not None:
            recorder.event(pvc, type_, reason, message)
            return
        if self._resolver is None:
            log.info(
                "no PVC for volume, event skipped",
                volume_id=volume_id,
                reason=reason,
                hint="set the PVC keys in volume_context or give the plugin a Kubernetes client",
            )
            return
        if len(self._lookups) >= self._max_pending_lookups:
            log.warning(
                "too many PVC lookups pending, event skipped", volume_id=volume_id, reason=reason
            )
            return
        task = asyncio.get_running_loop().create_task(
            self._resolve_and_post(volume_id, type_, reason, message)
        )
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    async def _resolve_and_post(
        self, volume_id: str, type_: str, reason: str, message: str
    ) -> None:
        assert self._resolver is not None and self._recorder is not None
        try:
            pvc = await self._resolver.claim_for_volume(volume_id)
        except Exception as err:  # the lookup is best effort; it must never escape
            log.warning(
                "PVC lookup failed, event skipped",
                volume_id=volume_id,
                reason=reason,
                error=str(err),
            )
            return
        if pvc is None:
            log.info("no PVC bound to volume, event skipped", volume_id=volume_id, reason=reason)
            return
        self._recorder.event(pvc, type_, reason, message)

    async def aclose(self, timeout: float) -> None:
        """Let pending PVC lookups finish (they feed the pipeline's final flush)."""
        if self._lookups:
            _, pending = await asyncio.wait(set(self._lookups), timeout=timeout)
            for task in pending:
                task.cancel()


class KubeClaimResolver:
    """volume id -> PersistentVolume -> spec.claimRef, cached.

    The rds-csi controller's volume ids are the PV names (pvc-<uuid>), so one GET by name finds
    the PV; its spec.csi.volumeHandle and driver must match.  A LIST would also find statically
    provisioned volumes but needs a wider RBAC grant, so it is deliberately not done.
    """

    def __init__(
        self,
        core_api: Any,
        *,
        driver_name: str,
        cache_size: int = 1024,
        positive_ttl: float = 600.0,
        negative_ttl: float = 30.0,
        request_timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._api = core_api
        self._driver_name = driver_name
        # volume id -> (expiry, claim or None for "no claim")
        self._cache: LRUCache[str, tuple[float, ObjectRef | None]] = LRUCache(cache_size)
        self._positive_ttl = positive_ttl
        self._negative_ttl = negative_ttl
        self._timeout = request_timeout
        self._clock = clock

    async def claim_for_volume(self, volume_id: str) -> ObjectRef | None:
        now = self._clock.monotonic()
        cached = self._cache.get(volume_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        claim = await self._lookup(volume_id)
        ttl = self._positive_ttl if claim is not None else self._negative_ttl
        self._cache.put(volume_id, (now + ttl, claim))
        return claim

    async def _lookup(self, volume_id: str) -> ObjectRef | None:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            pv = await self._api.read_persistent_volume(volume_id, _request_timeout=self._timeout)
        except ApiException as err:
            if err.status == 404:
                return None
            if err.status == 403:
                log.warning(
                    "cannot read PersistentVolumes: grant get on persistentvolumes to the "
                    "node plugin's service account",
                    volume_id=volume_id,
                )
                return None
            raise
        return self._claim(pv) if self._matches(pv, volume_id) else None

    def _matches(self, pv: Any, volume_id: str) -> bool:
        csi_source = pv.spec.csi if pv.spec is not None else None
        return bool(
            csi_source is not None
            and csi_source.volume_handle == volume_id
            and csi_source.driver == self._driver_name
        )

    @staticmethod
    def _claim(pv: Any) -> ObjectRef | None:
        ref = pv.spec.claim_ref
        if ref is None or not ref.name or not ref.namespace:
            return None
        return ObjectRef(
            kind="PersistentVolumeClaim",
            name=ref.name,
            namespace=ref.namespace,
            uid=ref.uid or "",
            api_version="v1",
        )
