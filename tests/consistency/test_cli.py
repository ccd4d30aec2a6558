"""``readscale bench consistency --soak/--seed``: its options, its output and its exit code
(the soak itself is replaced by a stub here: a real one starts a private stack)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from readscale.bench import consistency
from readscale.cli._app import app


def test_harness_options_belong_to_the_consistency_bench() -> None:
    result = CliRunner().invoke(app, ["bench", "cache", "--soak", "5"])
    assert result.exit_code == 2
    assert "apply to `bench consistency` only" in result.stderr


def test_an_unknown_sabotage_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["bench", "consistency", "--seed", "1", "--sabotage", "everything"])
    assert result.exit_code == 2
    assert "--sabotage must be one of guard, merge, staleness, tombstone, bus" in result.stderr


def fake_soak(violations: int) -> Any:
    def soak(**kwargs: Any) -> dict[str, Any]:
        kwargs["progress"]("run 1 (seed 7, 10s): 100 operations")
        per = {"checked": 80, "exercised": 60, "violations": violations}
        return {
            "runs": 1, "operations": 100, "reads": 80, "writes": 20, "failed": 0, "violations": violations,
            "properties": {"read_your_writes": per}, "failing_seeds": [7] if violations else [],
            "seconds": 12.0, "first_seed": 7, "replay": [], "runs_detail": [],
            "reports": ["seed 7: the report"] if violations else [], "args": kwargs,
        }  # fmt: skip

    return soak


@pytest.mark.parametrize("violations", [0, 3])
def test_the_soak_prints_counts_per_property_and_fails_on_a_violation(
    monkeypatch: pytest.MonkeyPatch, violations: int
) -> None:
    monkeypatch.setattr(consistency, "soak", fake_soak(violations))
    result = CliRunner().invoke(app, ["bench", "consistency", "--soak", "60", "--seed", "7"])
    assert result.exit_code == (1 if violations else 0), result.output
    assert "read_your_writes" in result.stdout and "80" in result.stdout
    assert ("seed 7: the report" in result.stdout) == bool(violations)
    assert "run 1 (seed 7" in result.stderr


def test_the_soak_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consistency, "soak", fake_soak(0))
    result = CliRunner().invoke(app, ["bench", "consistency", "--soak", "60", "--json", "--sabotage", "bus"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["properties"]["read_your_writes"]["checked"] == 80
    assert data["args"]["seconds"] == 60 and data["args"]["sabotage"] == ["bus"]
    assert "reports" not in data


def saved_history(tmp_path: Any, *, enqueued: bool) -> Any:
    """A failing run's history as the harness keeps it: another session's write of k=1
    acknowledged, then this session's write of k=2 (through the router, or a write-behind
    enqueue), then this session's read of k=1 returning the old version."""
    from readscale.bench.consistency.record import HISTORY_FILE, Op, RunResult, check, save_history
    from readscale.bench.consistency.scenario import Scenario

    scenario = Scenario(seed=7, duration=1.0, processes=1, sessions=2, anonymous=0, keys=3, write_ratio=0.5,
                        cdc=False, cdc_only=0.0, tombstone_ttl=None, backend="redis", bus="shared",
                        read_block_delay=0.0, apis=("fetch",), faults=())  # fmt: skip
    ops = [
        Op(1, "t", "write", 1, "asgi", "session", 1, 0.0, 1.0, True, 1),
        Op(2, "s", "write", 2, "write_behind" if enqueued else "asgi", "session", 1, 2.0, 3.0, True, 1),
        Op(3, "s", "read", 1, "fetch", "session", 1, 4.0, 4.1, True, 0, token_sent=True),
    ]
    result = RunResult(scenario, check(ops, {}, scenario), ops, 0.0, {}, [], [], 5.0)
    path = tmp_path / HISTORY_FILE
    save_history(result, path)
    return path


@pytest.mark.parametrize("enqueued", [False, True])
def test_a_saved_history_is_checked_again(tmp_path: Any, enqueued: bool) -> None:
    path = saved_history(tmp_path, enqueued=enqueued)
    result = CliRunner().invoke(app, ["bench", "consistency", "--recheck", str(path)])
    # Through the router the session's token covers the other write: reading it back older
    # is a violation. A write-behind enqueue moves no token: the same read is allowed.
    assert result.exit_code == (0 if enqueued else 1), result.output
    assert ("returned version 0 < 1" in result.stdout) is not enqueued


def test_recheck_names_a_missing_or_foreign_file(tmp_path: Any) -> None:
    result = CliRunner().invoke(app, ["bench", "consistency", "--recheck", str(tmp_path / "nope.json")])
    assert result.exit_code == 1 and "no such file" in result.stderr
    (tmp_path / "other.json").write_text('{"hello": 1}')
    result = CliRunner().invoke(app, ["bench", "consistency", "--recheck", str(tmp_path / "other.json")])
    assert result.exit_code == 1 and "not a history saved by the harness" in result.stderr
