"""A backend wrapper that counts calls per method: one call is one round trip.

Tests use it to assert round trips and backend calls (counts, not time); operators can
use it to see what a workload asks of the cache server.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from readscale._async.backends.base import AsyncBackend
from readscale._core.cache.lease import LeaseResult


class AsyncCountingBackend:
    def __init__(self, proxied: AsyncBackend) -> None:
        self.proxied = proxied
        self.calls: Counter[str] = Counter()
        self.name = proxied.name
        self.supports_leases = proxied.supports_leases
        self.supports_tombstones = proxied.supports_tombstones
        self.max_value_size = proxied.max_value_size

    async def get(self, key: str) -> bytes | None:
        self.calls["get"] += 1
        return await self.proxied.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.calls["get_many"] += 1
        return await self.proxied.get_many(keys)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self.calls["set"] += 1
        await self.proxied.set(key, value, ttl)

    async def set_many(self, items: Sequence[tuple[str, bytes, float]]) -> None:
        self.calls["set_many"] += 1
        await self.proxied.set_many(items)

    async def delete(self, key: str) -> bool:
        self.calls["delete"] += 1
        return await self.proxied.delete(key)

    async def delete_many(self, keys: Sequence[str]) -> int:
        self.calls["delete_many"] += 1
        return await self.proxied.delete_many(keys)

    async def lease(self, key: str, ttl: float) -> LeaseResult:
        self.calls["lease"] += 1
        return await self.proxied.lease(key, ttl)

    async def refresh_lease(self, key: str, ttl: float) -> str | None:
        self.calls["refresh_lease"] += 1
        return await self.proxied.refresh_lease(key, ttl)

    async def fill(self, key: str, value: bytes, ttl: float, token: str, lsn: int | None = None) -> bool:
        self.calls["fill"] += 1
        return await self.proxied.fill(key, value, ttl, token, lsn)

    async def ticket(self, key: str, ttl: float) -> LeaseResult:
        self.calls["ticket"] += 1
        return await self.proxied.ticket(key, ttl)

    async def ticket_many(self, keys: Sequence[str], ttl: float) -> list[LeaseResult]:
        self.calls["ticket_many"] += 1
        return await self.proxied.ticket_many(keys, ttl)

    async def fill_many(self, items: Sequence[tuple[str, bytes, float, str, int | None]]) -> list[bool]:
        self.calls["fill_many"] += 1
        return await self.proxied.fill_many(items)

    async def invalidate(self, keys: Sequence[str], *, lsn: int | None = None, tombstone_ttl: float = 35.0) -> int:
        self.calls["invalidate"] += 1
        return await self.proxied.invalidate(keys, lsn=lsn, tombstone_ttl=tombstone_ttl)

    async def invalidate_for_write(
        self, key: str, *, lsn: int | None, tombstone_ttl: float, ticket_ttl: float
    ) -> LeaseResult:
        self.calls["invalidate_for_write"] += 1
        return await self.proxied.invalidate_for_write(key, lsn=lsn, tombstone_ttl=tombstone_ttl, ticket_ttl=ticket_ttl)

    async def get_counters(self, keys: Sequence[str]) -> list[int]:
        self.calls["get_counters"] += 1
        return await self.proxied.get_counters(keys)

    async def incr_counters(self, keys: Sequence[str]) -> list[int]:
        self.calls["incr_counters"] += 1
        return await self.proxied.incr_counters(keys)

    async def bump_counters(self, keys: Sequence[str], *, lsn: int | None, floor_ttl: float) -> list[int]:
        self.calls["bump_counters"] += 1
        return await self.proxied.bump_counters(keys, lsn=lsn, floor_ttl=floor_ttl)

    async def counter_floors(self, keys: Sequence[str]) -> list[int | None]:
        self.calls["counter_floors"] += 1
        return await self.proxied.counter_floors(keys)

    async def register(self, key: str, value: bytes) -> bytes:
        self.calls["register"] += 1
        return await self.proxied.register(key, value)

    async def eviction_risk(self) -> str | None:
        self.calls["eviction_risk"] += 1
        return await self.proxied.eviction_risk()

    async def release(self, key: str, token: str) -> None:
        self.calls["release"] += 1
        await self.proxied.release(key, token)

    async def wait_for_fill(self, key: str, timeout: float) -> bool:
        self.calls["wait_for_fill"] += 1
        return await self.proxied.wait_for_fill(key, timeout)

    async def ping(self) -> None:
        self.calls["ping"] += 1
        await self.proxied.ping()

    async def close(self) -> None:
        await self.proxied.close()

    @property
    def round_trips(self) -> int:
        return sum(self.calls.values())
