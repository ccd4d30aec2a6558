"""The CDC backstop against real PostgreSQL (wal2json) and Redis: rows changed directly in
SQL invalidate their keys and tags; tombstones refuse fills older than the change."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from readscale import NO_VALUE, RedisSettings
from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache.cache import AsyncCache
from readscale._async.cdc.worker import AsyncCdcWorker, CdcRule, CdcSettings
from readscale._core.cache.policy import CachePolicy, Tier
from readscale.cache import report_read_lsn

pytestmark = pytest.mark.stack

POLICY = CachePolicy(name="cdc", ttl=300.0, jitter=0.0, early_refresh=0.0, tiers=frozenset({Tier.L2}))


@pytest.fixture
def table(pg_primary_dsn: str) -> str:
    name = f"products_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, category_id int, name text)")
        conn.execute(f"INSERT INTO {name} VALUES (1, 7, 'apple'), (2, 7, 'pear'), (3, 8, 'plum')")
    return name


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[AsyncCache]:
    backend = AsyncRedisBackend(RedisSettings(url=redis_url))
    cache = AsyncCache(backend, policy=POLICY, prefix=f"cdc{uuid.uuid4().hex[:6]}:")
    yield cache
    await cache.aclose()


def make_worker(cache: AsyncCache, table: str, dsn: str, *, tombstones: bool) -> AsyncCdcWorker:
    rules = [CdcRule(table, keys=("product:{id}",), tags=(f"{table}:category:{{category_id}}",))]
    return AsyncCdcWorker(cache, rules, CdcSettings(dsn=dsn, slot=f"s_{uuid.uuid4().hex[:10]}", tombstones=tombstones))


async def name_of(dsn: str, table: str, product_id: int) -> Any:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        row = await (await conn.execute(f"SELECT name FROM {table} WHERE id = %s", (product_id,))).fetchone()
        return row[0] if row else None


@pytest.mark.anyio
async def test_rows_changed_in_sql_invalidate_their_keys_and_tags(
    cache: AsyncCache, table: str, pg_primary_dsn: str
) -> None:
    worker = make_worker(cache, table, pg_primary_dsn, tombstones=False)
    assert await worker.ensure_slot() is True  # created (and what it guards flushed)
    loads: list[str] = []

    def loader(product_id: int) -> Any:
        async def load() -> Any:
            loads.append(f"product:{product_id}")
            return await name_of(pg_primary_dsn, table, product_id)

        return load

    async def category_page() -> list[str]:
        loads.append("page")
        async with await psycopg.AsyncConnection.connect(pg_primary_dsn, autocommit=True) as conn:
            rows = await (await conn.execute(f"SELECT name FROM {table} WHERE category_id = 7 ORDER BY id")).fetchall()
        return [r[0] for r in rows]

    for pid in (1, 2, 3):
        await cache.get_or_load(f"product:{pid}", loader(pid))
    assert await cache.get_or_load("category:7", category_page, tags=[f"{table}:category:7"]) == ["apple", "pear"]
    assert await worker.run_once() == 0  # nothing changed yet

    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:  # bypassing the application
        conn.execute(f"UPDATE {table} SET name = 'green apple' WHERE id = 1")
        conn.execute(f"DELETE FROM {table} WHERE id = 3")
    assert await worker.run_once() == 2
    assert worker.stats.keys_invalidated == 2

    assert await cache.get("product:1") is NO_VALUE
    assert await cache.get("product:3") is NO_VALUE
    assert await cache.get("product:2") == "pear"  # untouched
    assert await cache.get_or_load("product:1", loader(1)) == "green apple"
    assert await cache.get_or_load("category:7", category_page, tags=[f"{table}:category:7"]) == ["green apple", "pear"]
    assert loads.count("page") == 2
    assert await worker.run_once() == 0  # the slot was advanced: nothing is delivered twice
    assert worker.stats.lag_bytes >= 0
    await worker.drop_slot()
    await worker.close()


@pytest.mark.anyio
async def test_tombstones_refuse_fills_read_before_the_change(
    cache: AsyncCache, table: str, pg_primary_dsn: str
) -> None:
    worker = make_worker(cache, table, pg_primary_dsn, tombstones=True)
    await worker.ensure_slot()
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {table} SET name = 'ripe pear' WHERE id = 2")
    assert await worker.run_once() == 1
    change_lsn = worker.stats.last_commit_lsn

    async def lagging_replica() -> str:
        report_read_lsn(change_lsn - 1, staleness=0.5)  # this read's snapshot predates the change
        return "pear"

    async def caught_up_replica() -> str:
        report_read_lsn(change_lsn, staleness=0.5)
        return "ripe pear"

    assert await cache.get_or_load("product:2", lagging_replica) == "pear"  # the caller gets its read...
    assert cache.stats.loader.fills_refused == 1  # ...but the old value is not cached
    assert await cache.get("product:2") is NO_VALUE
    assert await cache.get_or_load("product:2", caught_up_replica) == "ripe pear"
    assert await cache.get("product:2") == "ripe pear"
    await worker.drop_slot()
    await worker.close()


@pytest.mark.anyio
@pytest.mark.parametrize("soft", [False, True])
async def test_changed_rows_are_purged_at_the_edge_hard_unless_soft_is_asked(
    cache: AsyncCache, table: str, pg_primary_dsn: str, soft: bool
) -> None:
    from readscale._async.purge.vendors import AsyncRecordingPurger

    purger = AsyncRecordingPurger()
    rules = [CdcRule(table, keys=("product:{id}",), tags=(f"{table}:category:{{category_id}}",))]
    settings = CdcSettings(dsn=pg_primary_dsn, slot=f"s_{uuid.uuid4().hex[:10]}", tombstones=False, soft_purge=soft)
    worker = AsyncCdcWorker(cache, rules, settings, purger=purger)
    await worker.ensure_slot()
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {table} SET name = 'green apple' WHERE id = 1")
    assert await worker.run_once() == 1
    assert purger.tag_purges == [(tuple(sorted([f"{table}:category:7", "product:1"])), soft)]
    await worker.drop_slot()
    await worker.close()


@pytest.mark.anyio
async def test_the_edge_is_purged_while_the_cache_is_down_and_the_batch_retried(
    table: str, pg_primary_dsn: str
) -> None:
    import socket

    from readscale._async.purge.vendors import AsyncRecordingPurger
    from readscale.errors import CacheUnavailableError

    with socket.socket() as s:  # a port nobody listens on: Redis is down
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    down = AsyncCache(
        AsyncRedisBackend(RedisSettings(url=f"redis://127.0.0.1:{dead}/0", connect_timeout_ms=100)), policy=POLICY
    )
    purger = AsyncRecordingPurger()
    rules = [CdcRule(table, keys=("product:{id}",))]
    settings = CdcSettings(dsn=pg_primary_dsn, slot=f"s_{uuid.uuid4().hex[:10]}", tombstones=False)
    worker = AsyncCdcWorker(down, rules, settings, purger=purger)
    await worker.ensure_slot()
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {table} SET name = 'green apple' WHERE id = 1")
    with pytest.raises(CacheUnavailableError):
        await worker.run_once()
    assert purger.tags == ["product:1"]  # the edge heard it at once
    with pytest.raises(CacheUnavailableError):
        await worker.run_once()  # not acknowledged: the change comes back until the cache hears it
    assert purger.tags == ["product:1", "product:1"]
    await worker.drop_slot()
    await worker.close()
    await down.aclose()


@pytest.mark.anyio
async def test_lag_in_bytes_and_seconds_grows_while_changes_wait_and_is_zero_once_applied(
    cache: AsyncCache, table: str, pg_primary_dsn: str
) -> None:
    now = [100.0]
    rules = [CdcRule(table, keys=("product:{id}",))]
    settings = CdcSettings(dsn=pg_primary_dsn, slot=f"s_{uuid.uuid4().hex[:10]}", tombstones=False)
    worker = AsyncCdcWorker(cache, rules, settings, monotonic=lambda: now[0])
    await worker.ensure_slot()
    await worker.run_once()
    assert (worker.stats.lag_bytes, worker.stats.lag_seconds) == (0, 0.0)  # caught up at t=100
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {table} SET name = 'quince' WHERE id = 1")
    now[0] = 104.0
    await worker._measure_lag()  # a look before the next batch: the change waits
    assert worker.stats.lag_bytes > 0
    assert worker.stats.lag_seconds == 4.0  # bounded by the last sample at the confirmed position
    now[0] = 105.0
    assert await worker.run_once() == 1
    assert (worker.stats.lag_bytes, worker.stats.lag_seconds) == (0, 0.0)
    await worker.drop_slot()
    await worker.close()
