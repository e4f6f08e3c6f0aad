"""KubeClaimResolver: volume id -> PV -> claimRef, with answers cached for their TTL."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from rds_csi.events import KubeClaimResolver
from rds_csi.pipeline.clock import ManualClock
from rds_csi.pipeline.model import ObjectRef

DRIVER = "rds.csi.srvlab.io"


def pv(volume_id: str, claim: str | None, driver: str = DRIVER) -> Any:
    claim_ref = SimpleNamespace(name=claim, namespace="apps", uid=f"uid-{claim}") if claim else None
    csi = SimpleNamespace(volume_handle=volume_id, driver=driver)
    return SimpleNamespace(spec=SimpleNamespace(csi=csi, claim_ref=claim_ref))


class FakeCoreApi:
    def __init__(self) -> None:
        self.pvs: dict[str, Any] = {}
        self.reads: list[str] = []

    async def read_persistent_volume(self, name: str, **_: Any) -> Any:
        self.reads.append(name)
        if name not in self.pvs:
            raise ApiException(status=404, reason="Not Found")
        return self.pvs[name]


def claim(name: str) -> ObjectRef:
    return ObjectRef("PersistentVolumeClaim", name, "apps", f"uid-{name}", "v1")


async def test_a_found_claim_is_read_once_until_its_ttl_passes() -> None:
    api, clock = FakeCoreApi(), ManualClock()
    api.pvs["pvc-1"] = pv("pvc-1", "data")
    resolver = KubeClaimResolver(api, driver_name=DRIVER, positive_ttl=600, clock=clock)
    assert await resolver.claim_for_volume("pvc-1") == claim("data")
    assert await resolver.claim_for_volume("pvc-1") == claim("data")
    assert api.reads == ["pvc-1"]
    clock.advance(601)
    assert await resolver.claim_for_volume("pvc-1") == claim("data")
    assert api.reads == ["pvc-1", "pvc-1"]


async def test_a_missing_pv_is_remembered_briefly() -> None:
    api, clock = FakeCoreApi(), ManualClock()
    resolver = KubeClaimResolver(api, driver_name=DRIVER, negative_ttl=30, clock=clock)
    assert await resolver.claim_for_volume("pvc-1") is None
    assert await resolver.claim_for_volume("pvc-1") is None
    assert api.reads == ["pvc-1"]
    api.pvs["pvc-1"] = pv("pvc-1", "data")
    clock.advance(31)
    assert await resolver.claim_for_volume("pvc-1") == claim("data")


async def test_a_pv_of_another_driver_or_volume_names_no_claim() -> None:
    api = FakeCoreApi()
    api.pvs["pvc-1"] = pv("pvc-1", "data", driver="other.csi.example.com")
    api.pvs["pvc-2"] = pv("pvc-other", "data")
    resolver = KubeClaimResolver(api, driver_name=DRIVER, clock=ManualClock())
    assert await resolver.claim_for_volume("pvc-1") is None
    assert await resolver.claim_for_volume("pvc-2") is None


async def test_the_cache_keeps_the_most_recently_used_volumes() -> None:
    api = FakeCoreApi()
    for i in range(3):
        api.pvs[f"pvc-{i}"] = pv(f"pvc-{i}", f"data-{i}")
    resolver = KubeClaimResolver(api, driver_name=DRIVER, cache_size=2, clock=ManualClock())
    await resolver.claim_for_volume("pvc-0")
    await resolver.claim_for_volume("pvc-1")
    await resolver.claim_for_volume("pvc-0")  # pvc-1 is now the least recently used
    await resolver.claim_for_volume("pvc-2")
    api.reads.clear()
    await resolver.claim_for_volume("pvc-0")
    await resolver.claim_for_volume("pvc-1")
    assert api.reads == ["pvc-1"]
