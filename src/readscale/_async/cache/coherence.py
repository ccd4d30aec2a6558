"""The cache's coherence: the in-process tier, and the bus that keeps every process's
L1 and version copies right.

A part of :class:`AsyncCache` (internal; docs/architecture.md §5). It owns the bus and
its pending start, the L1 (and the L1 set aside while the bus is lost), and the table of
invalidations this process heard (``readscale._core.cache.local_invalidations``):

- An L1 copy of data read before an invalidation heard here is never put: a reader that
  began before it may hold the old value.
- Bumps and invalidations are published on the bus, which updates other processes'
  version copies and drops their L1 entries; when the bus reconnects (messages may have
  been missed) everything local is flushed, and while it is lost the L1 is set aside
  (``cache.l1`` is None meanwhile): this process would not hear another's invalidation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from readscale._async.cache.bus import INVALIDATE, AsyncInvalidationBus
from readscale._async.cache.entries import Found
from readscale._async.cache.versions import AsyncVersions
from readscale._core.cache.entry import EntryMeta
from readscale._core.cache.freshness import l1_ttl
from readscale._core.cache.local_invalidations import LocalInvalidations
from readscale._core.cache.novalue import NO_VALUE
from readscale._core.cache.policy import CachePolicy
from readscale._core.replicas.causal import read_before_own_write
from readscale._shared.cache.stats import CacheStats, L1Recorder
from readscale._shared.replicas.causal_context import own_write_floor
from readscale.errors import CacheUnavailableError
from readscale.l1 import MemoryStore

log = logging.getLogger("readscale.cache")


class AsyncCoherence:
    """The L1, the invalidations heard here, and the bus between processes."""

    def __init__(
        self,
        versions: AsyncVersions,
        *,
        l1: MemoryStore[str, Any] | None,
        bus: AsyncInvalidationBus | None,
        stats: CacheStats,
        tombstone_ttl: float,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self.versions = versions
        #: The in-process tier; None without one, or while the bus is lost.
        self.l1 = l1
        #: The L1 set aside while the bus is lost.
        self.l1_suspended: MemoryStore[str, Any] | None = None
        self.stats = stats
        self.record = L1Recorder(stats)
        #: The (found, declared) type pairs already logged by ``l1_wrong_type``.
        self._wrong_types: set[tuple[type, type]] = set()
        self.tombstone_ttl = tombstone_ttl
        self._clock = clock
        self._monotonic = monotonic
        #: Invalidations this process has seen (its own and the bus's): an L1 copy of data
        #: read before one of them is never put.
        self.local = LocalInvalidations()
        self.bus = bus
        #: The bus is started by the first call that needs it (not in a constructor).
        self.bus_pending = bus is not None
        if bus is not None:
            bus.subscribe(INVALIDATE, self.on_invalidation)
            bus.on_disconnect(self.suspend_l1)
            bus.on_reconnect(self.bus_back)

    # -- L1 -------------------------------------------------------------------------------

    def l1_get(self, pkey: str, policy: CachePolicy) -> Found | None:
        if self.l1 is None or not policy.uses_l1:
            return None
        item = self.l1.get(pkey)
        if item is NO_VALUE:
            self.record.miss()
            return None
        if policy.read_your_writes and read_before_own_write(item[1].lsn, own_write_floor()):
            self.record.older_than_own_write()
            return None
        self.record.hit()
        return item  # type: ignore[no-any-return]

    def l1_wrong_type(self, pkey: str, value: Any, expect: type) -> None:
        """An L1 copy that is not of the reader's declared type: the reader takes it as a
        miss (the L2 would not decode it as that type either). Counted each time, logged
        once per pair of types: a key shared by two types is a bug to fix, not a flood."""
        self.record.wrong_type()
        pair = (type(value), expect)
        if pair in self._wrong_types:
            return
        self._wrong_types.add(pair)
        log.warning(
            "cache %s: %s holds a value of type %s where %s is declared: a miss",
            self.stats.name,
            pkey,
            type(value).__qualname__,
            expect.__qualname__,
            extra={
                "event": "cache_wrong_type",
                "cache": self.stats.name,
                "key": pkey,
                "found": type(value).__qualname__,
                "declared": expect.__qualname__,
            },
        )

    def l1_put(self, pkey: str, value: Any, meta: EntryMeta, policy: CachePolicy, size: int, since: int) -> None:
        """Put an L1 copy of what was read (or loaded) after local invalidation number
        ``since``; not if the key was invalidated since (the copy may predate it)."""
        if self.l1 is None or not policy.uses_l1:
            return
        if self.local.invalidated_since(pkey, since):
            self.record.put_skipped()
            return
        ttl = l1_ttl(meta, self._clock(), policy.l1_ttl)
        if ttl > 0:
            self.l1.set(pkey, (value, meta), ttl, max(size, 1))

    # -- versions heard ---------------------------------------------------------------------

    def heard_bumps(self, bumped: dict[str, int], now: float, before: dict[str, int] | None = None) -> None:
        """New values of bumped counters (this process's bump, or one heard on the bus).

        A bump yields a value above every earlier one, unless the server lost the counter
        (a restart without persistence, an eviction): then the versions known here are
        ahead of the server's, a "never step back" version would hide every later bump,
        and entries judged by it would stay current. So the local state goes, as after a
        bus gap (found by the consistency harness: a tag-invalidated entry was served
        after the cache's Redis restarted empty). ``before``: what this process knew when
        it sent its own bump (a bump heard on the bus meanwhile is not a loss); a bump
        heard from another process that is not above the known version is taken as one
        (two processes' bumps crossing on the bus cost a flush, never a stale read)."""
        if self.versions.went_back(bumped, before):
            log.warning(
                "cache %s: a version counter went back (%s): the cache server lost it; local copies flushed",
                self.stats.name,
                ", ".join(sorted(bumped)),
                extra={
                    "event": "cache_version_went_back",
                    "cache": self.stats.name,
                    "keys": sorted(bumped),
                    "count": len(bumped),
                },
            )
            self.flush_local()  # counted in stats.l1.flushes
        for counter, value in bumped.items():
            self.versions.remember(counter, value, now)
        self.local.tags_bumped()

    # -- the bus -----------------------------------------------------------------------------

    async def ensure_bus(self) -> None:
        if self.bus_pending and self.bus is not None:
            self.bus_pending = False
            try:
                await self.bus.start()
            except CacheUnavailableError as exc:
                self.bus_pending = True
                log.warning(
                    "cache %s: the invalidation bus is not available yet: %s",
                    self.stats.name,
                    exc,
                    extra={"event": "cache_bus_unavailable", "cache": self.stats.name, "reason": str(exc)},
                )

    async def announce(self, keys: list[str], versions: dict[str, int], lsn: int | None = None) -> None:
        """Tell every process: drop these keys' L1 copies (their change's ``lsn`` is the
        floor of an L1-only cache's fills), take these versions."""
        if self.bus is None:
            return
        await self.ensure_bus()
        message: dict[str, Any] = {"keys": keys, "versions": versions}
        if keys:
            message["lsn"] = lsn
            message["ttl"] = self.tombstone_ttl
        try:
            await self.bus.publish(INVALIDATE, message)
        except CacheUnavailableError as exc:
            # The L2 change happened; other processes' L1 copies live at most their l1_ttl.
            log.warning(
                "cache %s: invalidation not announced on the bus: %s",
                self.stats.name,
                exc,
                extra={"event": "cache_invalidation_not_announced", "cache": self.stats.name, "reason": str(exc)},
            )

    def drop_local(self, pkeys: Sequence[str], lsn: int | None, until: float, now: float) -> None:
        """Start a new generation of ``pkeys`` here (a read begun before it does not put
        its copy in the L1, nor share a load with a later reader) and drop their L1 copies.

        An invalidation of this process calls it twice: before its L2 round trips, so the
        old copy stops being served at once, and after them, because a read of this
        process can reach the L2 in between, find the old entry still there and put it in
        the L1 after the first call, where it would outlive the invalidation by the L1's
        TTL (found by the consistency soak, seed 583437: a Memcached invalidation takes
        four round trips; old values were served 1-5 s after it)."""
        self.local.mark(list(pkeys), lsn, until, now)
        if self.l1 is not None and pkeys:
            self.l1.delete_many(list(pkeys))

    def forget(self, pkeys: Sequence[str]) -> None:
        """:meth:`drop_local` with no floor (expired at once): a delete, or an L1 copy
        another writer made stale, not an invalidation (no tombstone, no bus)."""
        now = self._monotonic()
        self.drop_local(pkeys, None, now, now)

    def on_invalidation(self, event: str, payload: Any) -> None:
        if isinstance(payload, dict) and payload.get("flush"):
            self.flush_local()
            return
        keys = payload.get("keys", []) if isinstance(payload, dict) else []
        versions = payload.get("versions", {}) if isinstance(payload, dict) else {}
        if keys:
            lsn = payload.get("lsn")
            ttl = payload.get("ttl")
            now = self._monotonic()
            until = now + (float(ttl) if isinstance(ttl, int | float) else self.tombstone_ttl)
            self.drop_local(keys, lsn if isinstance(lsn, int) else None, until, now)
        if versions:
            self.heard_bumps({str(c): int(v) for c, v in versions.items()}, self._monotonic())

    async def flush_everywhere(self) -> None:
        """Drop every process's L1 copies and cached versions (this one now, the others
        when the bus delivers). L2 entries are not touched."""
        self.flush_local()
        if self.bus is not None:
            await self.ensure_bus()
            try:
                await self.bus.publish(INVALIDATE, {"flush": True})
            except CacheUnavailableError as exc:
                log.warning(
                    "cache %s: flush not announced on the bus: %s",
                    self.stats.name,
                    exc,
                    extra={"event": "cache_flush_not_announced", "cache": self.stats.name, "reason": str(exc)},
                )

    def flush_local(self) -> None:
        """Drop every L1 copy and cached version of this process (after a bus gap), and
        use the L1 again if a lost subscription had set it aside."""
        if self.l1_suspended is not None:
            self.l1, self.l1_suspended = self.l1_suspended, None
            log.warning(
                "cache %s: the invalidation bus is back: the in-process tier is used again",
                self.stats.name,
                extra={"event": "cache_l1_back", "cache": self.stats.name, "reason": "bus back"},
            )
        self.local.flush()
        if self.l1 is not None:
            self.l1.clear()
        self.versions.clear()
        self.record.flushed()

    def bus_back(self) -> None:
        """The bus reconnected: flush what this process kept (a message may have been
        missed in the gap), then trust local versions again."""
        self.flush_local()
        self.versions.trust()

    def suspend_l1(self) -> None:
        """The bus is lost: this process would not hear another's invalidation, so an L1
        copy could stay stale for its whole L1 TTL. Until the bus is back the cache runs
        without its L1 (``cache.l1`` is None meanwhile) and reads go to the L2 or loader."""
        self.local.flush()
        self.versions.distrust()
        if self.l1 is None:
            return
        self.l1.clear()
        self.l1_suspended, self.l1 = self.l1, None
        self.record.flushed()
        log.warning(
            "cache %s: the invalidation bus is lost: the in-process tier is set aside",
            self.stats.name,
            extra={"event": "cache_l1_set_aside", "cache": self.stats.name, "reason": "bus lost"},
        )
