"""OpenTelemetry spans (issue 16), checked with the SDK's in-memory exporter against the
stack's servers: exact span names, attributes and parent-child relations.

The acceptance read: a cache miss whose loader reads through the replica router; the
one replica is chosen while it looks fresh enough, its guard finds it behind (it has
fallen further behind since it was routed: the router's clock moves on between routing
and the guard), and the read falls back to the primary. Tracing off costs nothing: no
span is made and OpenTelemetry is never asked (the switch is checked first).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from unittest.mock import ANY

import httpx
import psycopg
import pytest

import readscale.tracing
from readscale import BoundedStaleness, RedisSettings, causal_context
from readscale._async.backends.memcached import AsyncMemcachedBackend
from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache.cache import AsyncCache
from readscale._async.replicas.router import AsyncReplicaRouter
from readscale._async.writebehind.flusher import AsyncFlusher
from readscale._async.writebehind.postgres import AsyncPostgresWriter
from readscale._async.writebehind.producer import AsyncWriteBehind
from readscale._core.cache.policy import CachePolicy, Tier
from readscale._core.writebehind.settings import FlusherSettings, WriteBehindSettings
from readscale.errors import InvalidKeyError, PurgeError
from readscale.http.purge import AsyncVarnishPurger, RetryPolicy
from readscale.replicas import use_mode
from readscale.stack import Stack
from tests.replica_helpers import restore_replicas, router_settings, wait_until

pytestmark = pytest.mark.stack

if TYPE_CHECKING := False:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    readscale.tracing.enable(provider)
    try:
        yield exporter
    finally:
        readscale.tracing.disable()
        provider.shutdown()


def tree(finished: tuple[ReadableSpan, ...]) -> list[tuple[int, str, dict[str, Any]]]:
    """The spans depth first, each as (depth, name, attributes), children in start order."""
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    ids = {s.context.span_id for s in finished if s.context is not None}
    for s in finished:
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(s)
    out: list[tuple[int, str, dict[str, Any]]] = []

    def walk(parent: int | None, depth: int) -> None:
        for s in sorted(by_parent.get(parent, []), key=lambda s: s.start_time or 0):
            out.append((depth, s.name, dict(s.attributes or {})))
            assert s.context is not None
            walk(s.context.span_id, depth + 1)

    walk(None, 0)
    return out


class Clock:
    """The router's monotonic clock, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_a_miss_read_from_a_lagging_replica_refused_by_its_guard_falls_back_to_the_primary(
    pg_stack: Stack, redis_url: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = f"traced_{uuid.uuid4().hex[:8]}"
    replica = pg_stack.replicas[0]
    clock = Clock(1000.0)
    settings = router_settings(pg_stack, replicas={replica.name: replica.dsn}, wait_budget=0.05, poll_interval=3600.0)
    restore_replicas(pg_stack)
    cache = AsyncCache(
        AsyncRedisBackend(RedisSettings(url=redis_url)),
        policy=CachePolicy(name="traced", ttl=60.0, tiers=frozenset({Tier.L2})),
        prefix=f"traced{uuid.uuid4().hex[:8]}:",
        name="traced",
    )
    try:
        async with AsyncReplicaRouter(settings, clock=clock) as router:
            async with router.write() as conn:
                await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text)")
                await conn.execute(f"INSERT INTO {table} VALUES (1, 'v1')")
            wait_until(lambda: pg_stack.replay_lag_bytes(replica.name) == 0, what="the replica to replay the table")
            clock.now += 1.0
            await router.poll()  # the replica holds everything the primary had at 1001
            pg_stack.pause_replay(replica.name)
            async with router.write() as conn:
                await conn.execute(f"UPDATE {table} SET name = 'v2' WHERE id = 1")
            clock.now += 1.0
            await router.poll()  # the primary moved on at 1002: the replica is behind since 1001
            clock.now += 0.5  # routing sees it 1.5 s behind: within the read's bound of 2 s

            observer: Any = router._observer
            routed = observer.refresh_if_unsure

            def later(*args: Any) -> None:  # between routing and the guard, 10 s pass
                routed(*args)
                clock.now += 10.0

            monkeypatch.setattr(observer, "refresh_if_unsure", later)

            async def load() -> str:
                row = await router.fetch_one(f"SELECT name FROM {table} WHERE id = 1")
                assert row is not None
                return str(row[0])

            spans.clear()
            with causal_context(), use_mode(BoundedStaleness(2.0)):
                value = await cache.get_or_load("product:1", load)
            assert value == "v2"
            stats = router.stats()
            assert (stats.guard_misses, stats.primary_reads, stats.replica_reads) == (1, 1, 0)
    finally:
        pg_stack.resume_replay(replica.name)
        restore_replicas(pg_stack)
        async with await psycopg.AsyncConnection.connect(pg_stack.primary.dsn, autocommit=True) as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await cache.aclose()

    primary, node = pg_stack.primary, replica
    postgres = {"db.system.name": "postgresql"}
    assert tree(spans.get_finished_spans()) == [
        (0, "readscale.cache.get_or_load", {
            "readscale.cache.name": "traced",
            "readscale.cache.key": "product:1",
            "db.system.name": "redis",
            "readscale.cache.result": "miss",
            "readscale.cache.tier": "l2",
        }),
        (1, "readscale.cache.lease", {"readscale.cache.lease.attempt": 1, "readscale.cache.lease.result": "won"}),
        (1, "readscale.cache.load", {"readscale.cache.load.reason": "lease_won", "readscale.cache.fill_stored": True}),
        (2, "readscale.replicas.read", {
            **postgres,
            "readscale.replicas.mode": "BoundedStaleness",
            "readscale.replicas.fallback_reason": "no replica is fresh enough within the wait budget",
            "readscale.replicas.node": "primary",
            "readscale.replicas.fallback": True,
        }),
        (3, "readscale.replicas.attempt", {
            **postgres,
            "readscale.replicas.node": node.name,
            "server.address": "127.0.0.1",
            "server.port": node.port,
            "db.namespace": "postgres",
            "readscale.replicas.guard": "behind",
        }),
        (3, "readscale.replicas.attempt", {
            **postgres,
            "readscale.replicas.node": "primary",
            "server.address": "127.0.0.1",
            "server.port": primary.port,
            "db.namespace": "postgres",
        }),
    ]  # fmt: skip


def test_without_opentelemetry_installed_readscale_works_and_enable_names_the_extra() -> None:
    # OpenTelemetry blocked (as if not installed): a cache read and a fill go through
    # every traced place of the cache, which check the switch and touch nothing else, and
    # enable() names the extra to install.
    code = (
        BLOCK
        + """
from readscale import Cache, CachePolicy, MemoryStore
from readscale._shared.tracing import TRACING
from readscale.backends import MemoryBackend
import readscale.tracing
assert TRACING.tracer is None
cache = Cache(MemoryBackend(), l1=MemoryStore(10), policy=CachePolicy(name="p", ttl=60.0))
assert cache.get_or_load("k", lambda: 1) == 1
assert cache.get_or_load("k", lambda: 2) == 1
assert cache.get("k") == 1
try:
    readscale.tracing.enable()
except ImportError as exc:
    print(exc)
"""
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "readscale tracing needs opentelemetry-api: pip install 'readscale[otel]'"


BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


@pytest.mark.anyio
async def test_the_memcached_client_traces_each_round_trip_as_a_database_client_span(
    memcached_address: str, spans: InMemorySpanExporter
) -> None:
    backend = AsyncMemcachedBackend(memcached_address)
    prefix = f"traced{uuid.uuid4().hex[:8]}:"
    try:
        await backend.set(f"{prefix}a", b"1", 60.0)
        await backend.set(f"{prefix}b", b"22", 60.0)
        spans.clear()
        assert await backend.get(f"{prefix}a") == b"1"
        assert await backend.get_many([f"{prefix}a", f"{prefix}b", f"{prefix}c"]) == [b"1", b"22", None]
        with pytest.raises(InvalidKeyError):
            await backend.get("a key with spaces")
    finally:
        await backend.close()
    host, port = memcached_address.rsplit(":", 1)
    server = {"db.system.name": "memcached", "server.address": host, "server.port": int(port)}
    assert tree(spans.get_finished_spans()) == [
        (0, "mg", {**server, "db.operation.name": "mg"}),
        (0, "BATCH mg", {**server, "db.operation.name": "BATCH mg", "db.operation.batch.size": 3}),
    ]  # a key refused before sending makes no round trip, and no span


@pytest.mark.anyio
async def test_a_purge_span_covers_its_retries(spans: InMemorySpanExporter) -> None:
    replies = iter([503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(replies), request=request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    purger = AsyncVarnishPurger("http://edge.test:6081", client=client, retry=RetryPolicy(attempts=3, base=0.0))
    await purger.purge_tags(["product:1"])
    failing = AsyncVarnishPurger(
        "http://edge.test:6081",
        client=httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(403, request=r))),
        retry=RetryPolicy(attempts=3, base=0.0),
        backlog_limit=None,  # no backlog to keep the purge for a replay: the failure is raised
    )
    with pytest.raises(PurgeError):
        await failing.purge_urls(["http://shop.test/p/1"])
    await client.aclose()
    edge = {
        "http.request.method": "PURGE",
        "server.address": "edge.test",
        "server.port": 6081,
        "readscale.purge.vendor": "varnish",
    }
    finished = spans.get_finished_spans()
    assert tree(finished) == [
        (0, "readscale.purge", {**edge, "readscale.purge.attempts": 2, "http.response.status_code": 200}),
        (0, "readscale.purge", {
            **edge, "readscale.purge.attempts": 1, "http.response.status_code": 403, "error.type": "PurgeError"
        }),
    ]  # fmt: skip
    assert [s.status.status_code.name for s in finished] == ["UNSET", "ERROR"]


@pytest.mark.anyio
async def test_write_behind_flushes_are_spans_with_their_writes_and_dead_letters(
    durable_redis_url: str, pg_primary_dsn: str, spans: InMemorySpanExporter
) -> None:
    tag = uuid.uuid4().hex[:10]
    table, queue, prefix = f"wb_{tag}", f"q{tag}", f"t{tag}:"
    async with await psycopg.AsyncConnection.connect(pg_primary_dsn, autocommit=True) as conn:
        await conn.execute(
            f"CREATE TABLE {table} (key text PRIMARY KEY, version bigint NOT NULL DEFAULT 0, value jsonb, "
            f"CONSTRAINT {table}_qty CHECK (coalesce((value->>'qty')::int, 0) >= 0))"
        )
    cache = AsyncCache(AsyncRedisBackend(RedisSettings(url=durable_redis_url)), prefix=prefix)
    writer = AsyncPostgresWriter(pg_primary_dsn, table=table)
    settings = FlusherSettings(
        queue=queue, prefix=prefix, block=0.05, batch_wait=0.01, retry_base=0.005, retry_cap=0.02, max_attempts=1,
        consumer="flusher-t",
    )  # fmt: skip
    flusher = AsyncFlusher(writer, durable_redis_url, settings=settings)
    try:
        wb = AsyncWriteBehind(cache, WriteBehindSettings(queue=queue))
        for i in range(4):
            await wb.write_behind(f"item:{i}", {"qty": -1 if i == 2 else i})
        spans.clear()
        assert await flusher.drain()
    finally:
        await flusher.aclose()
        await writer.aclose()
        await cache.aclose()
        async with await psycopg.AsyncConnection.connect(pg_primary_dsn, autocommit=True) as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
    assert flusher.stats.dead_letters == 1
    finished = spans.get_finished_spans()
    shape = [(depth, name) for depth, name, _ in tree(finished)]
    assert shape == [
        (0, "readscale.writebehind.flush"),
        (1, "readscale.writebehind.write"),  # the 4 records: refused by the constraint
        (1, "readscale.writebehind.write"),  # the first half: written
        (1, "readscale.writebehind.write"),  # the second half: refused
        (1, "readscale.writebehind.write"),  # the bad record alone: refused, dead-lettered
        (1, "readscale.writebehind.write"),  # the record after it: written
    ]
    (flush,) = [s for s in finished if s.name == "readscale.writebehind.flush"]
    assert dict(flush.attributes or {}) == {
        "readscale.writebehind.consumer": "flusher-t",
        "readscale.writebehind.records": 4,
        "readscale.writebehind.superseded": 0,
    }
    in_order = sorted(finished, key=lambda s: s.start_time or 0)
    writes = [dict(s.attributes or {}) for s in in_order if s.name != flush.name]
    assert [w["db.operation.batch.size"] for w in writes] == [4, 2, 2, 1, 1]
    assert [w.get("error.type") for w in writes] == ["CheckViolation", None, "CheckViolation", "CheckViolation", None]
    (dead,) = flush.events
    assert (dead.name, dict(dead.attributes or {})) == ("readscale.writebehind.dead_letter", {
        "readscale.writebehind.key": "item:2",
        "readscale.writebehind.version": ANY,
        "readscale.writebehind.attempts": 1,
        "error.type": "CheckViolation",
    })  # fmt: skip
