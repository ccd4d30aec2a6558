"""Background refresh: a stale (or early-refreshed) value is served at once and loaded
again behind the reader's back.

A part of the cache's filler (internal; docs/architecture.md §5). It owns the background
refresh tasks: one per key at a time in this process and, across processes, one per
refresh lease (a backend without leases takes a ticket, so any number may run). A
refresh that cannot be stored is not run: the stale value is served meanwhile, and the
next read past the entry's grace loads it in the foreground. The load itself is the
loads part's (``loads.py``), under the right taken here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from readscale._async.cache.l2 import AsyncL2Gate
from readscale._async.cache.loads import AsyncLoads
from readscale._core.cache.lease import LeaseResult
from readscale._core.cache.policy import CachePolicy
from readscale._shared.cache.stats import CacheStats, FillRecorder
from readscale._shared.primitives.tasks import AsyncBackground
from readscale.codecs import Codec
from readscale.errors import CacheUnavailableError


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
        """One background refresh; across processes, a refresh lease lets only one run."""
        backend = self.l2.backend
        if backend is None or not policy.uses_l2:
            self.record.refreshed()
            await self.loads.load_and_store(pkey, loader, policy, codec, tags, right=None)
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
            right = await self.loads.ticket(pkey, policy)
            if right is None:
                return
        self.record.refreshed()
        await self.loads.load_and_store(pkey, loader, policy, codec, tags, right=right)

    def _failed(self, key: str, exc: BaseException) -> None:
        self.record.refresh_failed()


__all__ = ["AsyncRefresher"]
