"""The Prometheus collectors: the cache's, write-behind's (CDC's counters are read by
``readscale.cdc``'s worker). Each reads the in-process counters (``readscale._shared``)
only when scraped, so exporting costs nothing per call.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from typing import Any

from readscale._shared.cache.stats import CacheStats, LoaderStats, TierStats
from readscale._shared.writebehind.stats import FlusherStats, WriteBehindStats


class PrometheusCollector:
    """A prometheus-client collector for one or more caches' stats.

    ``prometheus_client.REGISTRY.register(PrometheusCollector(cache.stats))``
    """

    def __init__(self, *stats: CacheStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        events = CounterMetricFamily(
            "readscale_cache_events", "Cache events per tier (hits, misses, stale serves, ...)",
            labels=["cache", "tier", "event"],
        )  # fmt: skip
        loads = CounterMetricFamily(
            "readscale_cache_loader_events", "Loader calls and outcomes", labels=["cache", "event"]
        )
        load_seconds = CounterMetricFamily(
            "readscale_cache_loader_seconds", "Seconds spent in loaders", labels=["cache"]
        )
        for stats in self._stats:
            for tier_name in ("l1", "l2"):
                tier = getattr(stats, tier_name)
                for f in fields(TierStats):
                    events.add_metric([stats.name, tier_name, f.name], getattr(tier, f.name))
            for f in fields(LoaderStats):
                if f.name != "seconds":
                    loads.add_metric([stats.name, f.name], getattr(stats.loader, f.name))
            load_seconds.add_metric([stats.name], stats.loader.seconds)
            events.add_metric([stats.name, "l2", "breaker_opens"], stats.breaker_opens)
        yield events
        yield loads
        yield load_seconds


_FLUSHER_COUNTERS = (
    "batches",
    "records_read",
    "reclaimed",
    "coalesced",
    "rows_applied",
    "rows_skipped",
    "transactions",
    "retries",
    "transient_failures",
    "record_failures",
    "splits",
    "dead_letters",
    "redis_errors",
    "seals",
    "sums_applied",
    "sums_duplicates",
    "increments_refused",
    "durability_checks",
    "durability_refusals",
)


_PRODUCER_COUNTERS = (
    "writes",
    "increments",
    "full_waits",
    "full_rejections",
    "errors",
    "durability_checks",
    "durability_refusals",
)


class WriteBehindCollector:
    """A prometheus-client collector for write-behind producers and flushers.

    ``prometheus_client.REGISTRY.register(WriteBehindCollector(wb.stats, flusher.stats))``
    """

    def __init__(self, *stats: WriteBehindStats | FlusherStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        produced = CounterMetricFamily(
            "readscale_writebehind_producer_events", "Write-behind producer events", labels=["queue", "event"]
        )
        flushed = CounterMetricFamily(
            "readscale_writebehind_flusher_events", "Write-behind flusher events", labels=["queue", "event"]
        )
        length = GaugeMetricFamily(
            "readscale_writebehind_queue_length", "Records in the write-behind queue", labels=["queue"]
        )
        lag = GaugeMetricFamily(
            "readscale_writebehind_flush_lag_seconds",
            "Age of the oldest record of the last committed batch",
            labels=["queue"],
        )
        delayed = GaugeMetricFamily(
            "readscale_writebehind_aof_delayed_fsync",
            "Redis INFO aof_delayed_fsync at the last check: fsyncs postponed past Redis's limit (-1: unknown)",
            labels=["queue", "role"],
        )
        durable = GaugeMetricFamily(
            "readscale_writebehind_durability_ok",
            "1 when the queue's Redis kept the mode's settings at the flusher's last check, else 0",
            labels=["queue"],
        )
        sizes = HistogramMetricFamily("readscale_writebehind_batch_size", "Records per written batch", labels=["queue"])
        lags = HistogramMetricFamily(
            "readscale_writebehind_record_lag_seconds", "Queue-to-commit time of written batches", labels=["queue"]
        )
        for stats in self._stats:
            if isinstance(stats, WriteBehindStats):
                for name in _PRODUCER_COUNTERS:
                    produced.add_metric([stats.name, name], getattr(stats, name))
                delayed.add_metric([stats.name, "producer"], stats.aof_delayed_fsync)
                continue
            for name in _FLUSHER_COUNTERS:
                flushed.add_metric([stats.name, name], getattr(stats, name))
            length.add_metric([stats.name], stats.queue_length)
            lag.add_metric([stats.name], stats.flush_lag)
            delayed.add_metric([stats.name, "flusher"], stats.aof_delayed_fsync)
            durable.add_metric([stats.name], stats.durability_ok)
            sizes.add_metric([stats.name], stats.batch_sizes.cumulative(), stats.batch_sizes.sum)
            lags.add_metric([stats.name], stats.lags.cumulative(), stats.lags.sum)
        yield from (produced, flushed, length, lag, delayed, durable, sizes, lags)
