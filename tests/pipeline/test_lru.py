"""The bounded LRU map behind every correlator cache."""

from __future__ import annotations

import pytest

from rds_csi.pipeline.lru import LRUCache


def test_evicts_the_least_recently_used_entry() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert "b" not in cache
    assert cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2 and cache.evictions == 1


def test_peek_does_not_refresh() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.peek("a") == 1
    cache.put("c", 3)
    assert "a" not in cache


def test_kept_entries_survive_and_overflow_is_bounded_by_them() -> None:
    cache: LRUCache[str, list[bool]] = LRUCache(3, keep=lambda v: v[0])
    cache.put("pinned", [True])
    for i in range(10):
        cache.put(f"k{i}", [False])
    assert "pinned" in cache
    assert len(cache) == 3
    # When every entry is kept, the map grows rather than losing one.
    full: LRUCache[int, list[bool]] = LRUCache(2, keep=lambda v: v[0])
    for i in range(4):
        full.put(i, [True])
    assert len(full) == 4
    full.peek(0)[0] = False  # type: ignore[index]
    full.put(9, [True])
    assert 0 not in full


def test_rejects_a_zero_size() -> None:
    with pytest.raises(ValueError):
        LRUCache(0)
