"""The funnel: of N requests, how many each layer of the read path answered.

Every figure comes from the layer itself:

- browser: the clients' own private caches (hishel) counted responses they served;
- edge: Varnish's ``MAIN.cache_hit`` (``varnishstat``), a hit being a response the edge
  served from its cache (304s to revalidations included);
- app cache: the application cache's own hit counters (L1, L2, stale serves, reads
  that joined another's in-flight read), plus writes absorbed without a database write
  (view counters written behind);
- replicas and primary: PostgreSQL's ``pg_stat_statements`` on each node, for the
  service's read statements, less the background refreshes the cache ran (not caused by
  a request); the primary also counts the service's write statements.

The report then checks that the five layers add up to the requests the clients issued.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field

from readscale.report.stats import percentile

LAYERS = ("browser", "edge", "app_cache", "replicas", "primary")
#: Funnel layer -> how the clients label the responses it answered.
CLIENT_LAYER = {layer: "replica" if layer == "replicas" else layer for layer in LAYERS}


@dataclass(frozen=True)
class LayerCounts:
    requests: int
    failed: int
    browser: int
    edge: int
    app_cache: int
    replica_reads: int  # from PostgreSQL, request-driven and background
    primary_reads: int
    primary_writes: int
    background_replica: int  # refreshes the cache ran on replicas (from the app)
    background_primary: int
    edge_requests: int  # requests Varnish received (its own MAIN.client_req)
    app_requests: int  # requests the app handled (its own counter)
    reads: int
    writes: int

    @property
    def replicas(self) -> int:
        return max(self.replica_reads - self.background_replica, 0)

    @property
    def primary(self) -> int:
        return max(self.primary_reads - self.background_primary, 0) + self.primary_writes

    def by_layer(self) -> dict[str, int]:
        return {
            "browser": self.browser,
            "edge": self.edge,
            "app_cache": self.app_cache,
            "replicas": self.replicas,
            "primary": self.primary,
        }

    @property
    def accounted(self) -> int:
        return sum(self.by_layer().values())

    @property
    def discrepancy(self) -> float:
        """(layers' sum - requests issued) / requests issued."""
        return (self.accounted - self.requests) / self.requests if self.requests else 0.0

    def shares(self) -> dict[str, float]:
        total = self.requests or 1
        return {name: count / total for name, count in self.by_layer().items()}

    @property
    def primary_read_share(self) -> float:
        """The primary's share of all reads (the target: at most 2%)."""
        return max(self.primary_reads - self.background_primary, 0) / (self.reads or 1)


@dataclass
class Funnel:
    counts: LayerCounts
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # layer -> p50/p99/mean/count
    timeline: list[dict[str, float]] = field(default_factory=list)  # per bucket: shares by layer
    stale_reads_beyond_bound: int = 0
    stale_checks: int = 0

    def summary_line(self) -> str:
        c = self.counts
        parts = " | ".join(f"{count:,} → {name.replace('_', ' ')}" for name, count in c.by_layer().items())
        return f"Of {c.requests:,} requests: {parts}"


def latency_summary(samples: Mapping[str, list[float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for layer, values in samples.items():
        if not values:
            continue
        out[layer] = {
            "count": float(len(values)),
            "p50": round(percentile(values, 50), 3),
            "p99": round(percentile(values, 99), 3),
            "mean": round(sum(values) / len(values), 3),
        }
    return out


def timeline_shares(events: list[tuple[float, str, str, str]], bucket_s: float = 2.0) -> list[dict[str, float]]:
    """Per time bucket, the share of responses each layer answered (from the clients)."""
    if not events:
        return []
    buckets: dict[int, dict[str, int]] = {}
    for at, layer, _, _ in events:
        bucket = buckets.setdefault(int(at // bucket_s), {})
        bucket[layer] = bucket.get(layer, 0) + 1
    # The last bucket is usually a sliver (clients finishing): drop it when it is small,
    # or its few requests draw a spike that means nothing.
    ordered = sorted(buckets)
    if len(ordered) > 2:
        sizes = sorted(sum(buckets[i].values()) for i in ordered)
        if sum(buckets[ordered[-1]].values()) < sizes[len(sizes) // 2] / 4:
            ordered = ordered[:-1]
    rows = []
    for index in ordered:
        counts = buckets[index]
        total = sum(counts.values())
        row: dict[str, float] = {"t": index * bucket_s, "requests": float(total)}
        for layer in ("browser", "edge", "app_cache", "replica", "primary", "error"):
            row[layer] = counts.get(layer, 0) / total
        rows.append(row)
    return rows


def phase_counts(
    events: list[tuple[float, str, str, str]], bounds: list[float], names: tuple[str, ...]
) -> dict[str, dict[str, dict[str, int]]]:
    """Responses by phase, kind (read, asset, write) and layer, the app cache's reads by
    tier (``app_cache:l1``, ``app_cache:l2``): what answered before a fault, during it
    and after the repair. ``bounds`` are where each phase after the first begins
    (seconds into the load); ``names`` has one more entry."""
    if len(names) != len(bounds) + 1:
        raise ValueError(f"{len(bounds)} bounds make {len(bounds) + 1} phases, got {len(names)} names")
    out: dict[str, dict[str, dict[str, int]]] = {name: {} for name in names}
    for at, layer, kind, tier in events:
        phase = names[bisect.bisect_right(bounds, at)]
        by_layer = out[phase].setdefault(kind, {})
        name = f"{layer}:{tier}" if tier else layer
        by_layer[name] = by_layer.get(name, 0) + 1
    return out


def service_shares(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """Per time bucket, of the requests that reached the service (past the browser and
    the edge), the share the app cache, the replicas and the primary answered: where
    an outage of one tier shows as load moving to the next."""
    out = []
    for row in rows:
        total = row["app_cache"] + row["replica"] + row["primary"]
        if total > 0:
            out.append({"t": row["t"], **{k: row[k] / total for k in ("app_cache", "replica", "primary")}})
    return out
