"""A real Prometheus (Debian's package, started by the stack) scrapes the demo's
processes: every layer's series answer PromQL, and every dashboard expression runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from readscale.demo.environment import DemoEnvironment, EnvironmentConfig
from readscale.demo.schema import ShopSize
from tests.test_metrics import dashboard_expressions, promql_metric_names

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture(scope="module")
def env() -> Iterator[DemoEnvironment]:
    size = ShopSize(categories=5, products=50, users=20, orders=50, reviews=50)
    environment = DemoEnvironment(EnvironmentConfig(size=size, workers=1, replicas=1, prometheus=True))
    try:
        yield environment.start()
    finally:
        environment.close()


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """``check()``'s first truthy answer (Prometheus scrapes every 0.5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer or time.monotonic() > deadline:
            assert answer, f"{what}: nothing within {timeout:.0f}s"
            return answer
        time.sleep(0.25)


def test_prometheus_scrapes_every_layer_and_the_dashboard_reads_what_it_scraped(env: DemoEnvironment) -> None:
    prometheus = env.stack.prometheus
    with httpx.Client(base_url=env.app_url, timeout=10.0) as app, httpx.Client(base_url=env.edge_url) as edge:
        assert "readscale_http_responses_total" in app.get("/metrics").text  # the service's own /metrics
        for pid in (1, 2, 3, 1, 2, 3):
            assert edge.get(f"/products/{pid}").status_code == 200
            assert app.get(f"/products/{pid}").status_code == 200
        assert app.get("/users/1/profile", headers={"cookie": "session=user-1"}).status_code == 200  # private
        assert app.post("/products/1/views").status_code == 202  # write-behind
    with psycopg.connect(env.stack.primary.dsn, autocommit=True) as conn:  # CDC invalidates and purges the edge
        slot = "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'demo_cdc'"
        eventually(lambda: conn.execute(slot).fetchone(), "the CDC worker's slot")
        conn.execute("UPDATE products SET price_cents = price_cents + 1 WHERE id = 2")

    def healthy() -> bool:
        targets = prometheus.targets()
        return len(targets) == 3 and all(t["health"] == "up" for t in targets)

    eventually(healthy, "the service, the CDC worker and the flusher scraped")
    layers = {
        "http (public pages)": 'readscale_http_responses_total{decision="public"} > 0',
        "http (private)": 'readscale_http_responses_total{decision="private"} > 0',
        "cache L1 hits": 'readscale_cache_hits_total{tier="l1"} > 0',
        "cache misses": 'readscale_cache_misses_total{tier="l2"} > 0',
        "loader histogram": "readscale_cache_loader_duration_seconds_count > 0",
        "fill histogram": "readscale_cache_fill_duration_seconds_count > 0",
        "replica reads": 'readscale_replica_reads_total{role="replica"} > 0',
        "replica lag": 'readscale_replica_lag_bytes{role="replica"} >= 0',
        "bus": "readscale_bus_messages_total",
        "write-behind producer": 'readscale_writebehind_producer_events_total{event="writes"} > 0',
        "flusher backlog": "readscale_writebehind_queue_length >= 0",
        "cdc batches": "readscale_cdc_batches_total > 0",
        "cdc lag": "readscale_cdc_lag_seconds >= 0",
        "edge purges": "readscale_purge_requests_total > 0",
    }
    for layer, promql in layers.items():
        eventually(lambda promql=promql: prometheus.query(promql), f"{layer} ({promql})")

    scraped = set(prometheus.api("label/__name__/values"))
    for expr in dashboard_expressions():
        assert promql_metric_names(expr) <= scraped, expr
        prometheus.query(expr.replace("$__rate_interval", "1m"))  # valid PromQL: an error raises StackError
