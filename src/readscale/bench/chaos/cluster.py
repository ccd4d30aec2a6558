"""The Redis Cluster fault: a primary killed while workers drive the cache directly (no
service: the demo runs on a standalone Redis), its replica taking over; failed and stale
reads, lost increments and the time until the failover serves again.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from readscale.bench.chaos.faults import phase

# -- Redis Cluster, driving the cache directly ------------------------------------------------------


@dataclass
class _ClusterLedger:
    acked: Counter[str] = field(default_factory=Counter)  # key -> acknowledged increments
    sent: Counter[str] = field(default_factory=Counter)  # key -> increments sent (acked or not)
    last_acked: dict[str, tuple[float, int]] = field(default_factory=dict)  # key -> (time, value)


async def _cluster_load(
    url: str, dsn: str, *, workers: int, kill: Callable[[], None], repair_probe: Callable[[], bool],
    warm_s: float, tail_s: float, requests_per_phase: int, keys: int = 200, bound_s: float = 2.0, seed: int = 7,
) -> dict[str, Any]:  # fmt: skip
    from readscale import RedisSettings
    from readscale._async.backends.redis import AsyncRedisClusterBackend
    from readscale._async.cache.cache import AsyncCache
    from readscale._core.cache.policy import CachePolicy, Tier

    policy = CachePolicy(name="chaos", ttl=300.0, tiers=frozenset({Tier.L2}))
    cache = AsyncCache(AsyncRedisClusterBackend(RedisSettings(url=url)), policy=policy, prefix="chaos:")
    pool = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    lock = asyncio.Lock()  # one connection: statements take turns
    ledger = _ClusterLedger()
    failed = stale = requests = 0
    failures: Counter[str] = Counter()
    examples: list[str] = []
    began = time.monotonic()
    marks: dict[str, float] = {}
    phases: list[int] = []  # requests before the kill, until the failover served again, after
    stop = asyncio.Event()

    async def read_db(key: str) -> int:
        async with lock:
            row = await (await pool.execute("SELECT value FROM chaos_kv WHERE key = %s", (key,))).fetchone()
        return int(row[0]) if row else 0

    async def worker(index: int) -> None:
        nonlocal failed, stale, requests
        rng = random.Random(seed * 1000 + index)
        while not stop.is_set():
            key = f"k{min(int(rng.paretovariate(1.2)), keys)}"
            requests += 1
            started = time.monotonic()
            try:
                if rng.random() < 0.05:
                    ledger.sent[key] += 1

                    async def write(key: str = key) -> int:
                        async with lock:
                            cur = await pool.execute(
                                "INSERT INTO chaos_kv VALUES (%s, 1) ON CONFLICT (key) "
                                "DO UPDATE SET value = chaos_kv.value + 1 RETURNING value",
                                (key,),
                            )
                            row = await cur.fetchone()
                        return int(row[0]) if row else 0

                    value = await cache.write_through(key, write)
                    ledger.acked[key] += 1
                    ledger.last_acked[key] = (time.monotonic(), value)
                else:
                    value = await cache.get_or_load(key, lambda key=key: read_db(key))  # type: ignore[misc]
                    acked = ledger.last_acked.get(key)
                    if acked is not None and acked[0] < started - bound_s and value < acked[1]:
                        stale += 1
            except Exception as exc:  # every failure is a failed request, counted by kind
                failed += 1
                failures[type(exc).__name__] += 1
                if failures[type(exc).__name__] == 1:
                    examples.append("".join(traceback.format_exception(exc))[-1500:])
            await asyncio.sleep(0.002)

    def now() -> float:
        return time.monotonic() - began

    def done() -> int:
        return requests

    async def chaos() -> None:
        # Phases as in the service's phases: a warm-up and a tail of their time and at least
        # requests_per_phase requests each; the failover in between takes what it takes.
        try:
            await phase(done, 0, requests_per_phase, warm_s, now)
            phases.append(done())
            marks["injected"] = now()
            await asyncio.to_thread(kill)
            marks["repaired"] = now()  # a cluster repairs itself: from the kill
            deadline = time.monotonic() + 60.0
            while time.monotonic() < deadline:
                if await asyncio.to_thread(repair_probe):
                    marks["recovered"] = now()
                    break
                await asyncio.sleep(0.05)
            phases.append(done() - phases[0])
            await phase(done, done(), requests_per_phase, now() + tail_s, now)
        finally:
            stop.set()

    try:
        await asyncio.gather(chaos(), *(worker(i) for i in range(workers)))
        if len(phases) == 2:
            phases.append(requests - sum(phases))
        async with lock:
            rows = await (await pool.execute("SELECT key, value FROM chaos_kv")).fetchall()
        stored = {str(k): int(v) for k, v in rows}
        lost = sum(max(0, n - stored.get(k, 0)) for k, n in ledger.acked.items())
    finally:
        await cache.aclose()
        await pool.close()
    recovered = marks.get("recovered")
    return {
        "fault": "cluster_primary", "what": "a Redis Cluster primary killed; its replica takes over",
        "requests": requests, "failed": failed, "failed_reads": failed, "failed_writes": 0,
        "stale_reads": stale, "acked_writes": sum(ledger.acked.values()), "lost_writes": lost,
        "recovery_s": None if recovered is None else round(recovered - marks["repaired"], 2),
        "failures": dict(failures), "failure_examples": examples,
        "window_s": [round(marks.get("injected", 0.0), 2)], "phase_requests": phases,
    }  # fmt: skip


def run_cluster_fault(
    *, workers: int, warm_s: float, tail_s: float, requests: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    import redis

    from readscale.stack import Stack, StackConfig

    base = Path(tempfile.mkdtemp(prefix="readscale-chaos-cluster-"))
    base.chmod(0o755)
    stack = Stack(base / "stack")
    try:
        progress("cluster_primary: starting PostgreSQL and a Redis Cluster")
        stack.up(StackConfig(replicas=0, redis=False, cluster=True))
        with psycopg.connect(stack.primary.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE chaos_kv (key text PRIMARY KEY, value bigint NOT NULL)")
        nodes = stack.cluster_nodes
        url = f"redis://127.0.0.1:{nodes[0].port}/0"
        victim = next(n for n in nodes if "role:master" in n.cli("info", "replication") and n is not nodes[0])
        probe_key = _key_on(victim.port, nodes)

        def served_again() -> bool:
            client = redis.RedisCluster.from_url(url, socket_timeout=0.5)
            try:
                client.set(probe_key, b"1", px=60_000)
                return client.get(probe_key) == b"1"
            except (redis.RedisError, OSError):
                return False
            finally:
                client.close()

        progress(f"cluster_primary: killing {victim.name} (a primary) under {workers} workers")
        return asyncio.run(
            _cluster_load(
                url, stack.primary.dsn, workers=workers, kill=lambda: stack.kill(victim.name),
                repair_probe=served_again, warm_s=warm_s, tail_s=tail_s, requests_per_phase=requests,
            )
        )  # fmt: skip
    finally:
        stack.down()
        shutil.rmtree(base, ignore_errors=True)


def _key_on(port: int, nodes: list[Any]) -> str:
    """A key whose slot the node on ``port`` serves now."""
    import redis

    client: Any = redis.RedisCluster(host="127.0.0.1", port=nodes[0].port)
    try:
        for i in range(10_000):
            key = f"chaos:probe:{i}"
            node = client.get_node_from_key(key)
            if node is not None and node.port == port:
                return key
    finally:
        client.close()
    raise RuntimeError(f"no key maps to the node on port {port}")
