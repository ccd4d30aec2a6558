"""The funnel model: the textbook example, shares, monotonicity, the database split, bad input.

Shares count writes: every write is a request the primary serves, so the five shares
(browser, edge, app cache, replicas, primary) are of reads plus writes and sum to 1.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from readscale._core.sim import LAYERS, Latencies, Layers, Locality, Scenario, Traffic, predict
from readscale._core.sim.examples import TEXTBOOK, textbook_figures
from readscale.errors import ConfigurationError


def test_textbook_example_within_one_percent_per_layer() -> None:
    p = predict(TEXTBOOK)
    figures = {f.layer: f for f in textbook_figures(p)}
    assert set(figures) == set(LAYERS)
    for figure in figures.values():
        assert figure.error <= 0.01, figure
    # The reading: absorbed loads sum to the headline 100,000 (99,200 reads + 800 writes).
    assert math.fsum(load.absorbed_rps for load in p.layers) == pytest.approx(100_000)
    assert p.writes_rps == pytest.approx(800)
    assert p.layer("replicas").nodes == 3


def test_textbook_under_the_time_window_rule_loads_the_primary_more() -> None:
    lsn = predict(TEXTBOOK)
    window = predict(replace(TEXTBOOK, layers=replace(TEXTBOOK.layers, read_your_writes="window", ryw_window_s=2.0)))
    assert window.layer("primary").absorbed_rps > lsn.layer("primary").absorbed_rps + 50
    assert window.layer("replicas").per_node_rps < lsn.layer("replicas").per_node_rps


def test_prediction_is_deterministic() -> None:
    assert predict(TEXTBOOK) == predict(TEXTBOOK)


def test_no_replica_sends_every_database_read_to_the_primary() -> None:
    p = predict(replace(TEXTBOOK, layers=replace(TEXTBOOK.layers, replicas=0)))
    assert p.layer("replicas").absorbed_rps == 0
    assert p.ryw_fraction == 1.0
    assert p.layer("primary").absorbed_rps == pytest.approx(p.layer("app_cache").passed_rps + p.writes_rps)


def test_read_only_traffic_leaves_the_primary_idle() -> None:
    p = predict(Scenario(Traffic(rps=10_000, keys=1_000, reads_per_write=math.inf, clients=100)))
    assert p.writes_rps == 0
    assert p.layer("primary").absorbed_rps == 0


def test_off_caches_pass_everything() -> None:
    layers = Layers(browser_max_age_s=0, edge_ttl_s=0, cache_ttl_s=0, replicas=2)
    p = predict(Scenario(Traffic(rps=1_000, keys=500, clients=10), layers))
    for name in ("browser", "edge", "app_cache"):
        assert p.layer(name).absorbed_rps == pytest.approx(0, abs=1e-9)
    assert p.layer("replicas").per_node_rps == pytest.approx(p.reads_rps * (1 - p.ryw_fraction) / 2)


def test_write_behind_moves_writes_from_the_primary_to_the_app_cache() -> None:
    plain = predict(TEXTBOOK)
    behind = predict(replace(TEXTBOOK, layers=replace(TEXTBOOK.layers, write_behind_share=0.5)))
    moved = 0.5 * TEXTBOOK.traffic.writes_rps
    assert behind.writes_rps == pytest.approx(plain.writes_rps - moved)
    assert behind.layer("app_cache").absorbed_rps == pytest.approx(plain.layer("app_cache").absorbed_rps + moved)
    # Fewer writes to the primary: fewer clients inside their read-your-writes window.
    assert behind.ryw_fraction < plain.ryw_fraction
    assert math.fsum(behind.shares.values()) == pytest.approx(1.0)


def test_private_routes_skip_the_edge() -> None:
    private = predict(Scenario(Traffic(rps=1_000, keys=500, clients=10), Layers(public_share=0.0)))
    assert private.layer("edge").absorbed_rps == 0


def test_mean_latency_weights_each_layer_by_its_share() -> None:
    lat = Latencies(browser=0, edge=1, app_cache=2, replicas=3, primary=4)
    p = predict(replace(TEXTBOOK, latencies=lat))
    expected = sum(load.share * lat.of(load.layer) for load in p.layers)
    assert p.mean_latency_ms == pytest.approx(expected)


def test_json_has_every_layer_and_no_infinity() -> None:
    data = predict(Scenario(Traffic(rps=100, keys=50, clients=2), Layers(edge_ttl_s=math.inf))).to_json()
    assert [x["layer"] for x in data["layers"]] == list(LAYERS)
    assert data["scenario"]["layers"]["edge_ttl_s"] == "inf"
    assert sum(data["shares"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Traffic(rps=-5), "rps"),
        (lambda: Traffic(rps=0), "rps"),
        (lambda: Traffic(rps=10, zipf_alpha=0), "zipf_alpha"),
        (lambda: Traffic(rps=10, zipf_alpha=-1), "zipf_alpha"),
        (lambda: Traffic(rps=10, keys=0), "keys"),
        (lambda: Traffic(rps=10, clients=0), "clients"),
        (lambda: Traffic(rps=10, reads_per_write=0), "reads_per_write"),
        (lambda: Traffic(rps=10, duration_s=-1), "duration_s"),
        (lambda: Traffic(rps=math.nan), "rps"),
        (lambda: Layers(public_share=1.5), "public_share"),
        (lambda: Layers(edge_ttl_s=-1), "edge_ttl_s"),
        (lambda: Layers(replicas=-1), "replicas"),
        (lambda: Layers(l2_entries=-3), "l2_entries"),
        (lambda: Layers(read_your_writes="sometimes"), "read_your_writes"),  # type: ignore[arg-type]
        (lambda: Layers(write_behind_share=1.2), "write_behind_share"),
        (lambda: Latencies(edge=-0.1), "latency_ms.edge"),
        (lambda: Locality(browser=0), "locality.browser"),
    ],
)
def test_bad_input_names_the_field(build: object, field: str) -> None:
    with pytest.raises(ConfigurationError, match=field.replace(".", r"\.")):
        build()  # type: ignore[operator]


# -- properties ---------------------------------------------------------------------------

traffics = st.builds(
    Traffic,
    rps=st.floats(min_value=1.0, max_value=1e6),
    keys=st.integers(min_value=1, max_value=5_000),
    zipf_alpha=st.floats(min_value=0.05, max_value=2.0),
    reads_per_write=st.one_of(st.floats(min_value=0.5, max_value=1e4), st.just(math.inf)),
    clients=st.integers(min_value=1, max_value=100_000),
    write_alpha=st.one_of(st.none(), st.floats(min_value=0.0, max_value=2.0)),
    duration_s=st.one_of(st.none(), st.floats(min_value=1.0, max_value=3_600.0)),
)
ttls = st.one_of(st.just(0.0), st.floats(min_value=0.01, max_value=1e5), st.just(math.inf))
layer_settings = st.builds(
    Layers,
    browser_max_age_s=ttls,
    edge_ttl_s=ttls,
    public_share=st.floats(min_value=0.0, max_value=1.0),
    edge_purge=st.booleans(),
    cache_ttl_s=ttls,
    l1_entries=st.integers(min_value=0, max_value=3_000),
    app_processes=st.integers(min_value=1, max_value=8),
    l2_entries=st.one_of(st.none(), st.integers(min_value=0, max_value=6_000)),
    replicas=st.integers(min_value=0, max_value=10),
    replica_lag_ms=st.floats(min_value=0.0, max_value=10_000.0),
    read_your_writes=st.sampled_from(["lsn", "window", "none"]),
    ryw_window_s=st.floats(min_value=0.0, max_value=60.0),
    write_behind_share=st.floats(min_value=0.0, max_value=1.0),
)
scenarios = st.builds(Scenario, traffic=traffics, layers=layer_settings)
FEW = settings(max_examples=60, deadline=None)
SLACK = 1e-9


@given(scenario=scenarios)
@FEW
def test_shares_are_fractions_that_sum_to_one(scenario: Scenario) -> None:
    p = predict(scenario)
    for load in p.layers:
        assert -SLACK <= load.share <= 1 + SLACK, load
        assert load.absorbed_rps <= load.arriving_rps * (1 + SLACK) + SLACK, load
    assert math.fsum(p.shares.values()) == pytest.approx(1.0, abs=1e-9)
    assert p.layer("primary").absorbed_rps >= p.writes_rps * (1 - SLACK)


def _tolerance(scenario: Scenario) -> float:
    """Exact in steady state; within 1e-4 in a cold run, where Che's steady-state t_c is
    applied to a run shorter than the TTL (a bigger TTL shrinks t_c a little)."""
    return 1e-9 if scenario.traffic.duration_s is None else 1e-4


def _grow(value: float, factor: float) -> float:
    return value * factor if value > 0 else 1.0


@pytest.mark.parametrize(
    ("layer", "setting"),
    [
        ("browser", "browser_max_age_s"),
        ("edge", "edge_ttl_s"),
        ("app_cache", "cache_ttl_s"),
        ("app_cache", "l2_entries"),
        ("app_cache", "l1_entries"),
    ],
)
@given(scenario=scenarios, factor=st.floats(min_value=1.01, max_value=50.0))
@FEW
def test_longer_ttl_or_bigger_cache_never_lowers_its_hit_ratio(
    layer: str, setting: str, scenario: Scenario, factor: float
) -> None:
    current = getattr(scenario.layers, setting)
    if current is None:
        return  # unbounded already
    bigger = type(current)(_grow(current, factor)) if setting.endswith("entries") else _grow(current, factor)
    if bigger == current:
        return
    before = predict(scenario).layer(layer)
    after = predict(replace(scenario, layers=replace(scenario.layers, **{setting: bigger}))).layer(layer)
    tol = _tolerance(scenario) * max(before.arriving_rps, 1.0)
    assert after.arriving_rps == pytest.approx(before.arriving_rps, rel=1e-9)
    assert after.absorbed_rps >= before.absorbed_rps - tol
    assert after.passed_rps <= before.passed_rps + tol


@given(scenario=scenarios, more=st.integers(min_value=1, max_value=20))
@FEW
def test_more_replicas_never_raise_the_load_per_replica(scenario: Scenario, more: int) -> None:
    before = predict(scenario)
    after = predict(replace(scenario, layers=replace(scenario.layers, replicas=scenario.layers.replicas + more)))
    if scenario.layers.replicas > 0:
        assert after.layer("replicas").per_node_rps <= before.layer("replicas").per_node_rps * (1 + SLACK)
    assert after.layer("primary").absorbed_rps <= before.layer("primary").absorbed_rps * (1 + SLACK)


@given(scenario=scenarios, factor=st.floats(min_value=1.01, max_value=100.0))
@FEW
def test_higher_locality_never_lowers_that_layers_hit_ratio(scenario: Scenario, factor: float) -> None:
    for layer in ("browser", "edge", "app_cache"):
        before = predict(scenario).layer(layer)
        loc = replace(scenario.locality, **{layer: factor})
        after = predict(replace(scenario, locality=loc)).layer(layer)
        assert after.absorbed_rps >= before.absorbed_rps - _tolerance(scenario) * max(before.arriving_rps, 1.0)
