"""Fills: loading a missing or stale value exactly once and storing it safely.
A mixin of :class:`AsyncCache` (internal).

A fill takes the key's lease (one loader across processes; the others wait for the fill
and are woken by it), records the versions of the entry's tags before loading, opens a
fill scope carrying the key's tombstone LSN (the replica router reads at or past it),
and stores the value only if the lease is still held and the value's source LSN is at
or past the tombstone. A refused fill still returns the loaded value to its caller: it
is just not cached.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from readscale._async._cache_tiers import AsyncTierAccess
from readscale._async._cache_versions import AsyncVersionAccess
from readscale._async.backends.base import AsyncBackend
from readscale._core.freshness import assess
from readscale._core.policy import CachePolicy, OnMiss
from readscale._primitives import AsyncBackground
from readscale.codecs import Codec
from readscale.errors import CacheUnavailableError, SerializationError
from readscale.fills import fill_scope
from readscale.metrics import CacheStats

T = TypeVar("T")
log = logging.getLogger("readscale.cache")


class AsyncFillMixin(AsyncTierAccess, AsyncVersionAccess):
    backend: AsyncBackend | None
    stats: CacheStats
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
        backend = self.backend
        if backend is None or not policy.uses_l2 or policy.on_miss is not OnMiss.WAIT or not backend.supports_leases:
            return await self._load_and_store(pkey, loader, policy, codec, tags, token=None)
        deadline = self._monotonic() + policy.wait_budget
        while True:
            if not self._l2_allowed():
                self.stats.loader.fail_open += 1
                return await self._load_and_store(pkey, loader, policy, codec, tags, token=None)
            try:
                lease = await backend.lease(pkey, policy.lease_ttl)
            except CacheUnavailableError as exc:
                self._l2_failed(exc)
                self.stats.loader.fail_open += 1
                return await self._load_and_store(pkey, loader, policy, codec, tags, token=None)
            self._l2_ok()
            if lease.value is not None:
                found = self._decode(pkey, lease.value, policy, codec, count=False)
                if (
                    found is not None
                    and assess(found[1], self._clock(), 1.0, 0.0).servable
                    and await self._tags_current(found[1].tags)
                ):
                    self.stats.l2.hits += 1
                    self._l1_put(pkey, found[0], found[1], policy, size=len(lease.value))
                    return found[0]
                # Unreadable, expired or tagged stale: replace it with a fresh load.
                return await self._load_and_store(pkey, loader, policy, codec, tags, token=None)
            if lease.token is not None:
                return await self._load_and_store(
                    pkey, loader, policy, codec, tags, token=lease.token, floor_lsn=lease.floor_lsn
                )
            # Someone else holds the lease: wait for their fill, then read it.
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                self.stats.loader.lease_timeouts += 1
                waited = policy.wait_budget
                log.warning("cache %s: waited %.1fs for the fill of %s; loading it here", self.stats.name, waited, pkey)
                return await self._load_and_store(pkey, loader, policy, codec, tags, token=None)
            self.stats.l2.lease_waits += 1
            try:
                await backend.wait_for_fill(pkey, min(remaining, policy.lease_ttl))
            except CacheUnavailableError as exc:
                self._l2_failed(exc)
                continue
            found = await self._l2_get(pkey, policy, codec)
            if (
                found is not None
                and assess(found[1], self._clock(), 1.0, 0.0).servable
                and await self._tags_current(found[1].tags)
            ):
                self.stats.l2.hits += 1
                self._l1_put(pkey, found[0], found[1], policy, size=0)
                return found[0]

    async def _load_and_store(
        self,
        pkey: str,
        loader: Callable[[], Awaitable[Any]],
        policy: CachePolicy,
        codec: Codec,
        tags: tuple[str, ...],
        token: str | None,
        floor_lsn: int | None = None,
    ) -> Any:
        try:
            # Versions are read before loading: a tag bumped during the load leaves this
            # entry with the older version, so it is never served as current.
            tag_versions = await self._tag_versions(tags)
        except CacheUnavailableError as exc:
            self._l2_failed(exc)
            tag_versions = None
        started = self._monotonic()
        try:
            with fill_scope(floor_lsn) as scope:
                value = await self._call_loader(loader)
        except BaseException:
            await self._release(pkey, token)
            raise
        if tag_versions is None and tags:
            await self._release(pkey, token)
            self.stats.loader.not_cached += 1
            return value
        source_lsn = scope.source_lsn
        meta = self._meta(value, policy, self._monotonic() - started, tag_versions or (), source_lsn)
        try:
            raw = self._encode(pkey, value, meta, codec)
        except SerializationError as exc:
            self.stats.loader.not_cached += 1
            log.warning("cache %s: loaded value of %s not cached: %s", self.stats.name, pkey, exc)
            await self._release(pkey, token)
            return value
        await self._store(pkey, value, meta, raw, policy, token, source_lsn)
        return value

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
        token: str | None = None
        backend = self.backend
        if backend is not None and backend.supports_leases and policy.uses_l2 and self._l2_allowed():
            try:
                token = await backend.refresh_lease(pkey, policy.lease_ttl)
            except CacheUnavailableError as exc:
                self._l2_failed(exc)
            else:
                if token is None:
                    return  # another process is refreshing it
        self.stats.loader.refreshes += 1
        await self._load_and_store(pkey, loader, policy, codec, tags, token)

    def _refresh_failed(self, key: str, exc: BaseException) -> None:
        self.stats.loader.refresh_errors += 1
