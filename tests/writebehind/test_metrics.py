"""Write-behind counters: plain attributes, histograms, and their Prometheus export."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from readscale._shared.writebehind.stats import Histogram
from readscale.writebehind import FlusherStats, WriteBehindCollector, WriteBehindStats


def test_histograms_count_into_fixed_buckets() -> None:
    h = Histogram((1, 10, 100))
    for value in (0.5, 1, 5, 50, 500, 5000):
        h.observe(value)
    assert h.counts == [2, 1, 1, 2]
    assert h.count == 6
    assert h.sum == 5556.5
    assert h.cumulative() == [("1.0", 2), ("10.0", 3), ("100.0", 4), ("+Inf", 6)]


def test_prometheus_export_reads_the_counters_at_scrape_time() -> None:
    produced, flushed = WriteBehindStats("orders"), FlusherStats("orders")
    registry = CollectorRegistry()
    registry.register(WriteBehindCollector(produced, flushed))
    produced.writes += 7
    produced.full_rejections += 1
    flushed.transactions += 2
    flushed.dead_letters += 1
    flushed.queue_length = 42
    flushed.flush_lag = 0.25
    flushed.batch_sizes.observe(150)
    flushed.lags.observe(0.25)
    text = generate_latest(registry).decode()
    assert 'readscale_writebehind_producer_events_total{event="writes",queue="orders"} 7.0' in text
    assert 'readscale_writebehind_producer_events_total{event="full_rejections",queue="orders"} 1.0' in text
    assert 'readscale_writebehind_flusher_events_total{event="transactions",queue="orders"} 2.0' in text
    assert 'readscale_writebehind_flusher_events_total{event="dead_letters",queue="orders"} 1.0' in text
    assert 'readscale_writebehind_queue_length{queue="orders"} 42.0' in text
    assert 'readscale_writebehind_flush_lag_seconds{queue="orders"} 0.25' in text
    assert 'readscale_writebehind_batch_size_bucket{le="200.0",queue="orders"} 1.0' in text
    assert 'readscale_writebehind_batch_size_bucket{le="100.0",queue="orders"} 0.0' in text
    assert 'readscale_writebehind_batch_size_count{queue="orders"} 1.0' in text
    assert 'readscale_writebehind_record_lag_seconds_sum{queue="orders"} 0.25' in text
    snapshot = flushed.snapshot()
    assert snapshot["transactions"] == 2
    assert snapshot["batch_sizes"]["count"] == 1
    assert produced.snapshot()["writes"] == 7
