"""Acceptance (issue 12): randomized schedules of reads and writes through every read API,
with faults, against two or more service processes, each history checked for
read-your-writes, monotonic reads, bounded staleness and the invalidation bound.

Every seed runs its own scenario (``readscale.bench.consistency_scenario.draw_scenario``):
a failure prints the scenario, the violations with the operations around them, and the
command that replays it (``readscale bench consistency --seed N --duration D``). Longer
runs: ``readscale bench consistency --soak SECONDS``. The harness is proved able to fail:
each guarantee, switched off by the application (``sabotage``), shows violations.
"""

from __future__ import annotations

import pytest

from readscale._core.history import (
    BOUNDED_STALENESS,
    INVALIDATION_BOUND,
    MONOTONIC_READS,
    READ_YOUR_WRITES,
)
from readscale.bench.consistency_harness import RunResult, prepare_stack, run
from readscale.bench.consistency_scenario import Fault, Scenario, draw_scenario
from readscale.stack import Stack

pytestmark = [pytest.mark.stack, pytest.mark.chaos, pytest.mark.slow]

#: Seconds of load per seed. Short, so that many seeds fit in CI's time; the soak runs
#: them for minutes (``readscale bench consistency --soak``).
DURATION = 6.0
#: The seeds CI runs: together they cover every dimension (tests/consistency/test_scenarios.py).
SEEDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 175)


@pytest.fixture(scope="module")
def stack(pg_stack: Stack) -> Stack:
    prepare_stack(pg_stack)
    return pg_stack


def explain(result: RunResult) -> str:
    return "\n" + result.report(violations=8)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_random_schedule_keeps_every_guarantee(stack: Stack, seed: int) -> None:
    result = run(stack, draw_scenario(seed, DURATION))
    assert result.verdict.ok, explain(result)
    assert result.reads > 100, explain(result)
    counts = result.verdict.counts
    # The run could have failed: reads whose floor was above the initial version.
    assert counts[READ_YOUR_WRITES].exercised > 0, explain(result)
    assert counts[MONOTONIC_READS].exercised > 0, explain(result)


# -- the harness fails when a guarantee is switched off -----------------------------------------


def sabotaged(seed: int, sabotage: str, faults: tuple[Fault, ...], **changes: object) -> Scenario:
    """A scenario in which the guarantee ``sabotage`` switches off is needed at once."""
    base = draw_scenario(seed, DURATION)
    return base.with_(sabotage=(sabotage,), faults=faults, **changes)


LAGGING = (Fault(0.0, "delay", "r1", 2.0), Fault(0.0, "delay", "r2", 0.0))


@pytest.mark.parametrize(
    ("sabotage", "prop", "changes"),
    [
        ("guard", READ_YOUR_WRITES, {"apis": ("fetch", "fetch_one", "read", "sqlalchemy", "django")}),
        ("merge", MONOTONIC_READS, {"apis": ("fetch", "fetch_one", "read", "sqlalchemy", "django")}),
        ("staleness", BOUNDED_STALENESS, {"apis": ("fetch", "fetch_one", "read", "sqlalchemy")}),
        ("tombstone", INVALIDATION_BOUND, {"apis": ("cache_key", "cache_tag", "dj_cache"), "anonymous": 4}),
        ("bus", INVALIDATION_BOUND, {"apis": ("cache_key", "cached", "cache_profile", "dj_cache"), "processes": 2}),
    ],
)
def test_the_checker_sees_a_guarantee_switched_off(
    stack: Stack, sabotage: str, prop: str, changes: dict[str, object]
) -> None:
    scenario = sabotaged(101, sabotage, LAGGING, cdc=False, cdc_only=0.0, **changes)
    result = run(stack, scenario)
    assert result.verdict.counts[prop].violations > 0, explain(result)
