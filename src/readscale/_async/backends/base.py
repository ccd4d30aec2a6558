"""The one protocol every cache backend speaks.

A backend stores opaque bytes under string keys with a time to live; it knows nothing
of entries, freshness or codecs (the cache façade and ``readscale._core`` do). Multi-key
calls take one round trip per server: a backend for a sharded server groups keys by
server (Redis Cluster: by slot, so a user never sees CROSSSLOT).

Leases are an optional capability (``supports_leases``): on a miss, one caller wins the
right to fill the key and every other caller waits for that fill, across processes.

Tombstones (``supports_tombstones``) keep fills safe (``readscale._core.cache.fill``): every
fill holds a lease or a ticket taken before it loads, ``invalidate`` deletes both and
leaves a tombstone with the change's LSN whose LSN and expiry only ever grow, and
``fill`` stores only under an intact right and a source at or past the tombstone. Tags
and namespaces keep the same floor beside their counters (``bump_counters``).

Errors: a backend raises :class:`~readscale.errors.CacheUnavailableError` (with
``backend`` set) when its server is down, slow past its timeout or refuses a command, and
never lets a foreign exception (redis-py, socket) escape. Bad keys raise
:class:`~readscale.errors.InvalidKeyError`; values over the server's own limit raise
:class:`~readscale.errors.ValueTooLargeError`. Nothing else is stored or lost when one
call fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from readscale._core.cache.lease import LeaseResult


@runtime_checkable
class AsyncBackend(Protocol):
    #: A short name for metrics and errors: "memory", "redis", "redis-cluster", "memcached".
    name: str
    #: True when lease(), fill(), release() and wait_for_fill() are available.
    supports_leases: bool
    #: True when invalidate() records LSN tombstones that fill() enforces, and ticket(),
    #: bump_counters() and counter_floors() are available. The cache refuses a backend
    #: without them: its fills could not be kept from storing stale data.
    supports_tombstones: bool
    #: The largest value the server accepts, in bytes (None: no limit of its own).
    max_value_size: int | None

    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values in the order of ``keys`` (None where missing), in one round trip per server."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds (> 0; rounded up to the server's resolution)."""
        ...

    async def set_many(self, items: Sequence[tuple[str, bytes, float]]) -> None:
        """Store several ``(key, value, ttl)`` items in one round trip per server."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove ``key``; true if it existed."""
        ...

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Remove several keys; how many existed."""
        ...

    async def lease(self, key: str, ttl: float) -> LeaseResult:
        """In one round trip: the value if present, else try to take the fill lease.

        ``LeaseResult.value`` is set on a hit; ``LeaseResult.token`` is set when this caller
        won the lease and must ``fill`` (or ``release``); both None means another caller
        holds the lease: ``wait_for_fill``. The lease expires after ``ttl`` seconds, so a
        holder that dies is replaced.
        """
        ...

    async def refresh_lease(self, key: str, ttl: float) -> str | None:
        """Take the fill lease of a key that still has a (stale) value, whatever that value,
        so exactly one process refreshes it in the background. The token, or None when
        someone else holds the lease. ``fill`` with the token replaces the value."""
        ...

    async def ticket(self, key: str, ttl: float) -> LeaseResult:
        """A fill right that excludes no one (``OnMiss.LOAD``, a lease that timed out, a
        forced refresh): ``token`` (fill or release it within ``ttl`` seconds) and the
        key's tombstone LSN as ``floor_lsn``. An invalidation voids it, as it does a lease."""
        ...

    async def ticket_many(self, keys: Sequence[str], ttl: float) -> list[LeaseResult]:
        """:meth:`ticket` for several keys, in as few round trips as the server allows."""
        ...

    async def fill_many(self, items: Sequence[tuple[str, bytes, float, str, int | None]]) -> list[bool]:
        """:meth:`fill` for several ``(key, value, ttl, token, lsn)``, in as few round trips
        as the server allows; whether each was stored."""
        ...

    async def fill(self, key: str, value: bytes, ttl: float, token: str, lsn: int | None = None) -> bool:
        """Store ``value`` only if the lease or ticket ``token`` is still held and the
        value's source ``lsn`` is at or past the key's tombstone (if any); release the
        right and wake the waiters. False when refused (right lost, or a fill older than
        the last invalidation of the key): nothing stored."""
        ...

    async def release(self, key: str, token: str) -> None:
        """Give up a lease without filling (the load failed); waiters may take over."""
        ...

    async def invalidate(self, keys: Sequence[str], *, lsn: int | None = None, tombstone_ttl: float = 35.0) -> int:
        """Remove values, leases and tickets (an in-flight fill is then refused) and leave a
        tombstone: the change's ``lsn`` (None: unknown, stored as ``PRIMARY_ONLY``) for at
        least ``tombstone_ttl`` seconds. A tombstone's LSN and expiry only grow: a later
        invalidation never shortens one. Returns how many values existed."""
        ...

    async def invalidate_for_write(
        self, key: str, *, lsn: int | None, tombstone_ttl: float, ticket_ttl: float
    ) -> LeaseResult:
        """:meth:`invalidate` one key, then take a :meth:`ticket` for it (the right a
        write-through stores its own value with), in one round trip where the server
        allows. The ticket is taken after the invalidation, so it survives it and only a
        later invalidation voids it; its ``floor_lsn`` is the tombstone just raised."""
        ...

    async def get_counters(self, keys: Sequence[str]) -> list[int]:
        """Current values of version counters (tags, namespaces); 0 when never bumped."""
        ...

    async def incr_counters(self, keys: Sequence[str]) -> list[int]:
        """Bump version counters; their new values."""
        ...

    async def bump_counters(self, keys: Sequence[str], *, lsn: int | None, floor_ttl: float) -> list[int]:
        """Bump version counters and raise each one's floor to ``lsn`` (None: unknown,
        ``PRIMARY_ONLY``) for at least ``floor_ttl`` seconds (LSN and expiry only grow)."""
        ...

    async def counter_floors(self, keys: Sequence[str]) -> list[int | None]:
        """The floors of version counters (None where none stands). Read after the
        versions themselves, a floor is at least the one of the version read."""
        ...

    async def register(self, key: str, value: bytes) -> bytes:
        """Store ``value`` under ``key`` unless a value is there (no expiry); return the
        value stored. Processes sharing a cache agree on its settings through it."""
        ...

    async def eviction_risk(self) -> str | None:
        """Why the server may evict keys before their TTL (tombstones included), or None
        when it cannot (or cannot tell: then a reason saying so)."""
        ...

    async def wait_for_fill(self, key: str, timeout: float) -> bool:
        """Wait until a fill of ``key`` lands or ``timeout`` passes (true if woken by a fill).

        It is woken by a notification (Redis pub/sub), not by a fixed sleep loop; backends
        without notifications poll with a short exponential backoff.
        """
        ...

    async def ping(self) -> None:
        """Raise CacheUnavailableError unless the server answers (used to probe recovery)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
