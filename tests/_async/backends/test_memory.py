"""The shipped backend contract suite, run against the in-process memory backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from readscale._async.backends.memory import AsyncMemoryBackend
from readscale.errors import ValueTooLargeError
from readscale.testing._async.backend_contract import AsyncBackendContract
from readscale.testing.concurrency import async_gather


class TestAsyncMemory(AsyncBackendContract):
    # The store reads the real clock, expiry is exact: no need for the 2.2 s of servers
    # with whole-second resolution.
    expiry_wait = 1.2

    @pytest.fixture
    async def backend(self) -> AsyncIterator[AsyncMemoryBackend]:
        backend = AsyncMemoryBackend(max_entries=1_000, max_bytes=1 << 20)
        yield backend
        await backend.close()


@pytest.mark.anyio
async def test_a_delete_revokes_the_lease_and_releases_the_waiters() -> None:
    backend = AsyncMemoryBackend(max_entries=100)
    won = await backend.lease("k", 10)
    assert won.token is not None
    token = won.token

    async def waiter() -> bool:
        return await backend.wait_for_fill("k", 10)

    async def invalidate() -> bool:
        return await backend.delete("k")

    results = await async_gather([waiter, waiter, invalidate])
    assert results == [False, False, False]
    assert await backend.fill("k", b"stale", 60, token) is False
    assert await backend.get("k") is None
    assert (await backend.lease("k", 10)).won


@pytest.mark.anyio
async def test_a_release_lets_the_waiters_take_over_at_once() -> None:
    backend = AsyncMemoryBackend(max_entries=100)
    won = await backend.lease("k", 10)
    assert won.token is not None
    token = won.token

    async def waiter() -> bool:
        return await backend.wait_for_fill("k", 10)

    async def give_up() -> None:
        await backend.release("k", token)

    assert await async_gather([waiter, give_up]) == [False, None]
    assert (await backend.lease("k", 10)).won


@pytest.mark.anyio
async def test_waiting_after_the_fill_landed_returns_at_once() -> None:
    backend = AsyncMemoryBackend(max_entries=100)
    won = await backend.lease("k", 10)
    assert won.token is not None
    assert await backend.fill("k", b"v", 60, won.token)
    assert await backend.wait_for_fill("k", 10) is True
    assert await backend.wait_for_fill("never-leased", 10) is False


@pytest.mark.anyio
async def test_a_waiter_wakes_when_the_lease_expires() -> None:
    now = [0.0]
    backend = AsyncMemoryBackend(max_entries=100, clock=lambda: now[0])
    assert (await backend.lease("k", 0.05)).won
    # The wait is bounded by the lease's deadline, not by the (long) timeout.
    assert await backend.wait_for_fill("k", 60) is False
    now[0] = 1.0
    assert (await backend.lease("k", 5)).won


@pytest.mark.anyio
async def test_set_many_refuses_everything_when_one_value_is_too_large() -> None:
    backend = AsyncMemoryBackend(max_entries=100, max_bytes=1_000)
    with pytest.raises(ValueTooLargeError):
        await backend.set_many([("a", b"ok", 60), ("b", b"x" * 1_001, 60)])
    assert await backend.get_many(["a", "b"]) == [None, None]


@pytest.mark.anyio
async def test_a_value_over_the_backends_own_limit_is_refused_by_set_and_never_left_stale() -> None:
    from readscale import NO_VALUE, MemoryStore
    from readscale._async.cache.cache import AsyncCache

    backend = AsyncMemoryBackend(max_entries=100, max_value_size=300)  # below the cache's own limit
    cache = AsyncCache(backend, l1=MemoryStore(100))
    await cache.set("k", "small")
    with pytest.raises(ValueTooLargeError) as info:
        await cache.set("k", "x" * 1000)
    assert info.value.key == cache.key("k")
    assert await cache.get("k") == "small", "a refused set changes nothing"

    async def save() -> str:
        return "y" * 1000  # the database took the write; the cache cannot hold its value

    assert await cache.write_through("k", save) == "y" * 1000
    assert await cache.get("k") is NO_VALUE, "the old value is gone from both tiers, not left stale"
    assert await backend.get(cache.key("k")) is None
