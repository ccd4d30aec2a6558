"""What each tier of the cache served, counted in-process.

Counters are plain attributes incremented on the hot path (a few nanoseconds each); the
Prometheus collector (``readscale.metrics``) reads them only when scraped, so exporting
costs nothing per call."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(slots=True)
class TierStats:
    """Counts for one tier (``l1`` in-process, ``l2`` remote)."""

    hits: int = 0
    misses: int = 0
    stale_serves: int = 0
    early_refreshes: int = 0
    fills: int = 0
    lease_waits: int = 0
    errors: int = 0
    corrupt: int = 0
    skipped: int = 0
    coalesced: int = 0
    tag_stale: int = 0
    flushes: int = 0
    unsynced: int = 0  # writes that could not reach the tier: their keys are removed later
    resynced: int = 0  # of those, removed once the tier answered again
    unsynced_dropped: int = 0  # past the limit: left to their TTL (logged as errors)
    older_than_own_write: int = 0  # entries refused to a session that wrote after they were read
    puts_skipped: int = 0  # L1 copies not put: the key was invalidated while they were read


@dataclass(slots=True)
class LoaderStats:
    """Counts for the source behind the cache (the loader: usually the database)."""

    calls: int = 0
    errors: int = 0
    seconds: float = 0.0
    bypasses: int = 0
    refreshes: int = 0
    refresh_errors: int = 0
    stale_if_error: int = 0
    fail_open: int = 0
    lease_timeouts: int = 0
    fills_refused: int = 0  # every refused fill; by cause below (readscale._core.cache.fill.Refusal)
    fills_refused_lease_lost: int = 0  # an invalidation came during the load
    fills_refused_older_than_invalidation: int = 0  # a read behind the last invalidation's LSN
    fills_refused_too_stale: int = 0  # a read staler than the fill's bound (or of unknown staleness)
    fills_refused_undeclared_source: int = 0  # the loader's reads were not declared, under a tombstone
    fills_refused_no_floor: int = 0  # the cache server failed before the load: floors unknown
    not_cached: int = 0
    purge_errors: int = 0


class CacheStats:
    """All counters of one cache. ``snapshot()`` gives them as plain data."""

    __slots__ = ("breaker_opens", "invalidations", "l1", "l2", "loader", "name")

    def __init__(self, name: str = "cache") -> None:
        self.name = name
        self.l1 = TierStats()
        self.l2 = TierStats()
        self.loader = LoaderStats()
        self.breaker_opens = 0
        self.invalidations = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "l1": {f.name: getattr(self.l1, f.name) for f in fields(TierStats)},
            "l2": {f.name: getattr(self.l2, f.name) for f in fields(TierStats)},
            "loader": {f.name: getattr(self.loader, f.name) for f in fields(LoaderStats)},
            "breaker_opens": self.breaker_opens,
            "invalidations": self.invalidations,
        }

    def reset(self) -> None:
        self.l1 = TierStats()
        self.l2 = TierStats()
        self.loader = LoaderStats()
        self.breaker_opens = 0
        self.invalidations = 0
