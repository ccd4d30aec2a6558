"""What each tier of the cache served, counted in-process, and the recorders that count it.

Counters are plain attributes incremented on the hot path (a few nanoseconds each); the
Prometheus collector (``readscale.metrics``) reads them only when scraped, so exporting
costs nothing per call. The cache's parts never touch a counter: each holds one recorder
(``L1Recorder`` for coherence, ``L2Recorder`` for the L2 gate and the entries,
``FillRecorder`` for the filler, the batches and the façade) and calls it with the event
by name, so the logic reads as logic and an event is counted in one place. A recorder
reaches the counters through ``CacheStats`` on every call (``reset()`` replaces them)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from readscale._core.cache.fill import Refusal
from readscale._shared.histogram import SECONDS_BUCKETS, Histogram
from readscale._shared.tracing import TRACING, note, outcome


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
    recoveries: int = 0  # outages the tier came back from: fills then read at most 1 s stale for a while
    older_than_own_write: int = 0  # entries refused to a session that wrote after they were read
    puts_skipped: int = 0  # L1 copies not put: the key was invalidated while they were read
    wrong_type: int = 0  # L1 copies not of the reader's declared type: misses


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

    __slots__ = ("breaker_opens", "fill_seconds", "invalidations", "l1", "l2", "loader", "loader_seconds", "name")

    def __init__(self, name: str = "cache") -> None:
        self.name = name
        self.l1 = TierStats()
        self.l2 = TierStats()
        self.loader = LoaderStats()
        self.breaker_opens = 0
        self.invalidations = 0
        #: Loader calls' durations; and fills' (load start to stored), on misses only.
        self.loader_seconds = Histogram(SECONDS_BUCKETS)
        self.fill_seconds = Histogram(SECONDS_BUCKETS)

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
        self.loader_seconds = Histogram(SECONDS_BUCKETS)
        self.fill_seconds = Histogram(SECONDS_BUCKETS)


class _Recorder:
    __slots__ = ("stats",)

    def __init__(self, stats: CacheStats) -> None:
        self.stats = stats


class L1Recorder(_Recorder):
    """The events of the in-process tier (``AsyncCoherence``)."""

    __slots__ = ()

    def hit(self) -> None:
        self.stats.l1.hits += 1
        if TRACING.tracer is not None:
            outcome("hit", "l1")

    def miss(self) -> None:
        self.stats.l1.misses += 1

    def older_than_own_write(self) -> None:
        """A copy read before this session's own write: refused to it."""
        self.stats.l1.older_than_own_write += 1

    def wrong_type(self) -> None:
        """A copy not of the reader's declared type: a miss to that reader."""
        self.stats.l1.wrong_type += 1

    def put_skipped(self) -> None:
        """A copy not put: its key was invalidated while it was read."""
        self.stats.l1.puts_skipped += 1

    def flushed(self) -> None:
        """Every copy dropped (a flush, or the L1 set aside while the bus is lost)."""
        self.stats.l1.flushes += 1


class L2Recorder(_Recorder):
    """The events of the remote tier's calls and entries (``AsyncL2Gate``, ``AsyncEntries``)."""

    __slots__ = ()

    def skipped(self) -> None:
        """A call not made: the breaker is open."""
        self.stats.l2.skipped += 1

    def error(self) -> None:
        self.stats.l2.errors += 1

    def breaker_opened(self) -> None:
        self.stats.breaker_opens += 1

    def stored(self) -> None:
        self.stats.l2.fills += 1

    def not_cached(self) -> None:
        """A value refused by the server (too large): served, not cached."""
        self.stats.loader.not_cached += 1

    def unsynced(self) -> None:
        """A write that could not reach the L2: its key is removed later."""
        self.stats.l2.unsynced += 1

    def unsynced_dropped(self) -> None:
        """A write past the unsynced limit: left to its TTL."""
        self.stats.l2.unsynced_dropped += 1

    def recovering(self) -> None:
        """The tier answers after an outage that may have lost its tombstones."""
        self.stats.l2.recoveries += 1

    def resynced(self, count: int) -> None:
        self.stats.l2.resynced += count

    def corrupt(self, count: int) -> None:
        """Entries that do not decode (or of another schema or codec): misses."""
        self.stats.l2.corrupt += count

    def older_than_own_write(self) -> None:
        """An entry read before this session's own write: refused to it."""
        self.stats.l2.older_than_own_write += 1


class FillRecorder(_Recorder):
    """The events of reads, loads and fills (``AsyncFiller``, ``AsyncBatch``, the façade)."""

    __slots__ = ()

    def l2_hit(self, count: int = 1) -> None:
        self.stats.l2.hits += count
        if TRACING.tracer is not None:
            outcome("hit", "l2")

    def l2_miss(self, count: int = 1) -> None:
        self.stats.l2.misses += count
        if TRACING.tracer is not None:
            outcome("miss", "l2")

    def tag_stale(self) -> None:
        """An L2 entry whose tags were bumped since it was stored: a miss."""
        self.stats.l2.tag_stale += 1
        if TRACING.tracer is not None:
            outcome("tag_stale", "l2")

    def served_stale(self) -> None:
        self.stats.l2.stale_serves += 1
        if TRACING.tracer is not None:
            outcome("stale", "l2")

    def early_refresh(self) -> None:
        """An L2 hit refreshed early (XFetch)."""
        self.stats.l2.early_refreshes += 1
        note("readscale.cache.early_refresh", True)

    def l1_early_refresh(self) -> None:
        self.stats.l1.early_refreshes += 1
        note("readscale.cache.early_refresh", True)

    def lease_wait(self) -> None:
        self.stats.l2.lease_waits += 1

    def coalesced(self) -> None:
        """A reader that shared another reader's read or fill in this process."""
        self.stats.l2.coalesced += 1
        note("readscale.cache.coalesced", True)

    def loader_called(self) -> None:
        self.stats.loader.calls += 1

    def loader_failed(self) -> None:
        self.stats.loader.errors += 1

    def loader_time(self, seconds: float) -> None:
        self.stats.loader.seconds += seconds
        self.stats.loader_seconds.observe(seconds)

    def fill_time(self, seconds: float) -> None:
        """A fill stored: from the load's start to the entry written."""
        self.stats.fill_seconds.observe(seconds)

    def bypassed(self) -> None:
        """A call under a policy that does not cache: straight to the loader."""
        self.stats.loader.bypasses += 1
        if TRACING.tracer is not None:
            outcome("bypass")

    def stale_if_error(self) -> None:
        self.stats.loader.stale_if_error += 1
        if TRACING.tracer is not None:
            outcome("stale_if_error", "l2")

    def fail_open(self) -> None:
        """A load served without the cache server (it failed)."""
        self.stats.loader.fail_open += 1
        note("readscale.cache.fail_open", True)

    def lease_timeout(self) -> None:
        self.stats.loader.lease_timeouts += 1

    def not_cached(self) -> None:
        """A loaded value that does not encode (or is too large): served, not cached."""
        self.stats.loader.not_cached += 1

    def refreshed(self) -> None:
        self.stats.loader.refreshes += 1

    def refresh_failed(self) -> None:
        self.stats.loader.refresh_errors += 1

    def stored(self, *, l2: bool) -> None:
        """A fill stored in the L1 (the copy the L1 policy keeps), and in the L2 if ``l2``."""
        if l2:
            self.stats.l2.fills += 1
        note("readscale.cache.fill_stored", True)
        self.l1_stored()

    def l1_stored(self) -> None:
        """A copy put in the L1 by a fill or a write (the L2 gate counts its own store)."""
        self.stats.l1.fills += 1

    def refused(self, cause: Refusal) -> str:
        """A fill not stored, counted in total and by cause; the name of the cause's
        counter (for the operator's log line)."""
        loader = self.stats.loader
        loader.fills_refused += 1
        name = f"fills_refused_{cause.value}"
        note("readscale.cache.fill_refused", cause.value)
        setattr(loader, name, getattr(loader, name) + 1)
        return name

    def invalidated(self, count: int) -> None:
        self.stats.invalidations += count

    def purge_failed(self) -> None:
        self.stats.loader.purge_errors += 1
