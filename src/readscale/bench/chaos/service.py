"""One fault of the reference service, under load: a fresh environment (the service with
its stack, CDC worker and write-behind flusher), browser-like clients through the edge,
the fault and its repair by phase, then what the clients saw and the database kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from readscale.bench.chaos.faults import PHASE_CAP_S, Fault, FaultRun, phase, queue_counts, queue_length
from readscale.demo.environment import DemoEnvironment, EnvironmentConfig
from readscale.demo.loadgen import LoadConfig, LoadResult, WriteLedger, run_load

#: The longest the flusher gets, once the load has stopped, to apply what is queued.
DRAIN_S = 60.0


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
            await phase(done, 0, requests, warm_s, now)
            before = done()
            run.injected_at = now()
            await asyncio.to_thread(fault.inject, env, run)
            await phase(done, before, requests if fault.hold_s > 0 else 0, run.injected_at + fault.hold_s, now)
            await asyncio.to_thread(fault.repair, env, run)
            run.repaired_at = now()
            during = done()
            run.phase_requests = [before, during - before]
            tail = asyncio.ensure_future(phase(done, during, requests, run.repaired_at + tail_s, now))
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


def run_service_fault(
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
        deadline = time.monotonic() + DRAIN_S
        while queue_length(env) and env.exit_code("flusher") is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the flusher drains what was acknowledged
        # Counted apart from lost writes: records still queued are acknowledged and kept
        # (Redis, AOF), not yet applied; lost_writes is what the database misses, which is
        # a loss only once the queue is empty. A dead flusher or one that did not drain in
        # DRAIN_S is its own failure, named as such (a CI run once reported such a run's
        # queued views as "lost" with nothing to tell them apart).
        undrained, dead_letters = queue_counts(env)
        flusher_exit = env.exit_code("flusher")
        flusher_log = ""
        if undrained or flusher_exit is not None:  # what the flusher said, for the report
            flusher_log = env.logs["flusher"].read_text(errors="replace")[-1500:]
        lost, examples = lost_writes(run.result.ledger, before, env.stack.primary.dsn)
        result = run.result
        recovery = None if run.recovered_at is None else round(run.recovered_at - run.repaired_at, 2)
        return {
            "fault": fault.name, "what": fault.what, "requests": result.requests, "failed": result.failed,
            "failed_reads": result.failed_reads, "failed_writes": result.failed_writes,
            "stale_reads": result.stale_reads, "stale_checks": result.stale_checks,
            "acked_writes": result.acked_writes, "lost_writes": lost, "undrained_writes": undrained,
            "dead_letters": dead_letters, "flusher_exit": flusher_exit, "flusher_log": flusher_log,
            "recovery_s": recovery,
            "retries": result.retries, "failures": dict(result.failures), "lost_examples": examples,
            "stale_examples": result.stale_examples[:3],
            "window_s": [round(run.injected_at, 2), round(run.repaired_at, 2)],
            "phase_requests": run.phase_requests,
        }  # fmt: skip
    finally:
        env.close(keep_logs=None if logs is None else logs / fault.name)
