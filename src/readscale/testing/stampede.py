"""A cache stampede across real processes: N processes x M concurrent callers, one key.

Used by the test suite (exactly one load in total) and by ``readscale bench cache``
(loader calls and latency of readscale against naive cache-aside and a sleep-and-retry
lock). Every process waits for a start signal in Redis, then fires all its callers at
once on a key that is not in the cache. The loader counts its calls with INCR in Redis,
so the count covers every process. With ``kill_holder``, the first loader to start kills
its own process with SIGKILL mid-load, as a crashed lease holder would.

Run one worker by hand: ``python -m readscale.testing.stampede '<json options>'``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Mode = Literal["readscale", "naive", "sleep_lock"]


@dataclass(frozen=True)
class StampedeOptions:
    redis_url: str
    mode: Mode = "readscale"
    callers: int = 200
    loader_seconds: float = 0.02
    lease_ttl: float = 2.0
    kill_holder: bool = False
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    timeout: float = 30.0


@dataclass
class StampedeResult:
    loader_calls: int
    callers: int
    errors: int
    wrong_values: int
    latencies_ms: list[float]
    processes_finished: int
    processes_killed: int


async def _worker(opts: StampedeOptions) -> dict[str, Any]:
    import redis.asyncio as redis_asyncio

    from readscale import RedisSettings
    from readscale._async.backends.redis import AsyncRedisBackend
    from readscale._async.cache.cache import AsyncCache
    from readscale._core.cache.policy import CachePolicy, Tier

    prefix = f"stampede:{opts.run_id}"
    # The competitors get the same pool as readscale: 32 connections, callers queue for one.
    pool = redis_asyncio.BlockingConnectionPool.from_url(opts.redis_url, max_connections=32, timeout=10, protocol=2)
    client = redis_asyncio.Redis(connection_pool=pool)
    expected = {"value": opts.run_id}

    async def loader() -> dict[str, str]:
        calls = await client.incr(f"{prefix}:loads")
        if opts.kill_holder and calls == 1:
            await asyncio.sleep(opts.loader_seconds / 2)
            os.kill(os.getpid(), signal.SIGKILL)
        await asyncio.sleep(opts.loader_seconds)
        return expected

    # Generous timeouts: several processes start at once on a small machine, and a
    # connect that loses the CPU for a moment must not count as a dead server.
    settings = RedisSettings(url=opts.redis_url, max_connections=32, socket_timeout_ms=2000, connect_timeout_ms=2000)
    policy = CachePolicy(
        name="stampede", ttl=300.0, tiers=frozenset({Tier.L2}), lease_ttl=opts.lease_ttl, lease_wait=opts.lease_ttl * 3
    )
    cache = AsyncCache(AsyncRedisBackend(settings), prefix=f"{prefix}:", policy=policy)
    key = "hot"
    physical = f"{prefix}:naive:{key}"

    async def naive() -> Any:
        raw = await client.get(physical)
        if raw is not None:
            return json.loads(raw)
        value = await loader()
        await client.set(physical, json.dumps(value), ex=300)
        return value

    async def sleep_lock() -> Any:
        while True:
            raw = await client.get(physical)
            if raw is not None:
                return json.loads(raw)
            if await client.set(f"{physical}:lock", "1", nx=True, px=int(opts.lease_ttl * 1000)):
                value = await loader()
                await client.set(physical, json.dumps(value), ex=300)
                await client.delete(f"{physical}:lock")
                return value
            await asyncio.sleep(0.05)

    async def readscale() -> Any:
        return await cache.get_or_load(key, loader)

    call = {"readscale": readscale, "naive": naive, "sleep_lock": sleep_lock}[opts.mode]

    # Warm up as a long-running service would be: connections open, scripts loaded, the
    # fill listener subscribed. Only the stampede itself is measured.
    async def warm_loader() -> str:
        return "warm"

    await asyncio.gather(*(client.get(f"{prefix}:warm") for _ in range(32)))
    await cache.get_or_load(f"warm:{os.getpid()}", warm_loader)
    backend = cache.backend
    if isinstance(backend, AsyncRedisBackend):
        await backend.wait_for_fill(f"{prefix}:warm-listener", 0.01)
    await client.incr(f"{prefix}:ready")
    deadline = time.monotonic() + opts.timeout
    while not await client.exists(f"{prefix}:go"):
        if time.monotonic() > deadline:
            raise TimeoutError("no start signal")
        await asyncio.sleep(0.001)
    started = time.perf_counter()

    async def timed() -> float:
        value = await call()
        if value != expected:
            raise ValueError(f"wrong value {value!r}")
        return (time.perf_counter() - started) * 1000

    results = await asyncio.gather(*(timed() for _ in range(opts.callers)), return_exceptions=True)
    stats = cache.stats.snapshot()
    await cache.aclose()
    await client.aclose()
    await pool.disconnect()
    errors = [r for r in results if isinstance(r, BaseException)]
    return {
        "latencies_ms": [r for r in results if isinstance(r, float)],
        "errors": len(errors),
        "wrong_values": sum(isinstance(e, ValueError) for e in errors),
        "first_error": repr(errors[0]) if errors else None,
        "stats": stats,
    }


def run_stampede(opts: StampedeOptions, processes: int = 4) -> StampedeResult:
    """Run ``processes`` workers at once and gather their results."""
    import redis

    client = redis.Redis.from_url(opts.redis_url, protocol=2)
    prefix = f"stampede:{opts.run_id}"
    argv = [sys.executable, "-m", "readscale.testing.stampede", json.dumps(asdict(opts))]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(processes)
    ]
    try:
        deadline = time.monotonic() + opts.timeout
        while int(client.get(f"{prefix}:ready") or 0) < processes:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                failed = [p.stderr.read() for p in procs if p.poll() is not None and p.stderr]
                raise RuntimeError("stampede workers did not get ready: " + " ".join(failed))
            time.sleep(0.005)
        client.set(f"{prefix}:go", 1, ex=600)
        outputs = [p.communicate(timeout=opts.timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    latencies: list[float] = []
    errors = wrong = finished = killed = 0
    for proc, (out, err) in zip(procs, outputs, strict=True):
        if proc.returncode == -signal.SIGKILL:
            killed += 1
            continue
        if proc.returncode != 0:
            raise RuntimeError(f"stampede worker failed ({proc.returncode}): {err[-2000:]}")
        data = json.loads(out)
        finished += 1
        latencies += data["latencies_ms"]
        errors += data["errors"]
        wrong += data["wrong_values"]
        if data["errors"]:
            sys.stderr.write(f"stampede worker error: {data['first_error']}\n")
        if os.environ.get("READSCALE_STAMPEDE_DEBUG"):
            sys.stderr.write(json.dumps(data["stats"]) + "\n")
    loads = int(client.get(f"{prefix}:loads") or 0)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()
    return StampedeResult(loads, opts.callers * finished, errors, wrong, latencies, finished, killed)


def main() -> None:
    opts = StampedeOptions(**json.loads(sys.argv[1]))
    sys.stdout.write(json.dumps(asyncio.run(_worker(opts))))


if __name__ == "__main__":
    main()
