"""Cache counters are readable in-process and exported through prometheus-client."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from readscale.metrics import CacheStats, PrometheusCollector


def test_prometheus_export_reads_the_counters_at_scrape_time() -> None:
    stats = CacheStats("catalog")
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(stats))
    stats.l1.hits += 3
    stats.l2.misses += 2
    stats.loader.calls += 2
    stats.loader.seconds += 0.25
    stats.breaker_opens += 1
    text = generate_latest(registry).decode()
    assert 'readscale_cache_events_total{cache="catalog",event="hits",tier="l1"} 3.0' in text
    assert 'readscale_cache_events_total{cache="catalog",event="misses",tier="l2"} 2.0' in text
    assert 'readscale_cache_loader_events_total{cache="catalog",event="calls"} 2.0' in text
    assert 'readscale_cache_loader_seconds_total{cache="catalog"} 0.25' in text
    assert 'readscale_cache_events_total{cache="catalog",event="breaker_opens",tier="l2"} 1.0' in text
    snapshot = stats.snapshot()
    assert snapshot["l1"]["hits"] == 3 and snapshot["breaker_opens"] == 1
    stats.reset()
    assert stats.snapshot()["l1"]["hits"] == 0
