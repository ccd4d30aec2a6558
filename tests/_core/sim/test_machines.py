"""Machines per layer from a capacity run's measured costs (pure)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from readscale._core.sim import predict
from readscale._core.sim.examples import TEXTBOOK
from readscale._core.sim.machines import plan_machines, unit_costs
from readscale.errors import ConfigurationError


def capacity_run(**over: Any) -> dict[str, Any]:
    configurations: dict[str, Any] = {
        "primary": {"cpu_ms_per_request": {"service": 0.9, "primary": 1.2, "r1": 0.0, "r2": 0.0}},
        "replicas": {"cpu_ms_per_request": {"service": 1.0, "primary": 0.01, "r1": 0.6, "r2": 0.5}},
        "cache": {"cpu_ms_per_request": {"service": 0.5, "redis": 0.01}, "redis_ms_per_command": 0.02},
        "edge": {"cpu_ms_per_request": {"edge": 0.1, "service": 0.02}},
    }
    configurations.update(over)
    return {"bench": "capacity", "machine": {"cores": 2}, "params": {"configurations": configurations}}


def test_unit_costs_take_each_layer_from_its_configuration() -> None:
    costs = unit_costs(capacity_run(), source="run.json")
    assert (costs.cores, costs.edge_ms, costs.app_cached_ms, costs.app_db_ms) == (2, 0.1, 0.5, 1.0)
    assert costs.redis_ms == 0.02 and costs.primary_ms == 1.2
    assert costs.replica_ms == pytest.approx(1.1)  # r1 + r2: a read costs one replica, the WAL replay all


def test_machines_are_the_cores_each_layer_needs_at_the_utilisation_target() -> None:
    prediction = predict(TEXTBOOK)
    costs = unit_costs(capacity_run())
    plan = plan_machines(prediction, costs, utilisation=0.5)
    by = {m.layer: m for m in plan.layers}
    edge = prediction.layer("edge")
    assert by["edge"].cores == pytest.approx(edge.arriving_rps * 0.1 / 1000)
    assert by["edge"].machines == math.ceil(by["edge"].cores / (2 * 0.5))
    app = prediction.layer("app_cache")
    assert by["app"].cores == pytest.approx((app.absorbed_rps * 0.5 + app.passed_rps * 1.0) / 1000)
    # Redis: one core per process, priced per L2 read (what the L1 did not answer).
    l2_reads = app.arriving_rps - prediction.l1_absorbed_rps
    assert by["redis"].requests_rps == pytest.approx(l2_reads)
    assert by["redis"].machines == math.ceil(l2_reads * 0.02 / 1000 / 0.5)
    assert by["replicas"].cores == pytest.approx(prediction.layer("replicas").absorbed_rps * 1.1 / 1000)
    assert by["primary"].machines >= 1
    assert plan.machines == sum(m.machines for m in plan.layers)
    assert plan.to_json()["layers"][0]["layer"] == "edge"


def test_more_headroom_means_more_machines() -> None:
    prediction, costs = predict(TEXTBOOK), unit_costs(capacity_run())
    assert plan_machines(prediction, costs, 0.3).machines > plan_machines(prediction, costs, 0.9).machines
    with pytest.raises(ConfigurationError, match="utilisation"):
        plan_machines(prediction, costs, 0)


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ({"bench": "cache"}, "not a `readscale bench capacity"),
        ({"bench": "capacity"}, "lacks params.configurations"),
        (capacity_run(edge={"cpu_ms_per_request": {}}), "'edge' configuration has no CPU figures"),
        (capacity_run(cache={"cpu_ms_per_request": {"service": 0.5}}), "no redis_ms_per_command"),
        (capacity_run(edge={"cpu_ms_per_request": {"service": 1.0}}), "no CPU figure for 'edge'"),
        (
            capacity_run(replicas={"cpu_ms_per_request": {"service": 1.0, "primary": 0.1}}),
            "names no replica group",
        ),
    ],
)
def test_a_capacity_run_missing_a_figure_is_refused_by_name(run: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        unit_costs(run)
