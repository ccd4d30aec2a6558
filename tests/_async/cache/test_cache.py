"""The cache façade against real Redis: strategies, tiers, freshness states, bad input.

Written async; ``scripts/unasync.py`` generates the sync twin in ``tests/_sync``.
Time is a FakeClock (entries' freshness) while Redis keeps its own real TTLs, which are
always longer than any test here.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from readscale import NO_VALUE, MemoryStore, RedisSettings
from readscale._async.backends.counting import AsyncCountingBackend
from readscale._async.backends.memcached import AsyncMemcachedBackend
from readscale._async.backends.redis import AsyncRedisBackend, AsyncRedisClusterBackend
from readscale._async.cache.cache import AsyncCache
from readscale._core.cache.fill import MAX_LEASE_ATTEMPTS
from readscale._core.cache.policy import BALANCE, CachePolicy, OnMiss, Tier
from readscale._shared.primitives.locks import AsyncEvent, async_sleep
from readscale.cache import report_primary_read
from readscale.codecs import MsgpackCodec, SignedPickleCodec
from readscale.errors import (
    CacheUnavailableError,
    ConfigurationError,
    InvalidKeyError,
    UnserializableValueError,
    ValueTooLargeError,
)
from readscale.testing.clock import FakeClock
from readscale.testing.concurrency import async_gather

pytestmark = pytest.mark.stack

POLICY = CachePolicy(name="test", ttl=60.0, jitter=0.0, swr=30.0, sie=120.0, early_refresh=0.0, l1_ttl=10.0)


@dataclasses.dataclass
class Profile:
    user_id: int
    name: str


class Loader:
    """Counts calls; returns ``value`` (or raises ``error``) after an optional delay."""

    def __init__(self, value: Any = "v1", *, delay: float = 0.0, error: Exception | None = None) -> None:
        self.value = value
        self.delay = delay
        self.error = error
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        if self.delay:
            await async_sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["redis", "redis-tls-acl", "cluster", "memcached"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[AsyncCountingBackend]:
    inner: Any
    if request.param == "redis":
        inner = AsyncRedisBackend(RedisSettings(url=request.getfixturevalue("redis_url")))
    elif request.param == "redis-tls-acl":
        inner = AsyncRedisBackend(request.getfixturevalue("secure_redis_settings"))
    elif request.param == "cluster":
        nodes = request.getfixturevalue("redis_cluster_nodes")
        inner = AsyncRedisClusterBackend(RedisSettings(url=f"redis://{nodes[0]}/0"))
    else:
        inner = AsyncMemcachedBackend(request.getfixturevalue("memcached_address"))
    yield AsyncCountingBackend(inner)
    await inner.close()


@pytest.fixture
def cache(backend: AsyncCountingBackend, clock: FakeClock) -> AsyncCache:
    return AsyncCache(
        backend,
        l1=MemoryStore(1000, clock=clock),
        policy=POLICY,
        prefix=f"t{uuid.uuid4().hex[:8]}:",
        clock=clock,
        monotonic=clock,
        rng=lambda: 0.5,
    )


# -- cache-aside ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cache_aside_round_trip(cache: AsyncCache) -> None:
    assert await cache.get("user:1") is NO_VALUE
    await cache.set("user:1", {"name": "Ada", "tags": [1, 2]})
    assert await cache.get("user:1") == {"name": "Ada", "tags": [1, 2]}
    assert await cache.delete("user:1") is True
    assert await cache.get("user:1") is NO_VALUE


@pytest.mark.anyio
async def test_none_is_a_cached_value_distinct_from_a_miss(cache: AsyncCache) -> None:
    loader = Loader(None)
    assert await cache.get_or_load("missing-row", loader) is None
    assert await cache.get_or_load("missing-row", loader) is None
    assert loader.calls == 1
    assert await cache.get("missing-row") is None
    assert await cache.get("never-set") is NO_VALUE


@pytest.mark.anyio
async def test_negative_ttl_is_used_for_none(cache: AsyncCache, clock: FakeClock) -> None:
    policy = POLICY.with_(negative_ttl=5.0, swr=0.0, sie=0.0, tiers=frozenset({Tier.L2}))
    loader = Loader(None)
    await cache.get_or_load("gone", loader, policy=policy)
    clock.advance(6)
    await cache.get_or_load("gone", loader, policy=policy)
    assert loader.calls == 2


# -- read-through and tiers ----------------------------------------------------------------


@pytest.mark.anyio
async def test_read_through_loads_once_then_serves_from_the_tiers(
    cache: AsyncCache, backend: AsyncCountingBackend
) -> None:
    loader = Loader({"id": 7})
    assert await cache.get_or_load("item:7", loader) == {"id": 7}
    assert loader.calls == 1
    before = backend.round_trips
    for _ in range(10):
        assert await cache.get_or_load("item:7", loader) == {"id": 7}
    assert loader.calls == 1
    assert backend.round_trips == before  # every repeat was an L1 hit
    assert cache.stats.l1.hits == 10


@pytest.mark.anyio
async def test_l1_copy_never_outlives_l2_freshness(cache: AsyncCache, clock: FakeClock) -> None:
    policy = POLICY.with_(ttl=4.0, l1_ttl=100.0, swr=0.0, sie=0.0)
    loader = Loader("first")
    await cache.get_or_load("short", loader, policy=policy)
    loader.value = "second"
    clock.advance(3.9)
    assert await cache.get_or_load("short", loader, policy=policy) == "first"  # L1, still fresh
    clock.advance(0.2)
    assert await cache.get_or_load("short", loader, policy=policy) == "second"
    assert loader.calls == 2


@pytest.mark.anyio
async def test_another_process_view_reads_l2(
    cache: AsyncCache, backend: AsyncCountingBackend, clock: FakeClock
) -> None:
    await cache.set("shared", [1, 2, 3])
    other = AsyncCache(backend, l1=MemoryStore(10, clock=clock), policy=POLICY, prefix=cache.prefix, clock=clock)
    assert await other.get("shared") == [1, 2, 3]
    assert other.stats.l2.hits == 1


@pytest.mark.anyio
async def test_bypass_policy_never_caches(cache: AsyncCache, backend: AsyncCountingBackend) -> None:
    loader = Loader(100)
    before = backend.round_trips
    for _ in range(3):
        assert await cache.get_or_load("balance:1", loader, policy=BALANCE) == 100
    assert loader.calls == 3
    assert backend.round_trips == before
    assert cache.stats.loader.bypasses == 3


@pytest.mark.anyio
async def test_write_through_stores_what_was_written(cache: AsyncCache) -> None:
    written: list[str] = []

    async def writer() -> dict[str, str]:
        written.append("UPDATE users SET name = 'Grace'")
        return {"name": "Grace"}

    assert await cache.write_through("user:2", writer) == {"name": "Grace"}
    assert written == ["UPDATE users SET name = 'Grace'"]
    assert await cache.get_or_load("user:2", Loader("never")) == {"name": "Grace"}


@pytest.mark.anyio
async def test_write_through_takes_one_call_before_its_store(cache: AsyncCache, backend: AsyncCountingBackend) -> None:
    """The invalidation and the ticket a write-through stores with are one backend call
    (one Redis round trip: one script), then the store: two in all, not three."""

    async def writer() -> str:
        return "written"

    await cache.write_through("rt", writer)  # the cache's first call checks its settings once
    before = dict(backend.calls)
    await cache.write_through("rt", writer)
    calls = {name: n - before.get(name, 0) for name, n in backend.calls.items() if n != before.get(name, 0)}
    assert calls == {"invalidate_for_write": 1, "fill": 1}


class _BackendWithoutCombinedCall:
    """A backend written against the protocol before ``invalidate_for_write`` existed."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "invalidate_for_write":
            raise AttributeError(name)
        return getattr(self._inner, name)


@pytest.mark.anyio
async def test_write_through_on_a_backend_without_the_combined_call_takes_the_two_steps(
    backend: AsyncCountingBackend,
) -> None:
    cache = AsyncCache(_BackendWithoutCombinedCall(backend), policy=POLICY, prefix=f"t{uuid.uuid4().hex[:8]}:")

    async def writer() -> str:
        return "written"

    assert await cache.write_through("old-backend", writer) == "written"
    assert (backend.calls["invalidate"], backend.calls["ticket"], backend.calls["invalidate_for_write"]) == (1, 1, 0)
    assert await cache.get("old-backend") == "written"


# -- batches -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_get_many_is_one_round_trip(cache: AsyncCache, backend: AsyncCountingBackend) -> None:
    for i in range(0, 100, 2):
        await cache.set(f"k{i}", i)
    cache.l1.clear()  # type: ignore[union-attr]
    before = dict(backend.calls)
    found = await cache.get_many([f"k{i}" for i in range(100)])
    assert found == {f"k{i}": i for i in range(0, 100, 2)}
    assert backend.calls["get_many"] == before.get("get_many", 0) + 1
    assert backend.calls["get"] == before.get("get", 0)


@pytest.mark.anyio
async def test_get_or_load_many_loads_only_the_missing_in_one_call(cache: AsyncCache) -> None:
    await cache.set("p1", "cached-1")
    calls: list[list[str]] = []

    async def load_many(keys: list[str]) -> dict[str, str]:
        calls.append(keys)
        return {k: f"loaded-{k}" for k in keys if k != "p4"}

    result = await cache.get_or_load_many(["p1", "p2", "p3", "p4"], load_many)
    assert result == {"p1": "cached-1", "p2": "loaded-p2", "p3": "loaded-p3"}
    assert calls == [["p2", "p3", "p4"]]
    again = await cache.get_or_load_many(["p2", "p3"], load_many)
    assert again == {"p2": "loaded-p2", "p3": "loaded-p3"}
    assert len(calls) == 1


@pytest.mark.anyio
async def test_loads_and_fills_are_timed_in_histograms_and_hits_are_not(cache: AsyncCache) -> None:
    """The loader and fill histograms (exported by readscale.metrics) observe misses
    only: a hit costs no observation."""
    stats = cache.stats
    assert await cache.get_or_load("h1", Loader("v")) == "v"
    assert (stats.loader_seconds.count, stats.fill_seconds.count) == (1, 1)
    for _ in range(3):
        await cache.get_or_load("h1", Loader("v"))
    assert (stats.loader_seconds.count, stats.fill_seconds.count) == (1, 1)

    async def load_many(keys: list[str]) -> dict[str, str]:
        return {k: k for k in keys}

    await cache.get_or_load_many(["h2", "h3"], load_many)
    assert (stats.loader_seconds.count, stats.fill_seconds.count) == (2, 2)  # one batch: one load, one fill


@pytest.mark.anyio
async def test_get_or_load_many_fills_a_batch_safely_in_few_round_trips(
    cache: AsyncCache, backend: AsyncCountingBackend
) -> None:
    """Each missing key holds a ticket taken before the load (an invalidation during it
    refuses that key only); Redis takes the tickets and the fills in one pipeline each."""
    keys = [f"b{i}" for i in range(50)]
    await cache.check()
    backend.calls.clear()

    async def load_many(missing: list[str]) -> dict[str, str]:
        report_primary_read()
        await cache.invalidate("b7")  # a change lands while the batch loads
        return {k: f"v-{k}" for k in missing}

    assert await cache.get_or_load_many(keys, load_many) == {k: f"v-{k}" for k in keys}
    if backend.name == "redis":
        assert backend.calls["ticket_many"] == 1 and backend.calls["fill_many"] == 1
        assert backend.calls["ticket"] == 0 and backend.calls["fill"] == 0
    found = await cache.get_many(keys)
    assert found == {k: f"v-{k}" for k in keys if k != "b7"}, "the invalidated key alone is not stored"
    assert cache.stats.loader.fills_refused_lease_lost == 1


# -- stampede protection and freshness -----------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_misses_share_one_load(cache: AsyncCache) -> None:
    loader = Loader("hot", delay=0.05)
    results = await async_gather([lambda: cache.get_or_load("hot", loader) for _ in range(200)])
    assert results == ["hot"] * 200
    assert loader.calls == 1


@pytest.mark.anyio
@pytest.mark.parametrize("by_tag", [False, True])
async def test_a_reader_after_an_invalidation_does_not_share_a_load_begun_before_it(
    cache: AsyncCache, by_tag: bool
) -> None:
    """Found by tests/consistency: a load slower than the invalidation bound handed the old
    value to readers that arrived after the invalidation had completed (single-flight)."""
    started = AsyncEvent()
    loads: list[str] = []
    tags = ["slow-tag"] if by_tag else []

    async def old_value() -> str:
        loads.append("old")
        started.set()
        await async_sleep(0.3)
        return "old"

    async def new_value() -> str:
        loads.append("new")
        return "new"

    async def first() -> Any:
        return await cache.get_or_load("slow", old_value, tags=tags)

    async def later() -> Any:
        assert await started.wait(5.0)
        if by_tag:
            await cache.invalidate_tags("slow-tag")
        else:
            await cache.invalidate("slow")
        return await cache.get_or_load("slow", new_value, tags=tags)

    assert await async_gather([first, later]) == ["old", "new"]
    assert loads == ["old", "new"]


@pytest.mark.anyio
async def test_stale_while_revalidate_serves_stale_and_refreshes_once(cache: AsyncCache, clock: FakeClock) -> None:
    policy = POLICY.with_(tiers=frozenset({Tier.L2}))
    loader = Loader("v1")
    await cache.get_or_load("swr", loader, policy=policy)
    loader.value = "v2"
    loader.delay = 0.05
    clock.advance(70)  # past the 60 s TTL, inside the 30 s SWR window
    results = await async_gather([lambda: cache.get_or_load("swr", loader, policy=policy) for _ in range(50)])
    assert results == ["v1"] * 50
    await cache.drain()
    assert loader.calls == 2  # the first load and exactly one refresh
    assert cache.stats.l2.stale_serves >= 1
    assert cache.stats.l2.stale_serves + cache.stats.l2.coalesced == 50
    assert cache.stats.loader.refreshes == 1
    assert await cache.get_or_load("swr", loader, policy=policy) == "v2"


@pytest.mark.anyio
async def test_two_processes_in_the_swr_window_refresh_once_in_total(
    cache: AsyncCache, backend: AsyncCountingBackend, clock: FakeClock
) -> None:
    if backend.name != "redis":
        pytest.skip("the second process is built on Redis here")
    policy = POLICY.with_(tiers=frozenset({Tier.L2}))
    loader = Loader("v1")
    await cache.get_or_load("swr2", loader, policy=policy)
    # A second "process": its own connections, single-flight and background jobs.
    other_backend = AsyncRedisBackend(backend.proxied.settings)  # type: ignore[attr-defined]
    other = AsyncCache(other_backend, policy=policy, prefix=cache.prefix, clock=clock, monotonic=clock)
    loader.value = "v2"
    loader.delay = 0.1
    clock.advance(70)
    assert await cache.get_or_load("swr2", loader, policy=policy) == "v1"
    assert await other.get_or_load("swr2", loader, policy=policy) == "v1"
    await cache.drain()
    await other.drain()
    assert loader.calls == 2  # one refresh across both: the refresh lease
    assert cache.stats.loader.refreshes + other.stats.loader.refreshes == 1
    await other_backend.close()


@pytest.mark.anyio
async def test_early_refresh_fires_before_expiry(cache: AsyncCache, clock: FakeClock) -> None:
    policy = POLICY.with_(early_refresh=1.0, tiers=frozenset({Tier.L2}))
    versions = iter(["v1", "v2"])

    async def slow_loader() -> str:
        clock.advance(2.0)  # the load takes 2 s: XFetch's delta
        return next(versions)

    await cache.get_or_load("xfetch", slow_loader, policy=policy)
    cache.filler.rng = lambda: 1.0 - math.exp(-1.0)  # u = 1/e: XFetch refreshes when 2 s or less remain
    clock.advance(50.0)
    assert await cache.get_or_load("xfetch", slow_loader, policy=policy) == "v1"
    await cache.drain()
    assert cache.stats.loader.refreshes == 0
    clock.advance(8.5)  # 1.5 s before expiry
    assert await cache.get_or_load("xfetch", slow_loader, policy=policy) == "v1"
    await cache.drain()
    assert cache.stats.l2.early_refreshes == 1
    assert cache.stats.loader.refreshes == 1
    assert await cache.get_or_load("xfetch", slow_loader, policy=policy) == "v2"


@pytest.mark.anyio
async def test_stale_if_error_serves_the_old_value_when_the_load_fails(cache: AsyncCache, clock: FakeClock) -> None:
    policy = POLICY.with_(swr=0.0, tiers=frozenset({Tier.L2}))
    loader = Loader("good")
    await cache.get_or_load("sie", loader, policy=policy)
    clock.advance(100)  # expired, inside the 120 s stale-if-error window
    loader.error = RuntimeError("database down")
    assert await cache.get_or_load("sie", loader, policy=policy) == "good"
    assert cache.stats.loader.stale_if_error == 1
    clock.advance(100)  # past every window: the error reaches the caller
    with pytest.raises(RuntimeError, match="database down"):
        await cache.get_or_load("sie", loader, policy=policy)


@pytest.mark.anyio
async def test_loader_errors_reach_the_caller_and_nothing_is_cached(cache: AsyncCache) -> None:
    loader = Loader(error=ValueError("no such user"))
    with pytest.raises(ValueError, match="no such user"):
        await cache.get_or_load("err", loader)
    loader.error = None
    loader.value = "ok"
    assert await cache.get_or_load("err", loader) == "ok"


@pytest.mark.anyio
async def test_a_lease_held_elsewhere_makes_this_caller_wait_for_the_fill(
    cache: AsyncCache, backend: AsyncCountingBackend
) -> None:
    policy = POLICY.with_(lease_ttl=5.0)
    pkey = cache.key("leased", policy)
    other = await backend.proxied.lease(pkey, 5.0)  # another process won the lease
    assert other.token is not None
    token = other.token
    loader = Loader("from this process")

    async def other_process_fills() -> None:
        await async_sleep(0.2)
        fresh = AsyncCache(backend.proxied, policy=policy, prefix=cache.prefix, clock=cache._clock)
        raw = fresh.entries.encode(pkey, "from the lease holder", fresh.entries.meta("x", policy, 0.0), fresh.codec)
        assert await backend.proxied.fill(pkey, raw, 60, token)

    async def read() -> Any:
        return await cache.get_or_load("leased", loader, policy=policy)

    results = await async_gather([read, other_process_fills])
    assert results[0] == "from the lease holder"
    assert loader.calls == 0
    assert cache.stats.l2.lease_waits >= 1


class FailingWaits(AsyncCountingBackend):
    """The lease answers (held elsewhere) but every wait for the fill fails at once,
    after ``step`` seconds of the fake clock."""

    def __init__(self, proxied: Any, clock: FakeClock, step: float) -> None:
        super().__init__(proxied)
        self.clock = clock
        self.step = step

    async def wait_for_fill(self, key: str, timeout: float) -> None:
        self.calls["wait_for_fill"] += 1
        self.clock.advance(self.step)
        raise CacheUnavailableError("wait_for_fill: connection reset")


@pytest.mark.anyio
async def test_a_wait_that_fails_at_once_does_not_spin_on_lease_calls(
    cache: AsyncCache, backend: AsyncCountingBackend, clock: FakeClock
) -> None:
    """Each lease call answered resets the breaker, so a wait that fails at once sent the
    old loop back to the lease until the wait budget was spent (100 lease calls here);
    the planner gives up after MAX_LEASE_ATTEMPTS and loads under a ticket."""
    policy = POLICY.with_(lease_ttl=5.0, lease_wait=1.0)
    failing = FailingWaits(backend.proxied, clock, step=0.01)
    spinning = AsyncCache(failing, policy=policy, prefix=cache.prefix, clock=clock, monotonic=clock, rng=lambda: 0.5)
    pkey = spinning.key("spin", policy)
    other = await backend.proxied.lease(pkey, 5.0)  # another process won the lease
    assert other.token is not None
    loader = Loader("loaded here")
    assert await spinning.get_or_load("spin", loader, policy=policy) == "loaded here"
    assert loader.calls == 1
    assert failing.calls["lease"] == MAX_LEASE_ATTEMPTS
    assert failing.calls["wait_for_fill"] == MAX_LEASE_ATTEMPTS
    assert spinning.stats.l2.errors == MAX_LEASE_ATTEMPTS
    assert failing.calls["ticket"] == 1


@pytest.mark.anyio
async def test_without_wait_policy_no_lease_is_taken(cache: AsyncCache, backend: AsyncCountingBackend) -> None:
    policy = POLICY.with_(on_miss=OnMiss.LOAD)
    await cache.get_or_load("nolease", Loader("x"), policy=policy)
    assert backend.calls["lease"] == 0
    assert backend.calls["set"] == 0
    # A fill that excludes nobody still holds a right an invalidation voids.
    assert backend.calls["ticket"] == 1
    assert backend.calls["fill"] == 1


# -- the decorator -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cached_decorator_builds_keys_and_decodes_into_the_annotation(cache: AsyncCache) -> None:
    calls: list[int] = []

    @cache.cached("user:{user_id}:profile")
    async def load_profile(user_id: int, verbose: bool = False) -> Profile:
        calls.append(user_id)
        return Profile(user_id, f"user {user_id}")

    assert load_profile.key(5) == "user:5:profile"
    assert await load_profile(5) == Profile(5, "user 5")
    cache.l1.clear()  # type: ignore[union-attr]
    again = await load_profile(user_id=5, verbose=True)
    assert again == Profile(5, "user 5")
    assert isinstance(again, Profile)  # decoded into the annotation, not a dict
    assert calls == [5]
    assert await load_profile.invalidate(5) is True
    await load_profile(5)
    assert calls == [5, 5]


@pytest.mark.anyio
async def test_cached_decorator_rejects_a_template_field_the_function_lacks(cache: AsyncCache) -> None:
    with pytest.raises(ConfigurationError, match="does not take"):

        @cache.cached("user:{uid}")
        async def load(user_id: int) -> int:
            return user_id

    with pytest.raises(ConfigurationError, match="plain argument name"):
        cache.cached("user:{user.id}")


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_oversize_value_is_refused_by_set_and_not_cached_by_a_load(cache: AsyncCache) -> None:
    cache.max_value_size = 1000
    await cache.set("neighbour", "stays")
    with pytest.raises(ValueTooLargeError) as info:
        await cache.set("big", "x" * 5000)
    assert info.value.limit == 1000
    assert await cache.get("big") is NO_VALUE
    loader = Loader("y" * 5000)
    assert await cache.get_or_load("big", loader) == "y" * 5000
    assert await cache.get_or_load("big", loader) == "y" * 5000
    assert loader.calls == 2
    assert cache.stats.loader.not_cached == 2
    assert await cache.get("neighbour") == "stays"


@pytest.mark.anyio
async def test_unserializable_value_gets_a_clear_error(cache: AsyncCache) -> None:
    with pytest.raises(UnserializableValueError) as info:
        await cache.set("sock", object())
    assert info.value.codec == "json"
    # A loaded value that cannot be stored as itself is the caller's to fix: raised
    # (issue 15), not served uncached on every call.
    loader = Loader({1, 2, 3} | {object()})
    with pytest.raises(UnserializableValueError, match="set"):
        await cache.get_or_load("sock", loader)
    assert cache.stats.loader.not_cached == 1
    assert await cache.get("sock") is NO_VALUE


BAD_KEYS: list[Any] = [
    "",
    "line\nbreak",
    "nul\x00",
    "tab\there",
    "del\x7f",
    "a}b",
    "zero\u200bwidth",
    "lone \ud800 surrogate",
    "\u2028",
    "k" * 2000,
    "é" * 600,  # 1,200 UTF-8 bytes
    5,
    b"bytes",
    None,
    ("tu", "ple"),
]


@pytest.mark.anyio
async def test_bad_keys_are_refused_before_anything_reaches_a_server(
    cache: AsyncCache, backend: AsyncCountingBackend
) -> None:
    loader = Loader("never")
    await cache.check()  # the first call checks the server's settings; keys are checked before any call
    backend.calls.clear()
    for key in BAD_KEYS:
        with pytest.raises(InvalidKeyError) as info:
            await cache.get(key)
        assert "\x00" not in str(info.value), "the message shows the key escaped"
        with pytest.raises(InvalidKeyError):
            await cache.set(key, "v")
        with pytest.raises(InvalidKeyError):
            await cache.get_or_load(key, loader)
        with pytest.raises(InvalidKeyError):
            await cache.delete(key)
        with pytest.raises(InvalidKeyError):
            await cache.invalidate(key)
        with pytest.raises(InvalidKeyError):
            await cache.get_many(["fine", key])
    assert loader.calls == 0
    assert sum(backend.calls.values()) == 0


@pytest.mark.anyio
async def test_keys_at_the_limits_round_trip_or_are_refused_by_the_backend_by_name(
    cache: AsyncCache, backend: AsyncCountingBackend
) -> None:
    for key in ["k" * 1024, "ключ:鍵:" + "é" * 500, "with spaces", "{user:1}:profile", "emoji 🙂"]:
        refused: InvalidKeyError | None = None
        try:
            await cache.set(key, key)
        except InvalidKeyError as exc:
            refused = exc
        if refused is not None:
            assert (backend.name, refused.backend) == ("memcached", "memcached"), key
            continue
        cache.l1.clear()  # type: ignore[union-attr]
        assert await cache.get(key) == key


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.anyio
async def test_a_refused_value_names_its_key_and_leaves_the_previous_value_intact(
    cache: AsyncCache, backend: AsyncCountingBackend
) -> None:
    cache.max_value_size = 1000
    await cache.set("item", "v1")
    refused: list[tuple[Any, type[Exception]]] = [
        ("x" * 5000, ValueTooLargeError),
        (object(), UnserializableValueError),
        ({1, object()}, UnserializableValueError),
        (float("nan"), UnserializableValueError),
        ({"price": [1.0, float("inf")]}, UnserializableValueError),
        ([{"id": 1, "name": "x" * 5000}], ValueTooLargeError),
        (Profile(1, "x"), UnserializableValueError),  # undeclared, it would come back a dict
        (_nested(5000), UnserializableValueError),
    ]
    for value, error in refused:
        sets = backend.calls["set"]
        with pytest.raises(error) as info:
            await cache.set("item", value)
        assert info.value.key == cache.key("item"), "the error names the key"  # type: ignore[attr-defined]
        assert "'" + cache.key("item") + "'" in str(info.value)
        assert backend.calls["set"] == sets, "nothing was sent"
        assert await cache.get("item") == "v1", "L1 kept the previous value"
        cache.l1.clear()  # type: ignore[union-attr]
        assert await cache.get("item") == "v1", "and so did the server"
    with pytest.raises(UnserializableValueError, match="msgpack"):
        await cache.set("item", float("nan"))
    await cache.set("nan", [float("nan"), float("-inf")], codec=MsgpackCodec())
    cache.l1.clear()  # type: ignore[union-attr]
    stored = await cache.get("nan", codec=MsgpackCodec())
    assert math.isnan(stored[0]) and stored[1] == float("-inf")
    await cache.set("nested", _nested(200))
    cache.l1.clear()  # type: ignore[union-attr]
    assert await cache.get("nested") == _nested(200)


@pytest.mark.anyio
async def test_a_value_nested_too_deeply_to_decode_is_a_counted_miss(
    cache: AsyncCache, backend: AsyncCountingBackend
) -> None:
    from readscale._core.cache.entry import encode_envelope

    meta = cache.entries.meta("x", POLICY, 0.0)
    for codec_id, payload in ((1, b"[" * 100_000 + b"]" * 100_000), (2, b"\x91" * 100_000 + b"\xc0")):
        codec = cache.codec if codec_id == 1 else MsgpackCodec()
        await backend.proxied.set(cache.key(f"deep{codec_id}"), encode_envelope(meta, codec_id, payload), 60)
        loader = Loader("reloaded")
        assert await cache.get_or_load(f"deep{codec_id}", loader, codec=codec) == "reloaded"
        assert loader.calls == 1
    assert cache.stats.l2.corrupt == 2


@pytest.mark.anyio
async def test_corrupt_payload_is_a_counted_miss_and_nothing_else_is_lost(
    cache: AsyncCache, backend: AsyncCountingBackend
) -> None:
    await cache.set("neighbour", "stays")
    for i, garbage in enumerate([b"", b"\xa5garbage", b"not ours at all", b"\xa5\x01" + b"\x00" * 60]):
        await backend.proxied.set(cache.key(f"bad{i}"), garbage, 60)
    loader = Loader("refilled")
    for i in range(4):
        assert await cache.get_or_load(f"bad{i}", loader) == "refilled"
    assert loader.calls == 4
    assert cache.stats.l2.corrupt == 4
    assert await cache.get("neighbour") == "stays"


@pytest.mark.anyio
async def test_schema_change_is_a_miss(cache: AsyncCache) -> None:
    await cache.set("shape", {"v": 1})
    cache.l1.clear()  # type: ignore[union-attr]
    newer = POLICY.with_(schema=2)
    assert await cache.get("shape", policy=newer) is NO_VALUE
    assert await cache.get("shape") == {"v": 1}


@pytest.mark.anyio
async def test_other_codecs_round_trip(cache: AsyncCache) -> None:
    await cache.set("mp", {"a": [1, 2]}, codec=MsgpackCodec())
    assert await cache.get("mp", codec=MsgpackCodec()) == {"a": [1, 2]}
    signed = SignedPickleCodec(b"0123456789abcdef-secret")
    await cache.set("pk", {1, 2}, codec=signed)
    cache.l1.clear()  # type: ignore[union-attr]
    assert await cache.get("pk", codec=signed) == {1, 2}
    forged = SignedPickleCodec(b"another-secret-of-16-bytes")
    cache.l1.clear()  # type: ignore[union-attr]
    assert await cache.get("pk", codec=forged) is NO_VALUE


@pytest.mark.anyio
async def test_a_read_your_writes_entry_read_before_the_sessions_write_is_loaded_again(cache: AsyncCache) -> None:
    from readscale._core.replicas.causal import CausalToken
    from readscale._shared.replicas.causal_context import CausalContext, causal_context
    from readscale.cache import report_read_lsn

    policy = dataclasses.replace(POLICY, read_your_writes=True)
    loads: list[int] = []

    def loader(value: str, read_at: int) -> Any:
        async def load() -> str:
            loads.append(read_at)
            report_read_lsn(read_at, staleness=0.0)  # what the replica router reports for the read
            return value

        return load

    assert await cache.get_or_load("profile", loader("old bio", 100), policy=policy) == "old bio"
    assert await cache.get_or_load("profile", loader("unused", 0), policy=policy) == "old bio"  # a hit
    wrote = CausalContext()
    wrote.record_write(CausalToken(1, 1, 200), at=1.0)  # this session wrote at LSN 200
    with causal_context(wrote):
        # Both tiers hold the entry read at 100: too old for this session.
        assert await cache.get("profile", policy=policy) is NO_VALUE
        assert await cache.get_or_load("profile", loader("new bio", 250), policy=policy) == "new bio"
        assert await cache.get_or_load("profile", loader("unused", 0), policy=policy) == "new bio"  # read at 250
    assert loads == [100, 250]
    assert cache.stats.l1.older_than_own_write + cache.stats.l2.older_than_own_write >= 2
    with causal_context(CausalContext()):  # a session that has not written: no floor
        assert await cache.get_or_load("profile", loader("unused", 0), policy=policy) == "new bio"


@pytest.mark.anyio
async def test_get_many_judges_read_your_writes_as_get_does(cache: AsyncCache) -> None:
    """The batch's fast path (fresh entries decoded straight from their payloads) skipped
    the own-write check: an entry read before the session's write came back from
    ``get_many`` while ``get`` refused it (found by review)."""
    from readscale._core.replicas.causal import CausalToken
    from readscale._shared.replicas.causal_context import CausalContext, causal_context
    from readscale.cache import report_read_lsn

    policy = dataclasses.replace(POLICY, read_your_writes=True, tiers=frozenset({Tier.L2}))

    async def read_at_100() -> str:
        report_read_lsn(100, staleness=0.0)
        return "old bio"

    assert await cache.get_or_load("profile", read_at_100, policy=policy) == "old bio"
    await cache.set("plain", "old name", policy=policy)  # no read position: never for a session that wrote
    both = await cache.get_many(["profile", "plain"], policy=policy)
    assert both == {"profile": "old bio", "plain": "old name"}
    wrote = CausalContext()
    wrote.record_write(CausalToken(1, 1, 200), at=1.0)  # this session wrote at LSN 200
    with causal_context(wrote):
        assert await cache.get("profile", policy=policy) is NO_VALUE
        assert await cache.get("plain", policy=policy) is NO_VALUE
        assert await cache.get_many(["profile", "plain"], policy=policy) == {}
        assert await cache.get_many(["plain"], policy=policy) == {}


@pytest.mark.anyio
async def test_a_session_that_wrote_does_not_share_a_load_begun_for_a_session_without_its_write(
    cache: AsyncCache,
) -> None:
    """Found by tests/consistency (profile_without_bus): concurrent misses of a key share one
    load in a process, and the load (and any entry it finds) is judged against the leading
    reader's own-write floor only. A session that had just written joined a load led by a
    session without that write and was handed the value read before it."""
    from readscale._core.replicas.causal import CausalToken
    from readscale._shared.replicas.causal_context import CausalContext, causal_context
    from readscale.cache import report_read_lsn

    policy = dataclasses.replace(POLICY, read_your_writes=True)
    loading, go = AsyncEvent(), AsyncEvent()
    loads: list[str] = []

    async def old_bio() -> str:  # read on a replica at LSN 100, before the write at 200
        loads.append("old")
        report_read_lsn(100, staleness=0.0)
        loading.set()
        assert await go.wait(5.0)
        return "old bio"

    async def new_bio() -> str:  # read at 250, after it
        loads.append("new")
        report_read_lsn(250, staleness=0.0)
        return "new bio"

    async def another_session() -> Any:
        with causal_context(CausalContext()):  # has not written: no floor
            return await cache.get_or_load("profile", old_bio, policy=policy)

    async def the_writer() -> Any:
        assert await loading.wait(5.0)
        wrote = CausalContext()
        wrote.record_write(CausalToken(1, 1, 200), at=1.0)
        with causal_context(wrote):
            return await cache.get_or_load("profile", new_bio, policy=policy)

    async def release_the_first_load() -> None:
        # Both readers have missed L1: the writer has joined the load in flight, or begun its own.
        while cache.stats.l1.misses < 2:
            await async_sleep(0.001)
        go.set()

    assert await async_gather([another_session, the_writer, release_the_first_load]) == ["old bio", "new bio", None]
    assert loads == ["old", "new"]


@pytest.mark.anyio
async def test_a_read_your_writes_entry_read_on_the_primary_is_loaded_again_for_a_session_that_wrote(
    cache: AsyncCache,
) -> None:
    """Its position before the read is unknown, so it cannot be shown to be newer than the
    session's write: an old copy (another process's L1 the bus has not reached yet) must
    not be served to the session that changed it. Found by tests/consistency."""
    from readscale._core.replicas.causal import CausalToken
    from readscale._shared.replicas.causal_context import CausalContext, causal_context
    from readscale.cache import report_primary_read

    policy = dataclasses.replace(POLICY, read_your_writes=True)
    loads: list[str] = []

    def loader(value: str) -> Any:
        async def load() -> str:
            loads.append(value)
            report_primary_read()  # what the replica router reports for a read on the primary
            return value

        return load

    assert await cache.get_or_load("profile", loader("old bio"), policy=policy) == "old bio"
    wrote = CausalContext()
    wrote.record_write(CausalToken(1, 1, 200), at=1.0)
    with causal_context(wrote):
        assert await cache.get("profile", policy=policy) is NO_VALUE
        assert await cache.get_or_load("profile", loader("new bio"), policy=policy) == "new bio"
    with causal_context(CausalContext()):  # a session that has not written takes the entry
        assert await cache.get_or_load("profile", loader("unused"), policy=policy) == "new bio"
    assert loads == ["old bio", "new bio"]


@pytest.mark.anyio
async def test_a_read_your_writes_entry_read_on_the_primary_past_the_sessions_write_is_served_to_it(
    cache: AsyncCache,
) -> None:
    """A primary read that reports the primary's position before its query (the replica
    router's fetch does) records it, less one: the author of a write at 200 is served an
    entry read at 201, not one read at 200 (that commit may not have been visible yet).
    Without a position such entries were loaded again for that session forever."""
    from readscale._core.replicas.causal import CausalToken
    from readscale._shared.replicas.causal_context import CausalContext, causal_context
    from readscale.cache import report_primary_read

    policy = dataclasses.replace(POLICY, read_your_writes=True)
    loads: list[str] = []

    def loader(value: str, position: int) -> Any:
        async def load() -> str:
            loads.append(value)
            report_primary_read(position)
            return value

        return load

    wrote = CausalContext()
    wrote.record_write(CausalToken(1, 1, 200), at=1.0)
    with causal_context(wrote):
        assert await cache.get_or_load("bio", loader("read at 200", 200), policy=policy) == "read at 200"
        assert await cache.get_or_load("bio", loader("read at 201", 201), policy=policy) == "read at 201"
        assert await cache.get_or_load("bio", loader("unused", 0), policy=policy) == "read at 201"
    assert loads == ["read at 200", "read at 201"]
