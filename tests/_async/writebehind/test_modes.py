"""Write-behind modes against real Redis servers: each mode is kept or refused by the
server's real settings, for the producer (``AsyncWriteBehind``) and the flusher, and the
flusher's start checks of its database. Written async; the sync twin is generated.

Issue 12, defects 7 (durability depended on settings nobody checked) and 9 (a flusher
configured with a table that does not exist retried forever).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
import redis

from readscale import NO_VALUE, RedisSettings
from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache.cache import AsyncCache
from readscale._async.writebehind.flusher import AsyncFlusher
from readscale._async.writebehind.postgres import AsyncPostgresWriter
from readscale._async.writebehind.producer import AsyncWriteBehind
from readscale._core.cache.policy import CachePolicy
from readscale._core.writebehind.settings import FlusherSettings, WriteBehindSettings, queue_keys
from readscale.errors import CacheUnavailableError, ConfigurationError, DurabilityError
from readscale.metrics import WriteBehindCollector
from readscale.stack import Stack, StackConfig

pytestmark = pytest.mark.stack

POLICY = CachePolicy(name="modes", ttl=600.0, jitter=0.0, early_refresh=0.0)


def tag() -> str:
    return uuid.uuid4().hex[:10]


async def new_cache(url: str | RedisSettings, prefix: str, **kwargs: Any) -> AsyncCache:
    settings = url if isinstance(url, RedisSettings) else RedisSettings(url=url)
    return AsyncCache(AsyncRedisBackend(settings), policy=POLICY, prefix=prefix, **kwargs)


@pytest.fixture
def private_redis(readscale_stack_factory: Callable[[StackConfig], Stack]) -> Stack:
    """A Redis of this test's own (AOF, appendfsync always, as ``--redis-aof`` starts
    it), whose settings the test changes with CONFIG SET."""
    return readscale_stack_factory(StackConfig(postgres=False, redis_aof=True))


@pytest.fixture
def admin(private_redis: Stack) -> redis.Redis:
    return redis.Redis.from_url(private_redis.redis.url, protocol=2)


# -- defect 7(a): the README snippet on a Redis without persistence -------------------------------


@pytest.mark.anyio
async def test_the_default_mode_refuses_a_redis_without_persistence_and_stores_nothing(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's snippet as written (default settings) on the stack's default Redis
    (no AOF): refused, loudly, with one line naming the setting; nothing acknowledged."""
    prefix, queue = f"m{tag()}:", f"q{tag()}"
    cache = await new_cache(redis_url, prefix)
    wb = AsyncWriteBehind(cache, WriteBehindSettings(queue=queue, max_queue_length=100_000))
    try:
        with caplog.at_level(logging.ERROR, logger="readscale.writebehind"):
            for _ in range(3):
                with pytest.raises(DurabilityError) as info:
                    await wb.write_behind("user:42", {"name": "Ada"})
            with pytest.raises(DurabilityError):
                await wb.increment("views:42")
        error = info.value
        assert (error.mode, error.setting, error.found, error.needed) == ("durable", "appendonly", "no", "yes")
        assert "\n" not in str(error)
        assert "readscale stack up --redis-aof" in str(error)
        assert await cache.get("user:42") == NO_VALUE  # nothing stored
        assert await wb.queue_length() == 0
        assert (wb.stats.writes, wb.stats.increments) == (0, 0)
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 1  # logged once per cause, not once per write
        with pytest.raises(DurabilityError, match="appendonly"):
            await wb.check()
        fast = AsyncWriteBehind(cache, WriteBehindSettings(queue=queue, mode="fast"))
        with pytest.raises(DurabilityError, match=r"'fast' refused .*appendonly is no"):
            await fast.write_behind("user:42", {"name": "Ada"})
        # The explicit opt-out, for a cache that accepts losing writes:
        volatile = AsyncWriteBehind(cache, WriteBehindSettings(queue=queue, mode="volatile"))
        assert await volatile.check() is None
        assert await volatile.write_behind("user:42", {"name": "Ada"}) > 0
        assert await cache.get("user:42") == {"name": "Ada"}
    finally:
        await cache.aclose()


@pytest.mark.anyio
async def test_a_producer_refused_on_one_redis_writes_on_a_durable_one(redis_url: str, durable_redis_url: str) -> None:
    """The same settings (prefix, queue, the default mode): refused where the Redis cannot
    keep them, nothing stored; acknowledged and read through the cache where it can."""
    prefix, queue = f"m{tag()}:", f"q{tag()}"
    cache = await new_cache(redis_url, prefix)
    try:
        with pytest.raises(DurabilityError, match="appendonly"):
            await AsyncWriteBehind(cache, WriteBehindSettings(queue=queue)).write_behind("user:1", {"name": "Ada"})
        assert await cache.get("user:1") == NO_VALUE
    finally:
        await cache.aclose()
    cache = await new_cache(durable_redis_url, prefix)
    try:
        assert (
            await AsyncWriteBehind(cache, WriteBehindSettings(queue=queue)).write_behind("user:1", {"name": "Ada"}) > 0
        )
        assert await cache.get("user:1") == {"name": "Ada"}
    finally:
        await cache.aclose()


@pytest.mark.anyio
async def test_a_flusher_refuses_to_start_on_a_redis_without_persistence(redis_url: str, pg_primary_dsn: str) -> None:
    writer = AsyncPostgresWriter(pg_primary_dsn, table="never_touched")
    flusher = AsyncFlusher(writer, redis_url, settings=FlusherSettings(queue=f"q{tag()}", block=0.05))
    try:
        with pytest.raises(DurabilityError, match="appendonly is no"):
            await flusher.run()
        assert flusher.stats.durability_ok == 0
        assert flusher.stats.transactions == 0
    finally:
        await flusher.aclose()
        await writer.aclose()


# -- the settings each mode needs, read from the server ------------------------------------------


@pytest.mark.anyio
async def test_each_mode_follows_the_servers_real_settings(private_redis: Stack, admin: redis.Redis) -> None:
    url = private_redis.redis.url
    prefix, queue = f"m{tag()}:", f"q{tag()}"
    cache = await new_cache(url, prefix)

    async def verdict(mode: str, **settings: Any) -> str | None:
        wb = AsyncWriteBehind(cache, WriteBehindSettings(queue=queue, mode=mode, **settings))
        try:
            await wb.write_behind("k", {"v": 1})
        except DurabilityError as exc:
            return exc.setting
        return None

    try:
        assert admin.config_get("appendfsync") == {"appendfsync": "always"}  # what --redis-aof starts
        assert [await verdict(m) for m in ("durable", "fast", "volatile")] == [None, None, None]
        admin.config_set("appendfsync", "everysec")
        assert [await verdict(m) for m in ("durable", "fast", "volatile")] == ["appendfsync", None, None]
        admin.config_set("appendfsync", "no")
        assert [await verdict(m) for m in ("durable", "fast", "volatile")] == ["appendfsync", "appendfsync", None]
        admin.config_set("appendfsync", "always")
        admin.config_set("no-appendfsync-on-rewrite", "yes")
        assert await verdict("durable") == "no-appendfsync-on-rewrite"
        admin.config_set("no-appendfsync-on-rewrite", "no")
        admin.config_set("maxmemory", "512mb")
        admin.config_set("maxmemory-policy", "allkeys-lru")
        assert await verdict("durable") == "maxmemory-policy"
        admin.config_set("maxmemory-policy", "volatile-lru")
        assert await verdict("durable") is None
        admin.config_set("appendonly", "no")
        assert await verdict("durable") == "appendonly"
    finally:
        await cache.aclose()


@pytest.mark.anyio
async def test_a_redis_whose_config_command_is_refused_needs_the_setting_declared(
    private_redis: Stack, admin: redis.Redis
) -> None:
    """A managed Redis that disables CONFIG (here: an ACL user without it)."""
    admin.execute_command("ACL", "SETUSER", "app", "on", ">app-secret", "~*", "&*", "+@all", "-config")
    settings = RedisSettings(url=private_redis.redis.url, username="app", password="app-secret")
    prefix, queue = f"m{tag()}:", f"q{tag()}"
    cache = await new_cache(settings, prefix)
    try:
        wb = AsyncWriteBehind(cache, WriteBehindSettings(queue=queue))
        with pytest.raises(DurabilityError) as info:
            await wb.write_behind("k", {"v": 1})
        assert info.value.setting == "appendfsync"
        assert "CONFIG GET failed" in str(info.value)
        assert "assume_config={'appendfsync': 'always'}" in str(info.value)
        declared = AsyncWriteBehind(cache, WriteBehindSettings(queue=queue, assume_config={"appendfsync": "always"}))
        assert await declared.write_behind("k", {"v": 1}) > 0
        admin.config_set("appendonly", "no")  # INFO still tells: no declaration overrides it
        with pytest.raises(DurabilityError, match="appendonly"):
            await AsyncWriteBehind(
                cache, WriteBehindSettings(queue=queue, assume_config={"appendfsync": "always", "appendonly": "yes"})
            ).write_behind("k", {"v": 2})
    finally:
        await cache.aclose()


@pytest.mark.anyio
async def test_a_producer_checks_again_and_refuses_once_the_server_weakens(
    private_redis: Stack, admin: redis.Redis
) -> None:
    now = [0.0]
    prefix, queue = f"m{tag()}:", f"q{tag()}"
    cache = await new_cache(private_redis.redis.url, prefix)
    wb = AsyncWriteBehind(cache, WriteBehindSettings(queue=queue, recheck_every=30.0), monotonic=lambda: now[0])
    try:
        await wb.write_behind("k", {"v": 1})
        admin.config_set("appendfsync", "everysec")
        await wb.write_behind("k", {"v": 2})  # within recheck_every: not asked again
        now[0] += 31.0
        with pytest.raises(DurabilityError, match="appendfsync is everysec"):
            await wb.write_behind("k", {"v": 3})
        assert await cache.get("k") == {"v": 2}
        admin.config_set("appendfsync", "always")
        now[0] += 31.0
        assert await wb.write_behind("k", {"v": 4}) > 0
        assert wb.stats.durability_refusals == 1
        assert wb.stats.aof_delayed_fsync == 0
    finally:
        await cache.aclose()


@pytest.mark.anyio
async def test_a_running_flusher_reports_a_weakened_server_and_keeps_flushing(
    private_redis: Stack, admin: redis.Redis, pg_primary_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    table, queue, prefix = f"wbm_{tag()}", f"q{tag()}", f"m{tag()}:"
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (key text PRIMARY KEY, version bigint NOT NULL, value jsonb NOT NULL)")
    cache = await new_cache(private_redis.redis.url, prefix)
    wb = AsyncWriteBehind(cache, WriteBehindSettings(queue=queue))
    writer = AsyncPostgresWriter(pg_primary_dsn, table=table)
    settings = FlusherSettings(queue=queue, prefix=prefix, block=0.05, batch_wait=0.0, recheck_every=0.01)
    flusher = AsyncFlusher(writer, private_redis.redis.url, settings=settings)
    try:
        await wb.write_behind("a", {"v": 1})
        assert await flusher.drain()
        assert flusher.stats.durability_ok == 1
        admin.config_set("appendfsync", "everysec")
        with caplog.at_level(logging.ERROR, logger="readscale.writebehind"):
            await AsyncWriteBehind(cache, WriteBehindSettings(queue=queue, mode="fast")).write_behind("b", {"v": 1})
            assert await flusher.drain()
        assert flusher.stats.durability_ok == 0
        assert flusher.stats.durability_refusals >= 1
        assert any("appendfsync is everysec" in r.getMessage() for r in caplog.records)
        with psycopg.connect(pg_primary_dsn) as conn:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (2,)
        metrics = {m.name: m for m in WriteBehindCollector(flusher.stats, wb.stats).collect()}
        ok = metrics["readscale_writebehind_durability_ok"].samples
        assert [s.value for s in ok] == [0]
        delayed = {s.labels["role"]: s.value for s in metrics["readscale_writebehind_aof_delayed_fsync"].samples}
        assert delayed == {"flusher": 0, "producer": 0}
        # Refused at a new start:
        restarted = AsyncFlusher(writer, private_redis.redis.url, settings=settings)
        try:
            with pytest.raises(DurabilityError, match="appendfsync"):
                await restarted.run_once()
        finally:
            await restarted.aclose()
    finally:
        await flusher.aclose()
        await writer.aclose()
        await cache.aclose()
        with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}")


# -- defect 9: the flusher's start checks of its database ----------------------------------------


@pytest.fixture
async def bad_tables(pg_primary_dsn: str) -> AsyncIterator[str]:
    name = f"wbbad_{tag()}"
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name}_nokey (key text, version bigint, value jsonb)")
        conn.execute(f"CREATE TABLE {name}_counts (key text PRIMARY KEY, views bigint, note text NOT NULL)")
    yield name
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {name}_nokey, {name}_counts")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("writer_args", "message"),
    [
        ({"table": "no_such_table_here"}, 'relation "no_such_table_here" does not exist'),
        ({"table": "{t}_nokey", "value_column": "payload"}, "has no column 'payload'"),
        ({"table": "{t}_nokey"}, "no unique or exclusion constraint matching the ON CONFLICT"),
        ({"table": None, "counter_table": "no_such_counts", "counter_column": "views"}, "does not exist"),
        ({"table": None, "counter_table": "{t}_counts", "counter_column": "likes"}, "has no column 'likes'"),
        ({"table": None, "counter_table": "{t}_counts", "counter_column": "views"}, "NOT NULL columns without a"),
    ],
)
async def test_a_flusher_whose_table_cannot_work_stops_at_start_with_one_line(
    durable_redis_url: str, pg_primary_dsn: str, bad_tables: str, writer_args: dict[str, Any], message: str
) -> None:
    args = {k: v.format(t=bad_tables) if isinstance(v, str) else v for k, v in writer_args.items()}
    writer = AsyncPostgresWriter(pg_primary_dsn, **args)
    flusher = AsyncFlusher(writer, durable_redis_url, settings=FlusherSettings(queue=f"q{tag()}", block=0.05))
    try:
        with pytest.raises(ConfigurationError) as info:
            await flusher.run()  # returns at once: no retry, no backoff
        assert message in str(info.value)
        assert "\n" not in str(info.value)
        assert flusher.stats.retries == 0
    finally:
        await flusher.aclose()
        await writer.aclose()


@pytest.mark.anyio
async def test_a_database_that_is_down_at_start_is_waited_for(durable_redis_url: str, pg_primary_dsn: str) -> None:
    """Unreachable is not misconfigured: the flusher retries until stopped."""
    writer = AsyncPostgresWriter("postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=1", table="t")
    flusher = AsyncFlusher(
        writer,
        durable_redis_url,
        settings=FlusherSettings(queue=f"q{tag()}", block=0.05, retry_base=0.01, retry_cap=0.02),
    )
    calls = 0
    original = writer.check

    async def counting_check() -> None:
        nonlocal calls
        calls += 1
        if calls >= 3:
            flusher.stop()
        await original()

    writer.check = counting_check  # type: ignore[method-assign]
    try:
        await flusher.run()
        assert calls >= 3
        assert flusher.stats.transient_failures >= 2
    finally:
        await flusher.aclose()
        await writer.aclose()


def test_queue_keys_share_one_hash_tag() -> None:
    keys = queue_keys("rs:", "views")
    assert {k.split("{")[1].split("}")[0] for k in (keys.stream, keys.clock, keys.dead, keys.acc)} == {"views"}


# -- fast mode: records wait out the loss window before they reach the database ------------------


@pytest.mark.anyio
async def test_fast_mode_writes_a_record_only_once_it_has_outlived_the_window_and_redis(
    private_redis: Stack, pg_primary_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A record Redis may still lose (fast mode) never reaches the database first: else a
    crash would leave the cache older than the database, or count an increment twice."""
    table, queue, prefix = f"wbf_{tag()}", f"q{tag()}", f"m{tag()}:"
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (key text PRIMARY KEY, version bigint NOT NULL DEFAULT 0, value jsonb, "
                     "n bigint NOT NULL DEFAULT 0)")  # fmt: skip
    cache = await new_cache(private_redis.redis.url, prefix)
    wb = AsyncWriteBehind(cache, WriteBehindSettings(queue=queue, mode="fast"))
    writer = AsyncPostgresWriter(pg_primary_dsn, table=table, counter_column="n")
    settings = FlusherSettings(queue=queue, prefix=prefix, block=0.05, batch_wait=0.0, mode="fast", seal_every=0.05)
    now = [0.0]
    flusher = AsyncFlusher(writer, private_redis.redis.url, settings=settings, monotonic=lambda: now[0])

    def stored() -> dict[str, tuple[Any, int]]:
        with psycopg.connect(pg_primary_dsn) as conn:
            return {k: (v, n) for k, v, n in conn.execute(f"SELECT key, value, n FROM {table}").fetchall()}

    try:
        await wb.write_behind("a", {"v": 1})
        await wb.increment("c", 2)
        for _ in range(5):
            await flusher.run_once()
        assert stored() == {}  # held: Redis may not have written them yet
        now[0] += 3.1  # FAST_LOSS_WINDOW
        for _ in range(5):
            await flusher.run_once()
        assert stored() == {"a": ({"v": 1}, 0), "c": (None, 2)}

        await wb.write_behind("a", {"v": 2})
        await flusher.run_once()  # read and held
        private_redis.kill("redis")  # AOF always: the record survives; the flusher's memory of it is dropped
        private_redis.start("redis")
        now[0] += 3.1
        with caplog.at_level(logging.WARNING, logger="readscale.writebehind"):
            for _ in range(40):
                if stored()["a"] == ({"v": 2}, 0):
                    break
                now[0] += 0.5
                try:
                    await flusher.run_once()
                except CacheUnavailableError:  # the restart's broken connections, as run() retries them
                    continue
        assert stored()["a"] == ({"v": 2}, 0)
        assert any("Redis restarted while 1 records waited" in r.getMessage() for r in caplog.records)
    finally:
        await flusher.aclose()
        await writer.aclose()
        await cache.aclose()
        with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}")


@pytest.mark.anyio
async def test_a_write_no_replica_acknowledged_in_time_is_refused_not_acknowledged(redis_url: str) -> None:
    # Under Sentinel, durable mode WAITs for one replica: a standalone Redis has none.
    from readscale._async.writebehind.queue import AsyncWriteQueue

    queue = AsyncWriteQueue.from_url(redis_url, queue=f"wait{tag()}")
    queue.wait_replicas, queue.wait_ms = 1, 20
    try:
        with pytest.raises(DurabilityError, match="0 of 1 replicas") as caught:
            await queue.enqueue("rs:k", b"v", 60.0, "k", "", 0)
        assert caught.value.found == "0" and caught.value.needed == "1"
        queue.wait_replicas = 0
        queued, version, _ = await queue.enqueue("rs:k", b"v", 60.0, "k", "", 0)
        assert queued and version > 0
    finally:
        await queue.aclose()
