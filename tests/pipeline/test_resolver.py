"""uid resolution: cached positive answers, briefly cached misses."""

from __future__ import annotations

from typing import Any

import pytest

from rds_csi.pipeline.clock import ManualClock
from rds_csi.pipeline.model import ObjectRef
from rds_csi.pipeline.resolver import Resolved, ResolveError, UidResolver

PVC = ObjectRef(kind="PersistentVolumeClaim", name="data", namespace="apps")


class FakeApi:
    def __init__(self) -> None:
        self.answers: dict[tuple[str, str, str], tuple[int, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []

    async def fetch(self, kind: str, namespace: str, name: str) -> tuple[int, Any, dict[str, str]]:
        self.calls.append((kind, namespace, name))
        status, body = self.answers.get((kind, namespace, name), (404, None))
        return status, body, {"Retry-After": "1"} if status == 503 else {}


async def test_found_uid_is_cached() -> None:
    clock, api = ManualClock(), FakeApi()
    api.answers[("PersistentVolumeClaim", "apps", "data")] = (200, {"metadata": {"uid": "u-1"}})
    resolver = UidResolver(api.fetch, clock=clock, positive_ttl=300, negative_ttl=10)
    assert (await resolver.resolve(PVC)).uid == "u-1"
    clock.advance(299)
    assert (await resolver.resolve(PVC)).uid == "u-1"
    assert len(api.calls) == 1
    clock.advance(2)
    await resolver.resolve(PVC)
    assert len(api.calls) == 2


async def test_missing_object_is_cached_briefly() -> None:
    clock, api = ManualClock(), FakeApi()
    resolver = UidResolver(api.fetch, clock=clock, positive_ttl=300, negative_ttl=10)
    assert (await resolver.resolve(PVC)).outcome is Resolved.NOT_FOUND
    assert (await resolver.resolve(PVC)).outcome is Resolved.NOT_FOUND
    assert len(api.calls) == 1
    clock.advance(11)
    api.answers[("PersistentVolumeClaim", "apps", "data")] = (200, {"metadata": {"uid": "u-2"}})
    assert (await resolver.resolve(PVC)).uid == "u-2"


async def test_forbidden_names_the_missing_rule() -> None:
    clock, api = ManualClock(), FakeApi()
    api.answers[("PersistentVolume", "", "pv-1")] = (403, {"reason": "Forbidden"})
    resolver = UidResolver(api.fetch, clock=clock)
    result = await resolver.resolve(ObjectRef(kind="PersistentVolume", name="pv-1"))
    assert result.outcome is Resolved.FORBIDDEN
    assert "grant get on persistentvolumes" in result.missing_rule


async def test_server_errors_are_raised_not_cached() -> None:
    clock, api = ManualClock(), FakeApi()
    api.answers[("Node", "", "n1")] = (503, None)
    resolver = UidResolver(api.fetch, clock=clock)
    for _ in range(2):
        with pytest.raises(ResolveError) as info:
            await resolver.resolve(ObjectRef(kind="Node", name="n1"))
        assert info.value.status == 503
    assert len(api.calls) == 2


def test_only_known_kinds_without_uid_need_a_lookup() -> None:
    assert UidResolver.needs_lookup(PVC)
    assert not UidResolver.needs_lookup(ObjectRef(kind="PersistentVolumeClaim", name="d", uid="u"))
    assert not UidResolver.needs_lookup(ObjectRef(kind="VolumeAttachment", name="va"))
