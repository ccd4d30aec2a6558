"""``readscale bench replicas``: read-your-writes by WAL position against the 2-second rule.

One private stack (a primary and two streaming replicas), one workload, two routing
rules side by side, in interleaved rounds (the medians are reported):

- **Sessions** (the consistency scenario): ``sessions`` concurrent sessions; each writes
  its own row, then reads it back ``reads_per_write`` times, one read every ``think``
  seconds (so reads land from 0 to about 4 s after the write: inside the rule's 2 s
  window and past it). A read that returns less than the session's last write is a
  read-your-writes violation. The replica share is the share of those reads served by
  a replica. Run once with both replicas caught up, once with r2 delayed 3 s
  (``recovery_min_apply_delay``), where reads past the 2 s window that land on r2 are
  stale under the time-window rule.
- **Throughput**: ``workers`` closed-loop sessions, one write per 100 reads, as fast as
  they go for ``duration`` seconds: routed by LSN, then everything on the primary.

Figures come from real servers on this machine; the client and the three PostgreSQL
servers share its cores, so throughput is bounded by the machine, not by a replica.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from readscale._async.replicas.router import AsyncReplicaRouter
from readscale._core.replicas.settings import SESSION, ReadMode, ReplicaSettings, TimeWindow
from readscale._shared.replicas.causal_context import causal_context
from readscale.bench.harness import BenchReport, Rounds
from readscale.stack import Stack, StackConfig

DELAY = 3.0
CREATE = "CREATE TABLE bench_ryw (id int PRIMARY KEY, n bigint NOT NULL, pad text)"
FILL = "INSERT INTO bench_ryw SELECT g, 0, repeat('x', 100) FROM generate_series(0, %s) g"
INCREMENT = "UPDATE bench_ryw SET n = n + 1 WHERE id = %s RETURNING n"
READ_OWN = "SELECT n FROM bench_ryw WHERE id = %s"
READ_ROW = "SELECT n, pad FROM bench_ryw WHERE id = %s"


@dataclass(frozen=True)
class Workload:
    sessions: int
    cycles: int
    reads_per_write: int
    think: float
    workers: int
    duration: float
    rows: int = 1000


@dataclass(frozen=True)
class SessionResult:
    reads: int
    violations: int
    replica_share: float


def _settings(stack: Stack, **overrides: Any) -> ReplicaSettings:
    base: dict[str, Any] = {
        "primary": stack.primary.dsn,
        "replicas": {r.name: r.dsn for r in stack.replicas},
        "max_pool_size": 24,
        "min_pool_size": 4,
    }
    return ReplicaSettings(**{**base, **overrides})


async def _prepare(stack: Stack, rows: int) -> None:
    async with await psycopg.AsyncConnection.connect(stack.primary.dsn, autocommit=True) as conn:
        await conn.execute("DROP TABLE IF EXISTS bench_ryw")
        await conn.execute(CREATE)
        await conn.execute(FILL, (rows - 1,))


def _caught_up(stack: Stack) -> None:
    deadline = time.monotonic() + 60
    while any(stack.replay_lag_bytes(r.name) > 0 for r in stack.replicas):
        if time.monotonic() > deadline:
            raise RuntimeError("replicas did not catch up within 60 s")
        time.sleep(0.05)


async def _sessions(stack: Stack, mode: ReadMode, load: Workload, first_row: int) -> SessionResult:
    """The consistency scenario under one routing rule: violations and replica share."""
    violations = 0
    reads = 0
    async with AsyncReplicaRouter(_settings(stack, default_mode=mode)) as router:

        async def session(row: int) -> None:
            nonlocal violations, reads
            with causal_context():
                for _ in range(load.cycles):
                    async with router.write() as conn:
                        cur = await conn.execute(INCREMENT, (row,))
                        got = await cur.fetchone()
                    assert got is not None
                    wrote = int(got[0])
                    for _ in range(load.reads_per_write):
                        seen = await router.fetch_one(READ_OWN, (row,))
                        reads += 1
                        if seen is None or int(seen[0]) < wrote:
                            violations += 1
                        await asyncio.sleep(load.think)

        await asyncio.gather(*(session(first_row + i) for i in range(load.sessions)))
        stats = router.stats()
    on_primary = stats.primary_reads + stats.time_window_primary_reads
    share = stats.replica_reads / (stats.replica_reads + on_primary) if reads else float("nan")
    return SessionResult(reads, violations, share)


async def _throughput_lsn(stack: Stack, load: Workload) -> float:
    async with AsyncReplicaRouter(_settings(stack)) as router:
        reads = 0
        stop = time.perf_counter() + load.duration

        async def worker(seed: int) -> None:
            nonlocal reads
            rng = random.Random(seed)
            with causal_context():
                i = 0
                while time.perf_counter() < stop:
                    row = rng.randrange(load.rows)
                    if i % 100 == 99:
                        async with router.write() as conn:
                            await conn.execute(INCREMENT, (row,))
                    else:
                        await router.fetch_one(READ_ROW, (row,))
                        reads += 1
                    i += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(load.workers)))
        return reads / (time.perf_counter() - began)


async def _throughput_primary(stack: Stack, load: Workload) -> float:
    """The same closed loop with every read and write on the primary (no router)."""
    async with AsyncConnectionPool(
        stack.primary.dsn, min_size=4, max_size=24, kwargs={"autocommit": True}, open=False
    ) as pool:
        await pool.wait()
        reads = 0
        stop = time.perf_counter() + load.duration

        async def worker(seed: int) -> None:
            nonlocal reads
            rng = random.Random(seed)
            i = 0
            while time.perf_counter() < stop:
                row = rng.randrange(load.rows)
                async with pool.connection() as conn:
                    if i % 100 == 99:
                        async with conn.transaction():
                            await conn.execute(INCREMENT, (row,))
                    else:
                        await (await conn.execute(READ_ROW, (row,))).fetchone()
                        reads += 1
                i += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(load.workers)))
        return reads / (time.perf_counter() - began)


def _round(stack: Stack, load: Workload, progress: Callable[[str], None], label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    lsn, window = SESSION, TimeWindow(2.0)
    for suffix, delayed in (("", False), ("_delayed3s", True)):
        stack.set_apply_delay("r2", DELAY if delayed else 0)
        if not delayed:
            _caught_up(stack)
        for name, mode, first_row in (("lsn", lsn, 0), ("time_window", window, load.sessions)):
            progress(f"{label}: sessions, {name}{suffix or ', replicas caught up'}")
            result = asyncio.run(_sessions(stack, mode, load, first_row))
            out[f"ryw_violations_{name}{suffix}"] = result.violations
            out[f"replica_share_after_write_{name}{suffix}"] = result.replica_share
            out[f"reads_after_write{suffix}_{name}"] = result.reads
    stack.set_apply_delay("r2", 0)
    _caught_up(stack)
    progress(f"{label}: throughput, routed by LSN")
    out["reads_per_s_lsn"] = asyncio.run(_throughput_lsn(stack, load))
    progress(f"{label}: throughput, primary only")
    out["reads_per_s_primary_only"] = asyncio.run(_throughput_primary(stack, load))
    return out


UNITS = {
    "ryw_violations": "reads",
    "replica_share": "share",
    "reads_per_s": "reads/s",
    "reads_after_write": "reads",
}


def run(*, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport:
    rounds = 1 if quick else rounds
    load = (
        Workload(sessions=8, cycles=1, reads_per_write=36, think=0.1, workers=8, duration=2.0)
        if quick
        else Workload(sessions=16, cycles=2, reads_per_write=40, think=0.1, workers=8, duration=5.0)
    )
    report = BenchReport(
        "replicas",
        params={
            "rounds": rounds,
            "replicas": 2,
            "sessions": load.sessions,
            "writes_per_session": load.cycles,
            "reads_per_write": load.reads_per_write,
            "think_s": load.think,
            "time_window_s": 2.0,
            "delayed_replica": "r2",
            "delay_s": DELAY,
            "throughput_workers": load.workers,
            "throughput_duration_s": load.duration,
            "throughput_reads_per_write": 99,
            "note": "client and servers share this machine's cores; figures from a shared machine vary",
        },
    )
    root = Path(tempfile.mkdtemp(prefix="readscale-bench-replicas-"))
    root.chmod(0o755)
    stack = Stack(root / "stack")
    per: dict[str, list[float]] = {}
    try:
        progress("starting a primary and two replicas")
        stack.up(StackConfig(redis=False))
        asyncio.run(_prepare(stack, load.rows))
        _caught_up(stack)
        for i in range(rounds):
            for name, value in _round(stack, load, progress, f"round {i + 1}/{rounds}").items():
                per.setdefault(name, []).append(value)
    finally:
        stack.down()
        root.rmdir()
    order = [
        "ryw_violations_lsn",
        "ryw_violations_time_window",
        "replica_share_after_write_lsn",
        "replica_share_after_write_time_window",
        "reads_per_s_lsn",
        "reads_per_s_primary_only",
        "ryw_violations_lsn_delayed3s",
        "ryw_violations_time_window_delayed3s",
        "replica_share_after_write_lsn_delayed3s",
        "replica_share_after_write_time_window_delayed3s",
        "reads_after_write_lsn",
        "reads_after_write_time_window",
        "reads_after_write_delayed3s_lsn",
        "reads_after_write_delayed3s_time_window",
    ]
    for name in order:
        r = Rounds(tuple(per[name]))
        unit = next(u for prefix, u in UNITS.items() if name.startswith(prefix))
        value = round(r.median, 3) if unit == "share" else round(r.median, 1)
        report.add(name, value, unit, r.spread())
    return report
