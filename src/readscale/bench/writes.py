"""``readscale bench writes``: what a write costs the caller, and the database, three ways.

- ``writebehind``: ``AsyncWriteBehind.write_behind(key, value)``: the cache entry and the
  queue record in one Redis script (Redis with AOF, ``appendfsync everysec``); a flusher
  in another process applies the queue to PostgreSQL in batches meanwhile.
- ``writethrough``: ``AsyncCache.write_through(key, writer)``, the writer doing the
  database upsert (its own transaction), then the cache set.
- ``direct``: the database upsert alone (one autocommit transaction per write).

The headline figures are the async flavour's. Latencies are per call, sequential, from
one client; each contender runs ``calls`` writes per round, rounds interleaved, and the
median of the rounds' p50 and p99 is reported. Then, in phases of their own, database
transactions per 1,000 writes are counted from PostgreSQL's own statistics
(``pg_stat_database.xact_commit`` deltas, read once every backend involved has exited,
since a backend reports its counts lazily), for write-behind (until its flusher drained
the queue) and for direct writes. Then the write-behind latency is measured again with
``appendfsync always``, to show what that durability costs, and the three contenders
again through the sync flavour (``_sync``).

PostgreSQL runs with ``fsync`` and ``synchronous_commit`` on. Keys are drawn uniformly
from 10,000, so the transaction saving comes from batching, not from coalescing.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import signal
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from readscale.bench.harness import BenchReport, percentile, ratio
from readscale.stack import Stack

KEYS = 10_000
TABLE_WB = "bench_writebehind"
DATABASE = "readscale_bench"
QUEUE = "bench"
PREFIX = "bench:"
BATCH_SIZE = 500
BATCH_WAIT = 0.05


def _doc(i: int) -> dict[str, Any]:
    return {"id": i, "name": "A reasonably named product", "price": 12.5, "tags": ["a", "b"], "data": "x" * 380}


def _flusher_main(url: str, dsn: str, ready: Any) -> None:
    """The flusher process: runs until SIGTERM, then exits (its backend's stats with it)."""
    from readscale._core.writebehind import FlusherSettings
    from readscale._sync.flusher import Flusher
    from readscale._sync.pgwriter import PostgresWriter

    writer = PostgresWriter(dsn, table=TABLE_WB)
    settings = FlusherSettings(queue=QUEUE, prefix=PREFIX, consumer="bench", batch_size=BATCH_SIZE,
                               batch_wait=BATCH_WAIT, block=0.2)  # fmt: skip
    flusher = Flusher(writer, url, settings=settings)
    signal.signal(signal.SIGTERM, lambda signum, frame: flusher.stop())
    ready.set()
    try:
        flusher.run()
    finally:
        flusher.close()
        writer.close()


class _FlusherProcess:
    def __init__(self, url: str, dsn: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        self.proc = ctx.Process(target=_flusher_main, args=(url, dsn, ready), daemon=True)
        self.proc.start()
        if not ready.wait(60):
            raise RuntimeError("the bench's flusher process did not start")

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()  # SIGTERM: a clean stop
            self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


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


async def _bench(url: str, dsn: str, admin_dsn: str, calls: int, rounds: int, wb_writes: int, quick: bool,
                 progress: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    import psycopg
    from psycopg.types.json import Jsonb

    from readscale._async.backends.redis import AsyncRedisBackend
    from readscale._async.cache import AsyncCache
    from readscale._async.writebehind import AsyncWriteBehind
    from readscale._core.policy import CachePolicy, Tier
    from readscale._core.writebehind import WriteBehindSettings
    from readscale.settings import RedisSettings

    rng = random.Random(7)
    policy = CachePolicy(name="bench", ttl=3600.0, jitter=0.0, early_refresh=0.0, tiers=frozenset({Tier.L2}))
    cache = AsyncCache(AsyncRedisBackend(RedisSettings(url=url)), policy=policy, prefix=PREFIX)
    wb = AsyncWriteBehind(cache, WriteBehindSettings(queue=QUEUE, max_queue_length=0))
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    upsert = (
        "INSERT INTO bench_direct (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
    )

    async def direct_write(key: str, value: dict[str, Any]) -> dict[str, Any]:
        await conn.execute(upsert, (key, Jsonb(value)))
        return value

    async def writebehind(key: str, value: dict[str, Any]) -> None:
        await wb.write_behind(key, value)

    async def writethrough(key: str, value: dict[str, Any]) -> None:
        async def writer() -> dict[str, Any]:
            return await direct_write(key, value)

        await cache.write_through(key, writer)

    async def direct(key: str, value: dict[str, Any]) -> None:
        await direct_write(key, value)

    contenders: dict[str, Callable[[str, dict[str, Any]], Awaitable[None]]] = {
        "writebehind": writebehind,
        "writethrough": writethrough,
        "direct": direct,
    }

    async def one_round(fn: Callable[[str, dict[str, Any]], Awaitable[None]]) -> tuple[float, float]:
        samples = []
        for _ in range(calls):
            i = rng.randrange(KEYS)
            started = time.perf_counter()
            await fn(f"item:{i}", _doc(i))
            samples.append(time.perf_counter() - started)
        return percentile(samples, 50) * 1000, percentile(samples, 99) * 1000

    out: dict[str, Any] = {}
    flusher = _FlusherProcess(url, dsn)
    try:
        for fn in contenders.values():  # warm-up: connections, prepared statements, the flusher's first batch
            await one_round(fn)
        per: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        for r in range(rounds):
            progress(f"latency round {r + 1}/{rounds}")
            for name, fn in contenders.items():
                per[name].append(await one_round(fn))
        for name, values in per.items():
            out[f"p50_{name}"] = statistics.median(v[0] for v in values)
            out[f"p99_{name}"] = statistics.median(v[1] for v in values)
            out[f"rounds_{name}"] = [round(v[0], 3) for v in values]
        progress("draining the queue")
        await _drain(wb)
    finally:
        flusher.stop()
    await conn.close()

    # Transactions per 1,000 writes, each phase with its backends started and stopped in it.
    progress(f"write-behind: {wb_writes} writes, counting database transactions")
    before = _settled_xact_commit(admin_dsn)
    flusher = _FlusherProcess(url, dsn)
    try:
        for _ in range(wb_writes):
            i = rng.randrange(KEYS)
            await wb.write_behind(f"item:{i}", _doc(i))
        await _drain(wb)
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

    progress("write-behind with appendfsync always")
    client = wb.queue.client
    await client.config_set("appendfsync", "always")
    flusher = _FlusherProcess(url, dsn)
    try:
        always = [await one_round(writebehind) for _ in range(max(1, rounds // 2))]
        await _drain(wb)
    finally:
        flusher.stop()
        await client.config_set("appendfsync", "everysec")
    out["p50_writebehind_always"] = statistics.median(v[0] for v in always)
    out["p99_writebehind_always"] = statistics.median(v[1] for v in always)
    await cache.aclose()
    return out


def _bench_sync(url: str, dsn: str, calls: int, rounds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """The same three contenders through the sync flavour (Django/Flask services)."""
    import psycopg
    from psycopg.types.json import Jsonb

    from readscale._core.policy import CachePolicy, Tier
    from readscale._core.writebehind import FlusherSettings, WriteBehindSettings
    from readscale._sync.backends.redis import RedisBackend
    from readscale._sync.cache import Cache
    from readscale._sync.writebehind import WriteBehind
    from readscale.settings import RedisSettings

    rng = random.Random(11)
    policy = CachePolicy(name="bench", ttl=3600.0, jitter=0.0, early_refresh=0.0, tiers=frozenset({Tier.L2}))
    cache = Cache(RedisBackend(RedisSettings(url=url)), policy=policy, prefix=PREFIX)
    wb = WriteBehind(cache, WriteBehindSettings(queue=QUEUE, max_queue_length=0))
    conn = psycopg.connect(dsn, autocommit=True)
    upsert = (
        "INSERT INTO bench_direct (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
    )

    def direct_write(key: str, value: dict[str, Any]) -> dict[str, Any]:
        conn.execute(upsert, (key, Jsonb(value)))
        return value

    def writethrough(key: str, value: dict[str, Any]) -> None:
        cache.write_through(key, lambda: direct_write(key, value))

    def writebehind(key: str, value: dict[str, Any]) -> None:
        wb.write_behind(key, value)

    def direct(key: str, value: dict[str, Any]) -> None:
        direct_write(key, value)

    contenders: dict[str, Callable[[str, dict[str, Any]], None]] = {
        "writebehind": writebehind,
        "writethrough": writethrough,
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
    flusher = _FlusherProcess(url, dsn)
    try:
        for fn in contenders.values():
            one_round(fn)
        per: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        for r in range(rounds):
            progress(f"sync latency round {r + 1}/{rounds}")
            for name, fn in contenders.items():
                per[name].append(one_round(fn))
        group = FlusherSettings().group
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
    from readscale._core.writebehind import FlusherSettings

    group = FlusherSettings().group
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await wb.queue.length() == 0 and await wb.queue.pending(group) == 0:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the flusher did not drain the bench's queue")


def _create_database(admin_dsn: str) -> str:
    """A database of the bench's own (its transaction count is the bench's alone); its DSN."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE readscale_bench")
    dsn = make_conninfo(admin_dsn, dbname=DATABASE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bench_writebehind (key text PRIMARY KEY, version bigint NOT NULL, value jsonb NOT NULL)"
        )
        conn.execute("CREATE TABLE bench_direct (key text PRIMARY KEY, value jsonb NOT NULL)")
    return dsn


def run(*, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport:
    calls = 200 if quick else 1000
    rounds = 2 if quick else rounds
    wb_writes = 2000 if quick else 10_000
    report = BenchReport(
        "writes",
        params={
            "rounds": rounds,
            "calls_per_round": calls,
            "keys": KEYS,
            "writebehind_writes_for_transactions": wb_writes,
            "redis": "AOF, appendfsync everysec",
            "postgres": "fsync on, synchronous_commit on",
            "flusher": f"separate process, batch_size {BATCH_SIZE}, batch_wait {BATCH_WAIT}s",
            "host": "a shared 2-core machine: compare figures within one run",
        },
    )
    base = Path(tempfile.mkdtemp(prefix="readscale-bench-writes-"))
    base.chmod(0o755)
    stack = Stack(base / "stack")
    try:
        stack.prepare()
        progress("starting PostgreSQL and Redis (AOF)")
        stack.start_postgres(replicas=0)
        url = stack.start_redis(aof=True).url
        admin_dsn = stack.primary.dsn
        dsn = _create_database(admin_dsn)
        got = asyncio.run(_bench(url, dsn, admin_dsn, calls, rounds, wb_writes, quick, progress))
        got_sync = _bench_sync(url, dsn, calls, rounds, progress)
    finally:
        stack.down()
        base.rmdir()
    for name in ("writebehind", "writethrough", "direct"):
        spread = "p50 rounds: " + ", ".join(f"{v:.3g}" for v in got[f"rounds_{name}"])
        report.add(f"write_p50_ms_{name}", round(got[f"p50_{name}"], 3), "ms", spread)
        report.add(f"write_p99_ms_{name}", round(got[f"p99_{name}"], 3), "ms")
    per_1000_wb = got["xacts_writebehind"] * 1000 / wb_writes
    per_1000_direct = got["xacts_direct"] * 1000 / got["direct_writes"]
    report.add("db_transactions_per_1000_writes_writebehind", round(per_1000_wb, 2), "xacts",
               "pg_stat_database.xact_commit delta, flusher included")  # fmt: skip
    report.add("db_transactions_per_1000_writes_direct", round(per_1000_direct, 1), "xacts")
    report.add("write_p50_ratio_direct_to_writebehind", round(ratio(got["p50_direct"], got["p50_writebehind"]), 2),
               "ratio", "target >= 3")  # fmt: skip
    report.add("db_transactions_ratio_direct_to_writebehind", round(ratio(per_1000_direct, per_1000_wb), 1), "ratio",
               "target >= 10")  # fmt: skip
    report.add("write_p50_ms_writebehind_fsync_always", round(got["p50_writebehind_always"], 3), "ms",
               "the same with appendfsync always")  # fmt: skip
    report.add("write_p99_ms_writebehind_fsync_always", round(got["p99_writebehind_always"], 3), "ms")
    for name in ("writebehind", "writethrough", "direct"):
        spread = "p50 rounds: " + ", ".join(f"{v:.3g}" for v in got_sync[f"rounds_{name}"])
        report.add(f"write_p50_ms_{name}_sync", round(got_sync[f"p50_{name}"], 3), "ms", spread)
        report.add(f"write_p99_ms_{name}_sync", round(got_sync[f"p99_{name}"], 3), "ms")
    value = ratio(got_sync["p50_direct"], got_sync["p50_writebehind"])
    report.add("write_p50_ratio_direct_to_writebehind_sync", round(value, 2), "ratio", "target >= 3")
    return report
