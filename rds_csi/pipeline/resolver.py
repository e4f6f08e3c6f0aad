"""Fill in the uid of objects known only by kind, namespace and name.

`kubectl describe pvc` lists events by the claim's uid, so an event about a PVC the driver
knows only from the volume context would never show there.  The sink looks the uid up with a
GET before writing: answers are cached (uids do not change while an object exists), and misses
briefly, so that a storm about a deleted claim costs one GET, not one per event.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rds_csi.pipeline.clock import Clock
from rds_csi.pipeline.lru import LRUCache
from rds_csi.pipeline.model import ObjectRef

__all__ = [
    "RESOURCES",
    "Fetch",
    "Resolution",
    "ResolveAbandoned",
    "ResolveError",
    "Resolved",
    "UidResolver",
]

# kind -> (resource, namespaced): the kinds this driver reports on.
RESOURCES: dict[str, tuple[str, bool]] = {
    "PersistentVolumeClaim": ("persistentvolumeclaims", True),
    "PersistentVolume": ("persistentvolumes", False),
    "Node": ("nodes", False),
    "Pod": ("pods", True),
}

# (kind, namespace, name) -> (HTTP status, parsed JSON body or None, response headers).
# Raises on transport errors; the caller decides what to retry.
Fetch = Callable[[str, str, str], Awaitable[tuple[int, Any, dict[str, str]]]]


class Resolved(enum.Enum):
    FOUND = "found"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True, slots=True)
class Resolution:
    outcome: Resolved
    uid: str = ""
    # For FORBIDDEN: the RBAC rule the service account is missing.
    missing_rule: str = ""


class ResolveAbandoned(Exception):
    """The lookup another caller was waiting for was cancelled."""


class ResolveError(Exception):
    """The GET got an answer that is neither the object, 404 nor 403 (e.g. 503)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str]) -> None:
        super().__init__(f"GET for uid resolution failed with HTTP {status}")
        self.status = status
        self.body = body
        self.headers = headers


@dataclass(slots=True)
class _Entry:
    resolution: Resolution
    expires: float


def missing_rule(kind: str) -> str:
    resource, _ = RESOURCES[kind]
    return f'grant get on {resource} (apiGroups: [""], resources: [{resource}], verbs: [get])'


class UidResolver:
    def __init__(
        self,
        fetch: Fetch,
        *,
        clock: Clock,
        positive_ttl: float = 300.0,
        negative_ttl: float = 10.0,
        cache_size: int = 4096,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._positive_ttl = positive_ttl
        self._negative_ttl = negative_ttl
        self._cache: LRUCache[tuple[str, str, str], _Entry] = LRUCache(cache_size)
        self._in_flight: dict[tuple[str, str, str], asyncio.Future[Resolution]] = {}
        self.lookups = 0

    @staticmethod
    def needs_lookup(ref: ObjectRef) -> bool:
        return not ref.uid and ref.kind in RESOURCES

    def cached(self, ref: ObjectRef) -> Resolution | None:
        entry = self._cache.get(self._key(ref))
        if entry is None or entry.expires <= self._clock.monotonic():
            return None
        return entry.resolution

    async def resolve(self, ref: ObjectRef) -> Resolution:
        """The uid for `ref`; raises `ResolveError` (or the fetch's error) when unsure.

        Concurrent calls for one object share a single GET.
        """
        hit = self.cached(ref)
        if hit is not None:
            return hit
        key = self._key(ref)
        shared = self._in_flight.get(key)
        if shared is not None:
            return await asyncio.shield(shared)
        future: asyncio.Future[Resolution] = asyncio.get_running_loop().create_future()
        # Nobody may be waiting: mark an exception as retrieved so asyncio does not complain.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._in_flight[key] = future
        try:
            resolution = await self._lookup(key)
        except Exception as exc:
            future.set_exception(exc)
            raise
        except BaseException:
            future.set_exception(ResolveAbandoned("the lookup was cancelled"))
            raise
        else:
            future.set_result(resolution)
            return resolution
        finally:
            del self._in_flight[key]

    async def _lookup(self, key: tuple[str, str, str]) -> Resolution:
        kind = key[0]
        self.lookups += 1
        status, body, headers = await self._fetch(*key)
        if 200 <= status < 300:
            # An object without a uid cannot happen on a real server; write without one.
            resolution, ttl = Resolution(Resolved.FOUND, _uid_of(body)), self._positive_ttl
        elif status == 404:
            resolution, ttl = Resolution(Resolved.NOT_FOUND), self._negative_ttl
        elif status == 403:
            resolution = Resolution(Resolved.FORBIDDEN, missing_rule=missing_rule(kind))
            ttl = self._negative_ttl
        else:
            raise ResolveError(status, body, headers)
        self._cache.put(key, _Entry(resolution, self._clock.monotonic() + ttl))
        return resolution

    @staticmethod
    def _key(ref: ObjectRef) -> tuple[str, str, str]:
        _, namespaced = RESOURCES[ref.kind]
        return (ref.kind, ref.namespace if namespaced else "", ref.name)


def _uid_of(body: Any) -> str:
    if isinstance(body, dict):
        metadata = body.get("metadata")
        if isinstance(metadata, dict):
            uid = metadata.get("uid")
            if isinstance(uid, str):
                return uid
    return ""
