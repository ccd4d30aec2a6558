"""Write-behind counters, shared by the async and sync producer and flusher.

Counters are plain attributes incremented by the drivers; the collector
(``readscale.metrics.WriteBehindCollector``) reads them only when scraped, so exporting
costs nothing per write.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from readscale._shared.histogram import Histogram

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(slots=True)
class WriteBehindStats:
    """Producer counters: writes and increments queued, waits and refusals for room,
    failures, checks of the server's persistence settings (``durability_refusals``: the
    checks that found a setting too weak for the mode) and, from the last check,
    ``aof_delayed_fsync`` (INFO: fsyncs Redis postponed past its limit; -1: unknown)."""

    name: str = "default"
    writes: int = 0
    increments: int = 0
    full_waits: int = 0
    full_rejections: int = 0
    errors: int = 0
    durability_checks: int = 0
    durability_refusals: int = 0
    aof_delayed_fsync: int = -1

    def snapshot(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class FlusherStats:
    """Flusher counters and gauges.

    ``records_read`` counts records taken from the queue (``reclaimed`` of them claimed
    from another consumer); ``coalesced`` those superseded by a newer version in the same
    batch; ``rows_applied`` / ``rows_skipped`` what the database did with the rest (a skip
    is a version the database already had, or an older one). ``transactions`` counts
    committed batch transactions, ``retries`` failed writes tried again, ``splits`` batches
    halved to isolate a bad record, ``dead_letters`` records given up on.
    ``queue_length`` is the stream's length at the last look, ``flush_lag`` the age of
    the oldest record of the last committed batch (seconds). Counters: ``seals`` moves of
    the running sums into the stream, ``sums_applied`` sums records added to the
    database, ``sums_duplicates`` those it already had (skipped: exactly once),
    ``increments_refused`` deltas dead-lettered. Durability: ``durability_checks`` and
    ``durability_refusals`` (checks that found the Redis too weak for the mode),
    ``durability_ok`` (1 or 0 at the last check) and ``aof_delayed_fsync`` (INFO's
    count of fsyncs Redis postponed past its limit, -1 unknown; logged when it grows).
    """

    name: str = "default"
    batches: int = 0
    records_read: int = 0
    reclaimed: int = 0
    coalesced: int = 0
    rows_applied: int = 0
    rows_skipped: int = 0
    transactions: int = 0
    retries: int = 0
    transient_failures: int = 0
    record_failures: int = 0
    splits: int = 0
    dead_letters: int = 0
    redis_errors: int = 0
    seals: int = 0
    sums_applied: int = 0
    sums_duplicates: int = 0
    increments_refused: int = 0
    durability_checks: int = 0
    durability_refusals: int = 0
    queue_length: int = 0
    flush_lag: float = 0.0
    durability_ok: int = 1
    aof_delayed_fsync: int = -1
    batch_sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BUCKETS))
    lags: Histogram = field(default_factory=lambda: Histogram(LAG_BUCKETS))

    def observe_lag(self, oldest: float, now: float) -> None:
        """A commit at ``now`` whose oldest record was queued at ``oldest`` (seconds):
        the write batches and the counter sums share the gauge and the histogram."""
        lag = max(0.0, now - oldest)
        self.flush_lag = lag
        self.lags.observe(lag)

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Histogram):
                out[f.name] = {"count": value.count, "sum": value.sum, "buckets": value.cumulative()}
            else:
                out[f.name] = value
        return out


__all__ = ["BATCH_SIZE_BUCKETS", "LAG_BUCKETS", "FlusherStats", "Histogram", "WriteBehindStats"]
