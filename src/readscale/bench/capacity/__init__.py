"""``readscale bench capacity``: how much traffic each layer lets the same machine serve.

The reference service (the demo's shop) runs four times on one machine, each time with
one more layer: reading the primary only; + read replicas; + the application cache (L1
and Redis); + the edge (Varnish in front). For each, an open-loop compiled load
generator (wrk with ``paced.lua``) steps the request rate over a Zipf-popular URL list
until the latency objective breaks (``search.py``), and the highest rate that met it is
that configuration's capacity. Beside it: the multiplier over primary-only and the CPU
time each process group spent per request (``cpu.py``), the physical cost the simulator
(``readscale sim``) builds on.

Everything shares this machine's cores, the load generator included: the figures are
what one machine does, not what each layer would do on its own hardware.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis

from readscale.bench.capacity.cpu import cpu_seconds
from readscale.bench.capacity.search import Objective, Search, failure
from readscale.bench.capacity.wrk import StepResult, run_step, write_paths, wrk_binary
from readscale.bench.harness import BenchReport
from readscale.demo.environment import DemoEnvironment, EnvironmentConfig


@dataclass(frozen=True)
class Configuration:
    name: str
    #: READSCALE_DEMO_LAYERS for the service.
    layers: str
    #: Where the load goes: the service itself, or the edge in front of it.
    via_edge: bool
    description: str


CONFIGURATIONS = (
    Configuration("primary", "", False, "the service reading the primary only"),
    Configuration("replicas", "replicas", False, "+ read replicas (2, streaming)"),
    Configuration("cache", "replicas,cache", False, "+ the application cache (L1 + Redis)"),
    Configuration("edge", "replicas,cache", True, "+ the edge (Varnish in front)"),
)


@dataclass
class Outcome:
    config: Configuration
    best: StepResult | None = None
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    #: Redis's CPU per command it ran (INFO's total_commands_processed), at the best step.
    redis_ms_per_command: float | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)


def _groups(env: DemoEnvironment) -> dict[str, list[int]]:
    stack = env.stack
    groups: dict[str, list[int]] = {
        "edge": [stack.varnish.pid or 0],
        "service": [env.pid("app") or 0],
        "redis": [stack.redis.pid or 0],
        "primary": [stack.primary.pid or 0],
    }
    for replica in stack.replicas:
        groups[replica.name] = [replica.pid or 0]
    groups["cdc+flusher"] = [env.pid("cdc") or 0, env.pid("flusher") or 0]
    return groups


def _measure(
    env: DemoEnvironment,
    config: Configuration,
    paths: Path,
    objective: Objective,
    start: float,
    step_s: float,
    precision: float,
    progress: Callable[[str], None],
) -> Outcome:
    url = env.edge_url if config.via_edge else env.app_url
    outcome = Outcome(config)
    progress(f"{config.name}: warming up")
    run_step(url, paths, min(start, 200.0), duration_s=2.0, objective_ms=objective.p99_ms)
    search = Search(precision=precision)
    redis = Redis.from_url(env.redis_url)
    while (rate := search.next_rate(start)) is not None:
        groups = _groups(env)
        commands = int(redis.info("stats")["total_commands_processed"])
        before = cpu_seconds(groups)
        step = run_step(url, paths, rate, duration_s=step_s, objective_ms=objective.p99_ms)
        after = cpu_seconds(groups)
        commands = int(redis.info("stats")["total_commands_processed"]) - commands - 1  # less our own INFO
        why = failure(step, objective)
        outcome.steps.append({**step.to_json(), "failed": why})
        progress(f"{config.name}: {rate:,.0f}/s → {step.rate:,.0f}/s, p99 {step.p99_ms:.1f} ms: {why or 'met'}")
        search = search.record(rate, why is None)
        if why is None and (outcome.best is None or rate > outcome.best.target_rate):
            outcome.best = step
            cpu = {name: after[name] - before[name] for name in groups}
            cpu["load generator"] = step.wrk_cpu_s
            outcome.cpu_ms_per_request = {
                name: round(1000 * seconds / step.requests, 4) for name, seconds in cpu.items() if step.requests
            }
            outcome.redis_ms_per_command = round(1000 * cpu["redis"] / commands, 5) if commands > 0 else None
    redis.close()
    return outcome


def run(*, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport:
    """Measure the four configurations in one run (``rounds`` is not used: one search each)."""
    del rounds
    wrk_binary()  # fail before starting anything when wrk is missing
    objective = Objective()
    step_s, precision, count = (2.0, 0.25, 20_000) if quick else (5.0, 0.10, 100_000)
    report = BenchReport(
        "capacity",
        params={
            "objective": objective.describe(),
            "step_s": step_s,
            "precision": precision,
            "load": "wrk, open loop (paced.lua), Zipf 0.9 over 5,000 products and 50 categories, "
            "the demo's read mix (product, category, trending, profile, balance); no writes",
            "service": "the demo's shop, uvicorn with 2 workers; PostgreSQL primary + 2 streaming replicas, "
            "Redis, Varnish; the load generator on the same machine",
        },
    )
    root = Path(tempfile.mkdtemp(prefix="readscale-bench-capacity-"))
    paths = root / "paths.txt"
    config = EnvironmentConfig(workers=2, replicas=2)
    write_paths(paths, products=config.size.products, categories=config.size.categories,
                users=config.size.users, count=count, seed=1)  # fmt: skip
    outcomes: list[Outcome] = []
    env = DemoEnvironment(config, progress=progress)
    try:
        env.start()
        start = 100.0
        for configuration in CONFIGURATIONS:
            env.restart_app(configuration.layers)
            outcome = _measure(env, configuration, paths, objective, start, step_s, precision, progress)
            outcomes.append(outcome)
            if outcome.best is not None:
                start = max(start, outcome.best.target_rate * 0.7)
    finally:
        env.close()
    _fill(report, outcomes, objective)
    return report


def _fill(report: BenchReport, outcomes: list[Outcome], objective: Objective) -> None:
    base = outcomes[0].best.target_rate if outcomes and outcomes[0].best else 0.0
    detail: dict[str, Any] = {}
    for outcome in outcomes:
        name, best = outcome.config.name, outcome.best
        rate = best.target_rate if best else 0.0
        report.add(f"{name}: sustained rate", rate, "req/s", f"{outcome.config.description}; {objective.describe()}")
        report.add(f"{name}: multiplier over primary only", rate / base if base else float("nan"), "x")
        if best is not None:
            report.add(f"{name}: p99 at that rate", best.p99_ms, "ms")
        for group, ms in outcome.cpu_ms_per_request.items():
            report.add(f"{name}: CPU per request, {group}", ms, "ms")
        detail[name] = {"layers": outcome.config.layers, "via_edge": outcome.config.via_edge,
                        "cpu_ms_per_request": outcome.cpu_ms_per_request,
                        "redis_ms_per_command": outcome.redis_ms_per_command, "steps": outcome.steps}  # fmt: skip
    report.params["configurations"] = detail
