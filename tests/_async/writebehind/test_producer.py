"""Write-behind over a cache: ``AsyncWriteBehind`` is its one entry point (architecture
§7.1). A write is read through the cache at once (read-your-writes) and queued on the
durable stream (its refusal of a Redis that cannot keep the mode is in
test_modes.py); the cache itself no longer takes ``write_behind=``."""

from __future__ import annotations

import uuid

import pytest

from readscale import RedisSettings
from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache.cache import AsyncCache
from readscale._async.writebehind.producer import AsyncWriteBehind
from readscale._core.writebehind.settings import WriteBehindSettings, queue_keys
from readscale.l1 import MemoryStore


@pytest.mark.stack
@pytest.mark.anyio
async def test_write_behind_is_read_through_the_cache(durable_redis_url: str) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    cache = AsyncCache(AsyncRedisBackend(RedisSettings(url=durable_redis_url)), prefix=f"wb{uuid.uuid4().hex[:6]}:")
    wb = AsyncWriteBehind(cache, WriteBehindSettings(queue=queue))
    first = await wb.write_behind("views:1", {"views": 1})
    second = await wb.write_behind("views:1", {"views": 2})
    assert second > first
    assert await cache.get("views:1") == {"views": 2}  # read-your-writes through the cache
    keys = queue_keys(cache.prefix, queue)
    try:
        assert await cache.backend.client.xlen(keys.stream) == 2  # type: ignore[union-attr]
    finally:
        await cache.aclose()


def test_the_cache_refuses_write_behind_naming_its_one_entry_point() -> None:
    with pytest.raises(TypeError, match=r"no longer takes write_behind=: .*AsyncWriteBehind\(cache, "):
        AsyncCache(l1=MemoryStore(10), write_behind=WriteBehindSettings(queue="q"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument 'writebehind'"):
        AsyncCache(l1=MemoryStore(10), writebehind=None)  # type: ignore[arg-type]
    assert not hasattr(AsyncCache(l1=MemoryStore(10)), "write_behind")
