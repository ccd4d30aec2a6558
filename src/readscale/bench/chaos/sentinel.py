"""The Redis Sentinel fault: the master killed while workers drive the cache, the
invalidation bus and durable write-behind through a ``redis+sentinel://`` URL; the
sentinels promote a replica and every client follows it.

Counted: failed operations (by kind), write-behind writes acknowledged and lost (each
acknowledged version must reach the writer once the queue drains on the new master:
durable mode waits for one replica, WAIT 1, before it acknowledges), bus messages sent
and received after the kill, and the recovery time: from the kill until a cache write
and read, a write-behind write and a bus message all succeed again. The stack test
(tests/stack/test_sentinel_failover.py) runs it short; ``readscale bench chaos`` runs it
as the ``sentinel_master`` fault.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from readscale.bench.chaos.faults import phase

WHAT = "the Redis Sentinel master killed (SIGKILL); the sentinels promote a replica"
QUEUE = "chaos"


class _Writer:
    """The database of the scenario: the newest version applied per key."""

    def __init__(self) -> None:
        self.applied: dict[str, int] = {}

    async def write_batch(self, records: Sequence[Any]) -> int:
        for r in records:
            self.applied[r.key] = max(self.applied.get(r.key, 0), r.version)
        return len(records)

    def failure_kind(self, exc: Exception) -> Any:
        from readscale.writebehind import FailureKind

        return FailureKind.TRANSIENT


async def sentinel_load(
    url: str, *, workers: int, kill: Callable[[], object], warm_s: float, tail_s: float, requests_per_phase: int,
    keys: int = 100, seed: int = 7, settled: Callable[[], bool] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run the scenario against the group behind ``url``; ``kill`` breaks its master.
    ``settled``: whether the group is whole again (the sentinels agree on one master that
    has a replica): the tail starts after it, not at the first answer of a master a later
    election may still demote."""
    from readscale import MemoryStore, RedisSettings
    from readscale._async.backends.redis import AsyncRedisBackend
    from readscale._async.cache.bus import AsyncInvalidationBus
    from readscale._async.cache.cache import AsyncCache
    from readscale._async.writebehind.flusher import AsyncFlusher
    from readscale._async.writebehind.producer import AsyncWriteBehind
    from readscale._core.cache.policy import CachePolicy
    from readscale._core.writebehind.settings import FlusherSettings, WriteBehindSettings

    settings = RedisSettings(url=url, socket_timeout_ms=1000.0, connect_timeout_ms=500.0)
    policy = CachePolicy(name="chaos", ttl=300.0)
    sender_bus, receiver_bus = AsyncInvalidationBus(settings), AsyncInvalidationBus(settings)
    cache = AsyncCache(AsyncRedisBackend(settings), l1=MemoryStore(1000), bus=sender_bus, policy=policy,
                       prefix="chaos:")  # fmt: skip
    reader = AsyncCache(AsyncRedisBackend(settings), l1=MemoryStore(1000), bus=receiver_bus, policy=policy,
                        prefix="chaos:")  # fmt: skip
    wb = AsyncWriteBehind(cache, WriteBehindSettings(queue=QUEUE, mode="durable"))
    writer = _Writer()
    flusher = AsyncFlusher(writer, settings, settings=FlusherSettings(queue=QUEUE, prefix="chaos:", block=0.2))
    await sender_bus.start()
    await receiver_bus.start()
    await wb.check()

    acked: dict[str, int] = {}  # key -> newest acknowledged write-behind version
    failures: Counter[str] = Counter()
    examples: list[str] = []
    counts = Counter[str]()
    marks: dict[str, float] = {}
    stop = asyncio.Event()
    phases: list[int] = []  # operations before the kill, until the new master served, after
    began = time.monotonic()

    def now() -> float:
        return time.monotonic() - began

    def ok(kind: str) -> None:
        counts[kind] += 1

    async def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        while not stop.is_set():
            key = f"k{rng.randrange(keys)}"
            roll = rng.random()
            try:
                if roll < 0.5:
                    await reader.get_or_load(key, lambda key=key: _load(key))  # type: ignore[misc]
                    ok("read")
                elif roll < 0.7:
                    await cache.set(key, {"key": key, "at": now()})
                    await cache.invalidate(key)  # on the bus: the reader drops its copy
                    ok("write")
                    counts["bus_sent_after_kill" if "injected" in marks else "bus_sent"] += 1
                else:
                    version = await wb.write_behind(f"w{key}", {"key": key, "n": counts["wb"]})
                    acked[f"w{key}"] = max(acked.get(f"w{key}", 0), version)
                    ok("wb")
            except Exception as exc:  # every failure counted by kind, the first of each kept
                counts["failed"] += 1
                counts["failed_" + ("read" if roll < 0.5 else "write" if roll < 0.7 else "wb")] += 1
                failures[type(exc).__name__] += 1
                if failures[type(exc).__name__] == 1:
                    examples.append("".join(traceback.format_exception(exc))[-1200:])
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.002)

    async def _load(key: str) -> dict[str, str]:
        return {"key": key}

    async def served_again() -> bool:
        """The new master serves: a cache write read back, a durable write-behind write
        acknowledged, and a bus message delivered to the other cache (the old master is
        dead: only the new one can answer)."""
        try:
            stamp = now()
            await cache.set("probe", stamp)  # a write to Redis raises while it cannot be reached
            await wb.write_behind("wprobe", stamp)
            before = receiver_bus.stats.received
            await cache.invalidate("probe")
            for _ in range(40):
                if receiver_bus.stats.received > before:
                    return True
                await asyncio.sleep(0.05)
        except Exception:
            return False
        return False

    def done() -> int:
        return counts["read"] + counts["write"] + counts["wb"] + counts["failed"]

    async def chaos() -> None:
        try:
            await phase(done, 0, requests_per_phase, warm_s, now)
            phases.append(done())
            marks["received_before"] = receiver_bus.stats.received
            marks["injected"] = now()
            await asyncio.to_thread(kill)
            deadline = time.monotonic() + 60.0
            while time.monotonic() < deadline:
                if await served_again() and (settled is None or await asyncio.to_thread(settled)):
                    marks["recovered"] = now()
                    break
                await asyncio.sleep(0.05)
            phases.append(done() - phases[0])
            tail_from = {k: counts[k] for k in ("read", "write", "wb", "failed")}
            await phase(done, done(), requests_per_phase, now() + tail_s, now)
            for k, v in tail_from.items():
                counts[f"tail_{k}"] = counts[k] - v
            phases.append(done() - sum(phases))
        finally:
            stop.set()

    flushing = asyncio.create_task(flusher.run())
    try:
        await asyncio.gather(chaos(), *(worker(i) for i in range(workers)))
        await asyncio.sleep(0.5)  # the last bus messages in flight
        received_after = receiver_bus.stats.received - marks.get("received_before", 0)
        drained = await flusher.drain(timeout=30.0)
    finally:
        flusher.stop()
        await flushing
        await flusher.aclose()
        await cache.aclose()
        await reader.aclose()
    lost = sum(1 for key, version in acked.items() if writer.applied.get(key, 0) < version)
    recovered = round(marks["recovered"] - marks["injected"], 2) if "recovered" in marks else None
    return {
        "fault": "sentinel_master", "what": WHAT,
        "requests": done(), "failed": counts["failed"], "failed_reads": counts["failed_read"],
        "failed_writes": counts["failed_write"] + counts["failed_wb"], "stale_reads": 0,
        "acked_writes": len(acked), "lost_writes": lost, "drained": drained,
        "reads": counts["read"], "writes": counts["write"], "wb_writes": counts["wb"],
        "bus_sent_after_kill": counts["bus_sent_after_kill"], "bus_received_after_kill": received_after,
        "recovery_s": recovered,
        "tail": {k: counts[f"tail_{k}"] for k in ("read", "write", "wb", "failed")},
        "failures": dict(failures), "failure_examples": examples,
        "window_s": [round(marks.get("injected", 0.0), 2)], "phase_requests": phases,
    }  # fmt: skip


def run_sentinel_fault(
    *, workers: int, warm_s: float, tail_s: float, requests: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    from readscale.stack import Stack, StackConfig

    base = Path(tempfile.mkdtemp(prefix="readscale-chaos-sentinel-"))
    base.chmod(0o755)
    stack = Stack(base / "stack")
    try:
        progress("sentinel_master: starting a Sentinel group (a master with AOF, two replicas, three sentinels)")
        stack.up(StackConfig(postgres=False, redis=False, sentinel=True, redis_aof=True))
        progress(f"sentinel_master: killing {stack.sentinel_master().name} (the master) under {workers} workers")
        return asyncio.run(
            sentinel_load(
                stack.sentinel_url, workers=workers, kill=stack.kill_sentinel_master, warm_s=warm_s, tail_s=tail_s,
                requests_per_phase=requests, settled=stack.sentinel_settled,
            )
        )  # fmt: skip
    finally:
        stack.down()
        shutil.rmtree(base, ignore_errors=True)
