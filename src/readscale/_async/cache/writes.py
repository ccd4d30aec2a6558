"""What changes the cache: ``set``, ``delete``, ``write_through`` and the invalidations.
Written once, async; ``readscale._sync.cache.writes`` is generated from this file.

A part of :class:`AsyncCache` (internal; docs/architecture.md §5). It owns the edge
purger, the one thing only invalidations use. An invalidation removes entries and their
leases, leaves LSN tombstones (a fill that read before the change cannot store), bumps
version counters for tags and namespaces, and tells every other process over the bus;
``invalidate_tags`` then purges the same tags at the edge. ``write_through`` invalidates
the key and takes a ticket in one step, so its value is stored unless a newer write's
invalidation came in between. The façade resolves the policy and codec.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from readscale._async.cache.checks import AsyncServerCheck
from readscale._async.cache.coherence import AsyncCoherence
from readscale._async.cache.entries import AsyncEntries
from readscale._async.cache.filler import AsyncFiller
from readscale._async.cache.l2 import AsyncL2Gate
from readscale._async.cache.versions import AsyncVersions
from readscale._core.cache.fill import PRIMARY_READ_LSN
from readscale._core.cache.lease import LeaseResult
from readscale._core.cache.policy import CachePolicy
from readscale._shared.cache.stats import CacheStats, FillRecorder
from readscale._shared.replicas.causal_context import current_context
from readscale.codecs import Codec
from readscale.errors import CacheUnavailableError, ConfigurationError, ReadscaleError, SerializationError

if TYPE_CHECKING:  # the purgers need httpx; the cache takes any object of the protocol
    from readscale._async.purge.base import AsyncPurger

log = logging.getLogger("readscale.cache")

T = TypeVar("T")


class AsyncWrites:
    """``set``, ``delete``, ``write_through`` and ``invalidate*`` over the cache's parts."""

    def __init__(
        self,
        l2: AsyncL2Gate,
        entries: AsyncEntries,
        versions: AsyncVersions,
        coherence: AsyncCoherence,
        filler: AsyncFiller,
        checks: AsyncServerCheck,
        *,
        purger: AsyncPurger | None,
        stats: CacheStats,
        tombstone_ttl: float,
        monotonic: Callable[[], float],
    ) -> None:
        self.l2 = l2
        self.entries = entries
        self.versions = versions
        self.coherence = coherence
        self.filler = filler
        self.checks = checks
        #: The edge purger ``invalidate_tags`` purges the same tags with (None: no edge).
        self.purger = purger
        self.stats = stats
        self.record = FillRecorder(stats)
        self.tombstone_ttl = tombstone_ttl
        self._monotonic = monotonic

    async def set(self, key: str, value: Any, policy: CachePolicy, codec: Codec, tags: Sequence[str]) -> None:
        """Store ``value`` (``AsyncCache.set``)."""
        if not policy.cacheable:
            return
        if self.checks.pending:
            await self.checks.once()
        since = self.coherence.local.seq
        try:
            pkey = await self.versions.pkey(key, policy)
            tag_versions = await self.versions.tag_versions((*policy.tags, *tags))
        except CacheUnavailableError as exc:  # nothing stored: a later read loads it
            self.l2.failed(exc)
            return
        meta = self.entries.meta(value, policy, 0.0, tag_versions)
        raw = self.entries.encode(pkey, value, meta, codec)
        await self.filler.store(pkey, value, meta, raw, policy, token=None, since=since, raise_too_large=True)

    async def delete(self, key: str, policy: CachePolicy) -> bool:
        """Remove ``key`` from both tiers, this process's L1 only (``AsyncCache.delete``)."""
        pkey = await self.versions.pkey(key, policy)
        self.coherence.forget([pkey])
        if self.l2.backend is None:
            return True
        try:
            return await self.l2.backend.delete(pkey)
        finally:  # again: a read here may have put the old entry it found in the L2 meanwhile
            self.coherence.forget([pkey])

    async def delete_many(self, keys: Sequence[str], policy: CachePolicy) -> int:
        """Remove ``keys`` from both tiers, this process's L1 only."""
        pkeys = [await self.versions.pkey(k, policy) for k in keys]
        self.coherence.forget(pkeys)
        if self.l2.backend is None:
            return len(pkeys)
        try:
            return await self.l2.backend.delete_many(pkeys)
        finally:  # again, as delete
            self.coherence.forget(pkeys)

    # -- write-through ---------------------------------------------------------------------

    async def write_through(
        self, key: str, writer: Callable[[], Awaitable[T]], policy: CachePolicy, codec: Codec, tags: Sequence[str]
    ) -> T:
        """Run ``writer``, then cache its result (``AsyncCache.write_through``)."""
        context = current_context()
        wrote_before = context.written_at if context is not None else None
        value = await writer()
        if not policy.cacheable:
            return value
        # The value is what the write committed: if it went through the replica router in
        # a causal scope, the entry carries that position (read-your-writes entries
        # older than a session's write are refused; this one is not).
        written_lsn = None
        if context is not None and context.written_at != wrote_before and context.token is not None:
            written_lsn = context.token.lsn
        if self.checks.pending:
            await self.checks.once()
        try:
            pkey = await self.versions.pkey(key, policy)
            tag_versions = await self.versions.tag_versions((*policy.tags, *tags))
        except CacheUnavailableError as exc:
            # The write happened; the cache cannot be updated now. Its old entry (if any)
            # lives until its TTL: logged and counted, not raised into the writer.
            self.l2.failed(exc)
            self.record.not_cached()
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
            raw = self.entries.encode(pkey, value, meta, codec)
        except SerializationError as exc:
            # The write happened but its value cannot be cached: the old entry would be
            # stale, so it goes (here and, through the bus, in every process's L1).
            self.record.not_cached()
            log.warning(
                "cache %s: write-through of %s not cached: %s",
                self.stats.name,
                pkey,
                exc,
                extra={"event": "cache_write_not_cached", "cache": self.stats.name, "key": pkey, "reason": str(exc)},
            )
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
                self.record.not_cached()
                log.warning(
                    "cache %s: write-through of %s not cached: %s",
                    self.stats.name,
                    pkey,
                    exc,
                    extra={
                        "event": "cache_write_not_cached",
                        "cache": self.stats.name,
                        "key": pkey,
                        "reason": str(exc),
                    },
                )
            except BaseException:
                await self.filler.release(pkey, right.token)
                raise
        elif policy.uses_l1:
            self.record.l1_stored()
            self.coherence.l1_put(pkey, value, meta, policy, size=len(raw), since=since)
        await self.coherence.announce([pkey], {}, written_lsn)
        return value

    async def _invalidate_written(self, pkey: str, lsn: int | None, policy: CachePolicy) -> LeaseResult | None:
        """Invalidate a key just written (in-flight fills refused, a tombstone at the
        write's position) and take a ticket to store the written value with. None when
        the L2 is not used or cannot be reached (the key is then removed once it can)."""
        now = self._monotonic()
        self.coherence.drop_local([pkey], lsn, now + self.tombstone_ttl, now)
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
        finally:  # again: a read here may have put the old entry it found in the L2 meanwhile
            self.coherence.drop_local([pkey], lsn, now + self.tombstone_ttl, self._monotonic())
        self.l2.ok()
        return right

    # -- invalidation ----------------------------------------------------------------------

    async def invalidate(self, keys: Sequence[str], policy: CachePolicy, lsn: int | None) -> int:
        """Invalidate ``keys`` everywhere (``AsyncCache.invalidate``)."""
        if self.checks.pending:
            await self.checks.once()
        pkeys = [await self.versions.pkey(k, policy) for k in keys]
        now = self._monotonic()
        self.coherence.drop_local(pkeys, lsn, now + self.tombstone_ttl, now)
        removed = len(pkeys)
        if self.l2.backend is not None:
            try:
                removed = await self.l2.backend.invalidate(pkeys, lsn=lsn, tombstone_ttl=self.tombstone_ttl)
            except CacheUnavailableError:
                for pkey in pkeys:  # removed as soon as the L2 answers, and raised now
                    self.l2.mark_unsynced(pkey)
                raise
            finally:  # again: a read here may have put the old entry it found in the L2 meanwhile
                self.coherence.drop_local(pkeys, lsn, now + self.tombstone_ttl, self._monotonic())
        self.record.invalidated(len(pkeys))
        await self.coherence.announce(pkeys, {}, lsn)
        return removed

    async def invalidate_tags(self, tags: Sequence[str], lsn: int | None) -> dict[str, int]:
        """Bump the tags' versions everywhere, then purge them at the edge
        (``AsyncCache.invalidate_tags``)."""
        if not tags:
            return {}
        if self.l2.backend is None:
            raise ConfigurationError("tags need an L2 backend to hold their versions")
        if self.checks.pending:
            await self.checks.once()
        bumped = await self._bump([self.versions.tag_counter(t) for t in tags], lsn)
        self.record.invalidated(len(tags))
        if self.purger is not None:
            try:
                await self.purger.purge_tags(list(tags))
            except ReadscaleError as exc:  # the cache is right; the edge expires by its TTL
                self.record.purge_failed()
                log.warning(
                    "cache %s: edge purge of %s failed: %s",
                    self.stats.name,
                    ", ".join(tags),
                    exc,
                    extra={
                        "event": "cache_edge_purge_failed",
                        "cache": self.stats.name,
                        "tags": list(tags),
                        "count": len(tags),
                        "reason": str(exc),
                    },
                )
        return {tag: bumped[self.versions.tag_counter(tag)] for tag in tags}

    async def invalidate_namespace(self, namespace: str, lsn: int | None) -> int:
        """Bump the namespace's version everywhere (``AsyncCache.invalidate_namespace``)."""
        if self.l2.backend is None:
            raise ConfigurationError("versioned namespaces need an L2 backend")
        if self.checks.pending:
            await self.checks.once()
        counter = self.versions.namespace_counter(namespace)
        bumped = await self._bump([counter], lsn)
        if self.coherence.l1 is not None:
            self.coherence.l1.clear()  # cheaper than finding the namespace's keys; other namespaces refill
        return bumped[counter]

    async def _bump(self, counters: list[str], lsn: int | None) -> dict[str, int]:
        """Bump version counters (``AsyncVersions.bump``), take their new values here and
        announce them to every process."""
        bumped, before = await self.versions.bump(counters, lsn)
        self.coherence.heard_bumps(bumped, self._monotonic(), before)
        await self.coherence.announce([], bumped, lsn)
        return bumped
