"""Write-behind against real Redis and PostgreSQL: the producer, the flusher and the
PostgreSQL writer. Written async; ``scripts/unasync.py`` generates the sync twin.

Crashes are simulated in-process with :class:`Crash`, a ``BaseException`` the flusher
does not catch (as a SIGKILL would not let it): whatever it had not acknowledged must
be found again by the next flusher. The multi-process SIGKILL test lives in
``tests/writebehind``.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import psycopg
import pytest

from readscale import NO_VALUE, MemoryStore, RedisSettings
from readscale._async.backends.redis import AsyncRedisBackend, AsyncRedisClusterBackend
from readscale._async.cache.bus import AsyncInvalidationBus
from readscale._async.cache.cache import AsyncCache
from readscale._async.writebehind.flusher import AsyncFlusher
from readscale._async.writebehind.postgres import AsyncPostgresWriter
from readscale._async.writebehind.producer import AsyncWriteBehind
from readscale._core.cache.policy import BALANCE, CachePolicy, OnMiss, Tier
from readscale._core.writebehind.flush import FailureKind
from readscale._core.writebehind.records import CounterRecord, IncrementsApplied, WriteRecord
from readscale._core.writebehind.settings import FlusherSettings, WhenFull, WriteBehindSettings
from readscale._shared.primitives.locks import AsyncEvent, async_sleep
from readscale.codecs import MsgpackCodec
from readscale.errors import ConfigurationError, WriteQueueFullError
from readscale.testing.concurrency import async_gather

pytestmark = pytest.mark.stack

POLICY = CachePolicy(name="wb", ttl=600.0, jitter=0.0, early_refresh=0.0, l1_ttl=60.0)


class Crash(BaseException):
    """Stands for a SIGKILL: nothing in the flusher catches it."""


class Transient(Exception):
    """A failure the writer calls transient (the database restarting)."""


class ScriptedWriter:
    """Wraps a real writer: counts calls, fails or crashes as told."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        self.transient_failures = 0
        self.crash_before = False
        self.crash_after = False
        self.batches: list[list[tuple[str, int]]] = []

    async def write_batch(self, records: Sequence[WriteRecord]) -> int:
        self.calls += 1
        if self.crash_before:
            raise Crash
        if self.transient_failures:
            self.transient_failures -= 1
            raise Transient("the database is restarting")
        applied: int = await self.inner.write_batch(records)
        self.batches.append([(r.key, r.version) for r in records])
        if self.crash_after:
            raise Crash
        return applied

    def failure_kind(self, exc: Exception) -> FailureKind:
        if isinstance(exc, Transient):
            return FailureKind.TRANSIENT
        kind: FailureKind = self.inner.failure_kind(exc)
        return kind

    async def apply_increments(self, queue: str, records: Sequence[CounterRecord]) -> IncrementsApplied:
        self.calls += 1
        if self.crash_before:
            raise Crash
        if self.transient_failures:
            self.transient_failures -= 1
            raise Transient("the database is restarting")
        outcome: IncrementsApplied = await self.inner.apply_increments(queue, records)
        if self.crash_after:
            raise Crash
        return outcome


FAST = FlusherSettings(
    block=0.05, batch_wait=0.01, retry_base=0.005, retry_cap=0.02, max_attempts=2, consumer="flusher-a"
)


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {"prefix": f"t{tag}:", "queue": f"q{tag}", "table": f"wb_{tag}"}


@pytest.fixture
def table(pg_primary_dsn: str, names: dict[str, str]) -> Iterator[str]:
    """The value table; it also counts (``views``, at most 1,000 per key)."""
    name = names["table"]
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {name} (key text PRIMARY KEY, version bigint NOT NULL DEFAULT 0, value jsonb, "
            f"views bigint NOT NULL DEFAULT 0 CONSTRAINT {name}_views_capped CHECK (views <= 1000), "
            f"CONSTRAINT {name}_qty_not_negative CHECK (coalesce((value->>'qty')::int, 0) >= 0))"
        )
    yield name
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def rows(dsn: str, table: str) -> dict[str, tuple[int, Any]]:
    with psycopg.connect(dsn) as conn:
        return {k: (v, val) for k, v, val in conn.execute(f"SELECT key, version, value FROM {table}").fetchall()}


@pytest.fixture
async def cache(durable_redis_url: str, names: dict[str, str]) -> AsyncIterator[AsyncCache]:
    cache = AsyncCache(
        AsyncRedisBackend(RedisSettings(url=durable_redis_url)),
        l1=MemoryStore(1000),
        policy=POLICY,
        prefix=names["prefix"],
    )
    yield cache
    await cache.aclose()


@pytest.fixture
def wb(cache: AsyncCache, names: dict[str, str]) -> AsyncWriteBehind:
    return AsyncWriteBehind(cache, WriteBehindSettings(queue=names["queue"]))


@pytest.fixture
async def writer(pg_primary_dsn: str, table: str) -> AsyncIterator[ScriptedWriter]:
    inner = AsyncPostgresWriter(pg_primary_dsn, table=table, counter_column="views")
    yield ScriptedWriter(inner)
    await inner.aclose()


def settings_for(names: dict[str, str], **changes: Any) -> FlusherSettings:
    return dataclasses.replace(FAST, queue=names["queue"], prefix=names["prefix"], **changes)


@pytest.fixture
async def flusher(writer: ScriptedWriter, durable_redis_url: str, names: dict[str, str]) -> AsyncIterator[AsyncFlusher]:
    flusher = AsyncFlusher(writer, durable_redis_url, settings=settings_for(names))
    yield flusher
    await flusher.aclose()


# -- the producer ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_queued_write_is_read_back_through_the_cache(cache: AsyncCache, wb: AsyncWriteBehind) -> None:
    async def old() -> dict[str, int]:
        return {"qty": 1}

    assert await cache.get_or_load("item:1", old) == {"qty": 1}  # now in this process's L1 too
    await wb.write_behind("item:1", {"qty": 2})
    assert await cache.get("item:1") == {"qty": 2}  # the L1 copy was dropped, the entry replaced
    assert await cache.get_or_load("item:1", old) == {"qty": 2}
    assert await wb.queue_length() == 1
    assert wb.stats.writes == 1


@pytest.mark.anyio
@pytest.mark.parametrize("on_miss", [OnMiss.WAIT, OnMiss.LOAD])
async def test_a_fill_loaded_before_a_queued_write_cannot_store_over_it(
    cache: AsyncCache, wb: AsyncWriteBehind, on_miss: OnMiss
) -> None:
    """A loader that read the database before a write-behind write finishes after it: its
    fill (under a lease, or a ticket with OnMiss.LOAD) must not replace the queued value,
    which the database does not have yet (the enqueue voids the key's fill rights, as an
    invalidation does), and a reader of this process that comes after the write must not
    share that load."""
    policy = POLICY.with_(on_miss=on_miss)
    loading = AsyncEvent()
    done = AsyncEvent()

    async def slow_old() -> dict[str, int]:
        loading.set()  # the database was read: the old row
        await done.wait(5.0)  # without the fix, the later reader waits on this load
        return {"qty": 1}

    async def new() -> dict[str, int]:
        return {"qty": 3}  # never called: the queued value is cached

    async def read() -> Any:
        return await cache.get_or_load("item:7", slow_old, policy=policy)

    async def write_then_read() -> Any:
        assert await loading.wait(5.0)
        await wb.write_behind("item:7", {"qty": 2}, policy=policy)
        try:
            return await cache.get_or_load("item:7", new, policy=policy)
        finally:
            done.set()

    loaded, later = await async_gather([read, write_then_read])
    assert loaded == {"qty": 1}  # the loader's caller gets what it loaded, not cached
    assert later == {"qty": 2}
    cache.forget_local("item:7", policy=policy)
    assert await cache.get("item:7", policy=policy) == {"qty": 2}
    assert cache.stats.l2.fills == 0


@pytest.mark.anyio
async def test_a_queued_write_drops_other_processes_l1_copies(durable_redis_url: str, names: dict[str, str]) -> None:
    """Another process's L1 copy of the old value goes over the bus, as after an
    invalidation: it would otherwise be served for its whole l1_ttl."""
    settings = RedisSettings(url=durable_redis_url)
    channel = f"bus-{names['queue']}"
    buses = AsyncInvalidationBus(settings, channel=channel), AsyncInvalidationBus(settings, channel=channel)
    writer, reader = (
        AsyncCache(AsyncRedisBackend(settings), l1=MemoryStore(100), bus=bus, policy=POLICY, prefix=names["prefix"])
        for bus in buses
    )
    try:

        async def old() -> dict[str, int]:
            return {"qty": 1}

        assert await reader.get_or_load("item:8", old) == {"qty": 1}  # in the reader's L1
        await writer.get("item:8")  # both buses subscribed
        await AsyncWriteBehind(writer, WriteBehindSettings(queue=names["queue"])).write_behind("item:8", {"qty": 2})
        for _ in range(400):
            if buses[1].stats.received:
                break
            await async_sleep(0.005)
        assert buses[1].stats.received == 1
        assert await reader.get("item:8") == {"qty": 2}
    finally:
        await writer.aclose()
        await reader.aclose()


@pytest.mark.anyio
async def test_versions_grow_per_key_and_across_keys(wb: AsyncWriteBehind) -> None:
    versions = [await wb.write_behind(f"item:{i % 3}", {"qty": i}) for i in range(30)]
    assert versions == sorted(versions)
    assert len(set(versions)) == 30
    assert await wb.queue_length() == 30


@pytest.mark.anyio
async def test_other_codecs_and_namespaces_travel_with_the_record(
    cache: AsyncCache, wb: AsyncWriteBehind, flusher: AsyncFlusher, writer: ScriptedWriter
) -> None:
    seen: list[WriteRecord] = []
    original = writer.inner.write_batch

    async def spy(records: Sequence[WriteRecord]) -> int:
        seen.extend(records)
        applied: int = await original(records)
        return applied

    writer.inner.write_batch = spy
    policy = POLICY.with_(namespace="stock")
    await wb.write_behind("item:9", {"qty": 9}, policy=policy, codec=MsgpackCodec())
    assert await cache.get("item:9", policy=policy, codec=MsgpackCodec()) == {"qty": 9}
    assert await flusher.drain()
    (record,) = seen
    assert (record.key, record.namespace, record.codec, record.value) == ("item:9", "stock", "msgpack", {"qty": 9})


@pytest.mark.anyio
async def test_policies_that_do_not_keep_values_in_redis_are_refused(wb: AsyncWriteBehind) -> None:
    for policy in (BALANCE, POLICY.with_(tiers=frozenset({Tier.L1}))):
        with pytest.raises(ConfigurationError, match="does not keep values in Redis"):
            await wb.write_behind("balance:1", 10, policy=policy)
    assert await wb.queue_length() == 0


@pytest.mark.anyio
async def test_only_a_standalone_redis_cache_is_accepted(redis_cluster_nodes: list[str]) -> None:
    backend = AsyncRedisClusterBackend(RedisSettings(url=f"redis://{redis_cluster_nodes[0]}/0"))
    try:
        with pytest.raises(ConfigurationError, match="standalone Redis"):
            AsyncWriteBehind(AsyncCache(backend))
        with pytest.raises(ConfigurationError, match="standalone Redis"):
            AsyncWriteBehind(AsyncCache(l1=MemoryStore(10)))
    finally:
        await backend.close()


# -- backpressure ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_full_queue_raises_and_stores_nothing(cache: AsyncCache, names: dict[str, str]) -> None:
    wb = AsyncWriteBehind(
        cache, WriteBehindSettings(queue=names["queue"], max_queue_length=5, when_full=WhenFull.RAISE)
    )
    for i in range(5):
        await wb.write_behind(f"item:{i}", {"qty": i})
    with pytest.raises(WriteQueueFullError) as info:
        await wb.write_behind("item:5", {"qty": 5})
    assert (info.value.queue, info.value.length, info.value.limit, info.value.waited) == (names["queue"], 5, 5, 0.0)
    assert await cache.get("item:5") is NO_VALUE  # not stored: not acknowledged
    assert await wb.queue_length() == 5
    assert (wb.stats.writes, wb.stats.full_rejections, wb.stats.full_waits) == (5, 1, 0)


@pytest.mark.anyio
async def test_a_full_queue_waits_within_max_wait_then_raises(cache: AsyncCache, names: dict[str, str]) -> None:
    wb = AsyncWriteBehind(cache, WriteBehindSettings(queue=names["queue"], max_queue_length=2, max_wait=0.05))
    await wb.write_behind("item:1", {"qty": 1})
    await wb.write_behind("item:2", {"qty": 2})
    with pytest.raises(WriteQueueFullError) as info:
        await wb.write_behind("item:3", {"qty": 3})
    assert info.value.waited > 0
    assert wb.stats.full_waits >= 1
    assert wb.stats.full_rejections == 1


@pytest.mark.anyio
async def test_a_waiting_write_goes_through_once_the_flusher_makes_room(
    cache: AsyncCache, names: dict[str, str], flusher: AsyncFlusher, pg_primary_dsn: str, table: str
) -> None:
    wb = AsyncWriteBehind(cache, WriteBehindSettings(queue=names["queue"], max_queue_length=3, max_wait=30.0))
    for i in range(3):
        await wb.write_behind(f"item:{i}", {"qty": i})

    async def write() -> int:
        return await wb.write_behind("item:3", {"qty": 3})

    async def flush() -> int:
        while not wb.stats.full_waits:  # the write found the queue full first
            await async_sleep(0.005)
        return await flusher.run_once()

    version, flushed = await async_gather([write, flush])
    assert flushed == 3
    assert version > 0
    assert wb.stats.full_waits >= 1
    assert wb.stats.full_rejections == 0
    assert await flusher.drain()
    assert sorted(rows(pg_primary_dsn, table)) == ["item:0", "item:1", "item:2", "item:3"]


# -- the flusher -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_batch_is_coalesced_into_one_transaction(
    wb: AsyncWriteBehind, flusher: AsyncFlusher, writer: ScriptedWriter, pg_primary_dsn: str, table: str
) -> None:
    last: dict[str, int] = {}
    for i in range(100):
        last[f"item:{i % 10}"] = await wb.write_behind(f"item:{i % 10}", {"qty": i})
    assert await flusher.run_once() == 100
    assert writer.calls == 1
    assert flusher.stats.transactions == 1
    assert flusher.stats.coalesced == 90
    assert flusher.stats.rows_applied == 10
    assert flusher.stats.batch_sizes.count == 1
    assert flusher.stats.lags.count == 1
    assert flusher.stats.queue_length == 0
    stored = rows(pg_primary_dsn, table)
    assert {k: v for k, (v, _) in stored.items()} == last
    assert stored["item:9"][1] == {"qty": 99}
    assert await wb.queue_length() == 0


@pytest.mark.anyio
async def test_batches_are_bounded_by_size(
    wb: AsyncWriteBehind, writer: ScriptedWriter, durable_redis_url: str, names: dict[str, str]
) -> None:
    for i in range(25):
        await wb.write_behind(f"item:{i}", {"qty": i})
    flusher = AsyncFlusher(writer, durable_redis_url, settings=settings_for(names, batch_size=10))
    try:
        assert await flusher.drain()
    finally:
        await flusher.aclose()
    assert [len(b) for b in writer.batches] == [10, 10, 5]
    assert flusher.stats.transactions == 3


@pytest.mark.anyio
async def test_an_older_version_never_replaces_a_newer_one(
    writer: ScriptedWriter, pg_primary_dsn: str, table: str
) -> None:
    def record(version: int, qty: int) -> WriteRecord:
        payload = f'{{"qty": {qty}}}'.encode()
        return WriteRecord("item:1", "", version, {"qty": qty}, payload, "json", f"{version}-0", 0.0)

    assert await writer.write_batch([record(20, 2)]) == 1
    assert await writer.write_batch([record(10, 1)]) == 0  # older: skipped
    assert await writer.write_batch([record(20, 2)]) == 0  # the same again: a no-op
    assert rows(pg_primary_dsn, table) == {"item:1": (20, {"qty": 2})}
    assert await writer.write_batch([record(30, 3)]) == 1
    assert rows(pg_primary_dsn, table) == {"item:1": (30, {"qty": 3})}


@pytest.mark.anyio
async def test_a_crash_after_commit_rewrites_the_batch_as_a_no_op(
    wb: AsyncWriteBehind,
    writer: ScriptedWriter,
    durable_redis_url: str,
    names: dict[str, str],
    pg_primary_dsn: str,
    table: str,
) -> None:
    for i in range(20):
        await wb.write_behind(f"item:{i % 5}", {"qty": i})
    writer.crash_after = True
    crashed = AsyncFlusher(writer, durable_redis_url, settings=settings_for(names))
    with pytest.raises(Crash):
        await crashed.run_once()
    await crashed.aclose()
    committed = rows(pg_primary_dsn, table)
    assert len(committed) == 5  # committed, but never acknowledged:
    assert await wb.queue_length() == 20
    assert await wb.queue.pending(FAST.group) == 20

    writer.crash_after = False
    restarted = AsyncFlusher(writer, durable_redis_url, settings=settings_for(names))  # same consumer name
    try:
        assert await restarted.drain()
    finally:
        await restarted.aclose()
    assert restarted.stats.reclaimed == 0  # its own pending records, read back at start
    assert restarted.stats.rows_applied == 0
    assert restarted.stats.rows_skipped == 5
    assert rows(pg_primary_dsn, table) == committed
    assert await wb.queue.pending(FAST.group) == 0


@pytest.mark.anyio
async def test_a_dead_flushers_records_are_claimed_by_another(
    wb: AsyncWriteBehind,
    writer: ScriptedWriter,
    durable_redis_url: str,
    names: dict[str, str],
    pg_primary_dsn: str,
    table: str,
) -> None:
    for i in range(10):
        await wb.write_behind(f"item:{i}", {"qty": i})
    writer.crash_before = True
    dead = AsyncFlusher(writer, durable_redis_url, settings=settings_for(names, consumer="dead-one"))
    with pytest.raises(Crash):
        await dead.run_once()
    await dead.aclose()
    assert rows(pg_primary_dsn, table) == {}
    assert await wb.queue.pending(FAST.group) == 10

    writer.crash_before = False
    other = AsyncFlusher(writer, durable_redis_url, settings=settings_for(names, consumer="other", claim_idle=0.001))
    try:
        assert await other.drain()
    finally:
        await other.aclose()
    assert other.stats.reclaimed == 10
    assert len(rows(pg_primary_dsn, table)) == 10
    assert await wb.queue.pending(FAST.group) == 0


@pytest.mark.anyio
async def test_transient_failures_are_retried_until_the_commit(
    wb: AsyncWriteBehind, flusher: AsyncFlusher, writer: ScriptedWriter, pg_primary_dsn: str, table: str
) -> None:
    for i in range(5):
        await wb.write_behind(f"item:{i}", {"qty": i})
    writer.transient_failures = 3
    assert await flusher.run_once() == 5
    assert writer.calls == 4
    assert (flusher.stats.retries, flusher.stats.transient_failures, flusher.stats.transactions) == (3, 3, 1)
    assert flusher.stats.dead_letters == 0
    assert len(rows(pg_primary_dsn, table)) == 5


class DiesAfterAnswering(psycopg.AsyncConnection[Any]):
    """A connection whose server goes away right after answering a statement inside a
    transaction block, once ``armed``: what a loaded client sees when the primary stops
    (fast shutdown ends every session idle in a transaction) just after the batch's
    statement ran, the FATAL and the closed socket read together with the answer."""

    armed = False
    dsn = ""

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        cur = await super().execute(query, params, **kwargs)
        cls = type(self)
        if cls.armed and self.info.transaction_status is psycopg.pq.TransactionStatus.INTRANS:
            cls.armed = False
            pid = self.info.backend_pid
            with psycopg.connect(cls.dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                for _ in range(10_000):  # until the session is gone
                    if admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is None:
                        break
            for _ in range(100):  # read the FATAL and the end of the stream, as libpq may with the answer
                try:
                    self.pgconn.consume_input()
                except psycopg.Error:
                    break
        return cur


@pytest.mark.anyio
async def test_a_batch_whose_connection_broke_before_commit_is_written_again(
    wb: AsyncWriteBehind, durable_redis_url: str, names: dict[str, str], pg_primary_dsn: str, table: str
) -> None:
    """psycopg leaves a transaction block whose connection broke inside it without COMMIT
    and without an error. The writer must not report that batch as written: the flusher
    would acknowledge records the database never committed (acknowledged writes lost
    when the primary stops). It is a transient failure: retried, then committed."""
    DiesAfterAnswering.dsn = pg_primary_dsn

    async def connect() -> psycopg.AsyncConnection[Any]:
        return await DiesAfterAnswering.connect(pg_primary_dsn, autocommit=True)

    inner = AsyncPostgresWriter(table=table, connect=connect)
    flusher = AsyncFlusher(inner, durable_redis_url, settings=settings_for(names))
    try:
        await flusher.start()  # the start check's statement runs on an unarmed connection
        await wb.write_behind("item:1", {"qty": 1})
        DiesAfterAnswering.armed = True
        assert await flusher.drain(timeout=30.0)
    finally:
        DiesAfterAnswering.armed = False
        await flusher.aclose()
        await inner.aclose()
    stored = rows(pg_primary_dsn, table)
    assert list(stored) == ["item:1"] and stored["item:1"][1] == {"qty": 1}
    assert flusher.stats.transient_failures == 1 and flusher.stats.transactions == 1
    assert flusher.stats.dead_letters == 0


@pytest.mark.anyio
async def test_a_stop_during_a_retry_leaves_the_batch_pending(
    wb: AsyncWriteBehind, writer: ScriptedWriter, durable_redis_url: str, names: dict[str, str]
) -> None:
    await wb.write_behind("item:1", {"qty": 1})
    writer.transient_failures = 1
    flusher = AsyncFlusher(writer, durable_redis_url, settings=settings_for(names, retry_base=30.0, retry_cap=30.0))
    flusher.stop()  # already asked to stop: the 15-30 s backoff is not waited out
    try:
        assert await flusher.run_once() == 1
    finally:
        await flusher.aclose()
    assert flusher.stats.transactions == 0
    assert await wb.queue.pending(FAST.group) == 1


@pytest.mark.anyio
async def test_a_row_violating_a_constraint_is_dead_lettered_and_the_rest_written(
    cache: AsyncCache, wb: AsyncWriteBehind, flusher: AsyncFlusher, pg_primary_dsn: str, table: str
) -> None:
    bad_version = 0
    for i in range(20):
        version = await wb.write_behind(f"item:{i}", {"qty": -1 if i == 13 else i})
        if i == 13:
            bad_version = version
    assert await flusher.drain()
    stored = rows(pg_primary_dsn, table)
    assert sorted(stored) == sorted(f"item:{i}" for i in range(20) if i != 13)
    (dead,) = await wb.queue.dead_letters()
    assert (dead.key, dead.version, dead.error_type, dead.attempts) == ("item:13", bad_version, "CheckViolation", 2)
    assert f"{table}_qty_not_negative" in dead.error
    assert dead.consumer == "flusher-a"
    assert flusher.stats.dead_letters == 1
    assert flusher.stats.splits >= 1
    assert flusher.stats.rows_applied == 19
    assert await cache.get("item:13") is NO_VALUE  # the refused value is no longer served
    assert await cache.get("item:12") == {"qty": 12}
    assert await wb.queue_length() == 0
    assert await wb.queue.dead_letter_count() == 1


@pytest.mark.anyio
async def test_dead_letters_can_be_requeued_once_the_cause_is_fixed(
    wb: AsyncWriteBehind, flusher: AsyncFlusher, pg_primary_dsn: str, table: str
) -> None:
    await wb.write_behind("item:1", {"qty": -5})
    assert await flusher.drain()
    (dead,) = await wb.queue.dead_letters()
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_qty_not_negative")
    assert await wb.queue.requeue_dead_letters([dead.id, "1-1"]) == 1
    assert await flusher.drain()
    assert rows(pg_primary_dsn, table) == {"item:1": (dead.version, {"qty": -5})}
    assert await wb.queue.dead_letter_count() == 0


@pytest.mark.anyio
async def test_records_that_are_not_writes_are_dead_lettered_and_the_rest_written(
    wb: AsyncWriteBehind, flusher: AsyncFlusher, pg_primary_dsn: str, table: str
) -> None:
    client = wb.queue.client
    await wb.write_behind("item:1", {"qty": 1})
    await client.xadd(wb.keys.stream, {"something": "else"})
    await client.xadd(wb.keys.stream, {"k": "item:2", "v": "5", "e": b"not an envelope"})
    await wb.write_behind("item:3", {"qty": 3})
    assert await flusher.drain()
    assert sorted(rows(pg_primary_dsn, table)) == ["item:1", "item:3"]
    dead = await wb.queue.dead_letters()
    assert [d.error_type for d in dead] == ["malformed", "undecodable"]
    assert "missing field" in dead[0].error
    assert "not a readable cache entry" in dead[1].error
    assert flusher.stats.dead_letters == 2


@pytest.mark.anyio
async def test_idle_consumers_without_work_are_removed_from_the_group(
    wb: AsyncWriteBehind, writer: ScriptedWriter, durable_redis_url: str, names: dict[str, str]
) -> None:
    await wb.queue.ensure_group(FAST.group)
    await wb.queue.client.xgroup_createconsumer(wb.keys.stream, FAST.group, "gone-flusher")
    flusher = AsyncFlusher(writer, durable_redis_url, settings=settings_for(names, forget_consumers_after=0.001))
    try:
        await flusher.run_once()
        names_left = [c.name for c in await wb.queue.consumers(FAST.group)]
    finally:
        await flusher.aclose()
    assert "gone-flusher" not in names_left
    assert "flusher-a" in names_left


@pytest.mark.anyio
async def test_records_queued_before_any_flusher_existed_are_flushed(
    wb: AsyncWriteBehind, flusher: AsyncFlusher, pg_primary_dsn: str, table: str
) -> None:
    await wb.write_behind("item:1", {"qty": 1})  # no group yet: it is created from the start
    assert await flusher.drain()
    assert list(rows(pg_primary_dsn, table)) == ["item:1"]


@pytest.mark.anyio
async def test_run_returns_after_stop(wb: AsyncWriteBehind, flusher: AsyncFlusher) -> None:
    await wb.write_behind("item:1", {"qty": 1})

    async def run() -> None:
        await flusher.run()

    async def stop_when_flushed() -> None:
        while flusher.stats.transactions == 0:
            await async_sleep(0.01)
        flusher.stop()

    await async_gather([run, stop_when_flushed])
    assert flusher.stats.transactions == 1
    assert flusher.stopping


# -- the PostgreSQL writer -------------------------------------------------------------------


@pytest.mark.anyio
async def test_postgres_writer_fills_columns_from_a_json_object(
    cache: AsyncCache, names: dict[str, str], pg_primary_dsn: str, durable_redis_url: str
) -> None:
    table = names["table"] + "_people"
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id int PRIMARY KEY, version bigint NOT NULL, name text NOT NULL, age int, "
            "born date, updated_at timestamptz GENERATED ALWAYS AS ('2000-01-01'::timestamptz) STORED)"
        )
    writer = AsyncPostgresWriter(
        pg_primary_dsn, table=table, key_column="id", value_column=None, key_from=lambda k: int(k.split(":")[1])
    )
    wb = AsyncWriteBehind(cache, WriteBehindSettings(queue=names["queue"]))
    flusher = AsyncFlusher(writer, durable_redis_url, settings=settings_for(names))
    try:
        await wb.write_behind("person:1", {"name": "Ada", "age": 36, "born": "1815-12-10"})
        await wb.write_behind("person:2", {"name": "Bob"})
        await wb.write_behind("person:3", {"name": "Cy", "age": "not a number"})
        await wb.write_behind("person:x", {"name": "no id"})
        assert await flusher.drain()
        with psycopg.connect(pg_primary_dsn) as conn:
            got = conn.execute(f"SELECT id, name, age, born::text FROM {table} ORDER BY id").fetchall()
        assert got == [(1, "Ada", 36, "1815-12-10"), (2, "Bob", None, None)]
        dead = {d.key: d.error_type for d in await wb.queue.dead_letters()}
        assert dead == {"person:3": "InvalidTextRepresentation", "person:x": "RecordRejected"}
    finally:
        await flusher.aclose()
        await writer.aclose()
        with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}")


@pytest.mark.anyio
async def test_postgres_writer_reports_a_missing_table_as_a_configuration_error(pg_primary_dsn: str) -> None:
    writer = AsyncPostgresWriter(pg_primary_dsn, table="no_such_table_here")
    try:
        with pytest.raises(ConfigurationError, match='relation "no_such_table_here" does not exist'):
            await writer.write_batch([WriteRecord("k", "", 1, 1, b"1", "json", "1-0", 0.0)])
        with pytest.raises(ConfigurationError, match="no_such_table_here"):
            await writer.check()
    finally:
        await writer.aclose()
    with pytest.raises(ConfigurationError):
        AsyncPostgresWriter(table="t")
    with pytest.raises(ConfigurationError):
        AsyncPostgresWriter(pg_primary_dsn, table="t", value_column="value", columns=["a"])
    with pytest.raises(ConfigurationError, match=r"table= .* counter_column="):
        AsyncPostgresWriter(pg_primary_dsn, table=None)


@pytest.mark.anyio
async def test_a_writer_that_cannot_classify_its_error_is_retried_not_dead_lettered(
    wb: AsyncWriteBehind,
    writer: ScriptedWriter,
    durable_redis_url: str,
    names: dict[str, str],
    pg_primary_dsn: str,
    table: str,
) -> None:
    class Confused(ScriptedWriter):
        def failure_kind(self, exc: Exception) -> FailureKind:
            raise RuntimeError("no idea")

    confused = Confused(writer.inner)
    confused.transient_failures = 2
    await wb.write_behind("item:1", {"qty": 1})
    flusher = AsyncFlusher(confused, durable_redis_url, settings=settings_for(names))
    try:
        assert await flusher.drain()
    finally:
        await flusher.aclose()
    assert (flusher.stats.retries, flusher.stats.dead_letters, flusher.stats.transactions) == (2, 0, 1)
    assert list(rows(pg_primary_dsn, table)) == ["item:1"]


# -- counters ----------------------------------------------------------------------------------


def counts(dsn: str, table: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(f"SELECT key, views FROM {table} WHERE views <> 0").fetchall())


@pytest.mark.anyio
async def test_increments_add_up_in_the_queue_and_are_applied_once(
    wb: AsyncWriteBehind, flusher: AsyncFlusher, pg_primary_dsn: str, table: str
) -> None:
    """Issue 12, defect 8: with upserts, concurrent read-modify-writes lost increments."""

    async def client(n: int) -> None:
        for i in range(50):
            await wb.increment(f"views:{(n + i) % 5}", 1 + i % 2)

    await async_gather([lambda n=n: client(n) for n in range(8)])
    assert wb.stats.increments == 400
    assert await wb.queue.pending_sums() == 5  # one running sum per key, however many increments
    assert await wb.queue_length() == 1  # one seal request
    assert await flusher.drain()
    assert counts(pg_primary_dsn, table) == {f"views:{k}": 120 for k in range(5)}
    assert flusher.stats.sums_applied >= 1
    assert flusher.stats.sums_duplicates == 0
    assert await wb.queue_length() == 0
    assert await wb.queue.pending_sums() == 0
    await wb.increment("views:0", -20)  # a decrement is a delta too
    assert await flusher.drain()
    assert counts(pg_primary_dsn, table)["views:0"] == 100


@pytest.mark.anyio
async def test_values_and_counts_share_a_row_and_keep_apart(
    wb: AsyncWriteBehind, flusher: AsyncFlusher, pg_primary_dsn: str, table: str
) -> None:
    await wb.increment("item:1", 3)
    version = await wb.write_behind("item:1", {"qty": 4})
    await wb.increment("item:1", 2)
    assert await flusher.drain()
    assert rows(pg_primary_dsn, table)["item:1"] == (version, {"qty": 4})
    assert counts(pg_primary_dsn, table) == {"item:1": 5}


@pytest.mark.anyio
async def test_a_flusher_crash_after_the_commit_never_counts_twice(
    wb: AsyncWriteBehind,
    writer: ScriptedWriter,
    durable_redis_url: str,
    names: dict[str, str],
    pg_primary_dsn: str,
    table: str,
) -> None:
    for i in range(30):
        await wb.increment(f"views:{i % 3}")
    crashed = AsyncFlusher(writer, durable_redis_url, settings=settings_for(names))
    writer.crash_after = True

    async def run_until_the_crash() -> None:
        while True:  # the seal request first, then the sums record
            await crashed.run_once()

    try:
        with pytest.raises(Crash):
            await run_until_the_crash()
    finally:
        await crashed.aclose()
    assert counts(pg_primary_dsn, table) == {"views:0": 10, "views:1": 10, "views:2": 10}  # committed...
    writer.crash_after = False
    restarted = AsyncFlusher(writer, durable_redis_url, settings=settings_for(names))  # ...and redelivered
    try:
        assert await restarted.drain()
    finally:
        await restarted.aclose()
    assert counts(pg_primary_dsn, table) == {"views:0": 10, "views:1": 10, "views:2": 10}
    assert (restarted.stats.sums_applied, restarted.stats.sums_duplicates) == (0, 1)
    assert await wb.queue_length() == 0


@pytest.mark.anyio
async def test_two_flushers_racing_on_one_sums_record_count_it_once(
    wb: AsyncWriteBehind, writer: ScriptedWriter, names: dict[str, str], pg_primary_dsn: str, table: str
) -> None:
    for _ in range(7):
        await wb.increment("views:race")
    assert await wb.queue.seal()
    entries = await wb.queue.client.xrange(wb.keys.stream)
    (sums,) = [(i.decode(), f) for i, f in entries if f.get(b"o") == b"sum"]
    record = CounterRecord(sums[0], {"views:race": 7})
    other = AsyncPostgresWriter(pg_primary_dsn, table=table, counter_column="views")
    try:
        results = await async_gather(
            [
                lambda: writer.inner.apply_increments(wb.keys.stream, [record]),
                lambda: other.apply_increments(wb.keys.stream, [record]),
            ]
        )
    finally:
        await other.aclose()
    assert sorted((r.applied, r.duplicates) for r in results) == [(0, 1), (1, 0)]
    assert counts(pg_primary_dsn, table) == {"views:race": 7}


@pytest.mark.anyio
async def test_a_refused_delta_is_dead_lettered_the_rest_applied_and_it_can_be_requeued(
    wb: AsyncWriteBehind, flusher: AsyncFlusher, pg_primary_dsn: str, table: str
) -> None:
    await wb.increment("views:ok", 5)
    await wb.increment("views:capped", 999)
    await wb.increment("views:capped", 2)  # past the CHECK (views <= 1000)
    assert await flusher.drain()
    assert counts(pg_primary_dsn, table) == {"views:ok": 5}
    (dead,) = await wb.queue.dead_letters()
    assert (dead.key, dead.delta, dead.error_type) == ("views:capped", 1001, "CheckViolation")
    assert f"{table}_views_capped" in dead.error
    assert flusher.stats.increments_refused == 1
    assert await wb.queue_length() == 0
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_views_capped")
    assert await wb.queue.requeue_dead_letters([dead.id]) == 1
    assert await flusher.drain()
    assert counts(pg_primary_dsn, table) == {"views:ok": 5, "views:capped": 1001}


@pytest.mark.anyio
async def test_increments_for_a_writer_without_counters_stay_queued_and_stop_the_flusher(
    wb: AsyncWriteBehind, durable_redis_url: str, names: dict[str, str], pg_primary_dsn: str, table: str
) -> None:
    await wb.increment("views:1")
    plain = AsyncPostgresWriter(pg_primary_dsn, table=table)
    flusher = AsyncFlusher(plain, durable_redis_url, settings=settings_for(names))
    try:
        with pytest.raises(ConfigurationError, match="--counter-column"):
            await flusher.run()
    finally:
        await flusher.aclose()
        await plain.aclose()
    assert await wb.queue_length() == 1  # the sums record, still queued
    assert counts(pg_primary_dsn, table) == {}


@pytest.mark.anyio
async def test_applied_ids_are_pruned_only_when_no_redelivery_can_need_them(
    wb: AsyncWriteBehind, writer: ScriptedWriter, pg_primary_dsn: str, table: str
) -> None:
    inner = writer.inner
    for _ in range(3):
        await wb.increment("views:p", 1)
        (sealed,) = await wb.queue.seal()
        await inner.apply_increments(wb.keys.stream, [CounterRecord(sealed, {"views:p": 1})])
    first, *_ = await wb.queue.client.xrange(wb.keys.stream)
    assert await inner.prune_applied(wb.keys.stream, 0) == 0
    assert await inner.prune_applied(wb.keys.stream, 2**62) == 3
    assert counts(pg_primary_dsn, table) == {"views:p": 3}
    assert first
