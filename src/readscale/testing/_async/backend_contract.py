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
from readscale._core.cache.fill import PRIMARY_ONLY, PRIMARY_READ_LSN
from readscale._shared.primitives.locks import async_sleep
from readscale.errors import ValueTooLargeError


def _keys(n: int) -> list[str]:
    prefix = uuid.uuid4().hex[:12]
    return [f"contract:{prefix}:{i}" for i in range(n)]


class AsyncBackendContract:
    """What every AsyncBackend must do. Override ``backend`` (a fixture)."""

    #: A short TTL, and how long to sleep for it to surely pass. The defaults suit servers
    #: with one-second resolution (memcached); millisecond servers override them.
    short_ttl: float = 1.0
    expiry_wait: float = 2.2

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
        await backend.set_many([(short, b"short", self.short_ttl), (long_, b"long", 60)])
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
        dead = await backend.lease(key, self.short_ttl)
        assert dead.won
        await async_sleep(self.expiry_wait)
        successor = await backend.lease(key, 5)
        assert successor.won
        assert successor.token is not None
        assert successor.token != dead.token
        assert await backend.fill(key, b"from the successor", 60, successor.token) is True

    @pytest.mark.anyio
    async def test_one_refresh_lease_per_stale_key(self, backend: AsyncBackend) -> None:
        if not backend.supports_leases:
            pytest.skip(f"{backend.name} has no leases")
        (key,) = _keys(1)
        await backend.set(key, b"stale", 60)
        token = await backend.refresh_lease(key, 5)
        assert token is not None
        assert await backend.refresh_lease(key, 5) is None
        assert await backend.get(key) == b"stale"  # still served while the refresh runs
        assert await backend.fill(key, b"refreshed", 60, token) is True
        assert await backend.get(key) == b"refreshed"
        again = await backend.refresh_lease(key, 5)
        assert again is not None
        await backend.release(key, again)
        assert await backend.get(key) == b"refreshed"

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

    # -- invalidation ----------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_invalidate_removes_values_and_refuses_in_flight_fills(self, backend: AsyncBackend) -> None:
        a, b, c = _keys(3)
        await backend.set_many([(a, b"1", 60), (b, b"2", 60)])
        token = (await backend.lease(c, 5)).token if backend.supports_leases else None
        # Two values existed; a backend may also count c's lease placeholder (memcached).
        assert await backend.invalidate([a, b, c]) in (2, 3)
        assert await backend.get_many([a, b, c]) == [None, None, None]
        if token is not None:
            # The reader that took its lease before the invalidation cannot store.
            assert await backend.fill(c, b"read before the change", 60, token) is False
            assert await backend.get(c) is None

    @pytest.mark.anyio
    async def test_tombstones_refuse_fills_older_than_the_change(self, backend: AsyncBackend) -> None:
        if not backend.supports_tombstones:
            pytest.skip(f"{backend.name} keeps no tombstones")
        (key,) = _keys(1)
        await backend.invalidate([key], lsn=1000, tombstone_ttl=30)
        await backend.invalidate([key], lsn=900, tombstone_ttl=30)  # an older event never lowers it
        lease = await backend.lease(key, 5)
        assert lease.token is not None
        assert lease.floor_lsn == 1000
        assert await backend.fill(key, b"from a lagging replica", 60, lease.token, lsn=999) is False
        lease = await backend.lease(key, 5)
        assert lease.token is not None
        assert await backend.fill(key, b"no source position", 60, lease.token, lsn=None) is False
        lease = await backend.lease(key, 5)
        assert lease.token is not None
        assert await backend.fill(key, b"caught up", 60, lease.token, lsn=1000) is True
        assert await backend.get(key) == b"caught up"

    @pytest.mark.anyio
    async def test_version_counters(self, backend: AsyncBackend) -> None:
        a, b = _keys(2)
        assert await backend.get_counters([a, b]) == [0, 0]
        assert await backend.incr_counters([a]) == [1]
        assert await backend.incr_counters([a, b]) == [2, 1]
        assert await backend.get_counters([b, a]) == [1, 2]

    # -- the rules that keep fills safe (readscale._core.cache.fill) ------------------------------

    @pytest.mark.anyio
    async def test_a_tombstone_never_shortens(self, backend: AsyncBackend) -> None:
        """A later invalidation with a shorter life (another process, the CDC worker)
        keeps the longer expiry and the higher LSN."""
        (key,) = _keys(1)
        await backend.invalidate([key], lsn=1000, tombstone_ttl=30)
        await backend.invalidate([key], lsn=900, tombstone_ttl=self.short_ttl)
        await async_sleep(self.expiry_wait)
        lease = await backend.lease(key, 5)
        assert lease.token is not None
        assert lease.floor_lsn == 1000, "the short-lived invalidation cut the tombstone's life"
        assert await backend.fill(key, b"behind", 60, lease.token, lsn=999) is False

    @pytest.mark.anyio
    async def test_an_invalidation_for_a_write_voids_earlier_rights_and_keeps_its_own(
        self, backend: AsyncBackend
    ) -> None:
        """A write-through's first step (one round trip where the server allows): the value,
        every fill right taken before and a tombstone that only grows, then a ticket of
        its own that survives them and that only a later invalidation voids."""
        a, b, c = _keys(3)
        await backend.set(a, b"old", 60)
        earlier = await backend.ticket(a, 5)
        leased = (await backend.lease(b, 5)).token if backend.supports_leases else None
        await backend.invalidate([a], lsn=1000, tombstone_ttl=30)
        right = await backend.invalidate_for_write(a, lsn=900, tombstone_ttl=30, ticket_ttl=5)
        assert right.token is not None and right.floor_lsn == 1000, "an older write lowered the tombstone"
        assert await backend.get(a) is None
        assert earlier.token is not None
        assert await backend.fill(a, b"read before the write", 60, earlier.token, lsn=PRIMARY_READ_LSN) is False
        assert await backend.fill(a, b"written", 60, right.token, lsn=1000) is True
        assert await backend.get(a) == b"written"
        # A lease taken before the write is void; an unknown position admits only the primary.
        right = await backend.invalidate_for_write(b, lsn=None, tombstone_ttl=30, ticket_ttl=5)
        assert right.token is not None and right.floor_lsn == PRIMARY_ONLY
        if leased is not None:
            assert await backend.fill(b, b"read before the write", 60, leased, lsn=PRIMARY_READ_LSN) is False
        await backend.invalidate([b], lsn=2000)  # a newer write came in between
        assert await backend.fill(b, b"overtaken", 60, right.token, lsn=PRIMARY_READ_LSN) is False
        assert await backend.get(b) is None
        # The write's shorter tombstone life does not cut a longer one.
        await backend.invalidate([c], lsn=1000, tombstone_ttl=30)
        right = await backend.invalidate_for_write(c, lsn=900, tombstone_ttl=self.short_ttl, ticket_ttl=5)
        assert right.token is not None
        await backend.release(c, right.token)
        await async_sleep(self.expiry_wait)
        lease = await backend.lease(c, 5)
        assert lease.token is not None and lease.floor_lsn == 1000, "the write cut the tombstone's life"

    @pytest.mark.anyio
    async def test_an_invalidation_of_unknown_position_admits_only_primary_reads(self, backend: AsyncBackend) -> None:
        (key,) = _keys(1)
        await backend.invalidate([key])
        lease = await backend.lease(key, 5)
        assert lease.token is not None
        assert lease.floor_lsn == PRIMARY_ONLY
        assert await backend.fill(key, b"a replica read", 60, lease.token, lsn=2**62) is False
        lease = await backend.lease(key, 5)
        assert lease.token is not None
        assert await backend.fill(key, b"a primary read", 60, lease.token, lsn=PRIMARY_READ_LSN) is True
        assert await backend.get(key) == b"a primary read"

    @pytest.mark.anyio
    async def test_tickets_are_voided_by_an_invalidation(self, backend: AsyncBackend) -> None:
        a, b = _keys(2)
        ticket = await backend.ticket(a, 5)
        assert ticket.token is not None and ticket.floor_lsn is None
        assert await backend.fill(a, b"loaded", 60, ticket.token) is True
        assert await backend.get(a) == b"loaded"
        ticket = await backend.ticket(a, 5)  # a refresh of the value
        assert ticket.token is not None
        await backend.invalidate([a], lsn=500)
        assert await backend.fill(a, b"read before the change", 60, ticket.token, lsn=499) is False
        assert await backend.get(a) is None
        ticket = await backend.ticket(a, 5)
        assert ticket.token is not None and ticket.floor_lsn == 500
        assert await backend.fill(a, b"too old", 60, ticket.token, lsn=499) is False
        ticket = await backend.ticket(a, 5)
        assert ticket.token is not None
        assert await backend.fill(a, b"fresh", 60, ticket.token, lsn=500) is True
        assert await backend.get(a) == b"fresh"
        # A ticket on an absent key, then an invalidation: the store is refused.
        ticket = await backend.ticket(b, 5)
        assert ticket.token is not None
        await backend.invalidate([b], lsn=10)
        assert await backend.fill(b, b"read before the change", 60, ticket.token, lsn=PRIMARY_READ_LSN) is False
        assert await backend.fill(b, b"forged", 60, "t~forged") is False
        await backend.release(b, ticket.token)  # harmless

    @pytest.mark.anyio
    async def test_a_lease_on_an_invalidated_key_is_exclusive(self, backend: AsyncBackend) -> None:
        if not backend.supports_leases:
            pytest.skip(f"{backend.name} has no leases")
        (key,) = _keys(1)
        await backend.set(key, b"old", 60)
        await backend.invalidate([key], lsn=77)
        first = await backend.lease(key, 5)
        second = await backend.lease(key, 5)
        assert first.token is not None and first.floor_lsn == 77
        assert second.token is None and second.value is None
        await backend.release(key, first.token)
        third = await backend.lease(key, 5)  # given back: the next one wins
        assert third.token is not None and third.floor_lsn == 77
        assert await backend.fill(key, b"new", 60, third.token, lsn=77) is True
        assert await backend.get(key) == b"new"
        # The floor outlives the fill: a refresh reading behind it is still refused.
        ticket = await backend.ticket(key, 5)
        assert ticket.token is not None and ticket.floor_lsn == 77
        assert await backend.fill(key, b"behind", 60, ticket.token, lsn=76) is False
        assert await backend.get(key) == b"new"

    @pytest.mark.anyio
    async def test_counter_floors_grow_and_never_shorten(self, backend: AsyncBackend) -> None:
        a, b, c = _keys(3)
        assert await backend.counter_floors([a, b]) == [None, None]
        assert await backend.bump_counters([a], lsn=100, floor_ttl=30) == [1]
        assert await backend.bump_counters([a, b], lsn=90, floor_ttl=self.short_ttl) == [2, 1]
        await backend.bump_counters([c], lsn=None, floor_ttl=30)
        await async_sleep(self.expiry_wait)
        assert await backend.counter_floors([a, b, c]) == [100, None, PRIMARY_ONLY]
        assert await backend.get_counters([a, b, c]) == [2, 1, 1]

    @pytest.mark.anyio
    async def test_register_keeps_the_first_value(self, backend: AsyncBackend) -> None:
        (key,) = _keys(1)
        assert await backend.register(key, b"35") == b"35"
        assert await backend.register(key, b"5") == b"35"
