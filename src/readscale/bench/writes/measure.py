"""What ``readscale bench writes`` measures: write latency per contender (async, then
sync), database transactions per write, fsyncs shared by concurrent durable writers, and
the crash soak per mode (see the package's docstring)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from readscale.bench.harness import BenchReport
from readscale.bench.writes._flusher import DATABASE, PREFIX, QUEUE, FlusherProcess
from readscale.report.stats import percentile

KEYS = 10_000


def _doc(i: int) -> dict[str, Any]:
    return {"id": i, "name": "A reasonably named product", "price": 12.5, "tags": ["a", "b"], "data": "x" * 380}


def _xact_commit(admin_dsn: str) -> int:
    """Transactions committed in the bench's database so far, read from another database
    (so the reading itself is not counted)."""
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_stat_clear_snapshot()").fetchone()
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (DATABASE,)).fetchone()
    assert row is not None
    return int(row[0])


def _settled_xact_commit(admin_dsn: str) -> int:
    """``xact_commit`` once the counts of backends that just exited have arrived (a
    backend reports its counts lazily, at the latest when it exits)."""
    last = _xact_commit(admin_dsn)
    for _ in range(100):
        time.sleep(0.1)
        now = _xact_commit(admin_dsn)
        if now == last:
            return now
        last = now
    return last


async def bench_async(urls: dict[str, str], dsn: str, admin_dsn: str, calls: int, rounds: int, wb_writes: int,
                 quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """``urls``: ``aof`` (a Redis with AOF, switched between always and everysec) and
    ``volatile`` (no persistence)."""
    import psycopg
    from psycopg.types.json import Jsonb

    from readscale import RedisSettings
    from readscale._async.backends.redis import AsyncRedisBackend
    from readscale._async.cache.cache import AsyncCache
    from readscale._async.writebehind.producer import AsyncWriteBehind
    from readscale._core.cache.policy import CachePolicy, Tier
    from readscale._core.writebehind.settings import WriteBehindSettings

    rng = random.Random(7)
    policy = CachePolicy(name="bench", ttl=3600.0, jitter=0.0, early_refresh=0.0, tiers=frozenset({Tier.L2}))
    cache = AsyncCache(AsyncRedisBackend(RedisSettings(url=urls["aof"])), policy=policy, prefix=PREFIX)
    volatile_cache = AsyncCache(AsyncRedisBackend(RedisSettings(url=urls["volatile"])), policy=policy, prefix=PREFIX)

    def producer(mode: str, on: AsyncCache | None = None) -> AsyncWriteBehind:
        return AsyncWriteBehind(on or cache, WriteBehindSettings(queue=QUEUE, max_queue_length=0, mode=mode))

    writers = {"durable": producer("durable"), "fast": producer("fast"),
               "volatile": producer("volatile", volatile_cache)}  # fmt: skip
    fsync_of = {"durable": "always", "fast": "everysec"}
    admin = writers["durable"].queue.client
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    upsert = (
        "INSERT INTO bench_direct (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
    )

    async def direct_write(key: str, value: dict[str, Any]) -> dict[str, Any]:
        await conn.execute(upsert, (key, Jsonb(value)))
        return value

    def writebehind(mode: str) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
        async def write(key: str, value: dict[str, Any]) -> None:
            await writers[mode].write_behind(key, value)

        return write

    async def writethrough(key: str, value: dict[str, Any]) -> None:
        async def writer() -> dict[str, Any]:
            return await direct_write(key, value)

        await cache.write_through(key, writer)

    async def direct(key: str, value: dict[str, Any]) -> None:
        await direct_write(key, value)

    contenders: dict[str, Callable[[str, dict[str, Any]], Awaitable[None]]] = {
        "writebehind_durable": writebehind("durable"),
        "writebehind_fast": writebehind("fast"),
        "writebehind_volatile": writebehind("volatile"),
        "writethrough": writethrough,
        "direct": direct,
    }

    async def one_round(name: str) -> tuple[float, float]:
        fn = contenders[name]
        mode = name.removeprefix("writebehind_")
        if mode in fsync_of:  # switched once per round, outside the timed calls
            await admin.config_set("appendfsync", fsync_of[mode])
            await writers[mode].check()
        samples = []
        for _ in range(calls):
            i = rng.randrange(KEYS)
            started = time.perf_counter()
            await fn(f"item:{i}", _doc(i))
            samples.append(time.perf_counter() - started)
        return percentile(samples, 50) * 1000, percentile(samples, 99) * 1000

    out: dict[str, Any] = {}
    flushers = [FlusherProcess(urls["aof"], dsn, "volatile"), FlusherProcess(urls["volatile"], dsn, "volatile")]
    try:
        for name in contenders:  # warm-up: connections, prepared statements, the flusher's first batch
            await one_round(name)
        per: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        for r in range(rounds):
            progress(f"latency round {r + 1}/{rounds}")
            for name in contenders:
                per[name].append(await one_round(name))
        for name, values in per.items():
            out[f"p50_{name}"] = statistics.median(v[0] for v in values)
            out[f"p99_{name}"] = statistics.median(v[1] for v in values)
            out[f"rounds_{name}"] = [round(v[0], 3) for v in values]
        progress("draining the queues")
        await admin.config_set("appendfsync", "always")
        await _drain(writers["durable"])
        await _drain(writers["volatile"])
    finally:
        for flusher in flushers:
            flusher.stop()
    await conn.close()

    # Transactions per 1,000 writes, each phase with its backends started and stopped in it.
    progress(f"write-behind: {wb_writes} writes, counting database transactions")
    before = _settled_xact_commit(admin_dsn)
    flusher = FlusherProcess(urls["aof"], dsn)
    try:
        for _ in range(wb_writes):
            i = rng.randrange(KEYS)
            await writers["durable"].write_behind(f"item:{i}", _doc(i))
        await _drain(writers["durable"])
    finally:
        flusher.stop()
    out["xacts_writebehind"] = _settled_xact_commit(admin_dsn) - before

    direct_writes = 300 if quick else 1000
    progress(f"direct: {direct_writes} writes, counting database transactions")
    before = _settled_xact_commit(admin_dsn)
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    for _ in range(direct_writes):
        i = rng.randrange(KEYS)
        await direct_write(f"item:{i}", _doc(i))
    await conn.close()
    out["xacts_direct"] = _settled_xact_commit(admin_dsn) - before
    out["direct_writes"] = direct_writes
    await cache.aclose()
    await volatile_cache.aclose()
    return out


async def fsync_sharing(url: str, disk: Any, writes: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """Durable writes per second from 1 and from 8 concurrent writers, and acknowledged
    writes per fsync with 8 (``disk``: the shim's counters on this Redis)."""
    from readscale import RedisSettings
    from readscale._async.backends.redis import AsyncRedisBackend
    from readscale._async.cache.cache import AsyncCache
    from readscale._async.writebehind.producer import AsyncWriteBehind
    from readscale._core.cache.policy import CachePolicy, Tier
    from readscale._core.writebehind.settings import WriteBehindSettings

    policy = CachePolicy(name="bench", ttl=3600.0, jitter=0.0, early_refresh=0.0, tiers=frozenset({Tier.L2}))
    out: dict[str, Any] = {}
    for writers in (1, 8):
        progress(f"durable writes from {writers} concurrent writer(s)")
        caches = [AsyncCache(AsyncRedisBackend(RedisSettings(url=url)), policy=policy, prefix="share:")
                  for _ in range(writers)]  # fmt: skip
        producers = [AsyncWriteBehind(c, WriteBehindSettings(queue="share", max_queue_length=0)) for c in caches]
        for p in producers:
            await p.check()
        each = writes // writers
        before = disk.fsyncs()
        started = time.perf_counter()

        async def write(p: AsyncWriteBehind, n: int, count: int) -> None:
            for i in range(count):
                await p.write_behind(f"s{n}:{i}", _doc(i))

        await asyncio.gather(*(write(p, n, each) for n, p in enumerate(producers)))
        elapsed = time.perf_counter() - started
        fsyncs = disk.fsyncs() - before
        out[f"writes_per_s_{writers}"] = each * writers / elapsed
        out[f"writes_per_fsync_{writers}"] = each * writers / max(fsyncs, 1)
        for c in caches:
            await c.aclose()
    return out


def bench_sync(url: str, dsn: str, calls: int, rounds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """Durable write-behind and the direct upsert through the sync flavour (Django/Flask)."""
    import psycopg
    from psycopg.types.json import Jsonb

    from readscale import RedisSettings
    from readscale._core.cache.policy import CachePolicy, Tier
    from readscale._core.writebehind.settings import WriteBehindSettings
    from readscale._sync.backends.redis import RedisBackend
    from readscale._sync.cache.cache import Cache
    from readscale._sync.writebehind.producer import WriteBehind

    rng = random.Random(11)
    policy = CachePolicy(name="bench", ttl=3600.0, jitter=0.0, early_refresh=0.0, tiers=frozenset({Tier.L2}))
    cache = Cache(RedisBackend(RedisSettings(url=url)), policy=policy, prefix=PREFIX)
    wb = WriteBehind(cache, WriteBehindSettings(queue=QUEUE, max_queue_length=0))
    conn = psycopg.connect(dsn, autocommit=True)
    upsert = (
        "INSERT INTO bench_direct (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
    )

    def direct(key: str, value: dict[str, Any]) -> None:
        conn.execute(upsert, (key, Jsonb(value)))

    def writebehind(key: str, value: dict[str, Any]) -> None:
        wb.write_behind(key, value)

    contenders: dict[str, Callable[[str, dict[str, Any]], None]] = {
        "writebehind_durable": writebehind,
        "direct": direct,
    }

    def one_round(fn: Callable[[str, dict[str, Any]], None]) -> tuple[float, float]:
        samples = []
        for _ in range(calls):
            i = rng.randrange(KEYS)
            started = time.perf_counter()
            fn(f"item:{i}", _doc(i))
            samples.append(time.perf_counter() - started)
        return percentile(samples, 50) * 1000, percentile(samples, 99) * 1000

    out: dict[str, Any] = {}
    flusher = FlusherProcess(url, dsn)
    try:
        for fn in contenders.values():
            one_round(fn)
        per: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        for r in range(rounds):
            progress(f"sync latency round {r + 1}/{rounds}")
            for name, fn in contenders.items():
                per[name].append(one_round(fn))
        group = "readscale-flusher"
        deadline = time.monotonic() + 120
        while (wb.queue.length() or wb.queue.pending(group)) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        flusher.stop()
        conn.close()
        cache.close()
    for name, values in per.items():
        out[f"p50_{name}"] = statistics.median(v[0] for v in values)
        out[f"p99_{name}"] = statistics.median(v[1] for v in values)
        out[f"rounds_{name}"] = [round(v[0], 3) for v in values]
    return out


async def _drain(wb: Any, timeout: float = 120.0) -> None:
    from readscale._core.writebehind.settings import FlusherSettings

    group = FlusherSettings().group
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await wb.queue.length() == 0 and await wb.queue.pending(group) == 0:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the flusher did not drain the bench's queue")


#: The crash soak's plans: (name, plan arguments).
SOAKS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("durable", {"mode": "durable", "appendfsync": "always", "fsync_delay_ms": 50,
                 "redis_kills": ("process", "rewrite", "host", "process", "rewrite", "host")}),
    ("fast", {"mode": "fast", "appendfsync": "everysec", "fsync_delay_ms": 800, "slow_phase": (0.0, 0.2, 2500),
              "redis_kills": ("process",) * 6}),
    ("fast_host_crash", {"mode": "fast", "appendfsync": "everysec", "fsync_delay_ms": 200,
                         "redis_kills": ("host",) * 4}),
)  # fmt: skip


def soak(base: Path, seconds: float, report: BenchReport, progress: Callable[[str], None]) -> None:
    from readscale.bench.wbcrash import CrashPlan, promise_kept, run_crash

    for name, args in SOAKS:
        progress(f"crash soak {name}: {seconds:.0f} s of writes and counters from 3 processes")
        result = run_crash(CrashPlan(seconds=seconds, **args), base / f"soak-{name}", progress)
        kills = ", ".join(f"{k} x{v}" for k, v in result.redis_kills.items())
        report.add(f"crash_{name}_acknowledged", result.acknowledged_writes + result.acknowledged_increments, "ops",
                   f"values and increments; Redis killed: {kills}; flusher killed x{result.flusher_kills}")  # fmt: skip
        report.add(f"crash_{name}_lost_writes", result.lost_writes, "writes",
                   f"max {result.lost_write_max_age:.2f} s before a kill; outside the fast window: "
                   f"{result.lost_outside_window} {result.outside_window_ages or ''}")  # fmt: skip
        report.add(f"crash_{name}_counter_increments_lost", result.counter_increments_lost, "increments",
                   f"outside the fast window: {result.counter_lost_outside_window}")  # fmt: skip
        report.add(f"crash_{name}_counter_overcount", result.counter_overcount, "increments", "counted twice")
        note = (
            f"regressions {result.version_regressions}, wrong values {result.wrong_values}, cache/db mismatches "
            f"{result.cache_database_mismatches}, aof_delayed_fsync max {result.aof_delayed_fsync_max}"
        )
        report.add(f"crash_{name}_promise_kept", int(promise_kept(result)), "bool", note)


__all__ = ["KEYS", "SOAKS", "bench_async", "bench_sync", "fsync_sharing", "soak"]
