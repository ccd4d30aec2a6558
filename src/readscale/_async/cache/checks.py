"""The cache's settings, checked: when the cache is built, and against its server once.

A part of :class:`AsyncCache` (internal; docs/architecture.md §5). ``check_settings``
refuses a cache that could not keep its promises (no tier at all, a backend that keeps
no tombstones, a ``tombstone_ttl`` or ``loader_source`` out of range) before anything
runs, and an argument that is gone with the name of what replaces it.
:class:`AsyncServerCheck` owns what the first call reaching the server learns: every
process of a cache (prefix) must use one ``tombstone_ttl`` (fills read no staler than a
bound derived from it), and a server that may evict tombstones is reported once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from readscale._async.backends.base import AsyncBackend
from readscale._async.cache.l2 import AsyncL2Gate
from readscale._shared.cache.tombstone_ttl import TOMBSTONE_TTL_ENV, check_tombstone_ttl, default_tombstone_ttl
from readscale.errors import CacheUnavailableError, ConfigurationError
from readscale.l1 import MemoryStore

log = logging.getLogger("readscale.cache")


#: Arguments ``AsyncCache`` no longer takes, and what replaces each.
REMOVED = {
    "write_behind": (
        "write behind with readscale.writebehind.AsyncWriteBehind over the cache: "
        "AsyncWriteBehind(cache, WriteBehindSettings(queue=...)).write_behind(key, value)"
    ),
}


def check_settings(
    backend: AsyncBackend | None,
    l1: MemoryStore[str, Any] | None,
    tombstone_ttl: float | None,
    loader_source: str,
    removed: Mapping[str, object],
) -> float:
    """Refuse settings a cache cannot work with; return the ``tombstone_ttl`` to use
    (``READSCALE_TOMBSTONE_TTL`` or 35 s when none is given). ``removed``: the keyword
    arguments ``AsyncCache`` does not take, refused with a TypeError (as Python would)
    that names the replacement of a removed one."""
    for name in removed:
        if name in REMOVED:
            raise TypeError(f"AsyncCache() no longer takes {name}=: {REMOVED[name]}")
        raise TypeError(f"AsyncCache() got an unexpected keyword argument {name!r}")
    if backend is None and l1 is None:
        raise ConfigurationError("a cache needs a backend, an l1 store, or both")
    tombstone_ttl = default_tombstone_ttl() if tombstone_ttl is None else tombstone_ttl
    check_tombstone_ttl(tombstone_ttl, "tombstone_ttl")
    if loader_source not in ("declared", "primary"):
        raise ConfigurationError(f"loader_source must be 'declared' or 'primary', got {loader_source!r}")
    if backend is not None and not getattr(backend, "supports_tombstones", False):
        raise ConfigurationError(
            f"backend {getattr(backend, 'name', type(backend).__name__)!r} keeps no tombstones, so this "
            "cache could not keep fills from storing data older than an invalidation: implement "
            "ticket/invalidate/bump_counters/counter_floors with tombstones (readscale.testing.contract)"
        )
    return tombstone_ttl


class AsyncServerCheck:
    """The one check of the cache server, run by the first call that reaches it."""

    def __init__(self, l2: AsyncL2Gate, *, name: str, prefix: str, tombstone_ttl: float) -> None:
        self.l2 = l2
        self.name = name
        self.prefix = prefix
        self.tombstone_ttl = tombstone_ttl
        #: True until the server has been checked (never with no L2).
        self.pending = l2.backend is not None
        #: Why the server may evict tombstones early, once checked (None: it will not).
        self.eviction_risk: str | None = None

    async def run(self) -> None:
        """Check the server now (``AsyncCache.check``). Raises ConfigurationError on
        another process's ``tombstone_ttl``, CacheUnavailableError when the server
        cannot be reached."""
        backend = self.l2.backend
        if backend is None:
            return
        mine = f"{self.tombstone_ttl:g}".encode()
        stored = await backend.register(f"{self.prefix}cfg:tombstone_ttl", mine)
        if stored != mine:
            theirs = stored.decode(errors="replace")
            raise ConfigurationError(
                f"cache {self.name}: tombstone_ttl is {self.tombstone_ttl:g} s here but {theirs} s in the "
                f"other processes of prefix {self.prefix!r} ({backend.name} key {self.prefix}cfg:tombstone_ttl): "
                f"use one value everywhere ({TOMBSTONE_TTL_ENV}, readscale cdc run --tombstone-ttl); to change "
                "it, stop every process, delete that key, and start them with the new value"
            )
        self.pending = False
        risk = await backend.eviction_risk()
        self.eviction_risk = risk
        if risk is not None:
            log.log(
                logging.WARNING if "cannot be read" in risk else logging.ERROR,
                "cache %s: %s %s: a tombstone evicted early lets a fill store data older than an "
                "invalidation; run it without eviction (Redis: maxmemory-policy noeviction; memcached: -M) "
                "or with room to spare (docs/consistency.md)",
                self.name,
                backend.name,
                risk,
                extra={
                    "event": "cache_tombstone_eviction_risk",
                    "cache": self.name,
                    "backend": backend.name,
                    "eviction_risk": risk,
                },
            )

    async def once(self) -> None:
        """Check the server if it has not been yet; an unreachable server is tried again
        by the next call (the call itself goes on: reads fail open)."""
        if not self.pending:
            return
        try:
            await self.run()
        except CacheUnavailableError as exc:
            log.debug("cache %s: settings not checked yet (%s)", self.name, exc)
