"""Where a fill's value goes: the L2 under the fill's right and the L1, or nowhere.

A part of the cache's filler (internal; docs/architecture.md §5). A fill loads under a
right (a lease or a ticket) and a fill scope; this part judges the scope's reads
(``may_store`` asks ``readscale._core.cache.fill``), gives a refused fill's right back,
stores an accepted one (one key, or the keys of one batch load in as few round trips as
the server allows) and counts and logs each refusal by cause. A refused fill still
returns the loaded value to its caller: it is just not cached. It owns
``loader_source`` (what a loader reads when it declares nothing) and the refusal causes
already logged, because both decide only here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from readscale._async.cache.coherence import AsyncCoherence
from readscale._async.cache.l2 import Admit, AsyncL2Gate, Stored
from readscale._core.cache.entry import EntryMeta
from readscale._core.cache.fill import PRIMARY_READ_LSN, ReadReport, Refusal
from readscale._core.cache.freshness import storage_ttl
from readscale._core.cache.policy import CachePolicy
from readscale._core.postgres.lsn import format_lsn
from readscale._shared.cache.fill_scope import FillScope
from readscale._shared.cache.stats import CacheStats, FillRecorder
from readscale._shared.tracing import note
from readscale.errors import ValueTooLargeError

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


class AsyncFillStore:
    """Stores a fill's value only when it may be, and counts and logs the fills refused."""

    def __init__(
        self,
        l2: AsyncL2Gate,
        coherence: AsyncCoherence,
        *,
        stats: CacheStats,
        loader_source: str,
        clock: Callable[[], float],
    ) -> None:
        self.l2 = l2
        self.coherence = coherence
        self.stats = stats
        self.record = FillRecorder(stats)
        #: What a loader reads when it declares nothing: "declared" or "primary".
        self.loader_source = loader_source
        self._clock = clock
        #: The refusal causes already logged at their first level (later ones at DEBUG).
        self.refusals_logged: set[Refusal] = set()

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
        """Give a fill's right back (nothing without one)."""
        if token is None:
            return
        held = token
        await self.l2.call(lambda backend: backend.release(pkey, held), admit=Admit.ADMITTED)

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
        note("readscale.cache.fill_stored", True)
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
                    "event": "cache_fill_refused",
                    "cache": self.stats.name,
                    "key": pkey,
                    "cause": cause.value,
                    "floor_lsn": None if floor_lsn is None else format_lsn(floor_lsn),
                    "source_lsn": None if source_lsn is None else format_lsn(source_lsn),
                },
            )


__all__ = ["AsyncFillStore"]
