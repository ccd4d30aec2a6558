"""Fills after an invalidation read through the replica router at or past the
invalidation's LSN: a paused replica cannot put the old row back in the cache."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
import pytest

from readscale import RedisSettings, ReplicaSettings
from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache.cache import AsyncCache
from readscale._async.replicas.router import AsyncReplicaRouter
from readscale._core.cache.policy import CachePolicy, Tier
from readscale.stack import Stack, StackConfig

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.mark.anyio
async def test_a_lagging_replica_cannot_refill_old_data(readscale_stack_factory: Callable[..., Stack]) -> None:
    stack = readscale_stack_factory(StackConfig(replicas=1))
    table = f"items_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(stack.primary.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'old')")
    router = AsyncReplicaRouter(
        ReplicaSettings(primary=stack.primary.dsn, replicas=[stack.replicas[0].dsn], wait_budget=0.3)
    )
    cache = AsyncCache(
        AsyncRedisBackend(RedisSettings(url=stack.redis.url)),
        policy=CachePolicy(name="items", ttl=300.0, tiers=frozenset({Tier.L2})),
        tombstone_ttl=30.0,
    )
    served: list[str] = []

    async def load() -> str:
        row = await router.fetch_one(f"SELECT v FROM {table} WHERE id = 1")
        assert row is not None
        return str(row[0])

    try:
        async with router:
            await router.poll()
            assert await cache.get_or_load("item:1", load) == "old"
            stack.pause_replay("r1")  # from now on r1 serves the old row
            try:
                with psycopg.connect(stack.primary.dsn, autocommit=True) as conn:
                    conn.execute(f"UPDATE {table} SET v = 'new' WHERE id = 1")
                    lsn_text = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
                from readscale._core.postgres.lsn import parse_lsn

                await cache.invalidate("item:1", lsn=parse_lsn(lsn_text))
                served.append(await cache.get_or_load("item:1", load))
                # The replica still has 'old': reading it directly proves the fill avoided it.
                with psycopg.connect(stack.replicas[0].dsn, autocommit=True) as conn:
                    assert conn.execute(f"SELECT v FROM {table} WHERE id = 1").fetchone() == ("old",)
            finally:
                stack.resume_replay("r1")
        assert served == ["new"]
        assert cache.stats.loader.fills_refused == 0  # the fill read at the floor: stored
        assert await cache.get("item:1") == "new"
    finally:
        await cache.aclose()  # closed even when an assertion fails, so nothing leaks into later tests
