"""A fill's load: the loader run under a right taken before it, inside a fill scope.

A part of the cache's filler (internal; docs/architecture.md §5). Every fill holds a
right taken *before* its loader runs: the key's lease (won by the fill loop,
``readscale._async.cache.filler``) or, when nobody waits (``OnMiss.LOAD``, a lease that
timed out, a forced refresh, a batch), a ticket. Both come with the key's tombstone LSN,
and an invalidation voids both. The load then reads the floors of its tags and
namespace, opens a fill scope with the highest floor and the staleness bound
(``readscale.cache``: the replica router reads at or past the floor and no staler than
the bound), and hands the value to the fill store (``fill_store.py``), which keeps it
only if every read passed and the right is still intact on the server. When the floors
cannot be read, the value is loaded fail open: served, never stored. This part owns the
fill's staleness bound.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from readscale._async.cache.coherence import AsyncCoherence
from readscale._async.cache.entries import AsyncEntries
from readscale._async.cache.fill_store import AsyncFillStore
from readscale._async.cache.l2 import UNREACHED, AsyncL2Gate
from readscale._async.cache.versions import AsyncVersions
from readscale._core.cache.fill import FAIL_OPEN_STALENESS, Refusal, entry_position, max_fill_staleness, merge_floor
from readscale._core.cache.lease import LeaseResult
from readscale._core.cache.policy import CachePolicy
from readscale._shared.cache.fill_scope import FillScope, fill_scope
from readscale._shared.cache.stats import CacheStats, FillRecorder
from readscale.codecs import Codec
from readscale.errors import CacheUnavailableError, SerializationError, UnserializableValueError

T = TypeVar("T")
log = logging.getLogger("readscale.cache")


class AsyncLoads:
    """Runs loaders, counted and timed, under a fill's right and scope."""

    def __init__(
        self,
        l2: AsyncL2Gate,
        entries: AsyncEntries,
        versions: AsyncVersions,
        coherence: AsyncCoherence,
        store: AsyncFillStore,
        *,
        stats: CacheStats,
        tombstone_ttl: float,
        monotonic: Callable[[], float],
    ) -> None:
        self.l2 = l2
        self.entries = entries
        self.versions = versions
        self.coherence = coherence
        self.store = store
        self.stats = stats
        self.record = FillRecorder(stats)
        #: The staleness bound of a fill's reads (below the tombstones' life).
        self.fill_staleness = max_fill_staleness(tombstone_ttl)
        self._monotonic = monotonic

    @property
    def staleness(self) -> float:
        """The staleness bound of a fill's reads now: tighter for a while after an L2
        outage, whose restart may have lost tombstones (:meth:`AsyncL2Gate.recovering`)."""
        if self.l2.recovering():
            return min(self.fill_staleness, FAIL_OPEN_STALENESS)
        return self.fill_staleness

    async def call_loader(self, loader: Callable[[], Awaitable[T]]) -> T:
        """Run ``loader``, counting the call, its failure and its time."""
        started = self._monotonic()
        self.record.loader_called()
        try:
            return await loader()
        except BaseException:
            self.record.loader_failed()
            raise
        finally:
            self.record.loader_time(self._monotonic() - started)

    async def fill_with_ticket(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
    ) -> Any:
        """A fill that excludes nobody: its right is a ticket, voided by any invalidation."""
        right = await self.ticket(pkey, policy)
        if right is None:
            return await self.load_unstored(pkey, loader)
        return await self.load_and_store(pkey, loader, policy, codec, tags, right=right)

    async def ticket(self, pkey: str, policy: CachePolicy) -> LeaseResult | None:
        """The key's ticket, or None when the server cannot be asked."""
        right = await self.l2.call(lambda backend: backend.ticket(pkey, policy.lease_ttl))
        return None if right is UNREACHED else right

    async def tickets(self, pkeys: list[str], policy: CachePolicy) -> list[LeaseResult] | None:
        """Tickets for several keys in one go, or None when the server cannot be asked."""
        rights = await self.l2.call(lambda backend: backend.ticket_many(pkeys, policy.lease_ttl))
        return None if rights is UNREACHED else rights

    async def load_unstored(self, pkey: str, loader: Callable[[], Awaitable[Any]]) -> Any:
        """The cache server cannot be asked for the key's floors: load, serve, store nothing
        (a value stored now could predate an invalidation this process cannot see)."""
        value = await self.load_fail_open(loader, (pkey,))
        self.store.refused(pkey, Refusal.NO_FLOOR)
        return value

    async def load_fail_open(self, loader: Callable[[], Awaitable[T]], pkeys: tuple[str, ...] = ()) -> T:
        """Run a loader whose value is served but not stored: the cache server cannot be
        reached, so the floors of earlier invalidations cannot be read. Its reads are held
        to ``FAIL_OPEN_STALENESS`` (and to the invalidations this process heard), so an
        invalidation older than that is seen: a replica far behind is not read while the
        cache is down (found by the consistency harness: seed 175 read a replica 25 s
        behind while Redis restarted)."""
        self.record.fail_open()
        now = self._monotonic()
        floor = None
        for pkey in pkeys:
            floor = merge_floor(floor, self.coherence.local.floor(pkey, now))
        with fill_scope(floor, FAIL_OPEN_STALENESS):
            return await self.call_loader(loader)

    async def fill_floors(
        self, tags: tuple[str, ...], policy: CachePolicy
    ) -> tuple[tuple[tuple[str, int], ...], int | None]:
        """The versions of ``tags`` (recorded in the entry) and the highest floor of the
        tags and of the policy's versioned namespace, read after the versions: a floor
        read later is at least the one of the version read (raises CacheUnavailableError)."""
        tag_versions = await self.versions.tag_versions(tags)
        counters = [self.versions.tag_counter(t) for t in tags]
        if policy.versioned:
            counters.append(self.versions.namespace_counter(policy.namespace))
        floor = None
        if counters and self.l2.backend is not None:
            for found in await self.l2.backend.counter_floors(counters):
                floor = merge_floor(floor, found)
        return tag_versions, floor

    async def load_and_store(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
        right: LeaseResult | None,
    ) -> Any:
        """Load under ``right`` (None: no L2 for this key) and store if the fill may."""
        token = right.token if right is not None else None
        since = self.coherence.local.seq
        # Without an L2, the invalidations this process heard are the tombstones.
        floor = right.floor_lsn if right is not None else self.coherence.local.floor(pkey, self._monotonic())
        try:
            # Versions are read before loading: a tag bumped during the load leaves this
            # entry with the older version, so it is never served as current.
            tag_versions, tag_floor = await self.fill_floors(tags, policy)
        except CacheUnavailableError as exc:
            self.l2.failed(exc)
            await self.store.release(pkey, token)
            return await self.load_unstored(pkey, loader)
        floor = merge_floor(floor, tag_floor)
        started = self._monotonic()
        try:
            with fill_scope(floor, self.staleness) as scope:
                scope.tag_versions = tag_versions
                value = await self.call_loader(loader)
        except BaseException:
            await self.store.release(pkey, token)
            raise
        if not await self.store.may_store(pkey, scope, token):
            return value
        source = _script_source(scope)
        meta = self.entries.meta(value, policy, self._monotonic() - started, tag_versions, _entry_lsn(scope))
        try:
            raw = self.entries.encode(pkey, value, meta, codec)
        except SerializationError as exc:
            self.record.not_cached()
            log.warning(
                "cache %s: loaded value of %s not cached: %s",
                self.stats.name,
                pkey,
                exc,
                extra={"event": "cache_value_not_cached", "cache": self.stats.name, "key": pkey, "reason": str(exc)},
            )
            await self.store.release(pkey, token)
            if isinstance(exc, UnserializableValueError):
                # A value that cannot be stored as itself (a type the codec lacks, or one
                # that would come back changed: declare its type) is the caller's to fix,
                # so the caller hears it, rather than loading on every call.
                raise
            return value
        await self.store.store(pkey, value, meta, raw, policy, token, source, since=since)
        self.record.fill_time(self._monotonic() - started)
        return value


def _script_source(scope: FillScope) -> int | None:
    """The source position the server checks against the key's tombstone: the oldest read
    (a primary read passes any tombstone), None when no read was declared."""
    return scope.source_lsn


def _entry_lsn(scope: FillScope) -> int | None:
    """The read position recorded in the entry (read-your-writes judges it): see
    ``readscale._core.cache.fill.entry_position``."""
    return entry_position(scope.reads)


__all__ = ["AsyncLoads"]
