"""The cluster side of the demo: the API-server emulator with one bound claim, a kubeconfig for
the plugin, and the two reads kubectl would do to show what the plugin reported."""

from __future__ import annotations

import json
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from rds_csi import DEFAULT_DRIVER_NAME
from rds_csi.events import PVC_NAME_KEY, PVC_NAMESPACE_KEY
from rds_csi.testing.apiserver import ApiServerEmulator

__all__ = ["Claim", "DemoCluster", "start_cluster", "write_kubeconfig"]


@dataclass(frozen=True)
class Claim:
    namespace: str
    name: str
    volume_id: str  # the PV's name and its spec.csi.volumeHandle, as the rds-csi controller does

    def volume_context(self) -> dict[str, str]:
        """What the external-provisioner (--extra-create-metadata) puts in volume_context."""
        return {PVC_NAME_KEY: self.name, PVC_NAMESPACE_KEY: self.namespace}


def new_volume_id() -> str:
    return f"pvc-{uuid.uuid4()}"


def write_kubeconfig(path: Path, server: str, token: str, namespace: str) -> None:
    """A kubeconfig with one context (JSON is valid YAML); mode 0600, it holds a token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "demo", "cluster": {"server": server}}],
        "users": [{"name": "rds-csi-node", "user": {"token": token}}],
        "contexts": [
            {
                "name": "demo",
                "context": {"cluster": "demo", "user": "rds-csi-node", "namespace": namespace},
            }
        ],
        "current-context": "demo",
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)


@dataclass
class DemoCluster:
    api: ApiServerEmulator
    claim: Claim
    kubeconfig: Path

    @property
    def url(self) -> str:
        return self.api.url

    def stored_events(self) -> list[dict[str, Any]]:
        """Events as stored, straight from the emulator (for waiting, not for display)."""
        return list(self.api.events(self.claim.namespace))

    async def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.api.token}", "Accept": "application/json"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}{path}", params=params, headers=headers) as response,
        ):
            response.raise_for_status()
            return await response.json()

    async def list_events(self) -> list[dict[str, Any]]:
        """`kubectl get events -n <ns>`: GET .../events."""
        body = await self._get(f"/api/v1/namespaces/{self.claim.namespace}/events")
        return list(body["items"])

    async def read_claim(self) -> dict[str, Any]:
        claim = self.claim
        path = f"/api/v1/namespaces/{claim.namespace}/persistentvolumeclaims/{claim.name}"
        return dict(await self._get(path))

    async def claim_events(self, pvc: dict[str, Any]) -> list[dict[str, Any]]:
        """`kubectl describe pvc`: events selected by the involved object, uid included (an
        event whose uid does not match the claim would not show up there)."""
        meta = pvc["metadata"]
        selector = ",".join(
            [
                "involvedObject.kind=PersistentVolumeClaim",
                f"involvedObject.name={meta['name']}",
                f"involvedObject.namespace={meta['namespace']}",
                f"involvedObject.uid={meta['uid']}",
            ]
        )
        body = await self._get(
            f"/api/v1/namespaces/{meta['namespace']}/events", {"fieldSelector": selector}
        )
        return list(body["items"])

    async def close(self) -> None:
        await self.api.close()


async def start_cluster(workdir: Path, claim: Claim) -> DemoCluster:
    """Start the emulator with `claim` Bound to its PV and write a kubeconfig for it."""
    token = secrets.token_urlsafe(24)
    api = ApiServerEmulator(token=token)
    await api.start()
    pvc = api.add_pvc(claim.namespace, claim.name, storage="128Mi")
    api.add_pv(
        claim.volume_id,
        volume_handle=claim.volume_id,
        driver=DEFAULT_DRIVER_NAME,
        claim=(claim.namespace, claim.name, pvc["metadata"]["uid"]),
        capacity="128Mi",
    )
    kubeconfig = workdir / "kubeconfig"
    write_kubeconfig(kubeconfig, api.url, token, claim.namespace)
    return DemoCluster(api=api, claim=claim, kubeconfig=kubeconfig)
