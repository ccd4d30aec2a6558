"""Redis Sentinel, in both flavours (this file is generated to tests/_sync): the cache and
the invalidation bus made from one ``redis+sentinel://`` URL follow the master the
sentinels promote when the stack's master is killed. The chaos suite's ``sentinel_master``
fault runs the same under load with write-behind (asyncio)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from readscale import RedisSettings
from readscale._async.backends.redis import AsyncRedisBackend, AsyncRedisClusterBackend
from readscale._async.cache.bus import AsyncInvalidationBus
from readscale._async.cache.cache import AsyncCache
from readscale._core.cache.policy import CachePolicy
from readscale._shared.primitives.locks import async_sleep
from readscale.errors import ConfigurationError, ReadscaleError
from readscale.stack import Stack, StackConfig
from readscale.stack.sentinel import SENTINEL_NAMES, SERVICE

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


def _get_calls(port: int) -> int:
    with redis.Redis(port=port) as admin:
        stats: dict[str, dict[str, int]] = admin.info("commandstats")
    return stats.get("cmdstat_get", {}).get("calls", 0)


@pytest.mark.anyio
async def test_reads_leave_an_old_master_that_lives_on_as_a_replica(
    readscale_stack_factory: Callable[..., Stack],
) -> None:
    """A coordinated failover (``SENTINEL FAILOVER``) demotes the master without killing
    it: it goes on answering GETs as a replica, with whatever it held. The connections the
    cache keeps for its reads (the lane) must not stay on it: the sentinels close every
    client of an instance they reconfigure, and the lane's next read reconnects through
    them to the new master."""
    stack = readscale_stack_factory(StackConfig(postgres=False, redis=False, sentinel=True))
    settings = RedisSettings(url=stack.sentinel_url, socket_timeout_ms=500, connect_timeout_ms=300)
    cache = AsyncCache(AsyncRedisBackend(settings), policy=POLICY, prefix="f:")
    try:
        await cache.set("k", "before")
        assert await cache.get("k") == "before"  # a connection to the master, kept
        old = stack.sentinel_master()
        with redis.Redis(port=stack.nodes[SENTINEL_NAMES[0]].port) as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
        for _ in range(300):
            if stack.sentinel_master().name != old.name:
                break
            await async_sleep(0.1)
        assert stack.sentinel_master().name != old.name
        with redis.Redis(port=old.port) as demoted:  # alive, and told it is a replica now
            for _ in range(300):
                if demoted.info("replication")["role"] == "slave":
                    break
                await async_sleep(0.1)
            assert demoted.info("replication")["role"] == "slave"
        for _ in range(300):  # a set that fails is logged, not raised: read it back
            await cache.set("k", "after")
            if await cache.get("k") == "after":
                break
            await async_sleep(0.1)
        before = _get_calls(old.port)
        for _ in range(20):
            assert await cache.get("k") == "after"
        assert _get_calls(old.port) == before  # no read went to the demoted master
    finally:
        await cache.aclose()


def test_a_redis_cluster_refuses_a_sentinel_url() -> None:
    with pytest.raises(ConfigurationError, match="redis\\+sentinel://"):
        AsyncRedisClusterBackend(RedisSettings(url="redis+sentinel://127.0.0.1:26379/m"))
