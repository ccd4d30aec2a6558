"""The application cache: an in-process L1 in front of a remote L2, with stampede
protection, invalidation and fail-open reads. Written once, async;
``readscale._sync.cache.Cache`` is generated from this file.

A read asks ``readscale._core.freshness.assess`` what the entry it found is worth and
carries the answer out (fresh: serve; early refresh or stale: serve and refresh once in
the background; stale-if-error: load and fall back to the stale value; expired, tagged
stale or missing: fill). Concurrent readers of one key in a process share one L2 read
and one fill (single-flight); with ``OnMiss.WAIT`` one fill runs across processes (a
lease: the others are woken by the fill). When the L2 server fails, reads go to the
loader and a circuit breaker stops paying the timeout on every call until a probe
succeeds; each such event is logged and counted.

Invalidation (``invalidate``, ``invalidate_tags``, ``invalidate_namespace``) removes
entries and their leases, leaves LSN tombstones, bumps version counters and tells every
other process over the bus. The machinery lives in the ``_cache_*`` mixins.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, assert_never

from readscale._async._cache_fills import AsyncFillMixin, log
from readscale._async.backends.base import AsyncBackend
from readscale._async.bus import AsyncInvalidationBus
from readscale._async.cached import AsyncCachedFunction
from readscale._causal import current_context
from readscale._core import breaker as circuit
from readscale._core.entry import fresh_payloads
from readscale._core.freshness import Freshness, assess, storage_ttl
from readscale._core.keys import DEFAULT_PREFIX, physical_keys, template_fields
from readscale._core.policy import DEFAULT, CachePolicy
from readscale._core.writebehind import WriteBehindSettings
from readscale._primitives import AsyncBackground, AsyncSingleFlight
from readscale.codecs import Codec, JsonCodec
from readscale.errors import (
    CacheUnavailableError,
    ConfigurationError,
    CorruptValueError,
    ReadscaleError,
    SerializationError,
)
from readscale.memory import NO_VALUE, MemoryStore
from readscale.metrics import CacheStats

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_MAX_VALUE_SIZE = 1024 * 1024


class AsyncCache(AsyncFillMixin):
    """An application cache over an optional in-process L1 and a remote L2 backend.

    Arguments:
        backend: the L2 (Redis, Redis Cluster, Memcached, memory). None: L1 only.
        l1: the in-process tier, or None for no L1.
        bus: the invalidation bus shared by every process of this cache. Without one, L1
            copies of keys invalidated elsewhere live until their ``l1_ttl``.
        codec: how values become bytes (JSON by default; pickle only if named and signed).
        policy: the default :class:`CachePolicy` for calls that give none.
        prefix: prepended to every key this cache stores (``rs:`` by default).
        max_value_size: encoded values larger than this are refused (bytes).
        tombstone_ttl: how long an invalidation with an LSN keeps refusing older fills;
            at least the longest replica lag you want to be safe from.
        version_ttl: how long a tag or namespace version read from L2 is trusted locally
            (the bus updates it sooner). Default: 60 s with a bus, 0 without.
        purger: an edge purger (``readscale.http.purge``); ``invalidate_tags`` purges the
            same tags at the edge after the cache, so a tag names one thing everywhere.
        write_behind: the queue of :meth:`write_behind` (its name and backpressure).
        clock: wall-clock seconds (entries cross processes); monotonic: for durations;
        rng: uniform in [0, 1) for TTL jitter and XFetch. Inject them in tests.
    """

    def __init__(
        self,
        backend: AsyncBackend | None = None,
        *,
        l1: MemoryStore[str, Any] | None = None,
        bus: AsyncInvalidationBus | None = None,
        codec: Codec | None = None,
        policy: CachePolicy = DEFAULT,
        prefix: str = DEFAULT_PREFIX,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        breaker: circuit.BreakerSettings | None = None,
        tombstone_ttl: float = 5.0,
        version_ttl: float | None = None,
        purger: Any | None = None,
        write_behind: WriteBehindSettings | None = None,
        name: str = "cache",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if backend is None and l1 is None:
            raise ConfigurationError("a cache needs a backend, an l1 store, or both")
        if tombstone_ttl <= 0:
            raise ConfigurationError(f"tombstone_ttl must be > 0 seconds, got {tombstone_ttl}")
        self.backend = backend
        self.l1 = l1
        self.codec: Codec = codec or JsonCodec()
        self.policy = policy
        self.prefix = prefix
        self.max_value_size = max_value_size
        self.tombstone_ttl = tombstone_ttl
        self.version_ttl = version_ttl if version_ttl is not None else (60.0 if bus is not None else 0.0)
        self.stats = CacheStats(name)
        self._breaker_settings = breaker or circuit.BreakerSettings()
        self._breaker = circuit.CLOSED
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng
        self._flight: AsyncSingleFlight[str, Any] = AsyncSingleFlight()
        self._background: AsyncBackground[str] = AsyncBackground(on_error=self._refresh_failed)
        self._versions: dict[str, tuple[int, float]] = {}
        self._unsynced: set[str] = set()
        self._l1_suspended: MemoryStore[str, Any] | None = None  # the L1 while the bus is down
        self.purger = purger
        self._write_behind_settings = write_behind
        self._write_behind: Any = None
        self._attach_bus(bus)

    @property
    def l2_available(self) -> bool:
        """False while the circuit breaker skips the L2 after failures (reads go to the
        loader); a health check can report it. True without an L2."""
        return self._breaker is circuit.CLOSED

    # -- keys ------------------------------------------------------------------------------

    def key(self, key: str, policy: CachePolicy | None = None) -> str:
        """The physical key stored for ``key`` under ``policy``'s namespace."""
        return self._physical(key, policy or self.policy)

    def prepare_entry(
        self, key: str, value: Any, *, policy: CachePolicy | None = None, codec: Codec | None = None
    ) -> tuple[str, bytes, float]:
        """Encode ``value`` as this cache stores it: ``(physical_key, envelope, storage_ttl)``.

        For writers that store entries themselves in one atomic step with other commands
        (write-behind puts the entry and its queue record in one script). Raises the
        encoding errors of :meth:`set`.
        """
        policy = policy or self.policy
        pkey = self.key(key, policy)
        meta = self._meta(value, policy, 0.0)
        raw = self._encode(pkey, value, meta, codec or self.codec)
        return pkey, raw, storage_ttl(meta, self._clock())

    def forget_local(self, key: str, *, policy: CachePolicy | None = None) -> None:
        """Drop ``key`` from this process's L1 only (after another writer changed it)."""
        if self.l1 is not None:
            self.l1.delete(self.key(key, policy))

    # -- cache-aside -----------------------------------------------------------------------

    async def get(self, key: str, *, policy: CachePolicy | None = None, codec: Codec | None = None) -> Any:
        """The cached value of ``key``, or ``NO_VALUE`` on a miss (None is a cached value).

        A stale value inside its stale-while-revalidate window is returned (there is no
        loader here to refresh it); a dead L2 reads as a miss.
        """
        policy = policy or self.policy
        if not policy.cacheable:
            return NO_VALUE
        if self._bus_pending:
            await self._ensure_bus()
        pkey = self._physical(key, policy) if not policy.versioned else await self._pkey(key, policy)
        found = self._l1_get(pkey, policy)
        if found is not None and (not found[1].tags or self._tags_current_locally(found[1].tags)):
            return found[0]
        found = await self._l2_get(pkey, policy, codec or self.codec)
        if found is None:
            self.stats.l2.misses += 1
            return NO_VALUE
        value, meta = found
        if meta.tags and not await self._tags_current(meta.tags):
            self.stats.l2.tag_stale += 1
            return NO_VALUE
        state = assess(meta, self._clock(), 1.0, 0.0)
        if state is Freshness.FRESH:
            self.stats.l2.hits += 1
            self._l1_put(pkey, value, meta, policy, size=0)
            return value
        if state is Freshness.STALE:
            self.stats.l2.stale_serves += 1
            return value
        self.stats.l2.misses += 1
        return NO_VALUE

    async def set(
        self,
        key: str,
        value: Any,
        *,
        policy: CachePolicy | None = None,
        ttl: float | None = None,
        codec: Codec | None = None,
        tags: Sequence[str] = (),
    ) -> None:
        """Store ``value``. Raises :class:`UnserializableValueError` or
        :class:`ValueTooLargeError` (nothing stored); a dead L2 is logged and counted."""
        policy = policy or self.policy
        if ttl is not None:
            policy = policy.with_(ttl=ttl)
        if not policy.cacheable:
            return
        try:
            pkey = await self._pkey(key, policy)
            tag_versions = await self._tag_versions((*policy.tags, *tags))
        except CacheUnavailableError as exc:  # nothing stored: a later read loads it
            self._l2_failed(exc)
            return
        meta = self._meta(value, policy, 0.0, tag_versions)
        raw = self._encode(pkey, value, meta, codec or self.codec)
        await self._store(pkey, value, meta, raw, policy, token=None, raise_too_large=True)

    async def delete(self, key: str, *, policy: CachePolicy | None = None) -> bool:
        """Remove ``key`` from both tiers (this process's L1 only; see :meth:`invalidate`).
        Raises :class:`CacheUnavailableError` when the L2 cannot be reached: a lost delete
        would leave stale data behind."""
        pkey = await self._pkey(key, policy or self.policy)
        if self.l1 is not None:
            self.l1.delete(pkey)
        if self.backend is None:
            return True
        return await self.backend.delete(pkey)

    async def delete_many(self, keys: Sequence[str], *, policy: CachePolicy | None = None) -> int:
        policy = policy or self.policy
        pkeys = [await self._pkey(k, policy) for k in keys]
        if self.l1 is not None:
            self.l1.delete_many(pkeys)
        if self.backend is None:
            return len(pkeys)
        return await self.backend.delete_many(pkeys)

    # -- invalidation ----------------------------------------------------------------------

    async def invalidate(self, *keys: str, policy: CachePolicy | None = None, lsn: int | None = None) -> int:
        """Invalidate ``keys`` after the change that made them stale has committed.

        Removes the entries and any fill lease (a fill that started before this call is
        refused), leaves a tombstone with ``lsn`` (the change's WAL position) so no fill
        read before that position can store, drops every process's L1 copy over the bus,
        and returns how many entries existed. Raises :class:`CacheUnavailableError` when
        the L2 cannot be reached (a lost invalidation would leave stale data).
        """
        policy = policy or self.policy
        pkeys = [await self._pkey(k, policy) for k in keys]
        if self.l1 is not None:
            self.l1.delete_many(pkeys)
        removed = len(pkeys)
        if self.backend is not None:
            try:
                removed = await self.backend.invalidate(pkeys, lsn=lsn, tombstone_ttl=self.tombstone_ttl)
            except CacheUnavailableError:
                for pkey in pkeys:  # removed as soon as the L2 answers, and raised now
                    self._mark_unsynced(pkey)
                raise
        self.stats.invalidations += len(pkeys)
        await self._announce(pkeys, {})
        return removed

    async def invalidate_tags(self, *tags: str) -> dict[str, int]:
        """Make every entry carrying one of ``tags`` stale, everywhere. Returns the tags'
        new versions. No set of keys is kept per tag: each tag is one counter."""
        if not tags:
            return {}
        if self.backend is None:
            raise ConfigurationError("tags need an L2 backend to hold their versions")
        bumped = await self._bump([self._tag_counter(t) for t in tags], [])
        self.stats.invalidations += len(tags)
        if self.purger is not None:
            try:
                await self.purger.purge_tags(list(tags))
            except ReadscaleError as exc:  # the cache is right; the edge expires by its TTL
                self.stats.loader.purge_errors += 1
                log.warning("cache %s: edge purge of %s failed: %s", self.stats.name, ", ".join(tags), exc)
        return {tag: bumped[self._tag_counter(tag)] for tag in tags}

    async def invalidate_namespace(self, namespace: str) -> int:
        """Make every key of a versioned namespace unreachable at once (old entries die by
        their TTL). Returns the namespace's new version."""
        if self.backend is None:
            raise ConfigurationError("versioned namespaces need an L2 backend")
        counter = self._namespace_counter(namespace)
        bumped = await self._bump([counter], [])
        if self.l1 is not None:
            self.l1.clear()  # cheaper than finding the namespace's keys; other namespaces refill
        return bumped[counter]

    # -- read-through ----------------------------------------------------------------------

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        *,
        policy: CachePolicy | None = None,
        codec: Codec | None = None,
        tags: Sequence[str] = (),
    ) -> T:
        """The cached value of ``key``, loading it with ``loader`` on a miss.

        Concurrent misses of one key share one load in this process, and with
        ``OnMiss.WAIT`` one load across processes. Errors of the cache server never reach
        the caller (the value is loaded instead); errors of ``loader`` do. ``tags`` are
        recorded with the entry (on top of the policy's): ``invalidate_tags`` of any of
        them makes it stale.
        """
        policy = policy or self.policy
        if not policy.cacheable:
            self.stats.loader.bypasses += 1
            return await self._call_loader(loader)
        if self._bus_pending:
            await self._ensure_bus()
        codec = codec or self.codec
        if policy.versioned:
            try:
                pkey = await self._pkey(key, policy)
            except CacheUnavailableError as exc:  # the namespace's version is unknown: no cache
                self._l2_failed(exc)
                self.stats.loader.fail_open += 1
                return await self._call_loader(loader)
        else:
            pkey = self._physical(key, policy)
        all_tags = (*policy.tags, *tags) if tags else policy.tags
        found = self._l1_get(pkey, policy)
        if found is not None:
            value, meta = found
            if not meta.tags or self._tags_current_locally(meta.tags):
                if policy.early_refresh and (
                    assess(meta, self._clock(), self._u(), policy.early_refresh) is Freshness.EARLY_REFRESH
                ):
                    self.stats.l1.early_refreshes += 1
                    self._refresh_soon(pkey, loader, policy, codec, all_tags)
                return value  # type: ignore[no-any-return]

        # Concurrent readers of one key in this process share one L2 read (and fill).
        async def read() -> Any:
            return await self._read_through(pkey, loader, policy, codec, all_tags)

        value, leader = await self._flight.run(pkey, read)
        if not leader:
            self.stats.l2.coalesced += 1
        return value  # type: ignore[no-any-return]

    async def _read_through(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
    ) -> Any:
        found = await self._l2_get(pkey, policy, codec)
        if found is None:
            self.stats.l2.misses += 1
            return await self._fill_once(pkey, loader, policy, codec, tags)
        value, meta = found
        if meta.tags and not await self._tags_current(meta.tags):
            self.stats.l2.tag_stale += 1
            return await self._fill_once(pkey, loader, policy, codec, tags)
        state = assess(meta, self._clock(), self._u(), policy.early_refresh)
        match state:
            case Freshness.FRESH:
                self.stats.l2.hits += 1
                self._l1_put(pkey, value, meta, policy, size=0)
                return value
            case Freshness.EARLY_REFRESH:
                self.stats.l2.hits += 1
                self.stats.l2.early_refreshes += 1
                self._refresh_soon(pkey, loader, policy, codec, tags)
                return value
            case Freshness.STALE:
                self.stats.l2.stale_serves += 1
                self._refresh_soon(pkey, loader, policy, codec, tags)
                return value
            case Freshness.STALE_IF_ERROR:
                self.stats.l2.misses += 1
                try:
                    return await self._fill_once(pkey, loader, policy, codec, tags)
                except Exception as exc:
                    self.stats.loader.stale_if_error += 1
                    log.warning("cache %s: loading %s failed (%s); serving the stale value", self.stats.name, pkey, exc)
                    return value
            case Freshness.EXPIRED:
                self.stats.l2.misses += 1
                return await self._fill_once(pkey, loader, policy, codec, tags)
            case _:
                assert_never(state)

    async def write_through(
        self,
        key: str,
        writer: Callable[[], Awaitable[T]],
        *,
        policy: CachePolicy | None = None,
        codec: Codec | None = None,
        tags: Sequence[str] = (),
    ) -> T:
        """Run ``writer`` (the database write, returning what was written), then cache its result.

        Other processes' L1 copies are dropped over the bus. If the value cannot be cached
        (the L2 is down, or it cannot be encoded), the key is removed instead where
        possible, and the event is logged and counted: the write itself has happened and is
        not undone.
        """
        context = current_context()
        wrote_before = context.written_at if context is not None else None
        value = await writer()
        policy = policy or self.policy
        if not policy.cacheable:
            return value
        # The value is what the write committed: if it went through the replica router in
        # a causal scope, the entry carries that position (read-your-writes entries
        # older than a session's write are refused; this one is not).
        written_lsn = None
        if context is not None and context.written_at != wrote_before and context.token is not None:
            written_lsn = context.token.lsn
        try:
            pkey = await self._pkey(key, policy)
            tag_versions = await self._tag_versions((*policy.tags, *tags))
        except CacheUnavailableError as exc:
            # The write happened; the cache cannot be updated now. Its old entry (if any)
            # lives until its TTL: logged and counted, not raised into the writer.
            self._l2_failed(exc)
            self.stats.loader.not_cached += 1
            if policy.versioned:
                if self.l1 is not None:
                    self.l1.clear()  # the key's name is unknown without its version
            else:
                pkey = self._physical(key, policy)
                if self.l1 is not None:
                    self.l1.delete(pkey)
                self._mark_unsynced(pkey)
            return value
        meta = self._meta(value, policy, 0.0, tag_versions, written_lsn)
        try:
            raw = self._encode(pkey, value, meta, codec or self.codec)
            await self._store(pkey, value, meta, raw, policy, token=None, raise_too_large=True)
        except SerializationError as exc:
            # The write happened but its value cannot be cached: the old entry would be
            # stale, so it goes (here and, through the bus, in every process's L1).
            self.stats.loader.not_cached += 1
            log.warning("cache %s: write-through of %s not cached: %s", self.stats.name, pkey, exc)
            await self._forget(pkey)
            await self._announce([pkey], {})
            return value
        await self._announce([pkey], {})
        return value

    async def write_behind(
        self, key: str, value: Any, *, policy: CachePolicy | None = None, codec: Codec | None = None
    ) -> int:
        """Cache ``value`` and queue its database write, in one atomic step, and return its
        version once both are durable in Redis (the flusher applies it to the database
        later, newest version wins). Reads of ``key`` see the value at once. Raises
        :class:`WriteQueueFullError` past the queue's limit (never drops a write) and
        :class:`CacheUnavailableError` when Redis is down: the write was not acknowledged.
        """
        if self._write_behind is None:
            from readscale._async.writebehind import AsyncWriteBehind  # needs redis-py

            self._write_behind = AsyncWriteBehind(self, self._write_behind_settings)
        version: int = await self._write_behind.write_behind(key, value, policy=policy, codec=codec)
        return version

    # -- batches ---------------------------------------------------------------------------

    async def get_many(
        self, keys: Sequence[str], *, policy: CachePolicy | None = None, codec: Codec | None = None
    ) -> dict[str, Any]:
        """The cached values of ``keys`` that are present (one round trip per server)."""
        policy = policy or self.policy
        if not policy.cacheable or not keys:
            return {}
        if self._bus_pending:
            await self._ensure_bus()
        codec = codec or self.codec
        if policy.versioned:
            pkeys = [await self._pkey(key, policy) for key in keys]
        else:
            pkeys = physical_keys(self.prefix, policy.namespace, keys)
        use_l1 = self.l1 is not None and policy.uses_l1
        result: dict[str, Any] = {}
        remote_keys: Sequence[str] = keys
        remote: list[str] = pkeys
        if use_l1:
            remote_keys, remote = [], []
            for key, pkey in zip(keys, pkeys, strict=True):
                found = self._l1_get(pkey, policy)
                if found is not None and (not found[1].tags or self._tags_current_locally(found[1].tags)):
                    result[key] = found[0]
                else:
                    remote_keys.append(key)
                    remote.append(pkey)
        if not remote or self.backend is None or not policy.uses_l2:
            return result
        raws = await self._l2_call_many(remote)
        now = self._clock()
        # The fast path: fresh entries without tags or LSN, no L1 copy to make.
        payloads = fresh_payloads(raws, now, policy.schema, codec.id) if not use_l1 else [None] * len(raws)
        decode = codec.decode
        hits = stale = 0
        for key, pkey, raw, payload in zip(remote_keys, remote, raws, payloads, strict=True):
            if payload is not None:
                try:
                    result[key] = decode(payload)
                    hits += 1
                    continue
                except CorruptValueError:
                    pass
            if raw is None:
                continue
            found = self._decode(pkey, raw, policy, codec)
            if found is None:
                continue
            if found[1].tags and not await self._tags_current(found[1].tags):
                self.stats.l2.tag_stale += 1
                continue
            state = assess(found[1], now, 1.0, 0.0)
            if state is Freshness.FRESH:
                hits += 1
                self._l1_put(pkey, found[0], found[1], policy, size=len(raw))
                result[key] = found[0]
            elif state is Freshness.STALE:
                self.stats.l2.stale_serves += 1
                stale += 1
                result[key] = found[0]
        self.stats.l2.hits += hits
        self.stats.l2.misses += len(remote) - hits - stale
        return result

    async def get_or_load_many(
        self,
        keys: Sequence[str],
        loader: Callable[[list[str]], Awaitable[Mapping[str, Any]]],
        *,
        policy: CachePolicy | None = None,
        codec: Codec | None = None,
    ) -> dict[str, Any]:
        """Values of all ``keys``: cached ones from the cache, the rest from one call of
        ``loader(missing_keys)``, which returns a mapping (keys it omits are not cached)."""
        policy = policy or self.policy
        found = await self.get_many(keys, policy=policy, codec=codec)
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if not missing:
            return found
        tag_versions = await self._tag_versions(policy.tags) if policy.cacheable else ()
        started = self._monotonic()
        loaded = await self._call_loader(lambda: loader(missing))
        elapsed = self._monotonic() - started
        if policy.cacheable:
            entries = {
                await self._pkey(k, policy): (v, self._meta(v, policy, elapsed, tag_versions))
                for k, v in loaded.items()
            }
            await self._store_many(entries, policy, codec or self.codec)
        found.update({k: loaded[k] for k in missing if k in loaded})
        return found

    # -- decorator -------------------------------------------------------------------------

    def cached(
        self, template: str, *, policy: CachePolicy | None = None, codec: Codec | None = None
    ) -> Callable[[Callable[P, Awaitable[T]]], AsyncCachedFunction[P, T]]:
        """Decorate a function so its results are cached under ``template`` filled from its
        arguments (see :class:`AsyncCachedFunction`)."""
        template_fields(template)  # a bad template fails here, at decoration time

        def decorate(fn: Callable[P, Awaitable[T]]) -> AsyncCachedFunction[P, T]:
            return AsyncCachedFunction(self, fn, template, policy, codec)

        return decorate

    # -- lifecycle -------------------------------------------------------------------------

    def _u(self) -> float:
        return 1.0 - self._rng()

    async def drain(self) -> None:
        """Wait for background refreshes to finish (tests, shutdown)."""
        await self._background.drain()

    async def aclose(self) -> None:
        """Stop background work and close the backend and the bus."""
        await self._background.close()
        if self.bus is not None:
            await self.bus.close()
        if self.backend is not None:
            await self.backend.close()


__all__ = ["DEFAULT_MAX_VALUE_SIZE", "AsyncCache", "CacheStats"]
