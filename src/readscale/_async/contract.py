"""The backend contract suite, shipped with readscale so every backend (and yours) is held
to the same behaviour against a real server.

Subclass it in a test module and provide a ``backend`` fixture::

    class TestMyBackend(AsyncBackendContract):
        @pytest.fixture
        async def backend(self):
            backend = MyBackend(...)
            yield backend
            await backend.close()

Each test uses keys under a fresh random prefix, so a shared server needs no flush.
Expiry tests sleep past a short TTL (servers expire at their own resolution: memcached
in whole seconds); they assert what is stored, never how long a call took.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from readscale._async.backends.base import AsyncBackend
from readscale._primitives import async_sleep
from readscale.errors import ValueTooLargeError


def _keys(n: int) -> list[str]:
    prefix = uuid.uuid4().hex[:12]
    return [f"contract:{prefix}:{i}" for i in range(n)]


class AsyncBackendContract:
    """What every AsyncBackend must do. Override ``backend`` (a fixture)."""

    expiry_wait: float = 2.2  # seconds past a 1 s TTL; enough for second-resolution servers

    @pytest.fixture
    def backend(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError("provide a `backend` fixture")

    @pytest.mark.anyio
    async def test_missing_key_is_none(self, backend: AsyncBackend) -> None:
        (key,) = _keys(1)
        assert await backend.get(key) is None

    @pytest.mark.anyio
    async def test_set_then_get_round_trips_bytes(self, backend: AsyncBackend) -> None:
        a, b, c = _keys(3)
        await backend.set(a, b"hello", 60)
        await backend.set(b, bytes(range(256)) * 4, 60)
        await backend.set(c, b"", 60)
        assert await backend.get(a) == b"hello"
        assert await backend.get(b) == bytes(range(256)) * 4
        assert await backend.get(c) == b""

    @pytest.mark.anyio
    async def test_set_overwrites(self, backend: AsyncBackend) -> None:
        (key,) = _keys(1)
        await backend.set(key, b"one", 60)
        await backend.set(key, b"two", 60)
        assert await backend.get(key) == b"two"

    @pytest.mark.anyio
    async def test_unicode_keys(self, backend: AsyncBackend) -> None:
        (key,) = _keys(1)
        key += ":café:ключ:鍵"
        await backend.set(key, b"v", 60)
        assert await backend.get(key) == b"v"

    @pytest.mark.anyio
    async def test_get_many_keeps_order_and_reports_misses(self, backend: AsyncBackend) -> None:
        keys = _keys(50)
        await backend.set_many([(k, k.encode(), 60) for k in keys[::2]])
        values = await backend.get_many(keys)
        assert values == [k.encode() if i % 2 == 0 else None for i, k in enumerate(keys)]
        assert await backend.get_many([]) == []

    @pytest.mark.anyio
    async def test_values_expire_after_their_ttl(self, backend: AsyncBackend) -> None:
        short, long_ = _keys(2)
        await backend.set_many([(short, b"short", 1), (long_, b"long", 60)])
        assert await backend.get(short) == b"short"
        await async_sleep(self.expiry_wait)
        assert await backend.get(short) is None
        assert await backend.get(long_) == b"long"

    @pytest.mark.anyio
    async def test_delete(self, backend: AsyncBackend) -> None:
        a, b, c = _keys(3)
        await backend.set_many([(a, b"1", 60), (b, b"2", 60), (c, b"3", 60)])
        assert await backend.delete(a) is True
        assert await backend.delete(a) is False
        assert await backend.get(a) is None
        assert await backend.delete_many([b, c, a]) == 2
        assert await backend.get_many([a, b, c]) == [None, None, None]
        assert await backend.delete_many([]) == 0

    @pytest.mark.anyio
    async def test_oversize_value_is_refused_and_nothing_else_is_lost(self, backend: AsyncBackend) -> None:
        if backend.max_value_size is None:
            pytest.skip(f"{backend.name} has no value size limit of its own")
        keep, big = _keys(2)
        await backend.set(keep, b"keep me", 60)
        with pytest.raises(ValueTooLargeError) as info:
            await backend.set(big, b"x" * (backend.max_value_size + 1), 60)
        assert info.value.size == backend.max_value_size + 1
        assert await backend.get(big) is None
        assert await backend.get(keep) == b"keep me"

    @pytest.mark.anyio
    async def test_ping(self, backend: AsyncBackend) -> None:
        await backend.ping()

    # -- leases --------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_lease_on_a_hit_returns_the_value(self, backend: AsyncBackend) -> None:
        if not backend.supports_leases:
            pytest.skip(f"{backend.name} has no leases")
        (key,) = _keys(1)
        await backend.set(key, b"present", 60)
        result = await backend.lease(key, 5)
        assert result.value == b"present"
        assert result.token is None

    @pytest.mark.anyio
    async def test_one_lease_per_miss_and_the_holder_fills(self, backend: AsyncBackend) -> None:
        if not backend.supports_leases:
            pytest.skip(f"{backend.name} has no leases")
        (key,) = _keys(1)
        first = await backend.lease(key, 5)
        second = await backend.lease(key, 5)
        assert first.won
        assert first.value is None
        assert not second.won
        assert second.value is None
        assert first.token is not None
        assert await backend.fill(key, b"filled", 60, first.token) is True
        assert await backend.get(key) == b"filled"
        third = await backend.lease(key, 5)
        assert third.value == b"filled"

    @pytest.mark.anyio
    async def test_a_fill_without_the_lease_is_refused(self, backend: AsyncBackend) -> None:
        if not backend.supports_leases:
            pytest.skip(f"{backend.name} has no leases")
        a, b = _keys(2)
        won = await backend.lease(a, 5)
        assert won.token is not None
        assert await backend.fill(a, b"forged", 60, "not-the-token") is False
        assert await backend.get(a) is None
        await backend.release(a, won.token)
        # A released lease can be taken again, and the old token no longer fills.
        again = await backend.lease(a, 5)
        assert again.won
        assert await backend.fill(a, b"stale holder", 60, won.token) is False
        # No lease at all: nothing is stored.
        assert await backend.fill(b, b"no lease", 60, "whatever") is False
        assert await backend.get(b) is None

    @pytest.mark.anyio
    async def test_an_expired_lease_is_replaced(self, backend: AsyncBackend) -> None:
        if not backend.supports_leases:
            pytest.skip(f"{backend.name} has no leases")
        (key,) = _keys(1)
        dead = await backend.lease(key, 1)
        assert dead.won
        await async_sleep(self.expiry_wait)
        successor = await backend.lease(key, 5)
        assert successor.won
        assert successor.token is not None
        assert successor.token != dead.token
        assert await backend.fill(key, b"from the successor", 60, successor.token) is True

    @pytest.mark.anyio
    async def test_waiters_are_woken_by_the_fill(self, backend: AsyncBackend) -> None:
        if not backend.supports_leases:
            pytest.skip(f"{backend.name} has no leases")
        from readscale.testing.concurrency import async_gather

        (key,) = _keys(1)
        won = await backend.lease(key, 10)
        assert won.token is not None
        token = won.token

        async def waiter() -> bool:
            return await backend.wait_for_fill(key, 10)

        async def holder() -> bool:
            await async_sleep(0.2)
            return await backend.fill(key, b"landed", 60, token)

        results = await async_gather([waiter, waiter, waiter, holder])
        assert results == [True, True, True, True]
        assert await backend.get(key) == b"landed"

    @pytest.mark.anyio
    async def test_waiting_without_a_fill_times_out(self, backend: AsyncBackend) -> None:
        if not backend.supports_leases:
            pytest.skip(f"{backend.name} has no leases")
        (key,) = _keys(1)
        assert (await backend.lease(key, 5)).won
        assert await backend.wait_for_fill(key, 0.3) is False
