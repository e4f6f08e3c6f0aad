"""A bounded least-recently-used map, the cache client-go keeps for each correlator stage.

One difference from client-go's `golang-lru`: entries the owner still needs (`keep` says so,
e.g. a dedup record with a write in progress) are never evicted.  They are bounded elsewhere
(the sink caps its pending records), so the map can exceed `maxsize` by at most that many.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["LRUCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    def __init__(self, maxsize: int, *, keep: Callable[[V], bool] | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self._keep = keep
        self._data: OrderedDict[K, V] = OrderedDict()
        self.evictions = 0

    def get(self, key: K) -> V | None:
        """The value for `key` (marking it recently used), or None."""
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The value for `key` without touching its recency."""
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.maxsize:
            self._evict()

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._data))

    def _evict(self) -> None:
        # Kept entries met on the way are moved to the recent end, so each is skipped at most
        # once per eviction pass and a cache full of kept entries costs one pass, not a loop.
        budget = len(self._data)
        while len(self._data) > self.maxsize and budget > 0:
            budget -= 1
            key, value = next(iter(self._data.items()))
            if self._keep is not None and self._keep(value):
                self._data.move_to_end(key)
                continue
            del self._data[key]
            self.evictions += 1
