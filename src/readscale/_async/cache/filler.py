"""Fills: loading a missing or stale value exactly once and storing it safely.
A mixin of :class:`AsyncCache` (internal).

Every fill holds a right taken *before* its loader runs: the key's lease (one loader
across processes; the others wait for the fill and are woken by it) or, when nobody
waits (``OnMiss.LOAD``, a lease that timed out, a forced refresh), a ticket. Both come
with the key's tombstone LSN, and an invalidation voids both. The fill then reads the
floors of its tags and namespace, opens a fill scope with the highest floor and the
staleness bound (``readscale.cache``: the replica router reads at or past the floor and
no staler than the bound), and stores the value only if every read of the loader passed
(``readscale._core.cache.fill``) and its right is still intact on the server. A refused fill
still returns the loaded value to its caller: it is just not cached, and it is counted
and logged by cause.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, assert_never

from readscale._async.backends.base import AsyncBackend
from readscale._async.cache.l2 import AsyncTierAccess, Found
from readscale._async.cache.versions import AsyncVersionAccess
from readscale._core.cache.fill import (
    PRIMARY_READ_LSN,
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
    ReadReport,
    Refusal,
    Seen,
    Serve,
    TakeLease,
    WaitFailed,
    WaitForFill,
    Woken,
    entry_position,
    merge_floor,
    plan_fill,
)
from readscale._core.cache.freshness import assess
from readscale._core.cache.lease import LeaseResult
from readscale._core.cache.policy import CachePolicy, OnMiss
from readscale._shared.cache.fill_scope import FillScope, fill_scope
from readscale._shared.cache.stats import CacheStats
from readscale._shared.primitives.tasks import AsyncBackground
from readscale.codecs import Codec
from readscale.errors import CacheUnavailableError, SerializationError

T = TypeVar("T")
log = logging.getLogger("readscale.cache")


class AsyncFillMixin(AsyncTierAccess, AsyncVersionAccess):
    backend: AsyncBackend | None
    stats: CacheStats
    tombstone_ttl: float
    loader_source: str
    _fill_staleness: float
    _background: AsyncBackground[str]

    async def _call_loader(self, loader: Callable[[], Awaitable[T]]) -> T:
        started = self._monotonic()
        self.stats.loader.calls += 1
        try:
            return await loader()
        except BaseException:
            self.stats.loader.errors += 1
            raise
        finally:
            self.stats.loader.seconds += self._monotonic() - started

    async def _fill_once(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
    ) -> Any:
        """Fill ``pkey``: the planner (``plan_fill``) decides each step of the lease ->
        wait -> load loop; this driver makes the calls and reports what it saw."""
        backend = self.backend
        request = FillRequest(
            uses_l2=backend is not None and policy.uses_l2,
            coordinated=backend is not None and policy.on_miss is OnMiss.WAIT and backend.supports_leases,
            lease_ttl=policy.lease_ttl,
            deadline=self._monotonic() + policy.wait_budget,
        )
        seen: Seen = Begin()
        leases = 0
        since = self._local.seq
        found: Found | None = None
        size = 0
        while True:
            step = plan_fill(request, seen, now=self._monotonic(), attempt=leases)
            match step:
                case TakeLease(ttl=ttl):
                    assert backend is not None
                    leases += 1
                    if not self._l2_allowed():
                        seen = LeaseFailed()
                        continue
                    since = self._local.seq
                    try:
                        lease = await backend.lease(pkey, ttl)
                    except CacheUnavailableError as exc:
                        self._l2_failed(exc)
                        seen = LeaseFailed()
                        continue
                    self._l2_ok()
                    if lease.value is not None:
                        found = self._decode(pkey, lease.value, policy, codec, count=False)
                        size = len(lease.value)
                        seen = LeaseFound(await self._servable(found))
                    elif lease.token is not None:
                        seen = LeaseWon(lease.token, lease.floor_lsn)
                    else:
                        seen = LeaseHeld()
                case WaitForFill(timeout=timeout):
                    assert backend is not None
                    self.stats.l2.lease_waits += 1
                    try:
                        await backend.wait_for_fill(pkey, timeout)
                    except CacheUnavailableError as exc:
                        self._l2_failed(exc)
                        seen = WaitFailed()
                        continue
                    seen = Woken()
                case ReadFilled():
                    since = self._local.seq
                    found = await self._l2_get(pkey, policy, codec)
                    size = 0
                    seen = ReadBack(await self._servable(found))
                case Serve():
                    assert found is not None
                    self.stats.l2.hits += 1
                    self._l1_put(pkey, found[0], found[1], policy, size=size, since=since)
                    return found[0]
                case Load():
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
            return await self._load_and_store(pkey, loader, policy, codec, tags, right=None)
        if reason is LoadReason.FAIL_OPEN:
            return await self._load_unstored(pkey, loader)
        if reason is LoadReason.LEASE_WON:
            assert step.token is not None
            right = LeaseResult(token=step.token, floor_lsn=step.floor_lsn)
            return await self._load_and_store(pkey, loader, policy, codec, tags, right=right)
        if reason is LoadReason.WAITED_OUT:
            self.stats.loader.lease_timeouts += 1
            log.warning(
                "cache %s: waited %.1fs for the fill of %s; loading it here", self.stats.name, policy.wait_budget, pkey
            )
        elif reason is LoadReason.TOO_MANY_ATTEMPTS:
            log.warning(
                "cache %s: no fill of %s to serve after %d lease attempts; loading it here",
                self.stats.name,
                pkey,
                leases,
            )
        assert reason.with_ticket
        return await self._fill_with_ticket(pkey, loader, policy, codec, tags)

    async def _servable(self, found: Found | None) -> bool:
        """An entry the fill loop found may be served: readable, fresh, its tags current."""
        return (
            found is not None
            and assess(found[1], self._clock(), 1.0, 0.0).servable
            and await self._tags_current(found[1].tags)
        )

    async def _fill_with_ticket(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
    ) -> Any:
        """A fill that excludes nobody: its right is a ticket, voided by any invalidation."""
        right = await self._ticket(pkey, policy)
        if right is None:
            return await self._load_unstored(pkey, loader)
        return await self._load_and_store(pkey, loader, policy, codec, tags, right=right)

    async def _ticket(self, pkey: str, policy: CachePolicy) -> LeaseResult | None:
        backend = self.backend
        if backend is None or not self._l2_allowed():
            return None
        try:
            right = await backend.ticket(pkey, policy.lease_ttl)
        except CacheUnavailableError as exc:
            self._l2_failed(exc)
            return None
        self._l2_ok()
        return right

    async def _tickets(self, pkeys: list[str], policy: CachePolicy) -> list[LeaseResult] | None:
        """Tickets for several keys in one go, or None when the server cannot be asked."""
        backend = self.backend
        if backend is None or not self._l2_allowed():
            return None
        try:
            rights = await backend.ticket_many(pkeys, policy.lease_ttl)
        except CacheUnavailableError as exc:
            self._l2_failed(exc)
            return None
        self._l2_ok()
        return rights

    async def _load_unstored(self, pkey: str, loader: Callable[[], Awaitable[Any]]) -> Any:
        """The cache server cannot be asked for the key's floors: load, serve, store nothing
        (a value stored now could predate an invalidation this process cannot see)."""
        self.stats.loader.fail_open += 1
        value = await self._call_loader(loader)
        self._refused(pkey, Refusal.NO_FLOOR)
        return value

    async def _fill_floors(
        self, tags: tuple[str, ...], policy: CachePolicy
    ) -> tuple[tuple[tuple[str, int], ...], int | None]:
        """The versions of ``tags`` (recorded in the entry) and the highest floor of the
        tags and of the policy's versioned namespace, read after the versions: a floor
        read later is at least the one of the version read (raises CacheUnavailableError)."""
        tag_versions = await self._tag_versions(tags)
        counters = [self._tag_counter(t) for t in tags]
        if policy.versioned:
            counters.append(self._namespace_counter(policy.namespace))
        floor = None
        if counters and self.backend is not None:
            for found in await self.backend.counter_floors(counters):
                floor = merge_floor(floor, found)
        return tag_versions, floor

    async def _load_and_store(
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
        since = self._local.seq
        # Without an L2, the invalidations this process heard are the tombstones.
        floor = right.floor_lsn if right is not None else self._local.floor(pkey, self._monotonic())
        try:
            # Versions are read before loading: a tag bumped during the load leaves this
            # entry with the older version, so it is never served as current.
            tag_versions, tag_floor = await self._fill_floors(tags, policy)
        except CacheUnavailableError as exc:
            self._l2_failed(exc)
            await self._release(pkey, token)
            return await self._load_unstored(pkey, loader)
        floor = merge_floor(floor, tag_floor)
        started = self._monotonic()
        try:
            with fill_scope(floor, self._fill_staleness) as scope:
                value = await self._call_loader(loader)
        except BaseException:
            await self._release(pkey, token)
            raise
        if not await self._may_store(pkey, scope, token):
            return value
        source = _script_source(scope)
        meta = self._meta(value, policy, self._monotonic() - started, tag_versions, _entry_lsn(scope))
        try:
            raw = self._encode(pkey, value, meta, codec)
        except SerializationError as exc:
            self.stats.loader.not_cached += 1
            log.warning("cache %s: loaded value of %s not cached: %s", self.stats.name, pkey, exc)
            await self._release(pkey, token)
            return value
        await self._store(pkey, value, meta, raw, policy, token, source, since=since)
        return value

    async def _may_store(self, pkey: str, scope: FillScope, token: str | None) -> bool:
        """Judge the loader's reads; a refused fill gives its right back."""
        if not scope.reads and self.loader_source == "primary":
            scope.reads.append(ReadReport(PRIMARY_READ_LSN, 0.0))
        refusal = scope.refusal()
        if refusal is None:
            return True
        await self._release(pkey, token)
        self._refused(pkey, refusal, floor_lsn=scope.floor_lsn, source_lsn=scope.source_lsn)
        return False

    async def _release(self, pkey: str, token: str | None) -> None:
        if token is None or self.backend is None:
            return
        try:
            await self.backend.release(pkey, token)
        except CacheUnavailableError as exc:
            self._l2_failed(exc)

    # -- background refresh -----------------------------------------------------------------

    def _refresh_soon(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
    ) -> None:
        async def refresh() -> None:
            await self._refresh(pkey, loader, policy, codec, tags)

        self._background.spawn(pkey, refresh)

    async def _refresh(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
    ) -> None:
        """One background refresh; across processes, a refresh lease lets only one run."""
        backend = self.backend
        if backend is None or not policy.uses_l2:
            self.stats.loader.refreshes += 1
            await self._load_and_store(pkey, loader, policy, codec, tags, right=None)
            return
        if not self._l2_allowed():
            return  # the stale value is served meanwhile; a refresh could not be stored
        right: LeaseResult | None
        if backend.supports_leases:
            try:
                token = await backend.refresh_lease(pkey, policy.lease_ttl)
            except CacheUnavailableError as exc:
                self._l2_failed(exc)
                return
            if token is None:
                return  # another process is refreshing it
            # The refresh lease carries no floor: the fill's store still checks the
            # tombstone, and the staleness bound covers older invalidations.
            right = LeaseResult(token=token)
        else:
            right = await self._ticket(pkey, policy)
            if right is None:
                return
        self.stats.loader.refreshes += 1
        await self._load_and_store(pkey, loader, policy, codec, tags, right=right)

    def _refresh_failed(self, key: str, exc: BaseException) -> None:
        self.stats.loader.refresh_errors += 1


def _script_source(scope: FillScope) -> int | None:
    """The source position the server checks against the key's tombstone: the oldest read
    (a primary read passes any tombstone), None when no read was declared."""
    return scope.source_lsn


def _entry_lsn(scope: FillScope) -> int | None:
    """The read position recorded in the entry (read-your-writes judges it): see
    ``readscale._core.cache.fill.entry_position``."""
    return entry_position(scope.reads)
