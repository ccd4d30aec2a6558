"""The funnel itself: :func:`funnel` sweeps the popularity bins through the browsers, the
edge, L1 and L2; :func:`assemble` splits what is left between replicas and primary; and
:func:`predict` does both for a :class:`~readscale._core.sim.model.Scenario`.

See :mod:`readscale._core.sim` for the assumptions and references.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from readscale._core.sim.caches import INF, characteristic_time, entry_lifetime, hit_ratio, miss_fraction
from readscale._core.sim.model import LayerLoad, Prediction, Scenario, primary_writes_rps
from readscale._core.sim.popularity import Bin, zipf_bins


def _through_cache(
    bins: tuple[Bin, ...],
    arriving: list[float],
    *,
    ttl: float,
    mus: list[float],
    capacity: float | None,
    locality: float,
    duration: float | None,
    share: float = 1.0,
) -> list[float]:
    """Per-key rates that miss one cache (``share`` of the traffic may use it; the rest passes)."""
    if ttl <= 0.0 or share <= 0.0 or (capacity is not None and capacity <= 0):
        return list(arriving)
    seen = [locality * share * a for a in arriving]
    t_c = INF
    if capacity is not None:
        t_c = characteristic_time(
            [b.count for b in bins],
            lambda j, tc: hit_ratio(seen[j], entry_lifetime(seen[j], ttl, tc, mus[j])) if seen[j] > 0 else 0.0,
            capacity,
        )
    out = []
    for a, lam, mu in zip(arriving, seen, mus, strict=True):
        cached = share * a
        missed = cached * miss_fraction(lam, entry_lifetime(lam, ttl, t_c, mu), duration) if lam > 0 else cached
        out.append(a - cached + missed)
    return out


def _total(bins: tuple[Bin, ...], per_key: list[float]) -> float:
    return math.fsum(b.count * x for b, x in zip(bins, per_key, strict=True))


@dataclass(frozen=True, slots=True)
class Funnel:
    """Reads per second reaching each layer below the browsers (the caches' part of a prediction)."""

    edge_in: float
    app_in: float
    l2_in: float
    db_in: float


def funnel(scenario: Scenario) -> Funnel:
    """Sweep the popularity bins through the browsers, the edge, L1 and L2."""
    traffic, layers, loc = scenario.traffic, scenario.layers, scenario.locality
    duration = traffic.duration_s
    reads, writes = traffic.reads_rps, traffic.writes_rps
    bins = zipf_bins(traffic.keys, traffic.zipf_alpha, traffic.write_alpha)
    mus = [writes * b.p_write for b in bins]
    no_mu = [0.0] * len(bins)

    # Browsers: one private cache per client, fed by that client's own requests only.
    per_client = [reads / traffic.clients * b.p_read for b in bins]
    client_miss = _through_cache(
        bins,
        per_client,
        ttl=layers.browser_max_age_s,
        mus=no_mu,
        capacity=None,
        locality=loc.browser,
        duration=duration,
    )
    at_edge = [m * traffic.clients for m in client_miss]
    at_app = _through_cache(
        bins,
        at_edge,
        ttl=layers.edge_ttl_s,
        mus=mus if layers.edge_purge else no_mu,
        capacity=None,
        locality=loc.edge,
        duration=duration,
        share=layers.public_share,
    )
    procs = layers.app_processes
    l1_ttl = layers.cache_ttl_s if layers.l1_ttl_s is None else min(layers.l1_ttl_s, layers.cache_ttl_s)
    l1_miss = _through_cache(
        bins,
        [a / procs for a in at_app],
        ttl=l1_ttl,
        mus=mus,
        capacity=layers.l1_entries,
        locality=loc.app_cache,
        duration=duration,
    )
    at_l2 = [m * procs for m in l1_miss]
    at_db = _through_cache(
        bins,
        at_l2,
        ttl=layers.cache_ttl_s,
        mus=mus,
        capacity=layers.l2_entries,
        locality=loc.app_cache,
        duration=duration,
    )
    return Funnel(*(_total(bins, x) for x in (at_edge, at_app, at_l2, at_db)))


def ryw_fraction(scenario: Scenario) -> float:
    """Share of the reads reaching the database that must go to the primary (after a
    client's own write to the primary; a write-behind write moves no WAL position)."""
    traffic, layers, loc = scenario.traffic, scenario.layers, scenario.locality
    if layers.replicas == 0:
        return 1.0
    ryw_s = layers.ryw_duration_s if loc.ryw_effective_s is None else loc.ryw_effective_s
    writes = primary_writes_rps(scenario)
    if ryw_s == 0.0 or writes == 0.0:
        return 0.0
    return -math.expm1(-writes / traffic.clients * ryw_s)


def assemble(scenario: Scenario, flows: Funnel) -> Prediction:
    """The prediction from the caches' funnel: the database split and every share."""
    traffic, layers, lat = scenario.traffic, scenario.layers, scenario.latencies
    reads, total = traffic.reads_rps, traffic.rps
    writes = primary_writes_rps(scenario)
    behind = traffic.writes_rps - writes  # acknowledged by the app cache's write-behind
    ryw = ryw_fraction(scenario)
    primary_reads = flows.db_in * ryw
    replica_reads = flows.db_in - primary_reads

    def load(name: str, arriving: float, absorbed: float, nodes: int = 1) -> LayerLoad:
        return LayerLoad(name, arriving, absorbed, absorbed / total, lat.of(name), nodes)

    return Prediction(
        scenario=scenario,
        layers=(
            load("browser", reads, reads - flows.edge_in, traffic.clients),
            load("edge", flows.edge_in, flows.edge_in - flows.app_in),
            load("app_cache", flows.app_in + behind, flows.app_in - flows.db_in + behind, layers.app_processes),
            load("replicas", replica_reads, replica_reads, layers.replicas),
            load("primary", primary_reads + writes, primary_reads + writes),
        ),
        l1_absorbed_rps=flows.app_in - flows.l2_in,
        l2_absorbed_rps=flows.l2_in - flows.db_in,
        primary_reads_rps=primary_reads,
        ryw_fraction=ryw,
    )


def predict(scenario: Scenario) -> Prediction:
    """The load each layer takes, for steady state or for a run from cold caches.

    Pure: the same scenario always gives the same prediction.
    """
    return assemble(scenario, funnel(scenario))
