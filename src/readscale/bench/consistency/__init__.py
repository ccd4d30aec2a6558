"""``readscale bench consistency``: how often each invalidation design serves stale data.

Concurrent writers and readers over Zipf-distributed keys of a real table, with a real
replica whose replay is delayed ~100 ms, a fixed number of operations per mode:

- ``naive``: cache-aside with a TTL; the writer deletes the key after committing;
  readers fill from the replica (the textbook pattern).
- ``invalidate``: readscale's cache (leases, single-flight) with post-commit
  ``invalidate`` without a position; the loader reads the replica itself and declares
  nothing, so its fills are refused while a tombstone stands (``readscale.cache``).
- ``lease_cdc``: readscale with LSN tombstones (the writer invalidates with its commit's
  WAL position), fills through the replica router (which reads at or past the
  tombstone), and the CDC worker as backstop.

A read is *stale beyond the bound* when it returned a version older than one committed
more than ``bound`` seconds before the read started (a read racing a commit by less than
the bound is not counted). Versions are recorded by the writers as they commit, so the
check is exact.

``readscale bench consistency --soak SECONDS`` runs the consistency harness instead
(``readscale.bench.consistency.harness``): randomized schedules of reads through every
read API, writes and faults, against two or more service processes, each history checked
for read-your-writes, monotonic reads, bounded staleness and the invalidation bound
(:func:`soak`). ``--seed N --duration D`` replays one run.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

import psycopg

from readscale.bench.harness import BenchReport
from readscale.stack import Stack

KEYS = 200
BOUND = 0.2
APPLY_DELAY = 0.1


@dataclass
class _Truth:
    commits: dict[int, list[tuple[float, int]]] = field(default_factory=dict)  # key -> [(commit time, version)]

    def record(self, key: int, version: int, at: float) -> None:
        self.commits.setdefault(key, []).append((at, version))

    def stale(self, key: int, started: float, version: int, bound: float) -> bool:
        newest_known = 0
        for at, v in self.commits.get(key, []):
            if at < started - bound:
                newest_known = max(newest_known, v)
        return version < newest_known


@dataclass
class _ModeResult:
    reads: int = 0
    stale: int = 0
    hits: int = 0


def _zipf_cdf(n: int, alpha: float) -> list[float]:
    return list(accumulate(rank**-alpha for rank in range(1, n + 1)))


async def _run_mode(
    mode: str, stack: Stack, table: str, reads: int, writes: int, concurrency: int, seed: int
) -> _ModeResult:
    import redis.asyncio as redis_asyncio

    from readscale import RedisSettings, ReplicaSettings, causal_context
    from readscale._async.backends.redis import AsyncRedisBackend
    from readscale._async.cache.cache import AsyncCache
    from readscale._async.cdc.worker import AsyncCdcWorker
    from readscale._async.replicas.router import AsyncReplicaRouter
    from readscale._core.cache.policy import CachePolicy, Tier
    from readscale._core.cdc.rules import CdcRule, CdcSettings
    from readscale._shared.primitives.locks import AsyncEvent

    primary = await psycopg.AsyncConnection.connect(stack.primary.dsn, autocommit=True)
    await primary.execute(f"UPDATE {table} SET version = 0")
    replica_dsn = stack.replicas[0].dsn
    prefix = f"cons:{mode}:{uuid.uuid4().hex[:6]}:"
    settings = RedisSettings(url=stack.redis.url, max_connections=64)
    redis = redis_asyncio.Redis.from_url(stack.redis.url, protocol=2)
    cache = AsyncCache(
        AsyncRedisBackend(settings),
        policy=CachePolicy(name="cons", ttl=60.0, jitter=0.0, early_refresh=0.0, tiers=frozenset({Tier.L2})),
        prefix=prefix,
        tombstone_ttl=10.0,
    )
    router = AsyncReplicaRouter(ReplicaSettings(primary=stack.primary.dsn, replicas=[replica_dsn], wait_budget=0.3))
    await router.open()
    replica_pool = [await psycopg.AsyncConnection.connect(replica_dsn, autocommit=True) for _ in range(concurrency)]
    truth = _Truth()
    result = _ModeResult()
    rng = random.Random(seed)
    cdf = _zipf_cdf(KEYS, 0.9)
    stop_cdc = AsyncEvent()
    cdc_task: asyncio.Task[None] | None = None
    if mode == "lease_cdc":
        worker = AsyncCdcWorker(
            cache,
            [CdcRule(table, keys=("item:{id}",))],
            CdcSettings(dsn=stack.primary.dsn, slot=f"cons_{uuid.uuid4().hex[:8]}", poll_interval=0.02),
        )
        await worker.ensure_slot()
        cdc_task = asyncio.ensure_future(worker.run(stop_cdc))

    def pick() -> int:
        return bisect.bisect_left(cdf, rng.random() * cdf[-1]) + 1

    async def read_replica(conn: Any, key: int) -> int:
        row = await (await conn.execute(f"SELECT version FROM {table} WHERE id = %s", (key,))).fetchone()
        return int(row[0])

    async def reader(index: int, count: int) -> None:
        conn = replica_pool[index]
        for _ in range(count):
            key = pick()
            started = time.monotonic()
            if mode == "naive":
                raw = await redis.get(f"{prefix}item:{key}")
                if raw is not None:
                    version = int(raw)
                    result.hits += 1
                else:
                    version = await read_replica(conn, key)
                    await redis.set(f"{prefix}item:{key}", version, ex=60)
            elif mode == "invalidate":

                async def load(key: int = key) -> int:
                    return await read_replica(conn, key)

                version = await cache.get_or_load(f"item:{key}", load)
            else:

                async def load_routed(key: int = key) -> int:
                    row = await router.fetch_one(f"SELECT version FROM {table} WHERE id = %s", (key,))
                    assert row is not None
                    return int(row[0])

                with causal_context():
                    version = await cache.get_or_load(f"item:{key}", load_routed)
            result.reads += 1
            if truth.stale(key, started, version, BOUND):
                result.stale += 1

    async def writer(count: int) -> None:
        for _ in range(count):
            key = pick()
            if mode == "lease_cdc":
                with causal_context() as context:
                    async with router.write() as conn:
                        cur = await conn.execute(
                            f"UPDATE {table} SET version = version + 1 WHERE id = %s RETURNING version",
                            (key,),
                        )
                        row = await cur.fetchone()
                    assert row is not None
                    truth.record(key, int(row[0]), time.monotonic())
                    token = context.token
                    await cache.invalidate(f"item:{key}", lsn=token.lsn if token is not None else None)
            else:
                cur = await primary.execute(
                    f"UPDATE {table} SET version = version + 1 WHERE id = %s RETURNING version",
                    (key,),
                )
                row = await cur.fetchone()
                assert row is not None
                truth.record(key, int(row[0]), time.monotonic())
                if mode == "naive":
                    await redis.delete(f"{prefix}item:{key}")
                else:
                    await cache.invalidate(f"item:{key}")
            await asyncio.sleep(0.005)

    per_reader = reads // concurrency
    tasks: list[Awaitable[None]] = [reader(i, per_reader) for i in range(concurrency)]
    tasks.append(writer(writes))
    await asyncio.gather(*tasks)
    if mode != "naive":
        stats = cache.stats
        result.hits = stats.l2.hits + stats.l2.coalesced
    stop_cdc.set()
    if cdc_task is not None:
        await cdc_task
        await worker.drop_slot()
        await worker.close()
    for conn in replica_pool:
        await conn.close()
    await primary.close()
    await router.close()
    await cache.aclose()
    await redis.aclose()
    return result


async def _bus_delays(redis_url: str, messages: int) -> list[float]:
    """Seconds from publish to handled, between two buses (two processes' worth)."""
    from readscale import RedisSettings
    from readscale._async.cache.bus import AsyncInvalidationBus

    settings = RedisSettings(url=redis_url)
    channel = f"bench-bus-{uuid.uuid4().hex[:6]}"
    sender = AsyncInvalidationBus(settings, channel=channel)
    receiver = AsyncInvalidationBus(settings, channel=channel)
    delays: list[float] = []
    receiver.subscribe("probe", lambda event, payload: delays.append(time.time() - float(payload)))
    await receiver.start()
    await sender.start()
    for _ in range(messages):
        await sender.publish("probe", time.time())
        await asyncio.sleep(0.002)
    for _ in range(500):
        if len(delays) >= messages:
            break
        await asyncio.sleep(0.01)
    await sender.close()
    await receiver.close()
    return delays


def run(*, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport:
    reads = 3_000 if quick else 20_000
    writes = reads // 100
    concurrency = 16
    report = BenchReport(
        "consistency",
        params={"reads": reads, "writes": writes, "keys": KEYS, "zipf_alpha": 0.9, "bound_s": BOUND,
                "replica_apply_delay_s": APPLY_DELAY, "readers": concurrency},
    )  # fmt: skip
    base = Path(tempfile.mkdtemp(prefix="readscale-bench-consistency-"))
    base.chmod(0o755)
    stack = Stack(base / "stack")
    try:
        from readscale.stack import StackConfig

        progress("starting PostgreSQL (1 replica, delayed) and Redis")
        stack.up(StackConfig(replicas=1))
        table = "cons_items"
        with psycopg.connect(stack.primary.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, version int NOT NULL)")
            conn.execute(f"INSERT INTO {table} SELECT g, 0 FROM generate_series(1, {KEYS}) g")
        stack.set_apply_delay("r1", APPLY_DELAY)
        time.sleep(0.5)
        for mode in ("naive", "invalidate", "lease_cdc"):
            progress(f"mode {mode}: {reads} reads, {writes} writes")
            result = asyncio.run(_run_mode(mode, stack, table, reads, writes, concurrency, seed=11))
            report.add(f"stale_reads_{mode}", result.stale, "reads", f"beyond {BOUND}s")
            report.add(f"reads_{mode}", result.reads, "reads")
            report.add(f"cache_hit_ratio_{mode}", round(result.hits / max(result.reads, 1), 4), "ratio")
        progress("invalidation bus: delivery delay between two subscribers")
        from readscale.report.stats import percentile

        delays = asyncio.run(_bus_delays(stack.redis.url, 200 if quick else 1000))
        report.add("bus_delivery_ms_p50", round(percentile([d * 1000 for d in delays], 50), 3), "ms")
        report.add("bus_delivery_ms_p99", round(percentile([d * 1000 for d in delays], 99), 3), "ms", "target < 100")
    finally:
        stack.down()
        base.rmdir()
    return report


# -- the consistency harness, for as long as asked -------------------------------------------


def soak_duration(seed: int) -> float:
    """How long the soak's run of ``seed`` lasts: long enough for a 40 s delay to play out."""
    return random.Random(f"soak-duration:{seed}").choice((15.0, 30.0, 45.0, 60.0, 90.0))


def soak(
    *,
    seconds: float | None,
    seed: int | None,
    duration: float | None,
    sabotage: tuple[str, ...] = (),
    bound: float | None = None,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Run the consistency harness on a private stack: one run of ``seed`` (``seconds``
    None: a replay), or runs of seeds ``seed``, ``seed + 1``... until ``seconds`` are
    spent. Returns operations checked and violations per property, failing seeds with
    the command that replays each, and the first violations explained."""
    from readscale.bench.consistency.faults import prepare_stack
    from readscale.bench.consistency.harness import run
    from readscale.bench.consistency.record import RunResult, replay_command, totals
    from readscale.bench.consistency.scenario import SABOTAGES, draw_scenario
    from readscale.errors import ConfigurationError
    from readscale.stack import StackConfig

    unknown = [name for name in sabotage if name not in SABOTAGES]
    if unknown:
        raise ConfigurationError(f"--sabotage must be one of {', '.join(SABOTAGES)}, got {', '.join(unknown)}")
    if seconds is not None and seconds <= 0:
        raise ConfigurationError(f"--soak must be > 0 seconds, got {seconds:g}")
    first = seed if seed is not None else random.SystemRandom().randrange(1, 10**6)
    base = Path(tempfile.mkdtemp(prefix="readscale-bench-consistency-"))
    base.chmod(0o755)
    stack = Stack(base / "stack")
    results: list[RunResult] = []
    started = time.monotonic()
    try:
        progress("starting PostgreSQL (a primary, 2 replicas) and two Redis servers")
        stack.up(StackConfig(replicas=2, redis=False))
        prepare_stack(stack)
        current = first
        while True:
            length = duration if duration is not None else (10.0 if seconds is None else soak_duration(current))
            scenario = draw_scenario(current, length)
            if sabotage:
                scenario = scenario.with_(sabotage=sabotage)
            if bound is not None:
                scenario = scenario.with_(bound=bound)
            result = run(stack, scenario, progress=progress)
            results.append(result)
            counts = result.verdict.summary()
            progress(
                f"run {len(results)} (seed {current}, {length:g}s): {len(result.ops)} operations, "
                + ", ".join(f"{name} {c['violations']}" for name, c in counts.items())
                + (f"  VIOLATIONS: replay with {replay_command(scenario)}" if not result.verdict.ok else "")
            )
            current += 1
            if seconds is None:
                break
            spent = time.monotonic() - started
            upcoming = duration if duration is not None else soak_duration(current)
            if spent + upcoming * 1.3 > seconds:
                break
    finally:
        stack.down()
        base.rmdir()
    out = totals(results)
    out["seconds"] = round(time.monotonic() - started, 1)
    out["first_seed"] = first
    out["replay"] = [replay_command(r.scenario) for r in results if not r.verdict.ok]
    out["runs_detail"] = [r.to_json(violations=5) for r in results]
    out["reports"] = [r.report(violations=5) for r in results if not r.verdict.ok]
    return out
