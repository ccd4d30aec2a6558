"""The application cache: an in-process L1 in front of a remote L2, with stampede
protection, invalidation and fail-open reads. Written once, async;
``readscale._sync.cache.cache.Cache`` is generated from this file.

A read asks ``readscale._core.cache.freshness.assess`` what the entry it found is worth and
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

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from readscale._async.backends.base import AsyncBackend
from readscale._async.cache.batch import AsyncBatch
from readscale._async.cache.bus import AsyncInvalidationBus
from readscale._async.cache.cached import AsyncCachedFunction
from readscale._async.cache.coherence import AsyncCoherence
from readscale._async.cache.entries import AsyncEntries
from readscale._async.cache.filler import AsyncFiller, log
from readscale._async.cache.l2 import AsyncL2Gate
from readscale._async.cache.versions import AsyncVersions
from readscale._core.cache import breaker as circuit
from readscale._core.cache.fill import PRIMARY_READ_LSN
from readscale._core.cache.freshness import Freshness, assess, storage_ttl
from readscale._core.cache.keys import DEFAULT_PREFIX, template_fields
from readscale._core.cache.lease import LeaseResult
from readscale._core.cache.novalue import NO_VALUE
from readscale._core.cache.policy import DEFAULT, CachePolicy
from readscale._core.writebehind.settings import WriteBehindSettings
from readscale._shared.cache.stats import CacheStats, FillRecorder
from readscale._shared.cache.tombstone_ttl import TOMBSTONE_TTL_ENV, check_tombstone_ttl, default_tombstone_ttl
from readscale._shared.replicas.causal_context import current_context, own_write_floor
from readscale.codecs import Codec, JsonCodec
from readscale.errors import (
    CacheUnavailableError,
    ConfigurationError,
    ReadscaleError,
    SerializationError,
)
from readscale.l1 import MemoryStore

if TYPE_CHECKING:  # the purgers need httpx; the cache takes any object of the protocol
    from readscale._async.purge.base import AsyncPurger

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_MAX_VALUE_SIZE = 1024 * 1024


class AsyncCache:
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
        tombstone_ttl: how long an invalidation's tombstone (and a tag's or namespace's
            floor) refuses fills that read before its change; fills read no staler than
            a bound just below it (``readscale._core.cache.fill``), so a longer life lets
            more lagging replicas serve fills. Default: ``READSCALE_TOMBSTONE_TTL`` or
            35 s. Every process of a cache (and its CDC worker) must use one value: the
            first to reach the server records it, and a different one is refused.
        loader_source: what a loader reads when it declares nothing (``readscale.cache``):
            ``"declared"`` (default) trusts only reports (the replica router's, or the
            loader's own), refusing an undeclared fill while a tombstone stands;
            ``"primary"`` takes every undeclared loader to read the primary.
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
        tombstone_ttl: float | None = None,
        loader_source: Literal["declared", "primary"] = "declared",
        version_ttl: float | None = None,
        purger: AsyncPurger | None = None,
        write_behind: WriteBehindSettings | None = None,
        name: str = "cache",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if backend is None and l1 is None:
            raise ConfigurationError("a cache needs a backend, an l1 store, or both")
        tombstone_ttl = default_tombstone_ttl() if tombstone_ttl is None else tombstone_ttl
        check_tombstone_ttl(tombstone_ttl, "tombstone_ttl")
        if loader_source not in ("declared", "primary"):
            raise ConfigurationError(f"loader_source must be 'declared' or 'primary', got {loader_source!r}")
        if backend is not None and not getattr(backend, "supports_tombstones", False):
            raise ConfigurationError(
                f"backend {getattr(backend, 'name', type(backend).__name__)!r} keeps no tombstones, so this "
                "cache could not keep fills from storing data older than an invalidation: implement "
                "ticket/invalidate/bump_counters/counter_floors with tombstones (readscale.testing.contract)"
            )
        self.policy = policy
        self.tombstone_ttl = tombstone_ttl
        self._unchecked = backend is not None
        self.eviction_risk: str | None = None
        self.stats = CacheStats(name)
        self._record = FillRecorder(self.stats)  # the façade's own events
        self.l2 = AsyncL2Gate(
            backend, stats=self.stats, breaker=breaker, tombstone_ttl=tombstone_ttl, monotonic=monotonic
        )
        self.entries = AsyncEntries(
            codec=codec or JsonCodec(), max_value_size=max_value_size, stats=self.stats, clock=clock, rng=rng
        )
        self._clock = clock
        self._monotonic = monotonic
        self.versions = AsyncVersions(
            self.l2,
            prefix=prefix,
            version_ttl=version_ttl if version_ttl is not None else (60.0 if bus is not None else 0.0),
            tombstone_ttl=tombstone_ttl,
            monotonic=monotonic,
            before_read=self._start_bus,  # the coherence part is built next, with the versions
        )
        self.coherence = AsyncCoherence(
            self.versions,
            l1=l1,
            bus=bus,
            stats=self.stats,
            tombstone_ttl=tombstone_ttl,
            clock=clock,
            monotonic=monotonic,
        )
        self.filler = AsyncFiller(
            self.l2,
            self.entries,
            self.versions,
            self.coherence,
            stats=self.stats,
            loader_source=loader_source,
            tombstone_ttl=tombstone_ttl,
            clock=clock,
            monotonic=monotonic,
            rng=rng,
        )
        self.batch = AsyncBatch(
            self.l2,
            self.entries,
            self.versions,
            self.coherence,
            self.filler,
            stats=self.stats,
            clock=clock,
            monotonic=monotonic,
        )
        self.purger = purger
        self._write_behind_settings = write_behind
        self._write_behind: Any = None

    @property
    def l2_available(self) -> bool:
        """False while the circuit breaker skips the L2 after failures (reads go to the
        loader); a health check can report it. True without an L2."""
        return self.l2.available

    @property
    def l1(self) -> MemoryStore[str, Any] | None:
        """The in-process tier (None without one, or while the invalidation bus is lost)."""
        return self.coherence.l1

    @property
    def bus(self) -> AsyncInvalidationBus | None:
        """The invalidation bus shared by every process of this cache."""
        return self.coherence.bus

    def flush_local(self) -> None:
        """Drop every L1 copy and cached version of this process (after a bus gap), and
        use the L1 again if a lost subscription had set it aside."""
        self.coherence.flush_local()

    async def flush_everywhere(self) -> None:
        """Drop every process's L1 copies and cached versions (this one now, the others
        when the bus delivers). L2 entries are not touched."""
        await self.coherence.flush_everywhere()

    async def _start_bus(self) -> None:
        """Subscribe to the bus before version counters are read (``AsyncVersions``'s
        hook): a bump between the read and the subscription would be missed."""
        await self.coherence.ensure_bus()

    async def _bump(self, counters: list[str], lsn: int | None) -> dict[str, int]:
        """Bump version counters (``AsyncVersions.bump``), take their new values here and
        announce them to every process."""
        bumped, before = await self.versions.bump(counters, lsn)
        self.coherence.heard_bumps(bumped, self._monotonic(), before)
        await self.coherence.announce([], bumped, lsn)
        return bumped

    @property
    def prefix(self) -> str:
        """Prepended to every key this cache stores."""
        return self.versions.prefix

    @property
    def version_ttl(self) -> float:
        """How long a tag or namespace version read from the L2 is trusted here."""
        return self.versions.version_ttl

    @property
    def loader_source(self) -> str:
        """What a loader reads when it declares nothing: ``"declared"`` or ``"primary"``."""
        return self.filler.loader_source

    @property
    def codec(self) -> Codec:
        """The codec of calls that name none."""
        return self.entries.codec

    @property
    def max_value_size(self) -> int:
        """Encoded values larger than this (bytes) are refused."""
        return self.entries.max_value_size

    @max_value_size.setter
    def max_value_size(self, size: int) -> None:
        self.entries.max_value_size = size

    @property
    def backend(self) -> AsyncBackend | None:
        """The L2 backend (None: L1 only)."""
        return self.l2.backend

    # -- keys ------------------------------------------------------------------------------

    def key(self, key: str, policy: CachePolicy | None = None) -> str:
        """The physical key stored for ``key`` under ``policy``'s namespace."""
        return self.versions.physical(key, policy or self.policy)

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
        meta = self.entries.meta(value, policy, 0.0)
        raw = self.entries.encode(pkey, value, meta, codec or self.codec)
        return pkey, raw, storage_ttl(meta, self._clock())

    def forget_local(self, key: str, *, policy: CachePolicy | None = None) -> None:
        """Drop ``key`` from this process's L1 only (after another writer changed it).

        Like an invalidation heard here, it starts a new generation of the key: a read
        begun before it does not put its copy in the L1, and a reader after it does not
        share a load begun before it (which may return the old value). It sets no floor.
        """
        pkey = self.key(key, policy)
        now = self._monotonic()
        self.coherence.local.mark([pkey], None, now, now)  # expired at once: a new generation, no floor
        if self.coherence.l1 is not None:
            self.coherence.l1.delete(pkey)

    async def drop_copies(self, key: str, *, policy: CachePolicy | None = None) -> None:
        """Drop every process's L1 copy of ``key``: this one's now (:meth:`forget_local`),
        the others' over the bus. For a writer that replaced the L2 entry itself
        (write-behind stores the entry in its own script). A bus that cannot be told is
        logged, not raised: the L2 change happened."""
        self.forget_local(key, policy=policy)
        await self.coherence.announce([self.key(key, policy)], {}, None)

    # -- cache-aside -----------------------------------------------------------------------

    async def get(self, key: str, *, policy: CachePolicy | None = None, codec: Codec | None = None) -> Any:
        """The cached value of ``key``, or ``NO_VALUE`` on a miss (None is a cached value).

        A stale value inside its stale-while-revalidate window is returned (there is no
        loader here to refresh it); a dead L2 reads as a miss.
        """
        policy = policy or self.policy
        if not policy.cacheable:
            return NO_VALUE
        if self.coherence.bus_pending:
            await self.coherence.ensure_bus()
        if self._unchecked:
            await self._check_once()
        pkey = self.versions.physical(key, policy) if not policy.versioned else await self.versions.pkey(key, policy)
        found = self.coherence.l1_get(pkey, policy)
        if found is not None and (not found[1].tags or self.versions.tags_current_locally(found[1].tags)):
            return found[0]
        since = self.coherence.local.seq
        found = await self.filler.read(pkey, policy, codec or self.codec)
        if found is None:
            self._record.l2_miss()
            return NO_VALUE
        value, meta = found
        if meta.tags and not await self.versions.tags_current(meta.tags):
            self._record.tag_stale()
            return NO_VALUE
        state = assess(meta, self._clock(), 1.0, 0.0)
        if state is Freshness.FRESH:
            self._record.l2_hit()
            self.coherence.l1_put(pkey, value, meta, policy, size=0, since=since)
            return value
        if state is Freshness.STALE:
            self._record.served_stale()
            return value
        self._record.l2_miss()
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
        if self._unchecked:
            await self._check_once()
        since = self.coherence.local.seq
        try:
            pkey = await self.versions.pkey(key, policy)
            tag_versions = await self.versions.tag_versions((*policy.tags, *tags))
        except CacheUnavailableError as exc:  # nothing stored: a later read loads it
            self.l2.failed(exc)
            return
        meta = self.entries.meta(value, policy, 0.0, tag_versions)
        raw = self.entries.encode(pkey, value, meta, codec or self.codec)
        await self.filler.store(pkey, value, meta, raw, policy, token=None, since=since, raise_too_large=True)

    async def delete(self, key: str, *, policy: CachePolicy | None = None) -> bool:
        """Remove ``key`` from both tiers (this process's L1 only; see :meth:`invalidate`).
        Raises :class:`CacheUnavailableError` when the L2 cannot be reached: a lost delete
        would leave stale data behind."""
        pkey = await self.versions.pkey(key, policy or self.policy)
        if self.coherence.l1 is not None:
            self.coherence.l1.delete(pkey)
        if self.l2.backend is None:
            return True
        return await self.l2.backend.delete(pkey)

    async def delete_many(self, keys: Sequence[str], *, policy: CachePolicy | None = None) -> int:
        policy = policy or self.policy
        pkeys = [await self.versions.pkey(k, policy) for k in keys]
        if self.coherence.l1 is not None:
            self.coherence.l1.delete_many(pkeys)
        if self.l2.backend is None:
            return len(pkeys)
        return await self.l2.backend.delete_many(pkeys)

    # -- invalidation ----------------------------------------------------------------------

    async def invalidate(self, *keys: str, policy: CachePolicy | None = None, lsn: int | None = None) -> int:
        """Invalidate ``keys`` after the change that made them stale has committed.

        Removes the entries and any fill lease or ticket (a fill that started before this
        call is refused), leaves a tombstone with ``lsn`` (the change's WAL position, e.g.
        ``router.context.token.lsn`` after a ``router.write()``) so no fill read before
        that position can store, drops every process's L1 copy over the bus, and returns
        how many entries existed. Without ``lsn`` the position is unknown: fills of these
        keys read the primary while the tombstone stands. Raises
        :class:`CacheUnavailableError` when the L2 cannot be reached (a lost
        invalidation would leave stale data).
        """
        policy = policy or self.policy
        if self._unchecked:
            await self._check_once()
        pkeys = [await self.versions.pkey(k, policy) for k in keys]
        now = self._monotonic()
        self.coherence.local.mark(pkeys, lsn, now + self.tombstone_ttl, now)
        if self.coherence.l1 is not None:
            self.coherence.l1.delete_many(pkeys)
        removed = len(pkeys)
        if self.l2.backend is not None:
            try:
                removed = await self.l2.backend.invalidate(pkeys, lsn=lsn, tombstone_ttl=self.tombstone_ttl)
            except CacheUnavailableError:
                for pkey in pkeys:  # removed as soon as the L2 answers, and raised now
                    self.l2.mark_unsynced(pkey)
                raise
        self._record.invalidated(len(pkeys))
        await self.coherence.announce(pkeys, {}, lsn)
        return removed

    async def invalidate_tags(self, *tags: str, lsn: int | None = None) -> dict[str, int]:
        """Make every entry carrying one of ``tags`` stale, everywhere. Returns the tags'
        new versions. No set of keys is kept per tag: each tag is one counter.

        As with :meth:`invalidate`, ``lsn`` is the change's WAL position: a fill under
        these tags must read at or past it (without it, fills under them read the
        primary while the tags' floors stand)."""
        if not tags:
            return {}
        if self.l2.backend is None:
            raise ConfigurationError("tags need an L2 backend to hold their versions")
        if self._unchecked:
            await self._check_once()
        bumped = await self._bump([self.versions.tag_counter(t) for t in tags], lsn)
        self._record.invalidated(len(tags))
        if self.purger is not None:
            try:
                await self.purger.purge_tags(list(tags))
            except ReadscaleError as exc:  # the cache is right; the edge expires by its TTL
                self._record.purge_failed()
                log.warning("cache %s: edge purge of %s failed: %s", self.stats.name, ", ".join(tags), exc)
        return {tag: bumped[self.versions.tag_counter(tag)] for tag in tags}

    async def invalidate_namespace(self, namespace: str, *, lsn: int | None = None) -> int:
        """Make every key of a versioned namespace unreachable at once (old entries die by
        their TTL). Returns the namespace's new version. ``lsn``: as for
        :meth:`invalidate_tags`."""
        if self.l2.backend is None:
            raise ConfigurationError("versioned namespaces need an L2 backend")
        if self._unchecked:
            await self._check_once()
        counter = self.versions.namespace_counter(namespace)
        bumped = await self._bump([counter], lsn)
        if self.coherence.l1 is not None:
            self.coherence.l1.clear()  # cheaper than finding the namespace's keys; other namespaces refill
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
            self._record.bypassed()
            return await self.filler.call_loader(loader)
        if self.coherence.bus_pending:
            await self.coherence.ensure_bus()
        if self._unchecked:
            await self._check_once()
        codec = codec or self.codec
        if policy.versioned:
            try:
                pkey = await self.versions.pkey(key, policy)
            except CacheUnavailableError as exc:  # the namespace's version is unknown: no cache
                self.l2.failed(exc)
                return await self.filler.load_fail_open(loader)
        else:
            pkey = self.versions.physical(key, policy)
        all_tags = (*policy.tags, *tags) if tags else policy.tags
        found = self.coherence.l1_get(pkey, policy)
        if found is not None:
            value, meta = found
            if not meta.tags or self.versions.tags_current_locally(meta.tags):
                if policy.early_refresh and (
                    assess(meta, self._clock(), self.filler.u(), policy.early_refresh) is Freshness.EARLY_REFRESH
                ):
                    self._record.l1_early_refresh()
                    self.filler.refresh_soon(pkey, loader, policy, codec, all_tags)
                return value  # type: ignore[no-any-return]

        # Concurrent readers of one key in this process share one L2 read (and fill).
        async def read() -> Any:
            return await self.filler.read_through(pkey, loader, policy, codec, all_tags)

        # Readers share a load only within the key's generation: one begun before an
        # invalidation (or a tag bump) heard here is not joined by later readers. And a
        # read-your-writes reader shares only with readers whose own writes reach the same
        # position: the leader judges the entries it finds (and its load reads) by its own
        # session's floor, so a session that wrote since would be handed a value read
        # before its write (found by the consistency harness, profile_without_bus).
        floor = own_write_floor() if policy.read_your_writes else None
        flight = (pkey, self.coherence.local.generation(pkey, tagged=bool(all_tags)), floor)
        value, leader = await self.filler.flight.run(flight, read)
        if not leader:
            self._record.coalesced()
        return value  # type: ignore[no-any-return]

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

        The key is invalidated first (a fill that read before the write cannot store, and
        its tombstone carries the write's position when it went through the replica
        router in a causal scope; otherwise fills read the primary while it stands),
        then the value is stored unless a newer write's invalidation came in between.
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
        if self._unchecked:
            await self._check_once()
        try:
            pkey = await self.versions.pkey(key, policy)
            tag_versions = await self.versions.tag_versions((*policy.tags, *tags))
        except CacheUnavailableError as exc:
            # The write happened; the cache cannot be updated now. Its old entry (if any)
            # lives until its TTL: logged and counted, not raised into the writer.
            self.l2.failed(exc)
            self._record.not_cached()
            if policy.versioned:
                if self.coherence.l1 is not None:
                    self.coherence.l1.clear()  # the key's name is unknown without its version
            else:
                pkey = self.versions.physical(key, policy)
                if self.coherence.l1 is not None:
                    self.coherence.l1.delete(pkey)
                self.l2.mark_unsynced(pkey)
            return value
        meta = self.entries.meta(value, policy, 0.0, tag_versions, written_lsn)
        try:
            raw = self.entries.encode(pkey, value, meta, codec or self.codec)
        except SerializationError as exc:
            # The write happened but its value cannot be cached: the old entry would be
            # stale, so it goes (here and, through the bus, in every process's L1).
            self._record.not_cached()
            log.warning("cache %s: write-through of %s not cached: %s", self.stats.name, pkey, exc)
            await self._invalidate_written(pkey, written_lsn, policy)
            await self.coherence.announce([pkey], {}, written_lsn)
            return value
        right = await self._invalidate_written(pkey, written_lsn, policy)
        since = self.coherence.local.seq
        if right is not None and right.token is not None:
            # Stored only if no newer write invalidated the key since (its ticket holds)
            # and this write is not older than the key's tombstone.
            source = PRIMARY_READ_LSN if written_lsn is None else written_lsn
            try:
                await self.filler.store(
                    pkey, value, meta, raw, policy, right.token, source, since=since, raise_too_large=True, write=True
                )
            except SerializationError as exc:  # over the server's own limit: the key stays invalidated
                await self.filler.release(pkey, right.token)
                self._record.not_cached()
                log.warning("cache %s: write-through of %s not cached: %s", self.stats.name, pkey, exc)
            except BaseException:
                await self.filler.release(pkey, right.token)
                raise
        elif policy.uses_l1:
            self._record.l1_stored()
            self.coherence.l1_put(pkey, value, meta, policy, size=len(raw), since=since)
        await self.coherence.announce([pkey], {}, written_lsn)
        return value

    async def _invalidate_written(self, pkey: str, lsn: int | None, policy: CachePolicy) -> LeaseResult | None:
        """Invalidate a key just written (in-flight fills refused, a tombstone at the
        write's position) and take a ticket to store the written value with. None when
        the L2 is not used or cannot be reached (the key is then removed once it can)."""
        now = self._monotonic()
        self.coherence.local.mark([pkey], lsn, now + self.tombstone_ttl, now)
        if self.coherence.l1 is not None:
            self.coherence.l1.delete(pkey)
        backend = self.l2.backend
        if backend is None or not policy.uses_l2:
            return None
        if not self.l2.allowed():
            self.l2.mark_unsynced(pkey)
            return None
        try:
            combined = getattr(backend, "invalidate_for_write", None)
            if combined is None:  # a backend of yours written before the combined call: two steps
                await backend.invalidate([pkey], lsn=lsn, tombstone_ttl=self.tombstone_ttl)
                right = await backend.ticket(pkey, policy.lease_ttl)
            else:
                right = await combined(pkey, lsn=lsn, tombstone_ttl=self.tombstone_ttl, ticket_ttl=policy.lease_ttl)
        except CacheUnavailableError as exc:
            self.l2.failed(exc)
            self.l2.mark_unsynced(pkey)
            return None
        self.l2.ok()
        return right

    async def refill(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        *,
        policy: CachePolicy | None = None,
        codec: Codec | None = None,
        tags: Sequence[str] = (),
    ) -> T:
        """Load ``key`` now, whatever is cached, and store the value as a fill: under a
        ticket taken before the load (an invalidation meanwhile refuses it), at or past
        the key's floors and within the staleness bound (``readscale.cache``). Returns
        the loaded value, stored or not (``@cached``'s ``refresh``)."""
        policy = policy or self.policy
        if not policy.cacheable:
            return await self.filler.call_loader(loader)
        if self.coherence.bus_pending:
            await self.coherence.ensure_bus()
        if self._unchecked:
            await self._check_once()
        codec = codec or self.codec
        all_tags = (*policy.tags, *tags) if tags else policy.tags
        try:
            pkey = await self.versions.pkey(key, policy)
        except CacheUnavailableError as exc:
            self.l2.failed(exc)
            return await self.filler.load_fail_open(loader)
        if self.l2.backend is None or not policy.uses_l2:
            return await self.filler.load_and_store(pkey, loader, policy, codec, all_tags, right=None)  # type: ignore[no-any-return]
        return await self.filler.fill_with_ticket(pkey, loader, policy, codec, all_tags)  # type: ignore[no-any-return]

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
            from readscale._async.writebehind.producer import AsyncWriteBehind  # needs redis-py

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
        if self.coherence.bus_pending:
            await self.coherence.ensure_bus()
        if self._unchecked:
            await self._check_once()
        return await self.batch.get_many(keys, policy, codec or self.codec)

    async def get_or_load_many(
        self,
        keys: Sequence[str],
        loader: Callable[[list[str]], Awaitable[Mapping[str, Any]]],
        *,
        policy: CachePolicy | None = None,
        codec: Codec | None = None,
    ) -> dict[str, Any]:
        """Values of all ``keys``: cached ones from the cache, the rest from one call of
        ``loader(missing_keys)``, which returns a mapping (keys it omits are not cached).

        The missing keys are filled as one fill (``readscale.cache``): each holds a ticket
        taken before the load, and the load reads at or past the highest of their floors."""
        policy = policy or self.policy
        found = await self.get_many(keys, policy=policy, codec=codec)
        return await self.batch.load_missing(keys, found, loader, policy, codec or self.codec)

    # -- checks ------------------------------------------------------------------------------

    async def check(self) -> None:
        """Check the cache server once, as the first call that reaches it does: every
        process of this cache (prefix) must use one ``tombstone_ttl`` (a different one
        is refused with ConfigurationError: fills read no staler than a bound derived
        from it, and a shorter tombstone elsewhere would break that), and a server that
        may evict tombstones (Redis with an eviction policy and maxmemory, memcached
        without -M) is reported once, loudly (``cache.eviction_risk``).
        Raises CacheUnavailableError when the server cannot be reached."""
        backend = self.l2.backend
        if backend is None:
            return
        mine = f"{self.tombstone_ttl:g}".encode()
        stored = await backend.register(f"{self.prefix}cfg:tombstone_ttl", mine)
        if stored != mine:
            theirs = stored.decode(errors="replace")
            raise ConfigurationError(
                f"cache {self.stats.name}: tombstone_ttl is {self.tombstone_ttl:g} s here but {theirs} s in the "
                f"other processes of prefix {self.prefix!r} ({backend.name} key {self.prefix}cfg:tombstone_ttl): "
                f"use one value everywhere ({TOMBSTONE_TTL_ENV}, readscale cdc run --tombstone-ttl); to change "
                "it, stop every process, delete that key, and start them with the new value"
            )
        self._unchecked = False
        risk = await backend.eviction_risk()
        self.eviction_risk = risk
        if risk is not None:
            log.log(
                logging.WARNING if "cannot be read" in risk else logging.ERROR,
                "cache %s: %s %s: a tombstone evicted early lets a fill store data older than an "
                "invalidation; run it without eviction (Redis: maxmemory-policy noeviction; memcached: -M) "
                "or with room to spare (docs/consistency.md)",
                self.stats.name,
                backend.name,
                risk,
                extra={"cache": self.stats.name, "backend": backend.name, "eviction_risk": risk},
            )

    async def _check_once(self) -> None:
        try:
            await self.check()
        except CacheUnavailableError as exc:
            log.debug("cache %s: settings not checked yet (%s)", self.stats.name, exc)

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

    async def drain(self) -> None:
        """Wait for background refreshes to finish (tests, shutdown)."""
        await self.filler.background.drain()

    async def aclose(self) -> None:
        """Stop background work and close the backend and the bus."""
        await self.filler.background.close()
        if self.coherence.bus is not None:
            await self.coherence.bus.close()
        if self.l2.backend is not None:
            await self.l2.backend.close()


__all__ = ["DEFAULT_MAX_VALUE_SIZE", "AsyncCache", "CacheStats"]
