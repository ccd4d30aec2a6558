"""``readscale bench chaos``: break one part of the read path at a time, under load.

Each fault gets a fresh environment (the reference service with its stack, CDC worker
and write-behind flusher; the Redis Cluster fault drives the cache directly), browser-
like clients for a warm-up, the fault, its repair, and a tail. Per fault it reports:

- ``failed_requests_<fault>`` (and ``failed_reads_`` / ``failed_writes_``): responses the
  clients saw fail, after retrying what a browser retries (a request that never reached
  the server, an idempotent GET whose connection broke).
- ``stale_reads_<fault>``: reads older than their bound (read-your-writes for a user's
  own balance and profile; a price 62 s in a browser, 2 s anywhere else).
- ``lost_writes_<fault>``: writes the service acknowledged that the database does not
  show once the write-behind queue has drained (deposits that do not add up, views
  missing from the count, a profile showing neither the last acknowledged bio nor one
  sent after it).
- ``recovery_s_<fault>``: from the repair to the moment the broken part is back in
  use (the service's cache tier healthy again, the first read on the restarted
  replica, the edge's first hit, the replica caught up, the CDC slot caught up, the
  queue drained, the first acknowledged write).
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

from readscale.bench.harness import BenchReport
from readscale.demo.environment import CDC_SLOT, WRITE_BEHIND_QUEUE, DemoEnvironment, EnvironmentConfig
from readscale.demo.loadgen import LoadConfig, LoadResult, WriteLedger, run_load

Probe = Callable[[DemoEnvironment, "FaultRun"], bool]

#: The longest a phase waits past its time for its share of requests (see _phase).
PHASE_CAP_S = 60.0


@dataclass
class FaultRun:
    """What one fault's run saw: when it broke and was repaired, and the clients' result."""

    began: float = 0.0  # monotonic time the load started
    injected_at: float = 0.0  # seconds into the load
    repaired_at: float = 0.0
    recovered_at: float | None = None
    result: LoadResult | None = None
    marks: dict[str, Any] = field(default_factory=dict)  # a probe's reference values
    #: Requests done before the fault, while it held (injection to repair), after it.
    phase_requests: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    inject: Callable[[DemoEnvironment, FaultRun], None]
    repair: Callable[[DemoEnvironment, FaultRun], None]
    recovered: Probe
    hold_s: float = 4.0


# -- probes -----------------------------------------------------------------------------------


def _cache_tier_back(env: DemoEnvironment, run: FaultRun) -> bool:
    """The service uses Redis again: its breaker (open during the outage) has closed."""
    import httpx

    try:
        return httpx.get(f"{env.app_url}/healthz/cache", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _replica_reads(env: DemoEnvironment, run: FaultRun) -> bool:
    from readscale.demo.runner import _statement_counts

    try:
        return _statement_counts(env.stack.replicas[0].dsn)["reads"] > 0  # stats restart with it
    except psycopg.Error:
        return False


def _replica_caught_up(env: DemoEnvironment, run: FaultRun) -> bool:
    try:
        return env.stack.replay_lag_bytes(env.stack.replicas[0].name) <= 0
    except Exception:
        return False


def _edge_hit(env: DemoEnvironment, run: FaultRun) -> bool:
    try:
        return env.stack.varnish.counters().get("MAIN.cache_hit", 0) > 0  # counters restart with it
    except Exception:
        return False


def _slot_caught_up(env: DemoEnvironment, run: FaultRun) -> bool:
    with psycopg.connect(env.stack.primary.dsn, autocommit=True) as conn:
        if "target_lsn" not in run.marks:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            run.marks["target_lsn"] = row[0] if row else "0/0"
        row = conn.execute(
            "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
            (run.marks["target_lsn"], CDC_SLOT),
        ).fetchone()
    return bool(row and row[0])


def _queue_length(env: DemoEnvironment) -> int:
    from readscale._sync.writebehind.queue import WriteQueue

    queue = WriteQueue.from_url(env.redis_url, queue=WRITE_BEHIND_QUEUE)
    try:
        return queue.length()
    finally:
        queue.close()


def _queue_drained(env: DemoEnvironment, run: FaultRun) -> bool:
    return _queue_length(env) == 0


def _write_acknowledged(env: DemoEnvironment, run: FaultRun) -> bool:
    result = run.result
    if result is None:
        return False
    since = run.repaired_at
    return any(t >= since and layer == "primary" for t, layer, _, _ in reversed(result.timeline[-2000:]))


# -- faults -----------------------------------------------------------------------------------


def _kill(node: str) -> Callable[[DemoEnvironment, FaultRun], None]:
    return lambda env, run: env.stack.kill(node)


def _start(node: str) -> Callable[[DemoEnvironment, FaultRun], None]:
    return lambda env, run: env.stack.start(node)


def _replica(action: str) -> Callable[[DemoEnvironment, FaultRun], None]:
    def act(env: DemoEnvironment, run: FaultRun) -> None:
        name = env.stack.replicas[0].name
        {"kill": env.stack.kill, "start": env.stack.start, "pause": env.stack.pause_replay,
         "resume": env.stack.resume_replay}[action](name)  # fmt: skip

    return act


def _restart_varnish(env: DemoEnvironment, run: FaultRun) -> None:
    env.stack.kill("varnish")
    env.stack.start("varnish")


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("redis", "Redis killed (SIGKILL), restarted 4 s later from its AOF", _kill("redis"), _start("redis"),
              _cache_tier_back),
        Fault("replica", "replica r1 killed, restarted 4 s later", _replica("kill"), _replica("start"),
              _replica_reads),
        Fault("replica_pause", "replica r1's WAL replay paused for 10 s", _replica("pause"), _replica("resume"),
              _replica_caught_up, hold_s=10.0),
        Fault("varnish", "Varnish killed and started again at once (its cache is gone)", _restart_varnish,
              lambda env, run: None, _edge_hit, hold_s=0.0),
        Fault("cdc", "the CDC worker killed, restarted 4 s later", lambda env, run: env.stop_process("cdc"),
              lambda env, run: env.start_process("cdc"), _slot_caught_up),
        Fault("flusher", "the write-behind flusher killed, restarted 4 s later",
              lambda env, run: env.stop_process("flusher"), lambda env, run: env.start_process("flusher"),
              _queue_drained),
        Fault("primary", "the primary stopped for 5 s", lambda env, run: env.stack.stop("primary"),
              lambda env, run: env.stack.start("primary"), _write_acknowledged, hold_s=5.0),
    )
}  # fmt: skip
ALL_FAULTS = (*FAULTS, "cluster_primary")


# -- the service under one fault ----------------------------------------------------------------


def _balances(dsn: str) -> dict[int, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {int(u): int(b) for u, b in conn.execute("SELECT user_id, balance_cents FROM accounts")}


def lost_writes(ledger: WriteLedger, before: dict[int, int], dsn: str) -> tuple[int, list[str]]:
    """Acknowledged writes the database does not show (and a few examples)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        after = {int(u): int(b) for u, b in conn.execute("SELECT user_id, balance_cents FROM accounts")}
        bios = {int(u): str(b) for u, b in conn.execute("SELECT id, bio FROM users")}
        views = {
            str(k): int(v)
            for k, v in conn.execute(
                "SELECT key, coalesce((value->>'views')::bigint, 0) + direct_views FROM product_views"
            )
        }
    lost, examples = 0, []
    for user, acked in ledger.deposits_acked.items():
        added = after.get(user, 0) - before.get(user, 0)
        if added < acked:
            lost += 1
            examples.append(f"user {user}: deposits of {acked} cents acknowledged, balance grew {added}")
    for product, acked in ledger.views_acked.items():
        counted = views.get(f"views:{product}", 0)
        if counted < acked:
            lost += acked - counted
            examples.append(f"product {product}: {acked} views acknowledged, {counted} in the database")
    for user, bio in ledger.bio_acked.items():
        allowed = {bio, *ledger.bio_unsure.get(user, ())}
        if bios.get(user) not in allowed:
            lost += 1
            examples.append(f"user {user}: bio {bios.get(user)!r}, acknowledged {bio!r}")
    return lost, examples[:5]


async def _phase(done: Callable[[], int], since: int, requests: int, until: float, clock: Callable[[], float]) -> None:
    """Wait until ``clock()`` reaches ``until`` and ``requests`` more requests than
    ``since`` are done: a phase holds under load however slow the machine is. Gives up
    after PHASE_CAP_S more seconds (the row's per-phase counts then tell)."""
    give_up = max(until, clock()) + PHASE_CAP_S
    while True:
        if clock() >= until and (done() - since >= requests or clock() >= give_up):
            return
        await asyncio.sleep(0.05)  # the clients count as they go: nothing to wait on


async def _drive(
    env: DemoEnvironment, fault: Fault, load: LoadConfig, warm_s: float, tail_s: float, requests: int, run: FaultRun
) -> None:
    """The load, and the fault in it, by phase: a warm-up, the fault held, the repair and
    a tail until the part is back in use. Each phase lasts its time and at least
    ``requests`` requests (the fault's own phase too, if it is held), so what is at risk
    is always under load; the load stops once the tail is done."""
    run.began = time.monotonic()
    live = LoadResult()  # the probe for the primary looks at the clients' timeline
    run.result = live
    stop = asyncio.Event()

    def now() -> float:
        return time.monotonic() - run.began

    def done() -> int:
        return live.requests

    async def chaos() -> None:
        try:
            await _phase(done, 0, requests, warm_s, now)
            before = done()
            run.injected_at = now()
            await asyncio.to_thread(fault.inject, env, run)
            await _phase(done, before, requests if fault.hold_s > 0 else 0, run.injected_at + fault.hold_s, now)
            await asyncio.to_thread(fault.repair, env, run)
            run.repaired_at = now()
            during = done()
            run.phase_requests = [before, during - before]
            tail = asyncio.ensure_future(_phase(done, during, requests, run.repaired_at + tail_s, now))
            deadline = time.monotonic() + 60.0
            while time.monotonic() < deadline:
                if await asyncio.to_thread(fault.recovered, env, run):
                    run.recovered_at = now()
                    break
                await asyncio.sleep(0.05)
            await tail
        finally:
            stop.set()

    task = asyncio.ensure_future(chaos())
    try:
        result = await run_load(load, result=live, stop=stop)
    finally:
        await task
    run.result = result
    if len(run.phase_requests) == 2:
        run.phase_requests.append(result.requests - sum(run.phase_requests))


def _service_fault(
    fault: Fault,
    *,
    clients: int,
    warm_s: float,
    tail_s: float,
    requests: int,
    seed: int,
    progress: Callable[[str], None],
    logs: Path | None = None,
) -> dict[str, Any]:
    env = DemoEnvironment(EnvironmentConfig(workers=2), progress=lambda message: None)
    try:
        progress(f"{fault.name}: starting the service and its stack")
        env.start()
        before = _balances(env.stack.primary.dsn)
        # The phases end the load (see _drive); the duration is only a backstop.
        load = LoadConfig(
            base_url=env.edge_url, clients=clients, duration_s=warm_s + fault.hold_s + tail_s + 4 * PHASE_CAP_S,
            seed=seed, asset_paths=env.static_urls(),
        )  # fmt: skip
        progress(f"{fault.name}: {fault.what}, under {clients} clients")
        run = FaultRun()
        asyncio.run(_drive(env, fault, load, warm_s, tail_s, requests, run))
        assert run.result is not None
        deadline = time.monotonic() + 60.0
        while _queue_length(env) and time.monotonic() < deadline:
            time.sleep(0.2)  # the flusher drains what was acknowledged
        lost, examples = lost_writes(run.result.ledger, before, env.stack.primary.dsn)
        result = run.result
        recovery = None if run.recovered_at is None else round(run.recovered_at - run.repaired_at, 2)
        return {
            "fault": fault.name, "what": fault.what, "requests": result.requests, "failed": result.failed,
            "failed_reads": result.failed_reads, "failed_writes": result.failed_writes,
            "stale_reads": result.stale_reads, "stale_checks": result.stale_checks,
            "acked_writes": result.acked_writes, "lost_writes": lost, "recovery_s": recovery,
            "retries": result.retries, "failures": dict(result.failures), "lost_examples": examples,
            "stale_examples": result.stale_examples[:3],
            "window_s": [round(run.injected_at, 2), round(run.repaired_at, 2)],
            "phase_requests": run.phase_requests,
        }  # fmt: skip
    finally:
        env.close(keep_logs=None if logs is None else logs / fault.name)


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
        # Phases as in _drive: a warm-up and a tail of their time and at least
        # requests_per_phase requests each; the failover in between takes what it takes.
        try:
            await _phase(done, 0, requests_per_phase, warm_s, now)
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
            await _phase(done, done(), requests_per_phase, now() + tail_s, now)
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


def _cluster_fault(
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


# -- the bench --------------------------------------------------------------------------------------


def run_faults(
    names: tuple[str, ...],
    *,
    quick: bool,
    progress: Callable[[str], None] = lambda message: None,
    logs: Path | None = None,
    requests_per_phase: int | None = None,
) -> list[dict[str, Any]]:
    """Run each fault in turn; ``logs``: keep the service's logs there, per fault.

    Each phase (before the fault, while it holds, after the repair) lasts its time and
    at least ``requests_per_phase`` requests (500 quick, 1,000 otherwise): a slow
    machine runs longer instead of testing less. Each row's ``phase_requests`` says how
    many each phase had."""
    clients = 12 if quick else 24
    warm_s, tail_s = (4.0, 6.0) if quick else (6.0, 10.0)
    requests = requests_per_phase if requests_per_phase is not None else (500 if quick else 1000)
    out = []
    for name in names:
        if name == "cluster_primary":
            out.append(
                _cluster_fault(workers=clients, warm_s=warm_s, tail_s=tail_s, requests=requests, progress=progress)
            )
        else:
            out.append(
                _service_fault(
                    FAULTS[name],
                    clients=clients,
                    warm_s=warm_s,
                    tail_s=tail_s,
                    requests=requests,
                    seed=7,
                    progress=progress,
                    logs=logs,
                )
            )
        row = out[-1]
        progress(
            f"{name}: {row['failed']} failed of {row['requests']}, {row['lost_writes']} lost of "
            f"{row['acked_writes']} acknowledged writes, {row['stale_reads']} stale, recovered in {row['recovery_s']} s"
        )
    return out


def run(*, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport:
    report = BenchReport(
        "chaos",
        params={
            "faults": {name: (FAULTS[name].what if name in FAULTS else "a Redis Cluster primary killed")
                       for name in ALL_FAULTS},
            "rounds": 1,
            "clients": 12 if quick else 24,
            "requests_per_phase": 500 if quick else 1000,
            "note": "one fault per fresh environment; failed requests counted after browser-like retries "
            "of requests that never reached the server and of GETs whose connection broke",
        },
    )  # fmt: skip
    for row in run_faults(ALL_FAULTS, quick=quick, progress=progress):
        name = row["fault"]
        note = f"{row['what']}; failures {row['failures']}" if row["failures"] else row["what"]
        report.add(f"failed_requests_{name}", row["failed"], "requests", note)
        report.add(f"failed_reads_{name}", row["failed_reads"], "requests")
        report.add(f"failed_writes_{name}", row["failed_writes"], "requests")
        examples = "; ".join(row.get("stale_examples") or [])
        report.add(f"stale_reads_{name}", row["stale_reads"], "reads", f"e.g. {examples}" if examples else "")
        report.add(f"lost_writes_{name}", row["lost_writes"], "writes", f"of {row['acked_writes']} acknowledged")
        if row["recovery_s"] is not None:
            report.add(f"recovery_s_{name}", row["recovery_s"], "s")
        else:
            report.add(f"recovery_s_{name}", -1, "s", "did not recover within 60 s")
        report.add(f"requests_{name}", row["requests"], "requests")
    return report


__all__ = ["ALL_FAULTS", "FAULTS", "lost_writes", "run", "run_faults"]
