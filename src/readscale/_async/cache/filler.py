"""The cache's filler: reading through the tiers, and loading a missing or stale value
exactly once and storing it safely.

A part of :class:`AsyncCache` (internal; docs/architecture.md §5). It owns the
single-flight table, the background refreshes, ``loader_source``, the fill staleness
bound and the refusal causes already logged. The lease -> wait -> load loop is decided
by ``readscale._core.cache.fill.plan_fill``; this part makes the calls.

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

from readscale._async.cache.coherence import AsyncCoherence
from readscale._async.cache.entries import AsyncEntries, Found
from readscale._async.cache.l2 import AsyncL2Gate, Stored
from readscale._async.cache.versions import AsyncVersions
from readscale._core.cache.entry import EntryMeta
from readscale._core.cache.fill import (
    FAIL_OPEN_STALENESS,
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
    max_fill_staleness,
    merge_floor,
    plan_fill,
)
from readscale._core.cache.freshness import Freshness, assess, storage_ttl
from readscale._core.cache.lease import LeaseResult
from readscale._core.cache.policy import CachePolicy, OnMiss
from readscale._core.postgres.lsn import format_lsn
from readscale._shared.cache.fill_scope import FillScope, fill_scope
from readscale._shared.cache.stats import CacheStats, FillRecorder
from readscale._shared.primitives.flight import AsyncSingleFlight
from readscale._shared.primitives.tasks import AsyncBackground
from readscale.codecs import Codec
from readscale.errors import CacheUnavailableError, SerializationError, ValueTooLargeError

T = TypeVar("T")
log = logging.getLogger("readscale.cache")

_REFUSAL_HINTS = {
    Refusal.LEASE_LOST: "the key was invalidated while it loaded (normal under concurrent writes)",
    Refusal.OLDER_THAN_INVALIDATION: "a read was behind the key's last invalidation (a lagging replica)",
    Refusal.TOO_STALE: "a read was staler than the fill's bound, or of unknown staleness",
    Refusal.UNDECLARED_SOURCE: (
        "the loader read outside the replica router and declared nothing while the key's tombstone "
        "stands: call readscale.cache.report_primary_read() in a loader that reads the primary, or build "
        "the cache with loader_source='primary' (docs/consistency.md)"
    ),
    Refusal.NO_FLOOR: "the cache server failed before the load, so the key's floors are unknown",
}


class AsyncFiller:
    """Loads missing and stale values once, and stores them only when they may be."""

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
        #: What a loader reads when it declares nothing: "declared" or "primary".
        self.loader_source = loader_source
        #: The staleness bound of a fill's reads (below the tombstones' life).
        self.fill_staleness = max_fill_staleness(tombstone_ttl)
        self._clock = clock
        self._monotonic = monotonic
        #: Uniform in [0, 1): XFetch's draw (early refresh).
        self.rng = rng
        #: Concurrent readers of one key (and generation) in this process share one read.
        self.flight: AsyncSingleFlight[tuple[str, int, int | None], Any] = AsyncSingleFlight()
        #: Background refreshes, one per key at a time.
        self.background: AsyncBackground[str] = AsyncBackground(on_error=self._refresh_failed)
        #: The refusal causes already logged at their first level (later ones at DEBUG).
        self.refusals_logged: set[Refusal] = set()

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
                self.refresh_soon(pkey, loader, policy, codec, tags)
                return value
            case Freshness.STALE:
                self.record.served_stale()
                self.refresh_soon(pkey, loader, policy, codec, tags)
                return value
            case Freshness.STALE_IF_ERROR:
                self.record.l2_miss()
                try:
                    return await self.fill_once(pkey, loader, policy, codec, tags)
                except Exception as exc:
                    self.record.stale_if_error()
                    log.warning("cache %s: loading %s failed (%s); serving the stale value", self.stats.name, pkey, exc)
                    return value
            case Freshness.EXPIRED:
                self.record.l2_miss()
                return await self.fill_once(pkey, loader, policy, codec, tags)
            case _:
                assert_never(state)

    async def call_loader(self, loader: Callable[[], Awaitable[T]]) -> T:
        started = self._monotonic()
        self.record.loader_called()
        try:
            return await loader()
        except BaseException:
            self.record.loader_failed()
            raise
        finally:
            self.record.loader_time(self._monotonic() - started)

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
                    assert backend is not None
                    leases += 1
                    if not self.l2.allowed():
                        seen = LeaseFailed()
                        continue
                    since = self.coherence.local.seq
                    try:
                        lease = await backend.lease(pkey, ttl)
                    except CacheUnavailableError as exc:
                        self.l2.failed(exc)
                        seen = LeaseFailed()
                        continue
                    self.l2.ok()
                    if lease.value is not None:
                        found = self.entries.decode(pkey, lease.value, policy, codec, count=False)
                        size = len(lease.value)
                        seen = LeaseFound(await self._servable(found))
                    elif lease.token is not None:
                        seen = LeaseWon(lease.token, lease.floor_lsn)
                    else:
                        seen = LeaseHeld()
                case WaitForFill(timeout=timeout):
                    assert backend is not None
                    self.record.lease_wait()
                    try:
                        await backend.wait_for_fill(pkey, timeout)
                    except CacheUnavailableError as exc:
                        self.l2.failed(exc)
                        seen = WaitFailed()
                        continue
                    seen = Woken()
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
            return await self.load_and_store(pkey, loader, policy, codec, tags, right=None)
        if reason is LoadReason.FAIL_OPEN:
            return await self._load_unstored(pkey, loader)
        if reason is LoadReason.LEASE_WON:
            assert step.token is not None
            right = LeaseResult(token=step.token, floor_lsn=step.floor_lsn)
            return await self.load_and_store(pkey, loader, policy, codec, tags, right=right)
        if reason is LoadReason.WAITED_OUT:
            self.record.lease_timeout()
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
        return await self.fill_with_ticket(pkey, loader, policy, codec, tags)

    async def _servable(self, found: Found | None) -> bool:
        """An entry the fill loop found may be served: readable, fresh, its tags current."""
        return (
            found is not None
            and assess(found[1], self._clock(), 1.0, 0.0).servable
            and await self.versions.tags_current(found[1].tags)
        )

    async def fill_with_ticket(
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
        return await self.load_and_store(pkey, loader, policy, codec, tags, right=right)

    async def _ticket(self, pkey: str, policy: CachePolicy) -> LeaseResult | None:
        backend = self.l2.backend
        if backend is None or not self.l2.allowed():
            return None
        try:
            right = await backend.ticket(pkey, policy.lease_ttl)
        except CacheUnavailableError as exc:
            self.l2.failed(exc)
            return None
        self.l2.ok()
        return right

    async def tickets(self, pkeys: list[str], policy: CachePolicy) -> list[LeaseResult] | None:
        """Tickets for several keys in one go, or None when the server cannot be asked."""
        backend = self.l2.backend
        if backend is None or not self.l2.allowed():
            return None
        try:
            rights = await backend.ticket_many(pkeys, policy.lease_ttl)
        except CacheUnavailableError as exc:
            self.l2.failed(exc)
            return None
        self.l2.ok()
        return rights

    async def _load_unstored(self, pkey: str, loader: Callable[[], Awaitable[Any]]) -> Any:
        """The cache server cannot be asked for the key's floors: load, serve, store nothing
        (a value stored now could predate an invalidation this process cannot see)."""
        value = await self.load_fail_open(loader, (pkey,))
        self.refused(pkey, Refusal.NO_FLOOR)
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
            await self.release(pkey, token)
            return await self._load_unstored(pkey, loader)
        floor = merge_floor(floor, tag_floor)
        started = self._monotonic()
        try:
            with fill_scope(floor, self.fill_staleness) as scope:
                value = await self.call_loader(loader)
        except BaseException:
            await self.release(pkey, token)
            raise
        if not await self.may_store(pkey, scope, token):
            return value
        source = _script_source(scope)
        meta = self.entries.meta(value, policy, self._monotonic() - started, tag_versions, _entry_lsn(scope))
        try:
            raw = self.entries.encode(pkey, value, meta, codec)
        except SerializationError as exc:
            self.record.not_cached()
            log.warning("cache %s: loaded value of %s not cached: %s", self.stats.name, pkey, exc)
            await self.release(pkey, token)
            return value
        await self.store(pkey, value, meta, raw, policy, token, source, since=since)
        return value

    async def may_store(self, pkey: str, scope: FillScope, token: str | None) -> bool:
        """Judge the loader's reads; a refused fill gives its right back."""
        if not scope.reads and self.loader_source == "primary":
            scope.reads.append(ReadReport(PRIMARY_READ_LSN, 0.0))
        refusal = scope.refusal()
        if refusal is None:
            return True
        await self.release(pkey, token)
        self.refused(pkey, refusal, floor_lsn=scope.floor_lsn, source_lsn=scope.source_lsn)
        return False

    async def release(self, pkey: str, token: str | None) -> None:
        if token is None or self.l2.backend is None:
            return
        try:
            await self.l2.backend.release(pkey, token)
        except CacheUnavailableError as exc:
            self.l2.failed(exc)

    # -- background refresh -----------------------------------------------------------------

    def refresh_soon(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
    ) -> None:
        async def refresh() -> None:
            await self._refresh(pkey, loader, policy, codec, tags)

        self.background.spawn(pkey, refresh)

    async def _refresh(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
    ) -> None:
        """One background refresh; across processes, a refresh lease lets only one run."""
        backend = self.l2.backend
        if backend is None or not policy.uses_l2:
            self.record.refreshed()
            await self.load_and_store(pkey, loader, policy, codec, tags, right=None)
            return
        if not self.l2.allowed():
            return  # the stale value is served meanwhile; a refresh could not be stored
        right: LeaseResult | None
        if backend.supports_leases:
            try:
                token = await backend.refresh_lease(pkey, policy.lease_ttl)
            except CacheUnavailableError as exc:
                self.l2.failed(exc)
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
        self.record.refreshed()
        await self.load_and_store(pkey, loader, policy, codec, tags, right=right)

    def _refresh_failed(self, key: str, exc: BaseException) -> None:
        self.record.refresh_failed()

    # -- L2 -----------------------------------------------------------------------------

    async def read(self, pkey: str, policy: CachePolicy, codec: Codec) -> Found | None:
        if not policy.uses_l2:
            return None
        raw = await self.l2.get(pkey)
        if raw is None:
            return None
        return self.entries.decode(pkey, raw, policy, codec)

    async def store(
        self,
        pkey: str,
        value: Any,
        meta: EntryMeta,
        raw: bytes,
        policy: CachePolicy,
        token: str | None,
        source_lsn: int | None = None,
        *,
        since: int,
        raise_too_large: bool = False,
        write: bool = False,
    ) -> bool:
        """Write an encoded entry to L2 (under ``token``'s lease if given) and to L1.
        ``write``: the entry is a write's value (write-through), not a fill: if the L2
        cannot be told, the key is removed from it once it answers.
        False when the fill was refused (lease lost, or older than an invalidation) or
        the backend's own size limit refused it (raised instead with ``raise_too_large``:
        a caller's explicit write must hear it). A refused entry changes neither tier."""
        if self.l2.backend is not None and policy.uses_l2:
            ttl = storage_ttl(meta, self._clock())
            stored = await self.l2.store(
                pkey, raw, ttl, token, source_lsn, write=write, raise_too_large=raise_too_large
            )
            if stored is Stored.REFUSED:
                # The lease was lost (expired, or an invalidation removed it) or the
                # value was read before the key's last change: what we loaded may be
                # older than the database now, so it is not cached anywhere.
                self.refused(pkey, Refusal.LEASE_LOST, source_lsn=source_lsn)
                return False
            if stored is Stored.TOO_LARGE:
                return False
        self.record.l1_stored()
        self.coherence.l1_put(pkey, value, meta, policy, size=len(raw), since=since)
        return True

    async def store_fills(
        self,
        entries: list[tuple[str, Any, EntryMeta, bytes, str | None]],
        policy: CachePolicy,
        source_lsn: int | None,
        since: int,
    ) -> None:
        """Store several fills of one load (``(pkey, value, meta, raw, token)``), each under
        its own right, in as few round trips as the server allows."""
        with_rights = [e for e in entries if e[4] is not None]
        if self.l2.backend is None or not with_rights:
            for pkey, value, meta, raw, token in entries:
                await self.store(pkey, value, meta, raw, policy, token, source_lsn, since=since)
            return
        reachable = policy.uses_l2 and await self.l2.reachable()
        stored: list[bool] | None
        if not reachable:
            stored = [True] * len(with_rights)  # as one fill does: the L1 copy is kept
        else:
            now = self._clock()
            items = [
                (pkey, raw, storage_ttl(meta, now), token or "", source_lsn)
                for pkey, _, meta, raw, token in with_rights
            ]
            try:
                stored = await self.l2.fill_many(items)
            except ValueTooLargeError:  # one of them: store one by one, the others still land
                for pkey, value, meta, raw, token in with_rights:
                    await self.store(pkey, value, meta, raw, policy, token, source_lsn, since=since)
                return
            if stored is None:  # the server failed (counted)
                return
        for (pkey, value, meta, raw, _), ok in zip(with_rights, stored, strict=True):
            if not ok:
                self.refused(pkey, Refusal.LEASE_LOST, source_lsn=source_lsn)
                continue
            self.record.stored(l2=reachable)
            self.coherence.l1_put(pkey, value, meta, policy, size=len(raw), since=since)

    def refused(
        self, pkey: str, cause: Refusal, *, floor_lsn: int | None = None, source_lsn: int | None = None
    ) -> None:
        """Count a refused fill by cause, and log the first of each cause (the fill's value
        went to its caller; it is just not cached)."""
        name = self.record.refused(cause)
        logged = self.refusals_logged
        level = logging.INFO if cause is Refusal.LEASE_LOST else logging.WARNING
        if cause in logged:
            level = logging.DEBUG
        else:
            logged.add(cause)
        if log.isEnabledFor(level):
            log.log(
                level,
                "cache %s: a fill of %s was not stored (%s): %s%s",
                self.stats.name,
                pkey,
                cause.value,
                _REFUSAL_HINTS[cause],
                "" if level == logging.DEBUG else f"; further ones are counted in stats.loader.{name}",
                extra={
                    "cache": self.stats.name,
                    "key": pkey,
                    "cause": cause.value,
                    "floor_lsn": None if floor_lsn is None else format_lsn(floor_lsn),
                    "source_lsn": None if source_lsn is None else format_lsn(source_lsn),
                },
            )


def _script_source(scope: FillScope) -> int | None:
    """The source position the server checks against the key's tombstone: the oldest read
    (a primary read passes any tombstone), None when no read was declared."""
    return scope.source_lsn


def _entry_lsn(scope: FillScope) -> int | None:
    """The read position recorded in the entry (read-your-writes judges it): see
    ``readscale._core.cache.fill.entry_position``."""
    return entry_position(scope.reads)
