"""The invalidation bus: Redis pub/sub that tells every process to drop its L1 copies.

    from readscale.bus import AsyncInvalidationBus
    cache = AsyncCache(backend, l1=MemoryStore(10_000), bus=AsyncInvalidationBus(settings))

Delivery is at most once (pub/sub); a process that loses its subscription flushes its
L1 when it resubscribes, so a missed event costs hits, never a stale read past the
L1's own TTL.
"""

from readscale._async.cache.bus import AsyncInvalidationBus, BusStats
from readscale._sync.cache.bus import InvalidationBus

__all__ = ["AsyncInvalidationBus", "BusStats", "InvalidationBus"]
