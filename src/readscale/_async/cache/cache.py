"""The application cache: an in-process L1 in front of a remote L2, with stampede
protection, invalidation and fail-open reads. Written once, async;
``readscale._sync.cache.cache.Cache`` is generated from this file.

The façade (docs/architecture.md §5): :class:`AsyncCache` builds the parts, each of which
owns its state (``l2.py`` the L2 behind its breaker, ``entries.py`` encoding,
``versions.py`` tag and namespace counters, ``coherence.py`` the L1 and the bus,
``filler.py`` fills, ``checks.py`` the settings and the server check), and holds the
public methods, which resolve the call's policy and codec and hand it to the part that
does it: ``reads.py`` (``get``, ``get_or_load``, ``refill``), ``writes.py`` (``set``,
``delete``, ``write_through``, ``invalidate*``), ``batch.py`` (``get_many``,
``get_or_load_many``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Never, ParamSpec, TypeVar

from readscale._async.backends.base import AsyncBackend
from readscale._async.cache.bus import AsyncInvalidationBus
from readscale._async.cache.cached import AsyncCachedDecorator
from readscale._async.cache.checks import check_settings
from readscale._async.cache.parts import AsyncParts
from readscale._core.cache import breaker as circuit
from readscale._core.cache.freshness import storage_ttl
from readscale._core.cache.keys import DEFAULT_PREFIX, template_fields
from readscale._core.cache.policy import DEFAULT, CachePolicy
from readscale._shared.cache.stats import CacheStats
from readscale._shared.tracing import TRACING, db_system, span
from readscale.codecs import Codec, JsonCodec, root_class
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
        clock: wall-clock seconds (entries cross processes); monotonic: for durations;
        rng: uniform in [0, 1) for TTL jitter and XFetch. Inject them in tests.

    A removed argument is refused with a TypeError that names its replacement
    (``write_behind``: :class:`readscale.writebehind.AsyncWriteBehind` over the cache).
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
        name: str = "cache",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        **removed: Never,
    ) -> None:
        tombstone_ttl = check_settings(backend, l1, tombstone_ttl, loader_source, removed)
        self.policy = policy
        self.tombstone_ttl = tombstone_ttl
        self.stats = CacheStats(name)
        parts = AsyncParts(
            backend,
            l1=l1,
            bus=bus,
            codec=codec or JsonCodec(),
            prefix=prefix,
            max_value_size=max_value_size,
            breaker=breaker,
            tombstone_ttl=tombstone_ttl,
            loader_source=loader_source,
            version_ttl=version_ttl if version_ttl is not None else (60.0 if bus is not None else 0.0),
            purger=purger,
            stats=self.stats,
            clock=clock,
            monotonic=monotonic,
            rng=rng,
        )
        self.l2, self.entries, self.versions, self.coherence = parts.l2, parts.entries, parts.versions, parts.coherence
        self.filler, self.batch, self.checks = parts.filler, parts.batch, parts.checks
        self.reads, self.writes = parts.reads, parts.writes
        self._clock = clock
        self._monotonic = monotonic

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

    @property
    def purger(self) -> AsyncPurger | None:
        """The edge purger ``invalidate_tags`` purges the same tags with (None: no edge)."""
        return self.writes.purger

    @property
    def eviction_risk(self) -> str | None:
        """Why the cache server may evict tombstones early, once checked (None: it will not)."""
        return self.checks.eviction_risk

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
        self.coherence.forget([pkey])

    async def drop_copies(self, key: str, *, policy: CachePolicy | None = None) -> None:
        """Drop every process's L1 copy of ``key``: this one's now (:meth:`forget_local`),
        the others' over the bus. For a writer that replaced the L2 entry itself
        (write-behind stores the entry in its own script). A bus that cannot be told is
        logged, not raised: the L2 change happened."""
        self.forget_local(key, policy=policy)
        await self.coherence.announce([self.key(key, policy)], {}, None)

    # -- cache-aside -----------------------------------------------------------------------

    async def get(
        self, key: str, *, policy: CachePolicy | None = None, codec: Codec | None = None, type: Any = None
    ) -> Any:
        """The cached value of ``key``, or ``NO_VALUE`` on a miss (None is a cached value).

        A stale value inside its stale-while-revalidate window is returned (there is no
        loader here to refresh it); a dead L2 reads as a miss. ``type``: the type the value
        was stored as (a dataclass, a pydantic model, ``dict[int, str]``...), decoded into
        from the L2 (``readscale.codecs``); without it the value must be JSON-native.
        """
        codec = codec or self.codec
        expect = None
        if type is not None:
            codec = codec.typed(type)
            expect = root_class(type)
        if TRACING.tracer is None:
            return await self.reads.get(key, policy or self.policy, codec, expect)
        with span("readscale.cache.get", self._span_attributes(key)):
            return await self.reads.get(key, policy or self.policy, codec, expect)

    def _span_attributes(self, key: str) -> dict[str, str]:
        """What a cache operation's span says of the call (only built while tracing)."""
        attributes = {"readscale.cache.name": self.stats.name, "readscale.cache.key": key}
        system = db_system(self.l2.backend.name if self.l2.backend is not None else None)
        if system is not None:
            attributes["db.system.name"] = system
        return attributes

    async def set(
        self,
        key: str,
        value: Any,
        *,
        policy: CachePolicy | None = None,
        ttl: float | None = None,
        codec: Codec | None = None,
        tags: Sequence[str] = (),
        type: Any = None,
    ) -> None:
        """Store ``value``. Raises :class:`UnserializableValueError` (also for a value that
        would not come back as itself: declare its ``type``, as readers do) or
        :class:`ValueTooLargeError` (nothing stored); a dead L2 is logged and counted."""
        policy = policy or self.policy
        if ttl is not None:
            policy = policy.with_(ttl=ttl)
        codec = codec or self.codec
        await self.writes.set(key, value, policy, codec if type is None else codec.typed(type), tags)

    async def delete(self, key: str, *, policy: CachePolicy | None = None) -> bool:
        """Remove ``key`` from both tiers (this process's L1 only; see :meth:`invalidate`).
        Raises :class:`CacheUnavailableError` when the L2 cannot be reached: a lost delete
        would leave stale data behind."""
        return await self.writes.delete(key, policy or self.policy)

    async def delete_many(self, keys: Sequence[str], *, policy: CachePolicy | None = None) -> int:
        """Remove ``keys`` as :meth:`delete` does, in one L2 call."""
        return await self.writes.delete_many(keys, policy or self.policy)

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
        return await self.writes.invalidate(keys, policy or self.policy, lsn)

    async def invalidate_tags(self, *tags: str, lsn: int | None = None) -> dict[str, int]:
        """Make every entry carrying one of ``tags`` stale, everywhere. Returns the tags'
        new versions. No set of keys is kept per tag: each tag is one counter.

        As with :meth:`invalidate`, ``lsn`` is the change's WAL position: a fill under
        these tags must read at or past it (without it, fills under them read the
        primary while the tags' floors stand)."""
        return await self.writes.invalidate_tags(tags, lsn)

    async def invalidate_namespace(self, namespace: str, *, lsn: int | None = None) -> int:
        """Make every key of a versioned namespace unreachable at once (old entries die by
        their TTL). Returns the namespace's new version. ``lsn``: as for
        :meth:`invalidate_tags`."""
        return await self.writes.invalidate_namespace(namespace, lsn)

    # -- read-through ----------------------------------------------------------------------

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        *,
        policy: CachePolicy | None = None,
        codec: Codec | None = None,
        tags: Sequence[str] = (),
        type: Any = None,
    ) -> T:
        """The cached value of ``key``, loading it with ``loader`` on a miss.

        Concurrent misses of one key share one load in this process, and with
        ``OnMiss.WAIT`` one load across processes. Errors of the cache server never reach
        the caller (the value is loaded instead); errors of ``loader`` do. ``tags`` are
        recorded with the entry (on top of the policy's): ``invalidate_tags`` of any of
        them makes it stale. ``type``: what the loader returns (a dataclass, a pydantic
        model, ``dict[int, str]``...), so an L2 hit is one too; without it a value that
        is not JSON-native is refused (:class:`UnserializableValueError`, not stored).
        """
        codec = codec or self.codec
        expect = None
        if type is not None:
            codec = codec.typed(type)
            expect = root_class(type)
        if TRACING.tracer is None:
            return await self.reads.get_or_load(key, loader, policy or self.policy, codec, tags, expect)
        with span("readscale.cache.get_or_load", self._span_attributes(key)):
            return await self.reads.get_or_load(key, loader, policy or self.policy, codec, tags, expect)

    async def write_through(
        self,
        key: str,
        writer: Callable[[], Awaitable[T]],
        *,
        policy: CachePolicy | None = None,
        codec: Codec | None = None,
        tags: Sequence[str] = (),
        type: Any = None,
    ) -> T:
        """Run ``writer`` (the database write, returning what was written), then cache its result.

        The key is invalidated first (a fill that read before the write cannot store, and
        its tombstone carries the write's position when it went through the replica
        router in a causal scope; otherwise fills read the primary while it stands),
        then the value is stored unless a newer write's invalidation came in between.
        Other processes' L1 copies are dropped over the bus. If the value cannot be cached
        (the L2 is down, or it cannot be encoded), the key is removed instead where
        possible, and the event is logged and counted: the write itself has happened and is
        not undone. ``type``: as for :meth:`get_or_load`.
        """
        codec = codec or self.codec
        codec = codec if type is None else codec.typed(type)
        return await self.writes.write_through(key, writer, policy or self.policy, codec, tags)

    async def refill(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        *,
        policy: CachePolicy | None = None,
        codec: Codec | None = None,
        tags: Sequence[str] = (),
        type: Any = None,
    ) -> T:
        """Load ``key`` now, whatever is cached, and store the value as a fill: under a
        ticket taken before the load (an invalidation meanwhile refuses it), at or past
        the key's floors and within the staleness bound (``readscale.cache``). Returns
        the loaded value, stored or not (``@cached``'s ``refresh``)."""
        codec = codec or self.codec
        return await self.reads.refill(
            key, loader, policy or self.policy, codec if type is None else codec.typed(type), tags
        )

    # -- batches ---------------------------------------------------------------------------

    async def get_many(
        self, keys: Sequence[str], *, policy: CachePolicy | None = None, codec: Codec | None = None, type: Any = None
    ) -> dict[str, Any]:
        """The cached values of ``keys`` that are present (one round trip per server);
        ``type``: as for :meth:`get`."""
        policy = policy or self.policy
        if not policy.cacheable or not keys:
            return {}
        if self.coherence.bus_pending:
            await self.coherence.ensure_bus()
        if self.checks.pending:
            await self.checks.once()
        codec = codec or self.codec
        if type is None:
            return await self.batch.get_many(keys, policy, codec)
        return await self.batch.get_many(keys, policy, codec.typed(type), root_class(type))

    async def get_or_load_many(
        self,
        keys: Sequence[str],
        loader: Callable[[list[str]], Awaitable[Mapping[str, Any]]],
        *,
        policy: CachePolicy | None = None,
        codec: Codec | None = None,
        type: Any = None,
    ) -> dict[str, Any]:
        """Values of all ``keys``: cached ones from the cache, the rest from one call of
        ``loader(missing_keys)``, which returns a mapping (keys it omits are not cached).
        ``type``: the type of each value, as for :meth:`get_or_load`.

        The missing keys are filled as one fill (``readscale.cache``): each holds a ticket
        taken before the load, and the load reads at or past the highest of their floors."""
        policy = policy or self.policy
        codec = codec or self.codec
        found = await self.get_many(keys, policy=policy, codec=codec, type=type)
        codec = codec if type is None else codec.typed(type)
        return await self.batch.load_missing(keys, found, loader, policy, codec)

    # -- checks ------------------------------------------------------------------------------

    async def check(self) -> None:
        """Check the cache server once, as the first call that reaches it does: every
        process of this cache (prefix) must use one ``tombstone_ttl`` (a different one
        is refused with ConfigurationError: fills read no staler than a bound derived
        from it, and a shorter tombstone elsewhere would break that), and a server that
        may evict tombstones (Redis with an eviction policy and maxmemory, memcached
        without -M) is reported once, loudly (``cache.eviction_risk``).
        Raises CacheUnavailableError when the server cannot be reached."""
        await self.checks.run()

    # -- decorator -------------------------------------------------------------------------

    def cached(
        self, template: str, *, policy: CachePolicy | None = None, codec: Codec | None = None
    ) -> AsyncCachedDecorator:
        """Decorate a function, a method or a classmethod so its results are cached under
        ``template`` filled from its arguments, decoded into its return annotation (see
        :class:`AsyncCachedFunction`)."""
        template_fields(template)  # a bad template fails here, at decoration time
        return AsyncCachedDecorator(self, template, policy, codec)

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
