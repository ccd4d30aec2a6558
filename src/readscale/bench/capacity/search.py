"""Finding the highest sustained rate: the objective, one step's verdict, the next step.

Pure (no I/O, no clock): the bench runs a step at the rate this module names, then asks
it whether the step met the objective and which rate to try next. Rates double until a
step fails, then the gap between the best passing and the lowest failing rate is halved
geometrically until it is within ``precision``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from readscale.bench.capacity.wrk import StepResult


@dataclass(frozen=True)
class Objective:
    """What "sustained" means: every answer a success, the 99th percentile of latency
    within ``p99_ms`` (both of answers and of how late sends were behind schedule, so a
    server that queues cannot hide it by slowing the load down), and the achieved rate
    at least ``min_achieved`` of the target."""

    p99_ms: float = 50.0
    max_errors: int = 0
    min_achieved: float = 0.95

    def describe(self) -> str:
        return f"p99 <= {self.p99_ms:g} ms, {self.max_errors} errors, >= {self.min_achieved:.0%} of the target rate"


def failure(step: StepResult, objective: Objective) -> str | None:
    """Why ``step`` missed the objective, or None if it met it."""
    if step.errors > objective.max_errors:
        return f"{step.errors} errors"
    if step.p99_ms > objective.p99_ms:
        return f"p99 {step.p99_ms:.1f} ms"
    if step.late_p99_ms > objective.p99_ms:
        return f"sends p99 {step.late_p99_ms:.0f} ms behind schedule"
    if step.rate < objective.min_achieved * step.target_rate:
        return f"achieved {step.rate:.0f}/s of {step.target_rate:.0f}/s"
    return None


@dataclass(frozen=True)
class Search:
    """The state of one search: the best passing and the lowest failing rate so far."""

    passed: float | None = None
    failed: float | None = None
    factor: float = 2.0
    precision: float = 0.10
    floor: float = 5.0

    def record(self, rate: float, ok: bool) -> Search:
        if ok:
            passed = rate if self.passed is None else max(self.passed, rate)
            return Search(passed, self.failed, self.factor, self.precision, self.floor)
        failed = rate if self.failed is None else min(self.failed, rate)
        return Search(self.passed, failed, self.factor, self.precision, self.floor)

    def next_rate(self, start: float) -> float | None:
        """The next rate to try, or None when the search is over."""
        if self.passed is None and self.failed is None:
            return start
        if self.failed is None:
            assert self.passed is not None
            return self.passed * self.factor
        if self.passed is None:
            lower = self.failed / self.factor
            return lower if lower >= self.floor else None
        if self.failed <= self.passed * (1 + self.precision):
            return None
        return math.sqrt(self.passed * self.failed)
