"""``readscale sim`` as a user runs it: a subprocess, its JSON, its files and its errors."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import cli, cli_json

SAMPLE = Path(__file__).with_name("demo_sample.json")
LAYERS = ("browser", "edge", "app_cache", "replicas", "primary")


def test_textbook_example_within_one_percent(tmp_path: Path) -> None:
    chart, page = tmp_path / "funnel.svg", tmp_path / "funnel.html"
    data = cli_json("sim", "--example", "textbook", "--chart", str(chart), "--html", str(page))
    assert data["mode"] == "predict"
    assert data["textbook_within_1_percent"] is True
    assert [f["layer"] for f in data["textbook"]] == list(LAYERS)
    assert all(f["error"] <= 0.01 for f in data["textbook"])
    assert "gets past" in data["reading"]
    assert math.fsum(data["shares"].values()) == pytest.approx(1.0)
    assert data["requests_rps"] == 100_000
    ET.fromstring(chart.read_text())
    html = page.read_text()
    assert html.count("<svg") == 3 and "<script" not in html and "textbook figure" in html


def test_textbook_table_names_the_reading() -> None:
    out = cli("sim", "--example", "textbook").stdout
    assert "read as" in out and "within 1 % per layer" in out
    assert "Of 100,000 requests/s" in out


def test_calibration_on_the_sample_within_twenty_percent(tmp_path: Path) -> None:
    chart = tmp_path / "calibration.svg"
    data = cli_json("sim", "--calibrate", str(SAMPLE), "--chart", str(chart))
    assert data["mode"] == "calibrate"
    assert data["ok"] is True and data["clamped"] == []
    assert [x["layer"] for x in data["layers"]] == list(LAYERS)
    for layer in data["layers"]:
        assert layer["error"] <= 0.20, layer
    assert {"browser", "edge", "app_cache", "ryw_effective_s"} == set(data["locality"])
    root = ET.fromstring(chart.read_text())
    assert len([r for r in root.iter("{http://www.w3.org/2000/svg}rect") if len(r)]) == 15  # 3 rows x 5 layers


def test_calibrated_parameters_extrapolate_to_another_configuration() -> None:
    data = cli_json("sim", "--calibrate", str(SAMPLE), "--rps", "50000", "--clients", "20000", "--keys", "500000")
    assert data["prediction"]["requests_rps"] == 50_000
    assert data["prediction"]["scenario"]["locality"] == data["locality"]
    assert data["prediction"]["scenario"]["traffic"]["duration_s"] == 90.0  # the run's length is kept unless changed


def test_solve_replicas_with_a_chart(tmp_path: Path) -> None:
    chart = tmp_path / "replicas.svg"
    data = cli_json(
        "sim", "--rps", "500000", "--reads-per-write", "1000", "--keys", "10000000",
        "--target-primary-rps", "2000", "--replica-capacity-rps", "5000", "--solve", "replicas",
        "--chart", str(chart),
    )  # fmt: skip
    assert data["mode"] == "solve" and data["feasible"] is True
    n = data["value"]
    assert n >= 1
    at = {point["value"]: point for point in data["curve"]}
    assert at[n]["per_replica_rps"] <= 5000 < at[n - 1]["per_replica_rps"]
    assert at[n]["primary_rps"] <= 2000
    svg = chart.read_text()
    ET.fromstring(svg)
    assert "replica capacity" in svg and "target: primary" in svg


def test_solve_cache_size() -> None:
    data = cli_json(
        "sim", "--rps", "100000", "--keys", "1000000", "--replicas", "0", "--edge-ttl", "10",
        "--target-primary-rps", "20000", "--solve", "cache-size",
    )  # fmt: skip
    assert data["feasible"] is True
    assert data["prediction"]["layers"][4]["absorbed_rps"] <= 20_000
    assert data["prediction"]["scenario"]["layers"]["l2_entries"] == data["value"]


def test_an_impossible_target_exits_non_zero_and_says_why() -> None:
    proc = cli("sim", "--rps", "500000", "--target-primary-rps", "2000", "--solve", "replicas", "--json", check=False)
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["feasible"] is False and "writes alone" in data["reason"]


def bad_json(tmp_path: Path, **changes: object) -> Path:
    data = json.loads(SAMPLE.read_text())
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rps", "-5"], "rps must be a number > 0"),
        (["--rps", "1000", "--zipf-alpha", "0"], "zipf_alpha must be a number > 0"),
        (["--rps", "1000", "--public-share", "2"], "public_share"),
        (["--rps", "1000", "--replicas", "-1"], "replicas"),
        (["--rps", "1000", "--ryw", "sometimes"], "--ryw must be one of"),
        (["--rps", "1000", "--latency", "edge"], "LAYER=MS"),
        (["--rps", "1000", "--solve", "shards"], "--solve must be one of"),
        (["--rps", "1000", "--solve", "replicas"], "needs a target"),
        (["--rps", "1000", "--target-primary-rps", "10"], "need --solve"),
        (["--example", "nope"], "--example must be one of"),
        ([], "give --rps"),
        (["--calibrate", "/nonexistent/run.json"], "cannot read the demo run"),
    ],
)
def test_bad_arguments_are_one_clear_line(args: list[str], message: str) -> None:
    proc = cli("sim", *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"share_primary": 0.2}, "add up to"),
        ({"share_edge": None}, "missing field 'share_edge'"),
        ({"config": {"clients": 3}}, "missing fields 'config.keys', 'config.zipf_alpha'"),
        ({"requests": "lots"}, "'requests' must be an integer"),
    ],
)
def test_bad_calibration_files_are_refused(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    proc = cli("sim", "--calibrate", str(bad_json(tmp_path, **changes)), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_a_calibration_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text("{not json")
    proc = cli("sim", "--calibrate", str(path), check=False)
    assert proc.returncode != 0 and "is not JSON" in proc.stderr


def test_check_predicts_a_held_out_run(tmp_path: Path) -> None:
    fitted = cli_json("sim", "--calibrate", str(SAMPLE))
    other = json.loads(SAMPLE.read_text())
    other["config"].update(clients=80, keys=8_000)
    other["duration_s"], other["requests"] = 180.0, 96_000
    # What a run of that configuration would measure if the fitted parameters held.
    scenario = cli_json(
        "sim", "--calibrate", str(SAMPLE), "--clients", "80", "--keys", "8000", "--duration", "180",
        "--rps", str(96_000 / 180),
    )["prediction"]  # fmt: skip
    other.update({f"share_{k}": v for k, v in scenario["shares"].items()})
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    data = cli_json("sim", "--calibrate", str(SAMPLE), "--check", str(path))
    assert data["locality"] == fitted["locality"]
    assert data["check"]["ok"] is True
    assert all(layer["error"] < 1e-3 for layer in data["check"]["layers"])


def test_check_needs_calibrate(tmp_path: Path) -> None:
    proc = cli("sim", "--rps", "10", "--check", str(SAMPLE), check=False)
    assert proc.returncode != 0 and "give --calibrate too" in proc.stderr


def test_duration_zero_extrapolates_to_steady_state() -> None:
    data = cli_json("sim", "--calibrate", str(SAMPLE), "--duration", "0", "--rps", "100000", "--clients", "50000")
    assert data["prediction"]["scenario"]["traffic"]["duration_s"] is None


def test_costs_from_a_capacity_run_give_machines_per_layer(tmp_path: Path) -> None:
    from tests._core.sim.test_machines import capacity_run

    path = tmp_path / "capacity.json"
    path.write_text(json.dumps(capacity_run()))
    data = cli_json("sim", "--example", "textbook", "--costs", str(path), "--utilisation", "0.5")
    machines = data["machines"]
    assert [m["layer"] for m in machines["layers"]] == ["edge", "app", "redis", "replicas", "primary"]
    assert machines["utilisation"] == 0.5 and machines["machine_cores"] == 2
    assert machines["machines"] == sum(m["machines"] for m in machines["layers"]) > 5
    table = cli("sim", "--example", "textbook", "--costs", str(path)).stdout
    assert "machines of the measured kind" in table and "machines in all" in table


def test_costs_refuse_a_file_that_is_not_a_capacity_run(tmp_path: Path) -> None:
    path = tmp_path / "demo.json"
    path.write_text(json.dumps({"bench": "cache"}))
    proc = cli("sim", "--example", "textbook", "--costs", str(path), check=False)
    assert proc.returncode != 0 and "not a `readscale bench capacity" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli(
        "sim", "--rps", "1000", "--solve", "replicas", "--target-primary-rps", "5", "--costs", str(path), check=False
    )
    assert proc.returncode != 0 and "--costs prices a prediction" in proc.stderr
