"""The cache's filler: reading through the tiers, and the lease -> wait -> load loop that
loads a missing value once across processes.

A part of :class:`AsyncCache` (internal; docs/architecture.md §5). It owns the
single-flight table and XFetch's draw, and composes the parts a fill needs: the loads
under a right (``loads.py``), the store that keeps a fill only when it may
(``fill_store.py``) and the background refresh (``refresh.py``). ``read_through``
assesses the entry the L2 holds and acts (serve, refresh in the background, fill); the
fill loop is decided by ``readscale._core.cache.fill.plan_fill`` and this part makes the
calls: take the lease, wait for another's fill, read it back, serve or load.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, assert_never

from readscale._async.cache.coherence import AsyncCoherence
from readscale._async.cache.entries import AsyncEntries, Found
from readscale._async.cache.fill_store import AsyncFillStore
from readscale._async.cache.l2 import UNREACHED, Admit, AsyncL2Gate
from readscale._async.cache.loads import AsyncLoads
from readscale._async.cache.refresh import AsyncRefresher
from readscale._async.cache.versions import AsyncVersions
from readscale._core.cache.fill import (
    Begin,
    FillRequest,
    LeaseFailed,
    LeaseFound,
    LeaseHeld,
    LeaseWon,
    Load,
    LoadReason,
    ReadBack,
    ReadFilled,
    Seen,
    Serve,
    TakeLease,
    WaitFailed,
    WaitForFill,
    Woken,
    plan_fill,
)
from readscale._core.cache.freshness import Freshness, assess
from readscale._core.cache.lease import LeaseResult
from readscale._core.cache.policy import CachePolicy, OnMiss
from readscale._shared.cache.stats import CacheStats, FillRecorder
from readscale._shared.primitives.flight import AsyncSingleFlight
from readscale._shared.primitives.tasks import AsyncBackground
from readscale._shared.tracing import maybe_span, note
from readscale.codecs import Codec

log = logging.getLogger("readscale.cache")

#: ``readscale.cache.lease.result`` of what taking the fill lease found.
_LEASE_RESULTS: dict[type, str] = {
    LeaseFailed: "failed",  # the L2 could not be asked
    LeaseFound: "found",  # a value was there after all
    LeaseWon: "won",  # this reader fills
    LeaseHeld: "held",  # another reader fills: wait
}


class AsyncFiller:
    """Reads through the tiers, and loads a missing value once across processes."""

    def __init__(
        self,
        l2: AsyncL2Gate,
        entries: AsyncEntries,
        versions: AsyncVersions,
        coherence: AsyncCoherence,
        *,
        stats: CacheStats,
        loader_source: str,
        tombstone_ttl: float,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        rng: Callable[[], float],
    ) -> None:
        self.l2 = l2
        self.entries = entries
        self.versions = versions
        self.coherence = coherence
        self.stats = stats
        self.record = FillRecorder(stats)
        self._clock = clock
        self._monotonic = monotonic
        #: Uniform in [0, 1): XFetch's draw (early refresh).
        self.rng = rng
        #: Concurrent readers of one key (and generation) in this process share one read.
        self.flight: AsyncSingleFlight[tuple[str, int, int | None], Any] = AsyncSingleFlight()
        self.stores = AsyncFillStore(l2, coherence, stats=stats, loader_source=loader_source, clock=clock)
        self.loads = AsyncLoads(
            l2, entries, versions, coherence, self.stores, stats=stats, tombstone_ttl=tombstone_ttl, monotonic=monotonic
        )
        self.refresher = AsyncRefresher(l2, self.loads, stats=stats)
        # What the façade calls (AsyncCache, before its split): each is a method of the
        # part that does it.
        self.store = self.stores.store
        self.release = self.stores.release
        self.call_loader = self.loads.call_loader
        self.load_fail_open = self.loads.load_fail_open
        self.load_and_store = self.loads.load_and_store
        self.fill_with_ticket = self.loads.fill_with_ticket
        self.refresh_soon = self.refresher.refresh_soon

    @property
    def loader_source(self) -> str:
        """What a loader reads when it declares nothing (the fill store's)."""
        return self.stores.loader_source

    @property
    def background(self) -> AsyncBackground[str]:
        """The background refreshes (the refresher's)."""
        return self.refresher.background

    def u(self) -> float:
        """XFetch's uniform draw in (0, 1]."""
        return 1.0 - self.rng()

    async def read_through(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
    ) -> Any:
        since = self.coherence.local.seq
        found = await self.read(pkey, policy, codec)
        if found is None:
            self.record.l2_miss()
            return await self.fill_once(pkey, loader, policy, codec, tags)
        value, meta = found
        if meta.tags and not await self.versions.tags_current(meta.tags):
            self.record.tag_stale()
            return await self.fill_once(pkey, loader, policy, codec, tags)
        state = assess(meta, self._clock(), self.u(), policy.early_refresh)
        match state:
            case Freshness.FRESH:
                self.record.l2_hit()
                self.coherence.l1_put(pkey, value, meta, policy, size=0, since=since)
                return value
            case Freshness.EARLY_REFRESH:
                self.record.l2_hit()
                self.record.early_refresh()
                self.refresher.refresh_soon(pkey, loader, policy, codec, tags)
                return value
            case Freshness.STALE:
                self.record.served_stale()
                self.refresher.refresh_soon(pkey, loader, policy, codec, tags)
                return value
            case Freshness.STALE_IF_ERROR:
                self.record.l2_miss()
                try:
                    return await self.fill_once(pkey, loader, policy, codec, tags)
                except Exception as exc:
                    self.record.stale_if_error()
                    log.warning(
                        "cache %s: loading %s failed (%s); serving the stale value",
                        self.stats.name,
                        pkey,
                        exc,
                        extra={
                            "event": "cache_stale_if_error",
                            "cache": self.stats.name,
                            "key": pkey,
                            "reason": str(exc),
                        },
                    )
                    return value
            case Freshness.EXPIRED:
                self.record.l2_miss()
                return await self.fill_once(pkey, loader, policy, codec, tags)
            case _:
                assert_never(state)

    async def fill_once(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
    ) -> Any:
        """Fill ``pkey``: the planner (``plan_fill``) decides each step of the lease ->
        wait -> load loop; this driver makes the calls and reports what it saw."""
        backend = self.l2.backend
        request = FillRequest(
            uses_l2=backend is not None and policy.uses_l2,
            coordinated=backend is not None and policy.on_miss is OnMiss.WAIT and backend.supports_leases,
            lease_ttl=policy.lease_ttl,
            deadline=self._monotonic() + policy.wait_budget,
        )
        seen: Seen = Begin()
        leases = 0
        since = self.coherence.local.seq
        found: Found | None = None
        size = 0
        while True:
            step = plan_fill(request, seen, now=self._monotonic(), attempt=leases)
            match step:
                case TakeLease(ttl=ttl):
                    leases += 1
                    since = self.coherence.local.seq
                    with maybe_span("readscale.cache.lease", {"readscale.cache.lease.attempt": leases}):
                        lease = await self.l2.call(lambda backend: backend.lease(pkey, ttl))
                        if lease is UNREACHED:
                            seen = LeaseFailed()
                        elif lease.value is not None:
                            found = self.entries.decode(pkey, lease.value, policy, codec, count=False)
                            size = len(lease.value)
                            seen = LeaseFound(await self._servable(found))
                        elif lease.token is not None:
                            seen = LeaseWon(lease.token, lease.floor_lsn)
                        else:
                            seen = LeaseHeld()
                        note("readscale.cache.lease.result", _LEASE_RESULTS[type(seen)])
                case WaitForFill(timeout=timeout):
                    self.record.lease_wait()
                    with maybe_span("readscale.cache.lease_wait", {"readscale.cache.lease_wait.timeout": timeout}):
                        woke = await self.l2.call(
                            lambda backend: backend.wait_for_fill(pkey, timeout), admit=Admit.ADMITTED
                        )
                        seen = WaitFailed() if woke is UNREACHED else Woken()
                        note("readscale.cache.lease_wait.result", "failed" if woke is UNREACHED else "woken")
                case ReadFilled():
                    since = self.coherence.local.seq
                    found = await self.read(pkey, policy, codec)
                    size = 0
                    seen = ReadBack(await self._servable(found))
                case Serve():
                    assert found is not None
                    self.record.l2_hit()
                    self.coherence.l1_put(pkey, found[0], found[1], policy, size=size, since=since)
                    return found[0]
                case Load():
                    with maybe_span("readscale.cache.load", {"readscale.cache.load.reason": step.reason.value}):
                        return await self._load_as_planned(pkey, loader, policy, codec, tags, step, leases)
                case _:
                    assert_never(step)

    async def _load_as_planned(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
        step: Load,
        leases: int,
    ) -> Any:
        """Load under the right the planner's reason names: the won lease, a ticket, the
        invalidations this process heard (no L2), or none (fail open: nothing stored)."""
        reason = step.reason
        if reason is LoadReason.LOCAL:
            return await self.loads.load_and_store(pkey, loader, policy, codec, tags, right=None)
        if reason is LoadReason.FAIL_OPEN:
            return await self.loads.load_unstored(pkey, loader)
        if reason is LoadReason.LEASE_WON:
            assert step.token is not None
            right = LeaseResult(token=step.token, floor_lsn=step.floor_lsn)
            return await self.loads.load_and_store(pkey, loader, policy, codec, tags, right=right)
        if reason is LoadReason.WAITED_OUT:
            self.record.lease_timeout()
            log.warning(
                "cache %s: waited %.1fs for the fill of %s; loading it here",
                self.stats.name,
                policy.wait_budget,
                pkey,
                extra={
                    "event": "cache_fill_wait_exhausted",
                    "cache": self.stats.name,
                    "key": pkey,
                    "wait_s": policy.wait_budget,
                },
            )
        elif reason is LoadReason.TOO_MANY_ATTEMPTS:
            log.warning(
                "cache %s: no fill of %s to serve after %d lease attempts; loading it here",
                self.stats.name,
                pkey,
                leases,
                extra={"event": "cache_fill_leases_exhausted", "cache": self.stats.name, "key": pkey, "count": leases},
            )
        assert reason.with_ticket
        return await self.loads.fill_with_ticket(pkey, loader, policy, codec, tags)

    async def _servable(self, found: Found | None) -> bool:
        """An entry the fill loop found may be served: readable, fresh, its tags current."""
        return (
            found is not None
            and assess(found[1], self._clock(), 1.0, 0.0).servable
            and await self.versions.tags_current(found[1].tags)
        )

    # -- L2 -----------------------------------------------------------------------------

    async def read(self, pkey: str, policy: CachePolicy, codec: Codec) -> Found | None:
        if not policy.uses_l2:
            return None
        raw = await self.l2.get(pkey)
        if raw is None:
            return None
        return self.entries.decode(pkey, raw, policy, codec)
