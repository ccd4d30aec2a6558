"""Capacity questions: the smallest replicas count or cache size meeting a target."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from readscale._core.sim import Layers, Scenario, Traffic, predict
from readscale._core.sim.solve import Targets, solve
from readscale.errors import ConfigurationError

BIG = Scenario(
    Traffic(rps=500_000, keys=1_000_000, zipf_alpha=0.9, reads_per_write=1_000, clients=50_000),
    Layers(browser_max_age_s=60, edge_ttl_s=30, public_share=0.5, cache_ttl_s=300, l2_entries=50_000, replicas=1),
)


def test_replicas_is_the_ceiling_of_load_over_capacity() -> None:
    sol = solve(BIG, "replicas", Targets(primary_rps=5_000, replica_rps=8_000))
    replica_reads = predict(BIG).layer("replicas").absorbed_rps
    assert sol.value == math.ceil(replica_reads / 8_000)
    assert sol.prediction.layer("replicas").per_node_rps <= 8_000
    fewer = predict(replace(BIG, layers=replace(BIG.layers, replicas=sol.value - 1)))
    assert fewer.layer("replicas").per_node_rps > 8_000
    values = [v for v, _ in sol.curve]
    assert values == sorted(values) and sol.value in values
    per_replica = [p.layer("replicas").per_node_rps for v, p in sol.curve if v > 0]
    assert per_replica == sorted(per_replica, reverse=True)


def test_writes_over_the_primary_target_have_no_answer_and_say_why() -> None:
    sol = solve(replace(BIG, traffic=replace(BIG.traffic, reads_per_write=100)), "replicas", Targets(primary_rps=2_000))
    assert sol.value is None
    assert "writes alone" in sol.reason


def test_cache_size_is_the_smallest_meeting_the_target() -> None:
    scenario = replace(BIG, layers=replace(BIG.layers, replicas=0))
    unbounded = predict(replace(scenario, layers=replace(scenario.layers, l2_entries=None)))
    target = (predict(scenario).layer("primary").absorbed_rps + unbounded.layer("primary").absorbed_rps) / 2
    sol = solve(scenario, "cache-size", Targets(primary_rps=target))
    assert sol.value is not None
    assert sol.prediction.layer("primary").absorbed_rps <= target

    def primary(size: int) -> float:
        return (
            predict(replace(scenario, layers=replace(scenario.layers, l2_entries=size))).layer("primary").absorbed_rps
        )

    assert primary(sol.value) <= target < primary(sol.value - 1)


def test_a_cache_cannot_beat_its_ttl() -> None:
    scenario = replace(BIG, layers=replace(BIG.layers, replicas=0))
    sol = solve(scenario, "cache-size", Targets(primary_rps=10.0))
    assert sol.value is None
    assert "TTL" in sol.reason


@pytest.mark.parametrize(
    ("setting", "targets", "message"),
    [
        ("replicas", Targets(database_rps=100), "needs a target"),
        ("cache-size", Targets(), "needs a target"),
        ("shards", Targets(primary_rps=1), "solve must be one of"),
    ],
)
def test_questions_without_an_answerable_target_are_refused(setting: str, targets: Targets, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        solve(BIG, setting, targets)


def test_targets_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="primary_rps"):
        Targets(primary_rps=-1)


def test_solution_json_has_the_curve() -> None:
    data = solve(BIG, "replicas", Targets(replica_rps=20_000)).to_json()
    assert data["feasible"] is True
    assert {"value", "primary_rps", "per_replica_rps", "replicas_rps"} <= set(data["curve"][0])
