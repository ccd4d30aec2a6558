"""The bench harness: JSON contract, medians, round-robin order."""

from __future__ import annotations

import json

from readscale.bench.harness import (
    BENCHES,
    BenchReport,
    Rounds,
    measure_rounds,
    round_robin,
)
from readscale.report.stats import percentile


def test_report_follows_the_json_contract() -> None:
    report = BenchReport("demo", params={"rounds": 3}, machine={"cores": 2})
    report.add("hit_ratio", 0.61, "ratio", "rounds: 0.6, 0.61, 0.62")
    data = json.loads(json.dumps(report.to_json()))
    assert data["bench"] == "demo"
    assert data["machine"] == {"cores": 2}
    assert data["results"] == [{"name": "hit_ratio", "value": 0.61, "unit": "ratio", "note": "rounds: 0.6, 0.61, 0.62"}]
    assert report.value("hit_ratio") == 0.61


def test_rounds_report_the_median() -> None:
    assert Rounds((3.0, 1.0, 2.0)).median == 2.0
    values = iter([10.0, 1.0, 2.0, 3.0])
    assert measure_rounds(lambda: next(values), 3, warmup=1).values == (1.0, 2.0, 3.0)


def test_round_robin_interleaves_contenders() -> None:
    order: list[str] = []
    result = round_robin({"a": lambda: order.append("a") or 1.0, "b": lambda: order.append("b") or 2.0}, 2, warmup=0)
    assert order == ["a", "b", "a", "b"]
    assert result["b"].median == 2.0


def test_percentile() -> None:
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([1, 2], 100) == 2
    assert percentile([10], 99) == 10


def test_every_registered_bench_names_a_function() -> None:
    for target in BENCHES.values():
        module, _, func = target.partition(":")
        assert module.startswith("readscale.bench.") and func
