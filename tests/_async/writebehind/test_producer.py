"""The cache's write_behind delegates to the durable queue: read-your-writes at once (its
refusal of a Redis that cannot keep the mode is in test_writebehind_modes.py)."""

from __future__ import annotations

import uuid

import pytest

from readscale import RedisSettings
from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache.cache import AsyncCache
from readscale._core.writebehind.settings import WriteBehindSettings, queue_keys

pytestmark = pytest.mark.stack


@pytest.mark.anyio
async def test_write_behind_through_the_cache(durable_redis_url: str) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    cache = AsyncCache(
        AsyncRedisBackend(RedisSettings(url=durable_redis_url)),
        prefix=f"wb{uuid.uuid4().hex[:6]}:",
        write_behind=WriteBehindSettings(queue=queue),
    )
    first = await cache.write_behind("views:1", {"views": 1})
    second = await cache.write_behind("views:1", {"views": 2})
    assert second > first
    assert await cache.get("views:1") == {"views": 2}  # read-your-writes through the cache
    keys = queue_keys(cache.prefix, queue)
    try:
        assert await cache.backend.client.xlen(keys.stream) == 2  # type: ignore[union-attr]
    finally:
        await cache.aclose()
