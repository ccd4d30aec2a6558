"""``readscale demo``: the whole read path on one machine, measured layer by layer.

Starts the stack (PostgreSQL with two streaming replicas, Redis, Varnish), seeds the
shop, starts the service under uvicorn (several worker processes, each with its own L1)
and the CDC worker, runs browser-like clients against the edge, optionally breaks
something halfway (``chaos``), then collects every layer's own counters, prints the
funnel and writes the JSON and the HTML report. Everything it starts, it stops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psycopg

from readscale.demo import schema
from readscale.demo.environment import STATS_KEY, DemoEnvironment, EnvironmentConfig
from readscale.demo.funnel import (
    CLIENT_LAYER,
    Funnel,
    LayerCounts,
    latency_summary,
    phase_counts,
    timeline_shares,
)
from readscale.demo.loadgen import LoadConfig, LoadResult, run_load, write_behind_share
from readscale.errors import ConfigurationError
from readscale.stack import Stack

Chaos = Literal["none", "redis", "replica"]

# Each statement is told apart by a fragment of its text as pg_stat_statements stores
# it, which replaces constants with $n: so no fragment may hold a constant.
READ_MARKERS = {
    "product": "LEFT JOIN LATERAL (SELECT avg(stars)",
    "category": "WHERE p.category_id =",
    "profile": "AS spent_cents",
    "balance": "SELECT balance_cents FROM accounts",
    "trending": "ORDER BY sold DESC, p.id",
}
WRITE_MARKERS = (
    "UPDATE users SET bio",
    "UPDATE accounts SET balance_cents",
    "UPDATE products SET price_cents",
    "direct_views +",  # a view counted in the database while Redis was down
)
IN_WRITE_MARKER = "AND u.id >"  # the profile read inside a profile update (part of the write)


@dataclass(frozen=True)
class DemoConfig:
    duration_s: float = 60.0
    #: Run past ``duration_s`` until this many requests were sent (bounded): a short run
    #: on a busy machine still measures enough requests (the tests use it).
    min_requests: int = 0
    clients: int = 48
    workers: int = 2
    chaos: Chaos = "none"
    seed: int = 7
    size: schema.ShopSize = field(default_factory=schema.ShopSize)
    reads_per_write: float = 100.0
    zipf_alpha: float = 0.9
    report: Path | None = Path("readscale-report.html")
    replica_delay_s: float = 0.0
    think_s: float = 0.03
    logs: Path | None = None  # copy the service, CDC and flusher logs here at the end

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.clients < 1 or self.workers < 1:
            raise ConfigurationError("duration_s > 0, clients >= 1 and workers >= 1 are required")
        if self.chaos not in ("none", "redis", "replica"):
            raise ConfigurationError(f"chaos must be none, redis or replica, got {self.chaos!r}")


def _statement_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT query, calls FROM pg_stat_statements").fetchall()
    counts = {"reads": 0, "writes": 0, "in_write": 0, "behind": 0}
    for query, calls in rows:
        text = str(query)
        if "product_views" in text and "direct_views +" not in text:
            counts["behind"] += int(calls)
        elif IN_WRITE_MARKER in text:
            counts["in_write"] += int(calls)
        elif any(marker in text for marker in READ_MARKERS.values()):
            counts["reads"] += int(calls)
        elif any(marker in text for marker in WRITE_MARKERS):
            counts["writes"] += int(calls)
    return counts


def _reset_statements(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def _app_counters(redis_url: str, key: str) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(redis_url, protocol=2)
    try:
        raw = client.hgetall(key)
    finally:
        client.close()
    names = (
        "requests", "app_cache", "writes", "errors", "static", "background_requests", "background_app_cache",
        "absorbed_writes",
    )  # fmt: skip
    total: dict[str, Any] = dict.fromkeys(names, 0)
    total.update({"loads": {}, "refresh_loads": {}, "cache_hits": 0, "processes": len(raw)})
    for value in raw.values():
        data = json.loads(value)
        for name in names:
            total[name] += int(data.get(name, 0))
        for bucket in ("loads", "refresh_loads"):
            for node, count in data.get(bucket, {}).items():
                total[bucket][node] = total[bucket].get(node, 0) + int(count)
        cache = data.get("cache", {})
        tiers = [cache.get(tier, {}) for tier in ("l1", "l2")]
        total["cache_hits"] += sum(int(t.get(k, 0)) for t in tiers for k in ("hits", "stale_serves"))
        total["cache_hits"] += int(cache.get("l2", {}).get("coalesced", 0))
    return total


def run_demo(
    config: DemoConfig,
    *,
    progress: Callable[[str], None] = lambda message: None,
    on_load: Callable[[LoadResult], None] | None = None,
) -> dict[str, Any]:
    """Run the demo and return its JSON (the funnel, shares, latencies, the timeline)."""
    env = DemoEnvironment(
        EnvironmentConfig(size=config.size, workers=config.workers, replica_delay_s=config.replica_delay_s), progress
    )
    try:
        env.start()
        stack = env.stack
        for node in [stack.primary, *stack.replicas]:
            _reset_statements(node.dsn)
        varnish_before = stack.varnish.counters()
        app_before = _app_counters(stack.redis.url, STATS_KEY)
        load_config = LoadConfig(
            base_url=env.edge_url, clients=config.clients, duration_s=config.duration_s,
            products=config.size.products, categories=config.size.categories, users=config.size.users,
            zipf_alpha=config.zipf_alpha, reads_per_write=config.reads_per_write, seed=config.seed,
            asset_paths=env.static_urls(), think_s=config.think_s, min_requests=config.min_requests,
        )  # fmt: skip
        progress(f"load: {config.clients} clients for {config.duration_s:.0f}s (chaos: {config.chaos})")
        result, chaos_window, restart_began = asyncio.run(_load_with_chaos(load_config, stack, config, on_load))
        time.sleep(1.0)  # the service publishes its counters every 0.25 s
        counts = _collect(stack, result, varnish_before, app_before)
        funnel = Funnel(
            counts,
            latency_summary(result.latency_ms),
            timeline_shares(result.timeline),
            stale_reads_beyond_bound=result.stale_reads,
            stale_checks=result.stale_checks,
        )
        data = _to_json(funnel, result, config)
        data["chaos_window_s"] = chaos_window
        data["phases"] = _phases(result, chaos_window, restart_began)
        if config.report is not None:
            from readscale.demo.report import write_report

            write_report(config.report, data)
            progress(f"report written to {config.report}")
        return data
    finally:
        env.close(keep_logs=config.logs)


#: Responses a client reads within this long after the kill may have been sent before it.
KILL_GRACE_S = 1.0


def _phases(
    result: LoadResult, window: list[float], restart_began: float | None
) -> dict[str, dict[str, dict[str, int]]] | None:
    """Responses by phase, kind (read, asset, write) and the layer that answered: where
    the broken node's work went, as counts. Phases: ``before`` the kill; ``killed``, the
    first KILL_GRACE_S after it (responses sent before it still arrive); ``down``, until
    the restart begins; ``restarting``, until the start returns (the node may answer
    already); ``after``."""
    if len(window) != 2 or restart_began is None:
        return None
    killed, back = window
    bounds = [killed, min(killed + KILL_GRACE_S, restart_began), restart_began, back]
    return phase_counts(result.timeline, bounds, ("before", "killed", "down", "restarting", "after"))


async def _load_with_chaos(
    load: LoadConfig, stack: Stack, config: DemoConfig, on_load: Callable[[LoadResult], None] | None
) -> tuple[LoadResult, list[float], float | None]:
    """Run the load; with chaos, kill the node halfway and start it again at three
    quarters. Returns the result, when (seconds into the load) the node died and
    answered again, and when its restart began."""
    began = time.monotonic()
    window: list[float] = []
    restart_began: list[float] = []

    async def chaos() -> None:
        if config.chaos == "none":
            return
        node = "redis" if config.chaos == "redis" else "r1"
        await asyncio.sleep(config.duration_s / 2)
        await asyncio.to_thread(stack.kill, node)
        window.append(round(time.monotonic() - began, 2))
        await asyncio.sleep(config.duration_s / 4)
        restart_began.append(round(time.monotonic() - began, 2))
        await asyncio.to_thread(stack.start, node)
        window.append(round(time.monotonic() - began, 2))

    task = asyncio.ensure_future(chaos())
    try:
        result = await run_load(load, progress=on_load)
    finally:
        await task
    return result, window, restart_began[0] if restart_began else None


def _collect(
    stack: Stack, result: LoadResult, varnish_before: dict[str, int], app_before: dict[str, Any]
) -> LayerCounts:
    after = stack.varnish.counters()

    def delta(name: str) -> int:
        return after.get(name, 0) - varnish_before.get(name, 0)

    app = _app_counters(stack.redis.url, STATS_KEY)
    primary = _statement_counts(stack.primary.dsn)
    replica_reads = sum(_statement_counts(r.dsn)["reads"] for r in stack.replicas)
    refresh = app["refresh_loads"]
    background_primary = int(refresh.get("primary", 0))
    background_replica = sum(int(v) for k, v in refresh.items() if k != "primary")
    return LayerCounts(
        requests=result.requests,
        failed=result.failed,
        browser=result.layers["browser"],
        edge=delta("MAIN.cache_hit"),
        # The cache's own hits, less those that served the edge's background refreshes,
        # plus static assets served from the process's memory.
        app_cache=(app["cache_hits"] - app_before["cache_hits"])
        - (app["background_app_cache"] - app_before["background_app_cache"])
        + (app["static"] - app_before["static"])
        + (app["absorbed_writes"] - app_before["absorbed_writes"]),
        replica_reads=replica_reads,
        primary_reads=primary["reads"],
        primary_writes=primary["writes"],
        background_replica=background_replica,
        background_primary=background_primary,
        edge_requests=delta("MAIN.client_req"),
        app_requests=app["requests"] - app_before["requests"],
        reads=result.reads,
        writes=result.writes,
    )


def _to_json(funnel: Funnel, result: LoadResult, config: DemoConfig) -> dict[str, Any]:
    c = funnel.counts
    shares = c.shares()
    return {
        "requests": c.requests,
        "duration_s": round(result.duration_s, 2),
        "failed_requests": c.failed,
        "stale_reads_beyond_bound": funnel.stale_reads_beyond_bound,
        "stale_checks": funnel.stale_checks,
        "stale_examples": result.stale_examples,
        **{f"share_{name}": round(value, 5) for name, value in shares.items()},
        "primary_read_share": round(c.primary_read_share, 5),
        "counts": {**c.by_layer(), "accounted": c.accounted, "discrepancy": round(c.discrepancy, 5)},
        "layers_raw": asdict(c),
        "latency_ms": {
            layer: funnel.latency_ms.get(CLIENT_LAYER[layer], {}).get("p50", 0.0) for layer in CLIENT_LAYER
        },
        "latency": funnel.latency_ms,
        "timeline": funnel.timeline,
        "summary": funnel.summary_line(),
        "failures": dict(result.failures),
        "config": {
            "clients": config.clients, "keys": config.size.products, "zipf_alpha": config.zipf_alpha,
            "reads_per_write": config.reads_per_write, "browser_max_age_s": 60, "edge_ttl_s": 3600,
            "cache_ttl_s": 3600, "l1_entries": 5000, "replicas": 2, "replica_lag_ms": config.replica_delay_s * 1000,
            "rps": round(c.requests / max(result.duration_s, 0.001), 1), "chaos": config.chaos,
            "workers": config.workers, "app_processes": config.workers,
            "write_behind_share": round(write_behind_share(), 4),
        },
    }  # fmt: skip
