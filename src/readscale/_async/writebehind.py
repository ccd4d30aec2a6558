"""Write-behind, the producer: store a value in the cache and queue its database write,
in one atomic step, then return. Written once, async; ``readscale._sync.writebehind``
is generated from this file.

The database is written later by a flusher (``readscale._async.flusher``). Until then,
reads through the same cache see the new value: the entry is stored under the key the
cache reads (read-your-writes), and this process's L1 copy is dropped. The rules (versions,
backpressure) live in ``readscale._core.writebehind``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from readscale._async.backends.redis import AsyncRedisBackend, AsyncRedisClusterBackend
from readscale._async.wbqueue import AsyncWriteQueue
from readscale._core.writebehind import WriteBehindSettings, queue_keys, when_queue_full
from readscale._primitives import async_sleep
from readscale.codecs import Codec
from readscale.errors import CacheUnavailableError, ConfigurationError, WriteQueueFullError
from readscale.writebehind_common import WriteBehindStats

if TYPE_CHECKING:
    from readscale._async.cache import AsyncCache
    from readscale._core.policy import CachePolicy


class AsyncWriteBehind:
    """Queue database writes behind an :class:`~readscale.AsyncCache` on standalone Redis.

    Arguments:
        cache: the cache the values are stored in; its backend must be an
            :class:`~readscale.backends.AsyncRedisBackend` (Redis Cluster is refused: see
            :class:`AsyncWriteQueue`). That Redis holds the queue, so run it with AOF.
        settings: the queue's name and its backpressure (:class:`WriteBehindSettings`).
        monotonic: the clock for backpressure waits (inject it in tests).

    Raises :class:`~readscale.errors.ConfigurationError` for any other backend.
    """

    def __init__(
        self,
        cache: AsyncCache,
        settings: WriteBehindSettings | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        backend = cache.backend
        if isinstance(backend, AsyncRedisClusterBackend) or not isinstance(backend, AsyncRedisBackend):
            name = getattr(backend, "name", type(backend).__name__)
            raise ConfigurationError(
                f"write-behind needs a cache on a standalone Redis (AsyncRedisBackend), not {name}: the entry and "
                "its queue record are stored by one script, which Redis Cluster allows only within one hash slot"
            )
        self.cache = cache
        self.settings = settings or WriteBehindSettings()
        self.keys = queue_keys(cache.prefix, self.settings.queue)
        self.queue = AsyncWriteQueue(backend.client, self.keys, where=backend.settings.safe_url)
        self.stats = WriteBehindStats(self.settings.queue)
        self._monotonic = monotonic

    async def write_behind(
        self, key: str, value: Any, *, policy: CachePolicy | None = None, codec: Codec | None = None
    ) -> int:
        """Store ``value`` under ``key`` in the cache and queue its database write.

        Returns the write's version once both are stored (on a Redis with AOF the write
        then survives a crash of Redis). The flusher applies it to the database later,
        never over a newer version.

        Raises:
            WriteQueueFullError: the queue stayed full (``max_wait`` with ``WhenFull.WAIT``,
                at once with ``RAISE``); nothing was stored.
            CacheUnavailableError: Redis could not be reached; the write was not
                acknowledged (if the connection broke after the script ran it may
                still be applied, at a version the caller never saw).
            SerializationError: the value cannot be encoded; nothing was stored.
            ConfigurationError: ``policy`` does not cache in Redis (a write-behind value
                must be readable from the cache until the database has it).
        """
        policy = policy or self.cache.policy
        if not policy.cacheable or not policy.uses_l2:
            raise ConfigurationError(
                f"cache policy {policy.name!r} does not keep values in Redis; write-behind needs it to (reads "
                "must find the value until the flusher has written it)"
            )
        pkey, envelope, ttl = self.cache.prepare_entry(key, value, policy=policy, codec=codec)
        limit = self.settings.max_queue_length
        started: float | None = None
        attempt = 0
        while True:
            try:
                queued, number, _ = await self.queue.enqueue(pkey, envelope, ttl, key, policy.namespace, limit)
            except CacheUnavailableError:
                self.stats.errors += 1
                raise
            if queued:
                self.cache.forget_local(key, policy=policy)
                self.stats.writes += 1
                return number
            now = self._monotonic()
            if started is None:
                started = now
            delay = when_queue_full(attempt, now - started, self.settings)
            if delay is None:
                self.stats.full_rejections += 1
                raise WriteQueueFullError(self.settings.queue, number, limit, now - started)
            self.stats.full_waits += 1
            attempt += 1
            await async_sleep(delay)

    async def queue_length(self) -> int:
        """Records queued and not yet flushed (including those being written)."""
        return await self.queue.length()


__all__ = ["AsyncWriteBehind"]
