"""The cache's read entry points: ``get``, ``get_or_load``, ``refill``. Written once,
async; ``readscale._sync.cache.reads`` is generated from this file.

A part of :class:`AsyncCache` (internal; docs/architecture.md §5), with no state of its
own. A read tries the L1, then asks ``readscale._core.cache.freshness.assess`` what the
L2 entry it found is worth and carries the answer out through the filler (fresh: serve;
early refresh or stale: serve and refresh once in the background; expired, tagged stale
or missing: fill). Concurrent readers of one key in a process share one L2 read and one
fill (single-flight) within the key's generation. The façade resolves the policy and
codec; each entry point starts the bus and checks the server first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from readscale._async.cache.checks import AsyncServerCheck
from readscale._async.cache.coherence import AsyncCoherence
from readscale._async.cache.filler import AsyncFiller
from readscale._async.cache.l2 import AsyncL2Gate
from readscale._async.cache.versions import AsyncVersions
from readscale._core.cache.entry import fresh_payload
from readscale._core.cache.freshness import Freshness, assess
from readscale._core.cache.novalue import NO_VALUE
from readscale._core.cache.policy import CachePolicy
from readscale._shared.cache.stats import CacheStats, FillRecorder
from readscale._shared.replicas.causal_context import own_write_floor
from readscale.codecs import Codec
from readscale.errors import CacheUnavailableError

T = TypeVar("T")


class AsyncReads:
    """``get``, ``get_or_load`` and ``refill`` over the cache's parts (no state of its own)."""

    def __init__(
        self,
        l2: AsyncL2Gate,
        versions: AsyncVersions,
        coherence: AsyncCoherence,
        filler: AsyncFiller,
        checks: AsyncServerCheck,
        *,
        stats: CacheStats,
        clock: Callable[[], float],
    ) -> None:
        self.l2 = l2
        self.versions = versions
        self.coherence = coherence
        self.filler = filler
        self.checks = checks
        self.record = FillRecorder(stats)
        self._clock = clock

    async def get(self, key: str, policy: CachePolicy, codec: Codec, expect: type | None = None) -> Any:
        """The cached value of ``key``, or ``NO_VALUE`` (``AsyncCache.get``); an L1 copy
        that is not an ``expect`` (the declared type's class) is a miss."""
        if not policy.cacheable:
            return NO_VALUE
        if self.coherence.bus_pending:
            await self.coherence.ensure_bus()
        if self.checks.pending:
            await self.checks.once()
        pkey = self.versions.physical(key, policy) if not policy.versioned else await self.versions.pkey(key, policy)
        found = self.coherence.l1_get(pkey, policy)
        if found is not None and (not found[1].tags or self.versions.tags_current_locally(found[1].tags)):
            if expect is None or isinstance(found[0], expect):
                return found[0]
            self.coherence.l1_wrong_type(pkey, found[0], expect)
        since = self.coherence.local.seq
        if not policy.uses_l2:
            self.record.l2_miss()
            return NO_VALUE
        raw = await self.l2.get(pkey)
        if raw is None:
            self.record.l2_miss()
            return NO_VALUE
        if self.coherence.l1 is None or not policy.uses_l1:
            # The fast path: a fresh entry without tags or LSN, no L1 copy to make (nor
            # read-your-writes to judge): decoded straight from its payload. Anything else,
            # or a payload that does not decode, takes the full path below (which counts it).
            payload = None if policy.read_your_writes else fresh_payload(raw, self._clock(), policy.schema, codec.id)
            if payload is not None:
                try:
                    value = getattr(codec, "fast_decode", codec.decode)(payload)
                except Exception:  # decoded again below, where the error is handled and counted
                    value = NO_VALUE
                if value is not NO_VALUE:
                    self.record.l2_hit()
                    return value
        found = self.filler.entries.decode(pkey, raw, policy, codec)
        if found is None:
            self.record.l2_miss()
            return NO_VALUE
        value, meta = found
        if meta.tags and not await self.versions.tags_current(meta.tags):
            self.record.tag_stale()
            return NO_VALUE
        state = assess(meta, self._clock(), 1.0, 0.0)
        if state is Freshness.FRESH:
            self.record.l2_hit()
            self.coherence.l1_put(pkey, value, meta, policy, size=0, since=since)
            return value
        if state is Freshness.STALE:
            self.record.served_stale()
            return value
        self.record.l2_miss()
        return NO_VALUE

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        policy: CachePolicy,
        codec: Codec,
        tags: Sequence[str],
        expect: type | None = None,
    ) -> T:
        """The cached value of ``key``, loading it on a miss (``AsyncCache.get_or_load``);
        an L1 copy that is not an ``expect`` (the declared type's class) is a miss."""
        if not policy.cacheable:
            self.record.bypassed()
            return await self.filler.call_loader(loader)
        if self.coherence.bus_pending:
            await self.coherence.ensure_bus()
        if self.checks.pending:
            await self.checks.once()
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
            if expect is not None and not isinstance(value, expect):
                self.coherence.l1_wrong_type(pkey, value, expect)
            elif not meta.tags or self.versions.tags_current_locally(meta.tags):
                if policy.early_refresh and (
                    assess(meta, self._clock(), self.filler.u(), policy.early_refresh) is Freshness.EARLY_REFRESH
                ):
                    self.record.l1_early_refresh()
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
            self.record.coalesced()
        return value  # type: ignore[no-any-return]

    async def refill(
        self, key: str, loader: Callable[[], Awaitable[T]], policy: CachePolicy, codec: Codec, tags: Sequence[str]
    ) -> T:
        """Load ``key`` now and store the value as a fill (``AsyncCache.refill``)."""
        if not policy.cacheable:
            return await self.filler.call_loader(loader)
        if self.coherence.bus_pending:
            await self.coherence.ensure_bus()
        if self.checks.pending:
            await self.checks.once()
        all_tags = (*policy.tags, *tags) if tags else policy.tags
        try:
            pkey = await self.versions.pkey(key, policy)
        except CacheUnavailableError as exc:
            self.l2.failed(exc)
            return await self.filler.load_fail_open(loader)
        if self.l2.backend is None or not policy.uses_l2:
            return await self.filler.load_and_store(pkey, loader, policy, codec, all_tags, right=None)  # type: ignore[no-any-return]
        return await self.filler.fill_with_ticket(pkey, loader, policy, codec, all_tags)  # type: ignore[no-any-return]
