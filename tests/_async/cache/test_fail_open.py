"""Fail-open: a dead or hung Redis never reaches the caller, and the cache comes back."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest

from readscale import RedisSettings
from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache.cache import AsyncCache
from readscale._core.cache.breaker import BreakerSettings
from readscale._core.cache.policy import CachePolicy, Tier
from readscale._shared.primitives.locks import async_sleep
from readscale.errors import CacheUnavailableError
from readscale.stack import Stack, StackConfig

pytestmark = [pytest.mark.stack, pytest.mark.chaos]

ROWS = {f"row:{i}": {"id": i, "name": f"row {i}"} for i in range(20)}
POLICY = CachePolicy(name="failopen", ttl=300.0, tiers=frozenset({Tier.L2}))


def make_cache(stack: Stack) -> AsyncCache:
    backend = AsyncRedisBackend(RedisSettings(url=stack.redis.url, socket_timeout_ms=50, connect_timeout_ms=50))
    # The loaders here read a dict that is always current, as a primary is.
    return AsyncCache(
        backend, policy=POLICY, breaker=BreakerSettings(failure_threshold=2, cooldown=0.2), loader_source="primary"
    )


async def read_all(cache: AsyncCache, loads: Counter[str]) -> None:
    for key, row in ROWS.items():

        async def load(key: str = key) -> dict[str, object]:
            loads[key] += 1
            return ROWS[key]

        assert await cache.get_or_load(key, load) == row


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["kill", "freeze"])
async def test_reads_survive_a_dead_or_hung_redis_and_the_cache_comes_back(
    readscale_stack_factory: Callable[..., Stack], fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    stack = readscale_stack_factory(StackConfig(postgres=False))
    cache = make_cache(stack)
    loads: Counter[str] = Counter()
    await read_all(cache, loads)
    await read_all(cache, loads)
    assert sum(loads.values()) == len(ROWS)  # second pass: all hits
    assert cache.stats.l2.hits == len(ROWS)

    if fault == "kill":
        stack.kill("redis")
    else:
        stack.freeze("redis")
    for _ in range(3):
        await read_all(cache, loads)  # no exception reaches the caller
    assert sum(loads.values()) == 4 * len(ROWS)
    assert cache.stats.breaker_opens >= 1
    assert cache.stats.l2.errors >= 2
    # The breaker stops paying the timeout: most calls skipped the server entirely.
    assert cache.stats.l2.skipped > cache.stats.l2.errors
    # The operator's log line carries its fields (a JSON formatter writes them out).
    down = [r for r in caplog.records if getattr(r, "event", None) == "cache_backend_unavailable"]
    assert down, [r.getMessage() for r in caplog.records]
    assert vars(down[0])["cache"] == cache.stats.name and vars(down[0])["backend"] == "redis"
    assert vars(down[0])["reason"] and vars(down[0])["cooldown_s"] > 0

    if fault == "kill":
        stack.start("redis")  # an empty Redis (no persistence)
    else:
        stack.thaw("redis")
    await async_sleep(0.5)  # past the breaker's cooldown: the next call probes
    fills_before = cache.stats.l2.fills
    hits_before = cache.stats.l2.hits
    await read_all(cache, loads)
    await read_all(cache, loads)
    assert cache.stats.l2.fills > fills_before or cache.stats.l2.hits > hits_before
    assert cache.stats.l2.hits > hits_before  # the cache serves again
    back = [r for r in caplog.records if getattr(r, "event", None) == "cache_backend_back"]
    assert back and vars(back[0])["backend"] == "redis"
    await cache.aclose()


@pytest.mark.anyio
async def test_deletes_are_loud_when_redis_is_down(readscale_stack_factory: Callable[..., Stack]) -> None:
    stack = readscale_stack_factory(StackConfig(postgres=False))
    cache = make_cache(stack)
    await cache.set("k", 1)
    stack.kill("redis")
    with pytest.raises(CacheUnavailableError) as info:
        await cache.delete("k")
    assert info.value.backend == "redis"
    await cache.aclose()


@pytest.mark.anyio
async def test_a_value_written_while_redis_was_unreachable_never_comes_back_stale(
    readscale_stack_factory: Callable[..., Stack],
) -> None:
    stack = readscale_stack_factory(StackConfig(postgres=False))
    cache = make_cache(stack)
    db = {"price": 1}

    async def load() -> int:
        return db["price"]

    async def write() -> int:
        db["price"] = 2
        return 2

    assert await cache.get_or_load("price", load) == 1  # Redis holds 1
    stack.freeze("redis")  # hung, its data intact
    try:
        for _ in range(2):  # two timeouts open the breaker: Redis is skipped from now on
            await cache.get("other")
        assert cache.stats.breaker_opens == 1
        assert await cache.write_through("price", write) == 2  # the database has 2; Redis never hears it
        assert await cache.get_or_load("price", load) == 2  # the breaker: straight to the loader
    finally:
        stack.thaw("redis")
    await async_sleep(0.3)  # past the breaker's cooldown
    assert await cache.get_or_load("price", load) == 2  # not Redis' old 1
    assert cache.stats.l2.unsynced >= 1
    assert cache.stats.l2.resynced >= 1
    assert await cache.get("price") == 2  # and the fresh value is cached again
    await cache.aclose()


@pytest.mark.anyio
async def test_loads_while_redis_is_down_read_at_most_the_fail_open_staleness(
    readscale_stack_factory: Callable[..., Stack],
) -> None:
    # No tombstone can be read while the server is down: the loader's reads are held to
    # FAIL_OPEN_STALENESS (the replica router keeps a replica far behind out of them),
    # and to the invalidations this process heard. Without it a reader got a replica
    # 25 s behind (the consistency harness, seed 175).
    from readscale._core.cache.fill import FAIL_OPEN_STALENESS
    from readscale.cache import fill_requirements

    stack = readscale_stack_factory(StackConfig(postgres=False))
    cache = make_cache(stack)
    seen: list[tuple[int | None, float | None]] = []

    async def load() -> dict[str, object]:
        seen.append(fill_requirements())
        return ROWS["row:1"]

    async def load_many(keys: list[str]) -> dict[str, dict[str, object]]:
        seen.append(fill_requirements())
        return {k: ROWS[k] for k in keys}

    stack.kill("redis")
    for _ in range(3):
        assert await cache.get_or_load("row:1", load) == ROWS["row:1"]
        assert await cache.get_or_load_many(["row:2", "row:3"], load_many) == {k: ROWS[k] for k in ("row:2", "row:3")}
    assert len(seen) == 6
    assert all(bound == FAIL_OPEN_STALENESS for _, bound in seen), seen
    await cache.aclose()


class Clock:
    """time.monotonic, moved on by hand: a recovery window closes without waiting for it."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.shift


def windowed_cache(stack: Stack, clock: Clock) -> AsyncCache:
    backend = AsyncRedisBackend(RedisSettings(url=stack.redis.url, socket_timeout_ms=50, connect_timeout_ms=50))
    return AsyncCache(
        backend,
        policy=POLICY,
        breaker=BreakerSettings(failure_threshold=2, cooldown=0.2),
        loader_source="primary",
        monotonic=clock,
    )


@pytest.mark.anyio
async def test_fills_after_redis_came_back_read_at_most_the_fail_open_staleness(
    readscale_stack_factory: Callable[..., Stack],
) -> None:
    # A Redis restarted without persistence has lost the tombstones of invalidations made
    # before it died: their absence proves nothing, so for a tombstone's life after the
    # server answers again the fills' reads are held to FAIL_OPEN_STALENESS. Without it a
    # fill read a replica 25 s behind and cached the old value (consistency harness, seed
    # 175, a CI run: 4 reads of an old version 5 s after its invalidation).
    from readscale._core.cache.fill import FAIL_OPEN_STALENESS
    from readscale.cache import fill_requirements

    stack = readscale_stack_factory(StackConfig(postgres=False))
    clock = Clock()
    cache = windowed_cache(stack, clock)
    normal = cache.filler.loads.fill_staleness
    assert normal > FAIL_OPEN_STALENESS
    bounds: list[float | None] = []

    async def load() -> dict[str, object]:
        bounds.append(fill_requirements()[1])
        return ROWS["row:1"]

    async def load_many(keys: list[str]) -> dict[str, dict[str, object]]:
        bounds.append(fill_requirements()[1])
        return {k: ROWS[k] for k in keys}

    # A first connection, to a server however young: no window (a freshly started
    # service's fills would otherwise need a replica at most 1 s behind, none of which can
    # be shown while the primary is down).
    assert await cache.get_or_load("row:1", load) == ROWS["row:1"]
    assert bounds == [normal]
    assert cache.stats.l2.recoveries == 0

    await cache.invalidate("row:1")
    stack.kill("redis")
    await cache.get("row:1")  # the call fails: the server may restart empty
    assert cache.stats.l2.errors >= 1
    stack.start("redis")
    bounds.clear()
    for key in ("row:1", "row:4"):
        assert await cache.get_or_load(key, load) == ROWS["row:1"]
    assert await cache.get_or_load_many(["row:2", "row:3"], load_many) == {k: ROWS[k] for k in ("row:2", "row:3")}
    assert bounds == [FAIL_OPEN_STALENESS] * 3
    assert cache.stats.l2.recoveries == 1
    assert cache.stats.l2.fills >= 4  # stored: the fills went on, held to the tighter bound
    clock.shift += cache.tombstone_ttl
    assert await cache.get_or_load("row:6", load) == ROWS["row:1"]
    assert bounds[-1] == normal
    await cache.aclose()


@pytest.mark.anyio
async def test_a_restart_no_call_saw_still_opens_the_recovery_window(
    readscale_stack_factory: Callable[..., Stack],
) -> None:
    # A process idle while Redis was killed and restarted sees no failure: its next call's
    # retry reconnects. The new connection's run id differs from the last one's, and that
    # alone opens the window.
    from readscale._core.cache.fill import FAIL_OPEN_STALENESS
    from readscale.cache import fill_requirements

    stack = readscale_stack_factory(StackConfig(postgres=False))
    clock = Clock()
    cache = windowed_cache(stack, clock)
    bounds: list[float | None] = []

    async def load() -> dict[str, object]:
        bounds.append(fill_requirements()[1])
        return ROWS["row:1"]

    assert await cache.get_or_load("row:1", load) == ROWS["row:1"]
    stack.kill("redis")
    stack.start("redis")
    assert await cache.get_or_load("row:2", load) == ROWS["row:1"]
    assert cache.stats.l2.errors == 0  # no call failed: the retry hid the restart
    assert cache.stats.l2.recoveries == 1
    assert bounds == [cache.filler.loads.fill_staleness, FAIL_OPEN_STALENESS]
    await cache.aclose()
