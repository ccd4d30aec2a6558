"""Every component's counters are exported through prometheus-client under one naming
scheme (``readscale_<part>_<what>_<unit>``), read at scrape time."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from readscale import CacheStats
from readscale._async.cache.bus import BusStats
from readscale._async.purge.base import PurgeStats
from readscale._core.http.decide import HeaderPlan
from readscale._core.replicas.settings import ReplicaSettings
from readscale._shared.cdc.stats import CdcStats
from readscale._shared.replicas.topology import Topology
from readscale.http import HttpMetrics
from readscale.metrics import (
    BusCollector,
    CacheCollector,
    CdcCollector,
    Family,
    HttpCollector,
    PurgeCollector,
    ReplicaCollector,
    SharedMetrics,
    merge_snapshots,
)
from readscale.stack._proc import pick_ports
from readscale.writebehind import FlusherStats, WriteBehindCollector, WriteBehindStats


def scrape(*collectors: object) -> str:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def every_collector() -> list[object]:
    """One of each collector, over empty components (what a fresh process exports)."""
    topology = Topology(ReplicaSettings("postgresql://p", {"r1": "postgresql://r1"}), now=0.0)
    purger = SimpleNamespace(vendor="varnish", node="http://edge-1", stats=PurgeStats())
    return [
        CacheCollector(CacheStats("catalog")),
        ReplicaCollector(topology),
        HttpCollector(HttpMetrics()),
        CdcCollector(SimpleNamespace(stats=CdcStats(), settings=SimpleNamespace(slot="s"))),
        BusCollector(SimpleNamespace(stats=BusStats(), channel="readscale:bus")),
        PurgeCollector(purger),
        WriteBehindCollector(WriteBehindStats("q"), FlusherStats("q")),
    ]


def exported_names() -> set[str]:
    """Every series name a scrape shows (``_total``, ``_bucket``... included)."""
    return {line.split("{")[0].split(" ")[0] for line in scrape(*every_collector()).splitlines() if line[:1] != "#"}


def test_every_name_follows_the_scheme() -> None:
    names = exported_names()
    parts = {name.split("_")[1] for name in names}
    assert parts == {"cache", "replica", "http", "cdc", "bus", "purge", "writebehind"}
    for name in names:
        assert re.fullmatch(r"readscale_[a-z0-9]+_[a-z0-9_]+", name), name
    for line in scrape(*every_collector()).splitlines():
        if line.startswith("# TYPE ") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line
    for name in names:
        base = re.sub(r"_(total|bucket|sum|count|created)$", "", name)
        if re.search(r"_(seconds|bytes)_", base + "_"):
            assert re.search(r"_(seconds|bytes)$", base), f"{name}: the unit comes last"


def test_the_cache_exports_hits_per_tier_and_loader_and_fill_times_as_histograms() -> None:
    stats = CacheStats("catalog")
    collector = CacheCollector(stats)
    stats.l1.hits += 3  # the hit path: a plain integer add, read at scrape time
    stats.l2.misses += 2
    stats.l2.stale_serves += 1
    stats.l2.lease_waits += 4
    stats.loader.calls += 2
    stats.loader.fills_refused_lease_lost += 1
    stats.breaker_opens += 1
    stats.loader_seconds.observe(0.003)
    stats.loader_seconds.observe(2.0)
    stats.fill_seconds.observe(0.004)
    text = scrape(collector)
    assert 'readscale_cache_hits_total{cache="catalog",tier="l1"} 3.0' in text
    assert 'readscale_cache_misses_total{cache="catalog",tier="l2"} 2.0' in text
    assert 'readscale_cache_stale_served_total{cache="catalog",tier="l2"} 1.0' in text
    assert 'readscale_cache_lease_waits_total{cache="catalog",tier="l2"} 4.0' in text
    assert 'readscale_cache_loader_calls_total{cache="catalog"} 2.0' in text
    assert 'readscale_cache_fills_refused_total{cache="catalog",reason="lease_lost"} 1.0' in text
    assert 'readscale_cache_breaker_opens_total{cache="catalog"} 1.0' in text
    assert 'readscale_cache_loader_duration_seconds_bucket{cache="catalog",le="0.005"} 1.0' in text
    assert 'readscale_cache_loader_duration_seconds_count{cache="catalog"} 2.0' in text
    assert 'readscale_cache_fill_duration_seconds_count{cache="catalog"} 1.0' in text
    snapshot = stats.snapshot()
    assert snapshot["l1"]["hits"] == 3 and snapshot["breaker_opens"] == 1
    stats.reset()
    assert stats.snapshot()["l1"]["hits"] == 0 and stats.loader_seconds.count == 0


def test_the_router_exports_lag_per_node_ejections_readmissions_and_fallbacks() -> None:
    settings = ReplicaSettings("postgresql://p", {"r1": "postgresql://r1", "r2": "postgresql://r2"})
    topology = Topology(settings, now=0.0)
    collector = ReplicaCollector(topology)
    assert topology.record_not_replica("r1") == "out"  # a guard found r1 promoted: ejected at once
    topology.count("primary_reads", 2)
    topology.count("refusals")
    text = scrape(collector)
    assert 'readscale_replica_ejections_total{node="r1",role="replica",router="default"} 1.0' in text
    assert 'readscale_replica_ejections_total{node="r2",role="replica",router="default"} 0.0' in text
    assert 'readscale_replica_routable{node="r1",role="replica",router="default"} 0.0' in text
    assert 'readscale_replica_primary_fallbacks_total{router="default"} 2.0' in text
    assert 'readscale_replica_refusals_total{router="default"} 1.0' in text
    status = SimpleNamespace(
        name="r1", role="replica", status="ok", lag_seconds=1.5, lag_bytes=4096, inflight=0, reads=7,
        ejections=1, readmissions=1,
    )  # fmt: skip
    fake = SimpleNamespace(status=lambda: [status], stats=topology.stats)
    text = scrape(ReplicaCollector(fake, name="shop"))  # type: ignore[arg-type]
    assert 'readscale_replica_lag_seconds{node="r1",role="replica",router="shop"} 1.5' in text
    assert 'readscale_replica_lag_bytes{node="r1",role="replica",router="shop"} 4096.0' in text
    assert 'readscale_replica_readmissions_total{node="r1",role="replica",router="shop"} 1.0' in text


def test_http_decisions_public_private_no_store_and_refused_by_reason() -> None:
    metrics = HttpMetrics()
    metrics.count(HeaderPlan("public, max-age=60", shared=True))
    metrics.count(HeaderPlan("private, max-age=30"))
    metrics.count(HeaderPlan("no-store"))
    metrics.count(HeaderPlan("private, no-cache", downgrade="the response sets a cookie", refusal="cookie"))
    metrics.bump("not_modified")
    text = scrape(HttpCollector(metrics, app="shop"))
    for decision in ("public", "private", "no_store", "refused"):
        assert f'readscale_http_responses_total{{app="shop",decision="{decision}"}} 1.0' in text
    assert 'readscale_http_refused_total{app="shop",reason="cookie"} 1.0' in text
    assert 'readscale_http_refused_total{app="shop",reason="authorization"} 0.0' in text
    assert 'readscale_http_not_modified_total{app="shop"} 1.0' in text


def test_cdc_bus_and_purge_exports() -> None:
    cdc = CdcStats(batches=3, lag_bytes=128, lag_seconds=2.5)
    bus = BusStats(received=5, reconnects=1, l1_flushes=2)
    edge = PurgeStats(requests=4, failures=1, tags=9)
    multi = SimpleNamespace(vendor="varnish", node_stats={"a": PurgeStats(failures=2), "b": PurgeStats()})
    text = scrape(
        CdcCollector(SimpleNamespace(stats=cdc, settings=SimpleNamespace(slot="demo"))),
        BusCollector(SimpleNamespace(stats=bus, channel="readscale:bus")),
        PurgeCollector(SimpleNamespace(vendor="varnish", node="http://edge-1", stats=edge), multi),
    )  # fmt: skip
    assert 'readscale_cdc_lag_bytes{slot="demo"} 128.0' in text
    assert 'readscale_cdc_lag_seconds{slot="demo"} 2.5' in text
    assert 'readscale_cdc_batches_total{slot="demo"} 3.0' in text
    assert 'readscale_bus_messages_total{channel="readscale:bus",direction="received"} 5.0' in text
    assert 'readscale_bus_reconnects_total{channel="readscale:bus"} 1.0' in text
    assert 'readscale_bus_l1_flushes_total{channel="readscale:bus"} 2.0' in text
    assert 'readscale_purge_failures_total{node="http://edge-1",vendor="varnish"} 1.0' in text
    assert 'readscale_purge_requests_total{node="http://edge-1",vendor="varnish"} 4.0' in text
    assert 'readscale_purge_failures_total{node="a",vendor="varnish"} 2.0' in text
    assert 'readscale_purge_failures_total{node="b",vendor="varnish"} 0.0' in text


def test_write_behind_exports_backlog_flushed_and_dead_letters() -> None:
    flusher = FlusherStats("views", rows_applied=10, dead_letters=1, queue_length=42)
    text = scrape(WriteBehindCollector(flusher))
    assert 'readscale_writebehind_queue_length{queue="views"} 42.0' in text
    assert 'readscale_writebehind_flusher_events_total{event="rows_applied",queue="views"} 10.0' in text
    assert 'readscale_writebehind_flusher_events_total{event="dead_letters",queue="views"} 1.0' in text


DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "readscale.json"
_KEYWORDS = {"by", "without", "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "bool", "offset"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: every identifier that is not a
    function or aggregation (followed by a parenthesis), a keyword, a label (inside
    ``{}`` or a ``by (...)`` list) or part of a number, string or range."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        rest = expr[match.end() :].lstrip()
        if match.group() in _KEYWORDS or rest.startswith("("):
            continue
        names.add(match.group())
    return names


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_promql_metric_names_finds_names_not_functions_labels_or_numbers() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, cache) (rate(a_b_bucket{x="y z"}[5m]))) / clamp_min(c, 1e-9) > bool d'
    assert promql_metric_names(expr) == {"a_b_bucket", "c", "d"}


def test_every_dashboard_expression_reads_only_exported_series() -> None:
    exported = exported_names()
    expressions = dashboard_expressions()
    assert len(expressions) >= 20
    for expr in expressions:
        names = promql_metric_names(expr)
        assert names, f"no metric in {expr}"
        assert names <= exported, f"{expr}: {sorted(names - exported)} not exported by readscale.metrics"
    read = set().union(*(promql_metric_names(e) for e in expressions))
    for part in ("cache", "replica", "http", "cdc", "bus", "purge", "writebehind"):
        assert any(name.startswith(f"readscale_{part}_") for name in read), f"no panel for {part}"


# -- SharedMetrics: several worker processes, one scrape ----------------------------------

ROOT = Path(__file__).resolve().parents[1]


def family(kind: str, *samples: tuple[str, dict[str, str], float]) -> Family:
    return (kind, "doc", list(samples))


def test_counters_and_histograms_add_up_over_every_worker_gauges_are_per_live_worker() -> None:
    own = {
        "c": family("counter", ("c_total", {"tier": "l1"}, 2.0)),
        "h": family("histogram", ("h_bucket", {"le": "1.0"}, 1.0), ("h_count", {}, 1.0), ("h_sum", {}, 0.5)),
        "g": family("gauge", ("g", {}, 7.0)),
    }
    live = {
        "c": family("counter", ("c_total", {"tier": "l1"}, 3.0), ("c_total", {"tier": "l2"}, 1.0)),
        "h": family("histogram", ("h_bucket", {"le": "1.0"}, 2.0), ("h_count", {}, 2.0), ("h_sum", {}, 1.0)),
        "g": family("gauge", ("g", {}, 5.0)),
    }
    dead = {"c": family("counter", ("c_total", {"tier": "l1"}, 10.0)), "g": family("gauge", ("g", {}, 99.0))}
    merged = merge_snapshots(own, {101: (True, live), 102: (False, dead)})
    values = {(name, s, tuple(sorted(labels.items()))): v for name, (_, _, ss) in merged.items() for s, labels, v in ss}
    assert values[("c", "c_total", (("tier", "l1"),))] == 15.0  # a dead worker's counts stay
    assert values[("c", "c_total", (("tier", "l2"),))] == 1.0
    assert values[("h", "h_bucket", (("le", "1.0"),))] == 3.0
    assert values[("h", "h_sum", ())] == 1.5
    gauges = {labels: v for (name, _, labels), v in values.items() if name == "g"}
    assert gauges == {(("pid", str(os.getpid())),): 7.0, (("pid", "101"),): 5.0}  # none of the dead one


def test_a_scrape_writes_what_it_counted_so_the_sum_never_goes_back(tmp_path: Path) -> None:
    """The scraped worker's part, as the other workers will read it, is what this scrape
    counted: a later scrape through another worker cannot find less (review: live values
    plus the others' older files went back when the next scrape reached another worker)."""
    from prometheus_client import Counter

    registry = CollectorRegistry()
    hits = Counter("demo_hits", "hits", registry=registry)
    shared = SharedMetrics(registry, tmp_path, interval=60.0)  # no background writes
    hits.inc(3)
    scraped = re.search(r"^demo_hits_total (\S+)$", shared.exposition().decode(), re.M)
    assert scraped is not None and float(scraped.group(1)) == 3.0
    (mine,) = tmp_path.glob("*/*.json")
    written = json.loads(mine.read_text())["demo_hits"][2]
    assert [value for name, _, value in written if name == "demo_hits_total"] == [3.0]


def test_registered_in_the_registry_it_reads_it_does_not_recurse(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    shared = SharedMetrics(registry, tmp_path)
    registry.register(CacheCollector(CacheStats("c")))
    registry.register(shared)  # type: ignore[arg-type]
    assert "readscale_cache_hits_total" in generate_latest(registry).decode()
    # What it writes for the other workers is this worker's part, not the group's sum.
    other = tmp_path / shared.group.name / "999999.json"
    other.write_text(json.dumps({"x": ["counter", "x", [["x_total", {}, 100.0]]]}))
    assert "x" not in (shared.write() or {})


def test_an_interval_that_cannot_work_is_refused(tmp_path: Path) -> None:
    from readscale.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="interval"):
        SharedMetrics(object(), tmp_path, interval=0)


def _total(text: str) -> float:
    found = re.findall(r'^readscale_cache_misses_total\{cache="workers",tier="l2"\} (\S+)$', text, re.M)
    assert len(found) == 1, text
    return float(found[0])


@pytest.mark.timeout(120)
def test_every_scrape_counts_every_workers_requests(tmp_path: Path) -> None:
    (port,) = pick_ports(1)
    env = {**os.environ, "READSCALE_TEST_METRICS_DIR": str(tmp_path / "metrics"), "PYTHONPATH": str(ROOT / "src")}
    env["PYTHONPATH"] += os.pathsep + str(ROOT)
    log = (tmp_path / "uvicorn.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "tests.starlette.metrics_workers:build", "--workers", "2",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/metrics", timeout=1)
                break
            except httpx.HTTPError:
                assert server.poll() is None, (tmp_path / "uvicorn.log").read_text()
                assert time.monotonic() < deadline, "uvicorn never answered"
                time.sleep(0.2)
        sent, pids = 0, set()
        # A new connection per request: the kernel hands them to both workers.
        while len(pids) < 2 or sent < 200:
            assert sent < 5_000, f"one worker took every connection: {pids}"
            pids.add(httpx.get(url + "/miss", timeout=5).headers["x-pid"])
            sent += 1
        time.sleep(1.0)  # > the interval: each worker has written its snapshot since
        scraped = {}
        for _ in range(20):
            answer = httpx.get(url + "/metrics", timeout=5)
            scraped.setdefault(answer.headers["x-pid"], []).append(_total(answer.text))
        # Whichever worker a scrape reached (the kernel's choice), it counts every request.
        assert all(total == sent for totals in scraped.values() for total in totals), (sent, scraped)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
