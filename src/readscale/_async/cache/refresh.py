"""Background refresh: a stale (or early-refreshed) value is served at once and loaded
again behind the reader's back.

A part of the cache's filler (internal; docs/architecture.md §5). It owns the background
refresh tasks: one per key at a time in this process and, across processes, one per
refresh lease (a backend without leases takes a ticket, so any number may run). A
refresh that cannot be stored is not run: the stale value is served meanwhile, and the
next read past the entry's grace loads it in the foreground. Whether a refresh runs and
under which right is decided by ``readscale._core.cache.refresh.plan_refresh``; this part
makes the calls, and the load itself is the loads part's (``loads.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, assert_never

from readscale._async.cache.l2 import UNREACHED, AsyncL2Gate
from readscale._async.cache.loads import AsyncLoads
from readscale._core.cache.lease import LeaseResult
from readscale._core.cache.policy import CachePolicy
from readscale._core.cache.refresh import (
    L2Away,
    Refresh,
    RefreshBegin,
    RefreshLeaseHeld,
    RefreshLeaseWon,
    RefreshRequest,
    RefreshRight,
    RefreshSeen,
    Skip,
    TakeRefreshLease,
    TakeTicket,
    TicketTaken,
    plan_refresh,
)
from readscale._shared.cache.stats import CacheStats, FillRecorder
from readscale._shared.primitives.tasks import AsyncBackground
from readscale.codecs import Codec


class AsyncRefresher:
    """Refreshes served values in the background, one refresh per key at a time."""

    def __init__(self, l2: AsyncL2Gate, loads: AsyncLoads, *, stats: CacheStats) -> None:
        self.l2 = l2
        self.loads = loads
        self.record = FillRecorder(stats)
        #: Background refreshes, one per key at a time.
        self.background: AsyncBackground[str] = AsyncBackground(on_error=self._failed)

    def refresh_soon(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
    ) -> None:
        """Start a refresh of ``pkey`` unless one is running in this process."""

        async def refresh() -> None:
            await self.refresh(pkey, loader, policy, codec, tags)

        self.background.spawn(pkey, refresh)

    async def refresh(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
    ) -> None:
        """One background refresh: the planner (``plan_refresh``) decides whether it runs
        and under which right; across processes, a refresh lease lets only one run."""
        backend = self.l2.backend
        request = RefreshRequest(
            uses_l2=backend is not None and policy.uses_l2,
            leases=backend is not None and backend.supports_leases,
            lease_ttl=policy.lease_ttl,
        )
        seen: RefreshSeen = RefreshBegin()
        while True:
            step = plan_refresh(request, seen)
            match step:
                case TakeRefreshLease(ttl=ttl):
                    token = await self.l2.call(lambda backend: backend.refresh_lease(pkey, ttl))
                    if token is UNREACHED:
                        seen = L2Away()
                    else:
                        seen = RefreshLeaseHeld() if token is None else RefreshLeaseWon(token)
                case TakeTicket():
                    # The breaker is asked here and again by the ticket call, as before the
                    # planner (docs/architecture.md §6: a half-open probe is spent here).
                    if not self.l2.allowed():
                        seen = L2Away()
                        continue
                    ticket = await self.loads.ticket(pkey, policy)
                    if ticket is None or ticket.token is None:  # a ticket always has a token
                        seen = L2Away()
                    else:
                        seen = TicketTaken(ticket.token, ticket.floor_lsn)
                case Refresh(token=token, floor_lsn=floor_lsn, right=right):
                    self.record.refreshed()
                    lease = None if right is RefreshRight.LOCAL else LeaseResult(token=token, floor_lsn=floor_lsn)
                    await self.loads.load_and_store(pkey, loader, policy, codec, tags, right=lease)
                    return
                case Skip():
                    return  # another process refreshes, or the stale value is served meanwhile
                case _:
                    assert_never(step)

    def _failed(self, key: str, exc: BaseException) -> None:
        self.record.refresh_failed()


__all__ = ["AsyncRefresher"]
