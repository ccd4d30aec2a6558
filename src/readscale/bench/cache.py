"""``readscale bench cache``: the application cache measured side by side in one run.

- Hit path over the network: readscale's ``get`` of a 500-byte JSON value against raw
  redis-py ``GET`` + the same decode (msgspec), against peer libraries doing the same
  (cashews, aiocache, dogpile.cache), and against the Python floor (a raw socket with
  hiredis), sync and async, one connection, sequential calls.
- ``get_many`` of 100 keys against raw ``MGET`` + the same decode, the two interleaved
  call by call.
- The in-process tier's hit cost against cachetools' TTLCache.
- Hit ratios over Zipf traces against LRU and the offline optimum (from
  ``readscale.bench.hitratio`` when available).
- Django's cache API: readscale's Django backend against django-redis (get hit, set,
  ``get_many`` of 100), wall and CPU time per call, and the get with readscale's L1 on
  (``readscale.bench._django_cache``).
- The hit path traced: readscale's ``get`` with OpenTelemetry off (the default), with
  the API's no-op tracer, and with the SDK's tracer and a batch span processor whose
  exporter drops the spans (what tracing costs in process, without the network).
- A stampede: 800 callers over 4 processes on a missing key whose loader takes 20 ms,
  readscale against naive cache-aside and a SET NX lock whose losers sleep 50 ms.

Contenders run in interleaved rounds (see the harness) and the medians are reported.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from readscale.bench._traced import Tracing, traced, traced_async, tracing_modes
from readscale.bench.harness import BenchReport, Rounds, ratio, round_robin
from readscale.report.stats import percentile
from readscale.stack import Stack

DOC: dict[str, Any] = {
    "id": 1234,
    "name": "A reasonably named product",
    "price": 12.5,
    "tags": ["kitchen", "steel", "gift"],
    "data": "x" * 380,
}
KEYS = 1000
BATCH = 100


def _value_size() -> int:
    return len(msgspec.json.encode(DOC))


# -- async hit path -------------------------------------------------------------------------


AsyncRound = Callable[[], Awaitable[float]]


async def _async_contenders(
    url: str, calls: int, progress: Callable[[str], None], tracing: Tracing | None = None
) -> dict[str, AsyncRound]:
    import redis.asyncio as redis_asyncio

    from readscale import RedisSettings
    from readscale._async.backends.redis import AsyncRedisBackend
    from readscale._async.cache.cache import AsyncCache
    from readscale._core.cache.policy import CachePolicy, Tier

    decoder = msgspec.json.Decoder()
    raw_client: Any = redis_asyncio.Redis.from_url(url, protocol=2)
    payload = msgspec.json.encode(DOC)
    for i in range(KEYS):
        await raw_client.set(f"raw:{i}", payload)
    cache = AsyncCache(
        AsyncRedisBackend(RedisSettings(url=url, max_connections=4)),
        policy=CachePolicy(name="bench", ttl=3600.0, tiers=frozenset({Tier.L2}), early_refresh=0.0),
        prefix="bench:",
    )
    for i in range(KEYS):
        await cache.set(f"doc:{i}", DOC)

    async def raw() -> float:
        started = time.perf_counter()
        for i in range(calls):
            decoder.decode(await raw_client.get(f"raw:{i % KEYS}"))
        return (time.perf_counter() - started) / calls

    async def readscale() -> float:
        started = time.perf_counter()
        for i in range(calls):
            await cache.get(f"doc:{i % KEYS}")
        return (time.perf_counter() - started) / calls

    contenders: dict[str, Callable[[], Awaitable[float]]] = {"raw": raw, "readscale": readscale}
    if tracing is not None:
        contenders["otel_noop"] = traced_async(readscale, tracing, "noop")
        contenders["otel_sdk"] = traced_async(readscale, tracing, "sdk")
    try:
        from cashews import Cache as CashewsCache

        cashews = CashewsCache()
        cashews.setup(url, client_side=False)
        for i in range(KEYS):
            await cashews.set(f"cashews:{i}", DOC, expire=3600)

        async def cashews_get() -> float:
            started = time.perf_counter()
            for i in range(calls):
                await cashews.get(f"cashews:{i % KEYS}")
            return (time.perf_counter() - started) / calls

        contenders["cashews"] = cashews_get
    except ImportError:
        progress("cashews not installed: skipped")
    try:
        from aiocache import RedisCache
        from aiocache.serializers import JsonSerializer

        host, port = url.split("//")[1].split("/", maxsplit=1)[0].split(":")
        aio = RedisCache(serializer=JsonSerializer(), endpoint=host, port=int(port))
        for i in range(KEYS):
            await aio.set(f"aiocache:{i}", DOC, ttl=3600)

        async def aiocache_get() -> float:
            started = time.perf_counter()
            for i in range(calls):
                await aio.get(f"aiocache:{i % KEYS}")
            return (time.perf_counter() - started) / calls

        contenders["aiocache"] = aiocache_get
    except ImportError:
        progress("aiocache not installed: skipped")
    return contenders


async def _measure_async(
    url: str, calls: int, rounds: int, progress: Callable[[str], None], tracing: Tracing | None
) -> dict[str, Rounds]:
    contenders = await _async_contenders(url, calls, progress, tracing)
    per: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        await fn()  # warm-up
    for r in range(rounds):
        progress(f"async hit path, round {r + 1}/{rounds}")
        for name, fn in contenders.items():
            per[name].append(await fn())
    return {name: Rounds(tuple(v)) for name, v in per.items()}


# -- sync hit path ----------------------------------------------------------------------------


def _floor_get(url: str, calls: int) -> Callable[[], float]:
    """The Python floor: a raw socket, hand-written RESP, hiredis parsing, the same decode."""
    import hiredis

    host, port = url.split("//")[1].split("/", maxsplit=1)[0].split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    decoder = msgspec.json.Decoder()
    requests = [f"*2\r\n$3\r\nGET\r\n${len(k)}\r\n{k}\r\n".encode() for k in (f"raw:{i}" for i in range(KEYS))]

    def run() -> float:
        reader = hiredis.Reader()
        started = time.perf_counter()
        for i in range(calls):
            sock.sendall(requests[i % KEYS])
            reply: Any = False
            while reply is False:
                reader.feed(sock.recv(65536))
                reply = reader.gets()
            decoder.decode(reply)
        return (time.perf_counter() - started) / calls

    return run


def _sync_contenders(
    url: str, calls: int, progress: Callable[[str], None], tracing: Tracing | None = None
) -> dict[str, Callable[[], float]]:
    import redis

    from readscale import RedisSettings
    from readscale._core.cache.policy import CachePolicy, Tier
    from readscale._sync.backends.redis import RedisBackend
    from readscale._sync.cache.cache import Cache

    decoder = msgspec.json.Decoder()
    raw_client: Any = redis.Redis.from_url(url, protocol=2)
    cache = Cache(
        RedisBackend(RedisSettings(url=url, max_connections=4)),
        policy=CachePolicy(name="bench", ttl=3600.0, tiers=frozenset({Tier.L2}), early_refresh=0.0),
        prefix="bench:",
    )

    def raw() -> float:
        started = time.perf_counter()
        for i in range(calls):
            decoder.decode(raw_client.get(f"raw:{i % KEYS}"))
        return (time.perf_counter() - started) / calls

    def readscale() -> float:
        started = time.perf_counter()
        for i in range(calls):
            cache.get(f"doc:{i % KEYS}")
        return (time.perf_counter() - started) / calls

    contenders: dict[str, Callable[[], float]] = {"floor": _floor_get(url, calls), "raw": raw, "readscale": readscale}
    if tracing is not None:
        contenders["otel_noop"] = traced(readscale, tracing, "noop")
        contenders["otel_sdk"] = traced(readscale, tracing, "sdk")
    try:
        from dogpile.cache import make_region

        region = make_region().configure("dogpile.cache.redis", arguments={"url": url}, expiration_time=3600)
        for i in range(KEYS):
            region.set(f"dogpile:{i}", DOC)

        def dogpile_get() -> float:
            started = time.perf_counter()
            for i in range(calls):
                region.get(f"dogpile:{i % KEYS}")
            return (time.perf_counter() - started) / calls

        contenders["dogpile"] = dogpile_get
    except ImportError:
        progress("dogpile.cache not installed: skipped")
    return contenders


def _get_many(url: str, rounds: int) -> tuple[Rounds, Rounds]:
    import redis

    from readscale import RedisSettings
    from readscale._core.cache.policy import CachePolicy, Tier
    from readscale._sync.backends.redis import RedisBackend
    from readscale._sync.cache.cache import Cache

    decoder = msgspec.json.Decoder()
    raw_client: Any = redis.Redis.from_url(url, protocol=2)
    cache = Cache(
        RedisBackend(RedisSettings(url=url, max_connections=4)),
        policy=CachePolicy(name="bench", ttl=3600.0, tiers=frozenset({Tier.L2})),
        prefix="bench:",
    )
    batches = [[i * BATCH + j for j in range(BATCH)] for i in range(KEYS // BATCH)]
    raw_keys = [[f"raw:{i}" for i in batch] for batch in batches]
    rs_keys = [[f"doc:{i}" for i in batch] for batch in batches]
    calls = 200

    def raw(n: int) -> None:
        [decoder.decode(v) for v in raw_client.mget(raw_keys[n % len(raw_keys)])]

    def readscale(n: int) -> None:
        if len(cache.get_many(rs_keys[n % len(rs_keys)])) != BATCH:
            raise AssertionError("a miss in a hit bench")

    def one_round() -> tuple[float, float]:
        """Seconds per call of each, the two interleaved call by call (who goes first
        alternates): a call takes half a millisecond, so on a shared host a burst of
        load lands on both alike, where whole rounds one after the other could catch it
        on one side only (per-round ratios ranged 0.7-1.4 that way)."""
        clock = time.perf_counter
        spent_raw = spent_rs = 0.0
        for n in range(calls):
            if n % 2:
                t0 = clock()
                readscale(n)
                t1 = clock()
                raw(n)
                t2 = clock()
                spent_rs += t1 - t0
                spent_raw += t2 - t1
            else:
                t0 = clock()
                raw(n)
                t1 = clock()
                readscale(n)
                t2 = clock()
                spent_raw += t1 - t0
                spent_rs += t2 - t1
        return spent_raw / calls, spent_rs / calls

    one_round()  # warm-up
    measured = [one_round() for _ in range(rounds)]
    return Rounds(tuple(r for r, _ in measured)), Rounds(tuple(m for _, m in measured))


# -- stampede -------------------------------------------------------------------------------


def _stampede(url: str, progress: Callable[[str], None], repeats: int) -> dict[str, tuple[float, float]]:
    from readscale.testing.stampede import StampedeOptions, run_stampede

    out: dict[str, tuple[float, float]] = {}
    for mode in ("readscale", "naive", "sleep_lock"):
        calls: list[float] = []
        p99s: list[float] = []
        for r in range(repeats):
            progress(f"stampede {mode}, run {r + 1}/{repeats}")
            result = run_stampede(StampedeOptions(redis_url=url, mode=mode, callers=200, loader_seconds=0.02), 4)
            if result.errors:
                raise RuntimeError(f"stampede {mode}: {result.errors} caller errors")
            calls.append(result.loader_calls)
            p99s.append(percentile(result.latencies_ms, 99))
        out[mode] = (Rounds(tuple(calls)).median, Rounds(tuple(p99s)).median)
    return out


# -- the bench --------------------------------------------------------------------------------


def run(*, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport:
    calls = 500 if quick else 3000
    rounds = 2 if quick else rounds
    report = BenchReport("cache", params={"rounds": rounds, "calls_per_round": calls, "value_bytes": _value_size()})
    base = Path(tempfile.mkdtemp(prefix="readscale-bench-cache-"))
    base.chmod(0o755)
    stack = Stack(base / "stack")
    try:
        stack.prepare()
        url = stack.start_redis().url
        tracing = tracing_modes(progress)
        try:
            progress("async hit path")
            a = asyncio.run(_measure_async(url, calls, rounds, progress, tracing))
            progress("sync hit path")
            s = round_robin(_sync_contenders(url, calls, progress, tracing), rounds)
        finally:
            if tracing is not None:
                tracing.close()
        us = 1e6
        report.add("redis_get_async_us", round(a["readscale"].median * us, 2), "us", a["readscale"].spread("{:.2e}"))
        report.add("redis_get_async_raw_us", round(a["raw"].median * us, 2), "us")
        report.add("redis_get_async_ratio_raw", round(ratio(a["readscale"].median, a["raw"].median), 3), "ratio")
        for peer in ("cashews", "aiocache"):
            if peer in a:
                report.add(f"redis_get_async_{peer}_us", round(a[peer].median * us, 2), "us")
                value = ratio(a["readscale"].median, a[peer].median)
                report.add(f"redis_get_async_ratio_{peer}", round(value, 3), "ratio")
        report.add("redis_get_sync_us", round(s["readscale"].median * us, 2), "us", s["readscale"].spread("{:.2e}"))
        report.add("redis_get_sync_raw_us", round(s["raw"].median * us, 2), "us")
        report.add("redis_get_sync_ratio_raw", round(ratio(s["readscale"].median, s["raw"].median), 3), "ratio")
        report.add("redis_get_floor_us", round(s["floor"].median * us, 2), "us", "raw socket + hiredis + decode")
        report.add("redis_get_sync_ratio_floor", round(ratio(s["readscale"].median, s["floor"].median), 3), "ratio")
        _traced_rows(report, a, s)
        if "dogpile" in s:
            report.add("redis_get_sync_dogpile_us", round(s["dogpile"].median * us, 2), "us")
            value = ratio(s["readscale"].median, s["dogpile"].median)
            report.add("redis_get_sync_ratio_dogpile", round(value, 3), "ratio")
        progress("get_many of 100 keys")
        raw_many, rs_many = _get_many(url, rounds)
        report.add("get_many_100_us", round(rs_many.median * us, 1), "us")
        report.add("get_many_100_ratio_mget", round(ratio(rs_many.median, raw_many.median), 3), "ratio")
        _django(report, url, calls, rounds, progress)
        progress("in-process tier")
        from readscale.bench import hitratio

        l1 = hitratio.hit_path_ns(rounds)
        note = "net of the empty loop; " + l1["store"].spread("{:.0f}")
        report.add("l1_get_ns", round(l1["store"].median, 1), "ns", note)
        report.add("l1_get_ns_cachetools_ttl", round(l1["ttl"].median, 1), "ns")
        report.add("l1_get_ratio_cachetools_ttl", round(ratio(l1["store"].median, l1["ttl"].median), 3), "ratio")
        _hit_ratios(report, quick, progress)
        stampede = _stampede(url, progress, repeats=1 if quick else 3)
        report.add("stampede_loader_calls", stampede["readscale"][0], "calls")
        report.add("stampede_loader_calls_naive", stampede["naive"][0], "calls")
        report.add("stampede_loader_calls_sleep_lock", stampede["sleep_lock"][0], "calls")
        report.add("stampede_p99_ms", round(stampede["readscale"][1], 1), "ms", "loader takes 20 ms")
        report.add("stampede_p99_ms_naive", round(stampede["naive"][1], 1), "ms")
        report.add("stampede_p99_ms_sleep_lock", round(stampede["sleep_lock"][1], 1), "ms")
    finally:
        stack.down()
        base.rmdir()
    return report


def _django(report: BenchReport, url: str, calls: int, rounds: int, progress: Callable[[str], None]) -> None:
    """readscale's Django cache backend against django-redis (``_django_cache``)."""
    from readscale.bench import _django_cache

    progress("Django cache backend vs django-redis")
    try:
        found = _django_cache.measure(url, DOC, max(calls // 10, 100), max(rounds * 4, 21))
    except ImportError as exc:
        progress(f"{exc.name} not installed: the Django cache comparison is skipped")
        return
    us = 1e6
    for op, per in found.items():
        (wall, cpu), (their_wall, their_cpu) = per["readscale"], per["django_redis"]
        report.add(f"django_{op}_us", round(wall.median * us, 1), "us", wall.spread("{:.2e}"))
        report.add(f"django_{op}_us_django_redis", round(their_wall.median * us, 1), "us")
        report.add(f"django_{op}_ratio_django_redis", round(ratio(wall.median, their_wall.median), 3), "ratio")
        report.add(f"django_{op}_cpu_us", round(cpu.median * us, 1), "us", "process_time per call")
        report.add(f"django_{op}_cpu_us_django_redis", round(their_cpu.median * us, 1), "us")
        report.add(f"django_{op}_cpu_ratio_django_redis", round(ratio(cpu.median, their_cpu.median), 3), "ratio")
    l1_wall, _ = found["get"]["readscale_l1"]
    report.add("django_get_l1_us", round(l1_wall.median * us, 2), "us", "readscale's backend with L1_MAX_ENTRIES")


def _traced_rows(report: BenchReport, a: dict[str, Rounds], s: dict[str, Rounds]) -> None:
    """The hit path traced, against the same path untraced in the same rounds."""
    us = 1e6
    for flavour, measured in (("async", a), ("sync", s)):
        for mode, what in (("noop", "the API's no-op tracer"), ("sdk", "SDK, BatchSpanProcessor, spans dropped")):
            if f"otel_{mode}" not in measured:
                continue
            traced = measured[f"otel_{mode}"]
            report.add(f"redis_get_{flavour}_otel_{mode}_us", round(traced.median * us, 2), "us", what)
            value = ratio(traced.median, measured["readscale"].median)
            report.add(f"redis_get_{flavour}_ratio_otel_{mode}", round(value, 3), "ratio", "against tracing off")


def _hit_ratios(report: BenchReport, quick: bool, progress: Callable[[str], None]) -> None:
    """The L1's hit ratio on the Zipf traces of shared/notes/baselines.md, with LRU and
    the offline optimum (Belady MIN) from the same traces (``bench hitratio`` has more)."""
    import statistics

    from readscale.bench import hitratio

    seeds = [0] if quick else [0, 1, 2]
    for scenario in hitratio.scenarios(200_000 if quick else hitratio.REQUESTS)[:4]:
        per: dict[str, list[float]] = {}
        for seed in seeds:
            progress(f"hit ratio {scenario.name}, seed {seed}")
            for suffix, value in hitratio.hit_ratios(scenario, seed).items():
                per.setdefault(suffix, []).append(value)
        for suffix in ("", "_lru", "_opt", "_static"):
            if suffix in per:
                report.add(f"hit_ratio_{scenario.name}{suffix}", round(statistics.median(per[suffix]), 4), "ratio")


__all__ = ["run"]
