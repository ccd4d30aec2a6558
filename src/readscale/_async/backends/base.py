"""The one protocol every cache backend speaks.

A backend stores opaque bytes under string keys with a time to live; it knows nothing
of entries, freshness or codecs (the cache façade and ``readscale._core`` do). Multi-key
calls take one round trip per server: a backend for a sharded server groups keys by
server (Redis Cluster: by slot, so a user never sees CROSSSLOT).

Leases are an optional capability (``supports_leases``): on a miss, one caller wins the
right to fill the key and every other caller waits for that fill, across processes.

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

from readscale.backends_common import LeaseResult


@runtime_checkable
class AsyncBackend(Protocol):
    #: A short name for metrics and errors: "memory", "redis", "redis-cluster", "memcached".
    name: str
    #: True when lease(), fill(), release() and wait_for_fill() are available.
    supports_leases: bool
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

    async def fill(self, key: str, value: bytes, ttl: float, token: str) -> bool:
        """Store ``value`` only if the lease ``token`` is still held; release it and wake
        the waiters. False when the lease was lost (expired or invalidated): nothing stored."""
        ...

    async def release(self, key: str, token: str) -> None:
        """Give up a lease without filling (the load failed); waiters may take over."""
        ...

    async def wait_for_fill(self, key: str, timeout: float) -> bool:  # noqa: ASYNC109 - the protocol takes a timeout
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
