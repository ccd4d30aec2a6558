"""The faults ``readscale bench chaos`` injects into the reference service, how each is
repaired, and the probe that says the broken part is back in use; and the phases every
fault run holds under load (a warm-up, the fault, a tail), shared with the Redis
Cluster fault (:mod:`readscale.bench.chaos.cluster`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from readscale.demo.environment import CDC_SLOT, WRITE_BEHIND_QUEUE, DemoEnvironment
from readscale.demo.loadgen import LoadResult

Probe = Callable[[DemoEnvironment, "FaultRun"], bool]

#: The longest a phase waits past its time for its share of requests (see phase).
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


def queue_length(env: DemoEnvironment) -> int:
    return queue_counts(env)[0]


def queue_counts(env: DemoEnvironment) -> tuple[int, int]:
    """The write-behind queue's records not yet flushed, and its dead letters."""
    from readscale._sync.writebehind.queue import WriteQueue

    queue = WriteQueue.from_url(env.redis_url, queue=WRITE_BEHIND_QUEUE)
    try:
        return queue.length(), queue.dead_letter_count()
    finally:
        queue.close()


def _queue_drained(env: DemoEnvironment, run: FaultRun) -> bool:
    return queue_length(env) == 0


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
ALL_FAULTS = (*FAULTS, "cluster_primary", "sentinel_master")


# -- phases -------------------------------------------------------------------------------------


async def phase(done: Callable[[], int], since: int, requests: int, until: float, clock: Callable[[], float]) -> None:
    """Wait until ``clock()`` reaches ``until`` and ``requests`` more requests than
    ``since`` are done: a phase holds under load however slow the machine is. Gives up
    after PHASE_CAP_S more seconds (the row's per-phase counts then tell)."""
    give_up = max(until, clock()) + PHASE_CAP_S
    while True:
        if clock() >= until and (done() - since >= requests or clock() >= give_up):
            return
        await asyncio.sleep(0.05)  # the clients count as they go: nothing to wait on
