"""Calibration: parsing a demo run defensively, fitting, and recovering known parameters."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from readscale._core.sim import LAYERS, Locality, predict
from readscale._core.sim.calibrate import SHARE_FLOOR, LayerError, calibrate, check, parse_demo_run
from readscale.errors import ConfigurationError

SAMPLE = Path(__file__).resolve().parents[2] / "cli" / "demo_sample.json"


def sample() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SAMPLE.read_text())
    return data


def test_the_sample_parses_into_its_scenario() -> None:
    run = parse_demo_run(sample())
    traffic, layers = run.scenario.traffic, run.scenario.layers
    assert run.requests == 23_876
    assert traffic.rps == pytest.approx(23_876 / 90)
    assert traffic.duration_s == 90
    assert (traffic.keys, traffic.clients, traffic.zipf_alpha) == (5_000, 40, 0.99)
    assert (layers.browser_max_age_s, layers.edge_ttl_s, layers.cache_ttl_s) == (60, 3600, 300)
    assert (layers.l1_entries, layers.replicas, layers.replica_lag_ms) == (1000, 2, 8.0)
    assert run.scenario.latencies.replicas == 4.8
    assert math.fsum(run.shares.values()) == pytest.approx(1.0, abs=1e-9)


REQUIRED = [
    ("requests",),
    ("duration_s",),
    ("config",),
    *(("config", name) for name in sample()["config"]),
    *((f"share_{layer}",) for layer in LAYERS),
    ("latency_ms", "edge"),
]


@pytest.mark.parametrize("path", REQUIRED, ids=".".join)
def test_a_missing_field_is_named(path: tuple[str, ...]) -> None:
    data = sample()
    holder = data
    for key in path[:-1]:
        holder = holder[key]
    del holder[path[-1]]
    with pytest.raises(ConfigurationError, match=path[-1]):
        parse_demo_run(data)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("requests",), "many", "requests"),
        (("requests",), True, "requests"),
        (("config", "keys"), 12.5, "config.keys"),
        (("config", "zipf_alpha"), 0, "zipf_alpha"),
        (("config", "rps"), None, "config.rps"),
        (("share_edge",), 1.7, "between 0 and 1"),
        (("share_primary",), 0.2, "add up to"),
        (("duration_s",), 0, "duration_s"),
        (("config", "read_your_writes"), "maybe", "read_your_writes"),
    ],
)
def test_malformed_fields_are_refused(path: tuple[str, ...], value: object, message: str) -> None:
    data = sample()
    holder = data
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    with pytest.raises(ConfigurationError, match=message):
        parse_demo_run(data)


def test_not_an_object_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="JSON object"):
        parse_demo_run([1, 2, 3])


def test_optional_fields_are_used_and_latency_may_be_missing() -> None:
    data = sample()
    data["config"].update(
        public_share=0.6, l2_entries=2_000, app_processes=2, read_your_writes="window", ryw_window_s=1
    )
    del data["latency_ms"]
    run = parse_demo_run(data)
    layers = run.scenario.layers
    assert (layers.public_share, layers.l2_entries, layers.app_processes) == (0.6, 2_000, 2)
    assert layers.read_your_writes == "window"
    assert any("latency" in note for note in run.notes)


def test_calibrating_the_sample_reproduces_every_layer() -> None:
    result = calibrate(parse_demo_run(sample()))
    assert result.clamped == ()
    assert result.ok
    for err in result.after:
        assert err.error < 1e-3, err
    # the plain model is honestly reported, and it is not the fit
    assert max(e.error for e in result.before) > 0.2
    assert result.locality != Locality()
    assert result.to_json()["ok"] is True


def test_calibration_recovers_parameters_it_did_not_see() -> None:
    run = parse_demo_run(sample())
    truth = Locality(browser=0.5, edge=3.0, app_cache=0.7, ryw_effective_s=1.5)
    measured = predict(replace(run.scenario, locality=truth)).shares
    result = calibrate(replace(run, shares=measured))
    assert result.locality.browser == pytest.approx(truth.browser, rel=1e-3)
    assert result.locality.edge == pytest.approx(truth.edge, rel=1e-3)
    assert result.locality.app_cache == pytest.approx(truth.app_cache, rel=1e-3)
    assert result.locality.ryw_effective_s == pytest.approx(1.5, rel=1e-3)


def test_an_unreachable_share_is_clamped_and_reported() -> None:
    data = copy.deepcopy(sample())
    # Fewer primary reads than writes: read-your-writes cannot go below zero.
    data["share_primary"], data["share_replicas"] = 0.001, 0.1192
    result = calibrate(parse_demo_run(data))
    assert "primary" in result.clamped


@pytest.mark.parametrize(
    ("measured", "predicted", "error", "ok"),
    [
        (0.40, 0.44, 0.10, True),
        (0.40, 0.50, 0.25, False),
        (0.005, 0.008, 0.003 / SHARE_FLOOR, True),  # tiny share: judged against the 2-point floor
        (0.005, 0.010, 0.005 / SHARE_FLOOR, False),
    ],
)
def test_error_definition(measured: float, predicted: float, error: float, ok: bool) -> None:
    e = LayerError("edge", measured, predicted)
    assert e.error == pytest.approx(error)
    assert e.ok is ok


def test_parameters_fitted_on_one_run_predict_another() -> None:
    truth = Locality(browser=0.6, edge=0.3, app_cache=1.3, ryw_effective_s=0.7)
    run_a = parse_demo_run(sample())
    run_a = replace(run_a, shares=predict(replace(run_a.scenario, locality=truth)).shares)
    data = sample()
    data["config"].update(clients=120, keys=20_000, zipf_alpha=0.8)
    data["duration_s"], data["requests"] = 300.0, 150_000
    run_b = parse_demo_run(data)
    run_b = replace(run_b, shares=predict(replace(run_b.scenario, locality=truth)).shares)
    held_out = check(calibrate(run_a).locality, run_b)
    assert held_out.ok
    assert max(e.error for e in held_out.errors) < 1e-3
