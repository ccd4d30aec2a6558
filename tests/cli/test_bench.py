"""``readscale bench``: with --json, stdout holds one JSON object and nothing else, while
the progress of a run that takes minutes still reaches the operator on stderr."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from readscale.bench import harness
from readscale.bench.harness import BenchReport
from readscale.cli._app import app


def _tiny(*, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport:
    progress("round 1 of 1")
    report = BenchReport("tiny", params={"rounds": rounds, "quick": quick})
    report.add("answer", 42, "things")
    return report


@pytest.fixture
def tiny_bench(monkeypatch: pytest.MonkeyPatch) -> str:
    module = types.ModuleType("readscale_test_tiny_bench")
    module.run = _tiny  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(harness.BENCHES, "tiny", f"{module.__name__}:run")
    return "tiny"


def test_json_goes_to_stdout_and_progress_to_stderr(tiny_bench: str) -> None:
    result = CliRunner().invoke(app, ["bench", tiny_bench, "--json", "--rounds", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["bench"] == "tiny" and data["params"] == {"rounds": 2, "quick": False}
    assert data["results"] == [{"name": "answer", "value": 42, "unit": "things"}]
    assert "round 1 of 1" in result.stderr


def test_an_unknown_bench_is_named_with_the_choices(tiny_bench: str) -> None:
    result = CliRunner().invoke(app, ["bench", "nosuch"])
    assert result.exit_code != 0
    assert "nosuch" in result.stderr and "tiny" in result.stderr
