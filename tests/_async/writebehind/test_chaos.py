"""Write-behind while Redis dies and comes back (AOF on): the flusher waits the outage
out and goes on; writers get an error for each write that was not acknowledged, and
every acknowledged one reaches PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from readscale import RedisSettings
from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache.cache import AsyncCache
from readscale._async.writebehind.flusher import AsyncFlusher
from readscale._async.writebehind.postgres import AsyncPostgresWriter
from readscale._async.writebehind.producer import AsyncWriteBehind
from readscale._core.cache.policy import CachePolicy, Tier
from readscale._core.writebehind.settings import FlusherSettings, WriteBehindSettings
from readscale._shared.primitives.locks import async_sleep
from readscale.errors import CacheUnavailableError
from readscale.stack import Stack, StackConfig
from readscale.testing.concurrency import async_gather

pytestmark = [pytest.mark.stack, pytest.mark.chaos]

POLICY = CachePolicy(name="chaos", ttl=600.0, jitter=0.0, early_refresh=0.0, tiers=frozenset({Tier.L2}))


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(3000):
        if condition():
            return
        await async_sleep(0.01)
    raise AssertionError("timed out")


@pytest.mark.anyio
async def test_the_flusher_and_the_writers_live_through_a_redis_restart(
    readscale_stack_factory: Callable[[StackConfig], Stack],
) -> None:
    stack = readscale_stack_factory(StackConfig(replicas=0, redis_aof=True))
    url, dsn = stack.redis.url, stack.primary.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE chaos (key text PRIMARY KEY, version bigint NOT NULL, value jsonb NOT NULL)")

    def rows() -> dict[str, int]:
        with psycopg.connect(dsn) as conn:
            return dict(conn.execute("SELECT key, version FROM chaos").fetchall())

    cache = AsyncCache(AsyncRedisBackend(RedisSettings(url=url)), policy=POLICY)
    wb = AsyncWriteBehind(cache, WriteBehindSettings(queue="chaos"))
    writer = AsyncPostgresWriter(dsn, table="chaos")
    flusher = AsyncFlusher(
        writer,
        url,
        settings=FlusherSettings(queue="chaos", block=0.05, batch_wait=0.01, retry_base=0.01, retry_cap=0.1),
    )
    acknowledged: dict[str, int] = {}
    refused = 0

    async def write(i: int) -> None:
        nonlocal refused
        while True:
            try:
                acknowledged[f"k{i}"] = await wb.write_behind(f"k{i}", {"n": i})
                return
            except CacheUnavailableError:
                refused += 1  # not acknowledged: try again
                await async_sleep(0.02)

    async def scenario() -> None:
        try:
            for i in range(10):
                await write(i)
            await until(lambda: len(rows()) == 10)
            stack.kill("redis")
            with pytest.raises(CacheUnavailableError):
                await wb.write_behind("k-down", {"n": -1})
            await until(lambda: flusher.stats.redis_errors > 0)
            stack.start("redis")
            for i in range(10, 20):
                await write(i)
            await until(lambda: len(rows()) == 20)
        finally:
            flusher.stop()

    async def run() -> None:
        await flusher.run()

    try:
        await async_gather([run, scenario])
    finally:
        await flusher.aclose()
        await writer.aclose()
        await cache.aclose()
    stored = rows()
    assert stored == acknowledged
    assert "k-down" not in stored
    assert wb.stats.errors >= 1
    assert flusher.stats.redis_errors >= 1
