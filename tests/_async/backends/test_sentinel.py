"""Redis Sentinel, in both flavours (this file is generated to tests/_sync): the cache and
the invalidation bus made from one ``redis+sentinel://`` URL follow the master the
sentinels promote when the stack's master is killed. The chaos suite's ``sentinel_master``
fault runs the same under load with write-behind (asyncio)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from readscale import RedisSettings
from readscale._async.backends.redis import AsyncRedisBackend, AsyncRedisClusterBackend
from readscale._async.cache.bus import AsyncInvalidationBus
from readscale._async.cache.cache import AsyncCache
from readscale._core.cache.policy import CachePolicy
from readscale._shared.primitives.locks import async_sleep
from readscale.errors import ConfigurationError, ReadscaleError
from readscale.stack import Stack, StackConfig

POLICY = CachePolicy(name="sentinel", ttl=300.0)


async def load() -> str:
    return "loader"


@pytest.mark.anyio
async def test_the_cache_and_the_bus_follow_a_failover(readscale_stack_factory: Callable[..., Stack]) -> None:
    stack = readscale_stack_factory(StackConfig(postgres=False, redis=False, sentinel=True))
    settings = RedisSettings(url=stack.sentinel_url, socket_timeout_ms=500, connect_timeout_ms=300)
    sender_bus, receiver_bus = AsyncInvalidationBus(settings), AsyncInvalidationBus(settings)
    writer = AsyncCache(AsyncRedisBackend(settings), bus=sender_bus, policy=POLICY, prefix="s:")
    reader = AsyncCache(AsyncRedisBackend(settings), bus=receiver_bus, policy=POLICY, prefix="s:")
    try:
        await receiver_bus.start()
        await writer.set("k", "before")
        assert await reader.get_or_load("k", load) == "before"  # both connected to the old master
        old = stack.sentinel_master().name
        killed_at = time.monotonic()
        assert stack.kill_sentinel_master() == old
        failed = 0
        for _ in range(600):  # the sentinels need about two seconds; a loaded machine more
            try:
                await writer.set("k", "after")
                served = await reader.get_or_load("k", load) == "after"
            except ReadscaleError:
                served = False
            if served:  # written and read back through Redis: the loader was not asked
                break
            failed += 1
            await async_sleep(0.1)
        assert served and failed > 0, (served, failed)  # the outage was met, and counted
        # The promoted replica may miss the last invalidations: both caches opened their
        # recovery window after the failover,
        # the writer on its failed call, the reader on the new master's run id (or a
        # failed read).
        for cache in (writer, reader):
            assert cache.filler.loads.l2.recovering_until >= killed_at + cache.tombstone_ttl
        # The sentinels' views converge by their hello messages: on a loaded machine one
        # may still name the old master (with the old epoch) for a moment after a client
        # was handed the new one.
        for _ in range(300):
            if stack.sentinel_master().name != old:
                break
            await async_sleep(0.1)
        assert stack.sentinel_master().name != old
        before = receiver_bus.stats.received
        await writer.invalidate("k")
        for _ in range(200):
            if receiver_bus.stats.received > before:
                break
            await async_sleep(0.05)
        assert receiver_bus.stats.received > before  # resubscribed on the new master
    finally:
        await writer.aclose()
        await reader.aclose()


def test_a_redis_cluster_refuses_a_sentinel_url() -> None:
    with pytest.raises(ConfigurationError, match="redis\\+sentinel://"):
        AsyncRedisClusterBackend(RedisSettings(url="redis+sentinel://127.0.0.1:26379/m"))
