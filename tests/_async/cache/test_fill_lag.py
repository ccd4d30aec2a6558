"""Acceptance (issue 12, defects 2, 3 and 4): no fill from a read older than an
invalidation is stored, whatever the tombstone's life, the replicas' lag or who
invalidates (the application, the CDC worker, a tag), on every backend.

The reproduction of the issue: both replicas replay 8 s late, six clients update a
product each and invalidate it, and a client without a causal token reads them 6.5 s
later through the cache, its loader reading through the replica router. Before the fix
the default tombstone (5 s) was gone by then, the replicas (in rotation: their lag is
under the router's 30 s) served the old rows and the cache stored them for its TTL;
the CDC worker, applying the same commits, cut even a 35 s tombstone to 5 s.
Each scenario counts stale values read and stored, then again once the replicas caught up.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from readscale import RedisSettings, ReplicaSettings, causal_context
from readscale._async.backends.memcached import AsyncMemcachedBackend
from readscale._async.backends.redis import AsyncRedisBackend, AsyncRedisClusterBackend
from readscale._async.cache.cache import AsyncCache
from readscale._async.cdc.worker import AsyncCdcWorker
from readscale._async.replicas.router import AsyncReplicaRouter
from readscale._core.cache.policy import CachePolicy, Tier
from readscale._shared.primitives.locks import async_sleep
from readscale.cdc import CdcRule, CdcSettings
from readscale.stack import Stack
from readscale.testing.concurrency import async_gather

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.chaos]

PRODUCTS = 6
DELAY = 8.0
READ_AFTER = 6.5
POLICY = CachePolicy(name="lag", ttl=3600.0, tiers=frozenset({Tier.L2}))


@dataclass
class Scenario:
    """One way of invalidating, on one backend, over its own table and key prefix."""

    name: str
    backend: Callable[[], Any]
    invalidate: str  # "key": cache.invalidate(lsn=...); "tag" / "tag-lsn": invalidate_tags; "cdc" (and
    # the application's own) or "cdc-only" (the worker alone)
    tombstone_ttl: float | None = None  # None: the default
    read_at_once: bool = False  # tags: read right after the change (no tombstone to outlive)
    table: str = field(default_factory=lambda: f"lag_{uuid.uuid4().hex[:8]}")
    prefix: str = field(default_factory=lambda: f"lag{uuid.uuid4().hex[:8]}:")
    stale_read: int = 0
    stale_stored: int = 0
    stale_after_catch_up: int = 0

    def cache(self) -> AsyncCache:
        ttl = {} if self.tombstone_ttl is None else {"tombstone_ttl": self.tombstone_ttl}
        return AsyncCache(self.backend(), policy=POLICY, prefix=self.prefix, **ttl)


def backends(request: pytest.FixtureRequest) -> dict[str, Callable[[], Any]]:
    redis_url = request.getfixturevalue("redis_url")
    nodes = request.getfixturevalue("redis_cluster_nodes")
    memcached = request.getfixturevalue("memcached_address")
    return {
        "redis": lambda: AsyncRedisBackend(RedisSettings(url=redis_url)),
        "cluster": lambda: AsyncRedisClusterBackend(RedisSettings(url=f"redis://{nodes[0]}/0")),
        "memcached": lambda: AsyncMemcachedBackend(memcached),
    }


async def exec_sql(dsn: str, *statements: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            await conn.execute(statement)


async def caught_up(router: AsyncReplicaRouter, dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        row = await (await conn.execute("SELECT pg_current_wal_lsn()::text")).fetchone()
    assert row is not None
    from readscale._core.postgres.lsn import parse_lsn

    target = parse_lsn(row[0])
    for _ in range(3000):
        await router.poll()
        positions = [s.replay_lsn for s in router.status() if s.role == "replica"]
        if all(p is not None and p >= target for p in positions):
            return
        await async_sleep(0.01)
    raise AssertionError(f"the replicas never caught up: {router.status()}")


def loader(router: AsyncReplicaRouter, table: str, i: int) -> Callable[[], Awaitable[str]]:
    async def load() -> str:
        row = await router.fetch_one(f"SELECT name FROM {table} WHERE id = %s", (i,))
        assert row is not None
        return str(row[0])

    return load


async def read_all(cache: AsyncCache, router: AsyncReplicaRouter, s: Scenario) -> int:
    """A client without a causal token reads every product through the cache: how many stale."""
    tags = ["category:1"] if s.invalidate.startswith("tag") else []

    async def one(i: int) -> str:
        with causal_context():  # a new client: no token, nothing read before
            value: str = await cache.get_or_load(f"product:{i}", loader(router, s.table, i), tags=tags)
            return value

    values = await async_gather([(lambda i=i: one(i)) for i in range(1, PRODUCTS + 1)])
    return sum(1 for v in values if v != "v2")


async def stored_stale(s: Scenario) -> int:
    """What the cache server holds (a new process's first look): how many stale values."""
    cache = s.cache()
    try:
        found = [await cache.get(f"product:{i}") for i in range(1, PRODUCTS + 1)]
    finally:
        await cache.aclose()
    return sum(1 for v in found if v == "v1")


async def run(stack: Stack, scenarios: list[Scenario]) -> None:
    primary = stack.primary.dsn
    settings = ReplicaSettings(primary=primary, replicas=[r.dsn for r in stack.replicas], max_pool_size=40)
    slot = f"lag_{uuid.uuid4().hex[:10]}"
    async with AsyncReplicaRouter(settings) as router:
        caches = {s.name: s.cache() for s in scenarios}
        workers: dict[str, AsyncCdcWorker] = {}
        for s in scenarios:
            await exec_sql(
                primary,
                f"CREATE TABLE {s.table} (id int PRIMARY KEY, category int NOT NULL, name text NOT NULL)",
                f"INSERT INTO {s.table} SELECT g, 1, 'v1' FROM generate_series(1, {PRODUCTS}) g",
            )
            if s.invalidate.startswith("cdc"):
                # The CDC worker as users build it: a cache with the default settings.
                cdc_cache = AsyncCache(s.backend(), policy=POLICY, prefix=s.prefix)
                workers[s.name] = AsyncCdcWorker(
                    cdc_cache,
                    [CdcRule(s.table, keys=("product:{id}",), tags=("category:{category}",))],
                    CdcSettings(dsn=primary, slot=f"{slot}_{len(workers)}"),
                )
                await workers[s.name].ensure_slot()
        await caught_up(router, primary)
        for s in scenarios:  # every product cached as v1
            assert await read_all(caches[s.name], router, s) == PRODUCTS
        for replica in stack.replicas:
            stack.set_apply_delay(replica.name, DELAY)

        async def update(s: Scenario, i: int) -> None:
            """One client: its own causal context, one update, the invalidation after commit."""
            with causal_context():
                async with router.write() as conn:
                    await conn.execute(f"UPDATE {s.table} SET name = 'v2' WHERE id = %s", (i,))
                token = router.context.token
                assert token is not None
                cache = caches[s.name]
                if s.invalidate == "key":
                    await cache.invalidate(f"product:{i}", lsn=token.lsn)
                elif s.invalidate == "tag-lsn":
                    await cache.invalidate_tags("category:1", lsn=token.lsn)
                elif s.invalidate == "tag":
                    await cache.invalidate_tags("category:1")
                elif s.invalidate == "cdc":
                    await cache.invalidate(f"product:{i}", lsn=token.lsn)  # the application's own

        await async_gather([(lambda s=s, i=i: update(s, i)) for s in scenarios for i in range(1, PRODUCTS + 1)])
        for worker in workers.values():  # the backstop applies the same commits
            while await worker.run_once():
                pass
        for s in scenarios:
            if s.read_at_once:
                s.stale_read = await read_all(caches[s.name], router, s)
        await async_sleep(READ_AFTER)
        for s in scenarios:
            if not s.read_at_once:
                s.stale_read = await read_all(caches[s.name], router, s)
            s.stale_stored = await stored_stale(s)
        await caught_up(router, primary)
        for s in scenarios:  # a new client, once the replicas caught up
            fresh = s.cache()
            s.stale_after_catch_up = await read_all(fresh, router, s) + await stored_stale(s)
            await fresh.aclose()
        for cache in caches.values():
            await cache.aclose()
        for worker in workers.values():
            await worker.drop_slot()
            await worker.close()
            await worker.cache.aclose()


@pytest.mark.anyio
async def test_no_stale_fill_survives_a_lag_longer_than_the_tombstone(
    lagging_stack: Stack, request: pytest.FixtureRequest
) -> None:
    made = backends(request)
    scenarios = [
        Scenario("redis, defaults", made["redis"], "key"),
        Scenario("redis, a 5 s tombstone", made["redis"], "key", tombstone_ttl=5.0),
        Scenario("redis, 35 s tombstones and the CDC worker", made["redis"], "cdc", tombstone_ttl=35.0),
        Scenario("redis, the CDC worker alone", made["redis"], "cdc-only"),
        Scenario("cluster, defaults", made["cluster"], "key"),
        Scenario("memcached, defaults", made["memcached"], "key"),
        Scenario("redis, tags without a position", made["redis"], "tag", read_at_once=True),
        Scenario("redis, tags with the change's position", made["redis"], "tag-lsn", read_at_once=True),
        Scenario("memcached, tags without a position", made["memcached"], "tag", read_at_once=True),
    ]
    await run(lagging_stack, scenarios)
    counts = {s.name: (s.stale_read, s.stale_stored, s.stale_after_catch_up) for s in scenarios}
    assert counts == {s.name: (0, 0, 0) for s in scenarios}, counts
