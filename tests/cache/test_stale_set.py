"""Acceptance: the stale-set race, reproduced deterministically on real PostgreSQL and Redis.

A reader misses, reads the old row, and is paused; a writer commits and invalidates; the
reader then stores what it read. Plain cache-aside stores the stale value; readscale
refuses the fill (the invalidation removed the reader's lease).
"""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
import redis.asyncio as redis_asyncio

from readscale import NO_VALUE, RedisSettings
from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache.cache import AsyncCache
from readscale._core.cache.policy import CachePolicy, Tier

pytestmark = pytest.mark.stack

POLICY = CachePolicy(name="race", ttl=300.0, tiers=frozenset({Tier.L2}))


async def make_row(dsn: str) -> str:
    table = f"race_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        await conn.execute(f"INSERT INTO {table} VALUES (1, 'old')")
    return table


async def read_row(dsn: str, table: str) -> str:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        row = await (await conn.execute(f"SELECT v FROM {table} WHERE id = 1")).fetchone()
        assert row is not None
        return str(row[0])


async def write_row(dsn: str, table: str, value: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f"UPDATE {table} SET v = %s WHERE id = 1", (value,))


@pytest.mark.anyio
async def test_plain_cache_aside_stores_stale_data_and_readscale_refuses_the_fill(
    pg_primary_dsn: str, redis_url: str
) -> None:
    # -- plain cache-aside ------------------------------------------------------------------
    table = await make_row(pg_primary_dsn)
    redis = redis_asyncio.Redis.from_url(redis_url, protocol=2)
    key = f"race:{table}"
    assert await redis.get(key) is None  # the reader misses...
    seen_by_reader = await read_row(pg_primary_dsn, table)  # ...and reads the old row
    await write_row(pg_primary_dsn, table, "new")  # the writer commits
    await redis.delete(key)  # and invalidates
    await redis.set(key, seen_by_reader)  # the reader finally stores what it read
    assert await redis.get(key) == b"old"
    assert await read_row(pg_primary_dsn, table) == "new"  # the cache now lies until its TTL
    await redis.aclose()

    # -- readscale --------------------------------------------------------------------------
    table = await make_row(pg_primary_dsn)
    cache = AsyncCache(AsyncRedisBackend(RedisSettings(url=redis_url)), policy=POLICY, prefix=f"{table}:")
    reader_has_read = asyncio.Event()
    writer_is_done = asyncio.Event()

    async def loader() -> str:
        value = await read_row(pg_primary_dsn, table)
        reader_has_read.set()
        await writer_is_done.wait()  # paused between the read and the store
        return value

    async def writer() -> None:
        await reader_has_read.wait()
        await write_row(pg_primary_dsn, table, "new")
        await cache.invalidate("row:1")
        writer_is_done.set()

    reader_result, _ = await asyncio.gather(cache.get_or_load("row:1", loader), writer())
    assert reader_result == "old"  # the reader's own answer is what it read...
    assert cache.stats.loader.fills_refused == 1  # ...but it was not cached
    assert await cache.get("row:1") is NO_VALUE

    async def fresh_loader() -> str:
        return await read_row(pg_primary_dsn, table)

    assert await cache.get_or_load("row:1", fresh_loader) == "new"
    await cache.aclose()
