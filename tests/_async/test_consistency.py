"""The consistency checker finds stale entries, and only those."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from readscale import RedisSettings
from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache.cache import AsyncCache
from readscale._async.consistency import AsyncConsistencyChecker
from readscale._core.cache.policy import CachePolicy, Tier

pytestmark = pytest.mark.stack


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[AsyncCache]:
    backend = AsyncRedisBackend(RedisSettings(url=redis_url))
    policy = CachePolicy(name="c", ttl=300.0, tiers=frozenset({Tier.L2}))
    cache = AsyncCache(backend, policy=policy, prefix=f"cc{uuid.uuid4().hex[:6]}:")
    yield cache
    await cache.aclose()


@pytest.mark.anyio
async def test_checker_counts_stale_entries_and_nines(cache: AsyncCache) -> None:
    database = {f"k{i}": f"v{i}" for i in range(100)}

    async def truth(key: str) -> Any:
        return database[key]

    for key, value in database.items():
        await cache.set(key, value)
    for i in range(5):  # five entries go stale: the database changed, the cache did not
        database[f"k{i}"] = "changed"
    checker = AsyncConsistencyChecker(cache, truth, sample_rate=1.0, delay=0.0)
    assert checker.observe(list(database)) == 100
    await checker.drain()
    report = checker.report()
    assert (report.checked, report.stale, report.misses) == (100, 5, 0)
    assert report.nines == pytest.approx(-math.log10(0.05))
    assert sorted(checker.stale_keys) == ["k0", "k1", "k2", "k3", "k4"]
    # After invalidating them, the cache agrees again (a miss is never stale).
    await cache.invalidate("k0", "k1", "k2", "k3", "k4")
    for i in range(5):
        assert await checker.check(f"k{i}") is True
    assert checker.misses == 5
