"""Write-behind, the producer: store a value in the cache and queue its database write,
in one atomic step, then return. Written once, async; ``readscale._sync.writebehind.producer``
is generated from this file.

The database is written later by a flusher (``readscale._async.writebehind.flusher``). Until then,
reads through the same cache see the new value: the entry is stored under the key the
cache reads (read-your-writes), this process's L1 copy is dropped and the others' are
over the invalidation bus, if the cache has one. The rules (versions,
backpressure) live in ``readscale._core.writebehind``; the durability modes and the
check of the server's settings in ``readscale._core.writebehind.modes``.

Counters are merge operations: ``increment(key, delta)`` adds to a running sum in the
queue, which the flusher applies to the database exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from readscale._async.backends.redis import AsyncRedisBackend, AsyncRedisClusterBackend
from readscale._async.writebehind.queue import AsyncWriteQueue
from readscale._core.writebehind.flush import when_queue_full
from readscale._core.writebehind.modes import (
    FAST_LOSS_WINDOW,
    ServerFacts,
    WriteBehindMode,
    check_mode,
    delayed_fsync_growth,
)
from readscale._core.writebehind.records import check_delta
from readscale._core.writebehind.settings import WriteBehindSettings, queue_keys
from readscale._shared.primitives.locks import async_sleep
from readscale._shared.writebehind.stats import WriteBehindStats
from readscale.codecs import Codec
from readscale.errors import CacheUnavailableError, ConfigurationError, DurabilityError, WriteQueueFullError

log = logging.getLogger("readscale.writebehind")

#: Seconds a refusal is repeated without asking the server again.
REFUSAL_RECHECK = 5.0

if TYPE_CHECKING:
    from readscale._async.cache.cache import AsyncCache
    from readscale._core.cache.policy import CachePolicy


#: Replicas a durable write must reach (WAIT) before it is acknowledged on a Sentinel master.
SENTINEL_DURABLE_REPLICAS = 1


class AsyncWriteBehind:
    """Queue database writes behind an :class:`~readscale.AsyncCache` on standalone Redis.

    Arguments:
        cache: the cache the values are stored in; its backend must be an
            :class:`~readscale.backends.AsyncRedisBackend` (Redis Cluster is refused: see
            :class:`AsyncWriteQueue`). That Redis holds the queue.
        settings: the queue's name, its durability mode and its backpressure
            (:class:`WriteBehindSettings`).
        monotonic: the clock for backpressure waits and checks (inject it in tests).

    Raises :class:`~readscale.errors.ConfigurationError` for any other backend. Before
    the first write (and every ``settings.recheck_every`` seconds, and after Redis was
    unreachable) the server's persistence settings are checked against the mode: a Redis
    that cannot keep its promise gets :class:`~readscale.errors.DurabilityError` (one
    line naming the setting) instead of an acknowledgement. Call :meth:`check` at start
    to fail there rather than on the first write.
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
        self.queue = AsyncWriteQueue(
            backend.client, self.keys, where=backend.settings.safe_url, fill_channel=backend.fill_channel
        )
        if backend.settings.sentinel and self.settings.durability is WriteBehindMode.DURABLE:
            # Replication is asynchronous: a failover promotes a replica that may miss the
            # master's last writes. Durable under Sentinel = on one replica too (WAIT 1).
            self.queue.wait_replicas = SENTINEL_DURABLE_REPLICAS
        self.stats = WriteBehindStats(self.settings.queue)
        self._monotonic = monotonic
        self._where = backend.settings.safe_url
        self._checked_until = float("-inf")
        self._refused: DurabilityError | None = None  # the last refusal, repeated without I/O until rechecked

    async def check(self) -> ServerFacts | None:
        """Check the Redis against the mode (see the class docstring); its facts, or None
        in ``volatile`` mode (nothing to check). Raises :class:`DurabilityError`."""
        mode = self.settings.durability
        if mode is WriteBehindMode.VOLATILE:
            self._checked_until = float("inf")
            return None
        facts = await self.queue.server_facts(dict(self.settings.assume_config))
        self.stats.durability_checks += 1
        refusal = check_mode(mode, facts)
        if refusal is not None:
            self.stats.durability_refusals += 1
            error = refusal.error(self._where)
            if self._refused is None or str(self._refused) != str(error):
                log.error(
                    "%s",
                    error,
                    extra={
                        "event": "writebehind_durability_refused",
                        "queue": self.settings.queue,
                        "reason": str(error),
                    },
                )  # once per cause, not once per write
            self._refused = error
            self._checked_until = self._monotonic() + min(self.settings.recheck_every, REFUSAL_RECHECK)
            raise error
        if self._refused is not None:
            log.info(
                "write-behind queue %s: %s now keeps mode %r",
                self.settings.queue,
                self._where,
                mode.value,
                extra={
                    "event": "writebehind_durability_ok",
                    "queue": self.settings.queue,
                    "backend": self._where,
                    "mode": mode.value,
                },
            )
            self._refused = None
        delayed = facts.delayed_fsyncs
        grown = delayed_fsync_growth(None if self.stats.aof_delayed_fsync < 0 else self.stats.aof_delayed_fsync,
                                     delayed)  # fmt: skip
        if grown and mode is WriteBehindMode.FAST:
            log.warning(
                "write-behind queue %s: Redis postponed %d more AOF fsyncs past its limit "
                "(aof_delayed_fsync=%d): its disk is slow, and writes acknowledged in the last %.0f s or more "
                "were at risk",
                self.settings.queue,
                grown,
                delayed,
                FAST_LOSS_WINDOW,
                extra={
                    "event": "writebehind_aof_delayed_fsync",
                    "queue": self.settings.queue,
                    "count": grown,
                    "aof_delayed_fsync": delayed,
                },
            )
        self.stats.aof_delayed_fsync = -1 if delayed is None else delayed
        self._checked_until = self._monotonic() + self.settings.recheck_every
        return facts

    async def _ensure_checked(self) -> None:
        if self._monotonic() >= self._checked_until:
            await self.check()
        elif self._refused is not None:
            raise self._refused

    async def write_behind(
        self, key: str, value: Any, *, policy: CachePolicy | None = None, codec: Codec | None = None
    ) -> int:
        """Store ``value`` under ``key`` in the cache and queue its database write.

        Returns the write's version once both are stored, with the mode's durability
        (``durable``: it survives a crash of Redis or its host). The flusher applies it
        to the database later, never over a newer version.

        Raises:
            WriteQueueFullError: the queue stayed full (``max_wait`` with ``WhenFull.WAIT``,
                at once with ``RAISE``); nothing was stored.
            CacheUnavailableError: Redis could not be reached; the write was not
                acknowledged (if the connection broke after the script ran it may
                still be applied, at a version the caller never saw).
            DurabilityError: the Redis cannot keep the mode's promise (a setting is
                weaker than it needs); nothing was stored.
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

        async def enqueue() -> tuple[bool, int, Any]:
            return await self.queue.enqueue(pkey, envelope, ttl, key, policy.namespace, self.settings.max_queue_length)

        version = await self._with_room(enqueue)
        await self.cache.drop_copies(key, policy=policy)  # this L1 now, the others' over the bus
        self.stats.writes += 1
        return version

    async def increment(self, key: str, delta: int = 1) -> int:
        """Add ``delta`` to the counter ``key`` in the database, behind: a merge operation.

        Deltas add up in the queue (one running sum per key) and the flusher adds each
        sum to the counter's column exactly once (the database records which sums it
        applied in the same transaction), across flusher and Redis crashes. Returns the
        increment's version once it is held by the queue, with the mode's durability.
        The cache entry of ``key`` is left alone: read a counter from the database, or
        cache its reads with a TTL you can accept as staleness.

        Raises:
            WriteQueueFullError: the queue stayed full; nothing was added.
            CacheUnavailableError: Redis could not be reached; not acknowledged.
            DurabilityError: the Redis cannot keep the mode's promise.
            ConfigurationError: ``delta`` is not a non-zero int within +-2**53.
        """
        check_delta(delta)

        async def add() -> tuple[bool, int, Any]:
            return await self.queue.increment(key, delta, self.settings.max_queue_length)

        version = await self._with_room(add)
        self.stats.increments += 1
        return version

    async def _with_room(self, attempt_once: Callable[[], Awaitable[tuple[bool, int, Any]]]) -> int:
        """Run one queueing script until it finds room (waiting as ``when_full`` says),
        checking the server's settings first when due; the version it returns."""
        limit = self.settings.max_queue_length
        started: float | None = None
        attempt = 0
        while True:
            try:
                await self._ensure_checked()
                queued, number, _ = await attempt_once()
            except CacheUnavailableError:
                self.stats.errors += 1
                self._checked_until = float("-inf")  # Redis may come back with other settings
                raise
            if queued:
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
