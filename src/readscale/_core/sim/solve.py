"""Capacity questions: the smallest setting that meets a target load.

Two settings can be solved for: the number of ``replicas`` and the app cache's size
(``cache-size``: the L2 entries). Targets, any combination:

- ``primary_rps``: the primary's whole load, reads *and* writes (the writes are fixed
  by the traffic: when they alone exceed the target, no setting helps, and the answer
  says so);
- ``replica_rps``: what one replica can take (its capacity);
- ``database_rps``: the reads reaching the database tier (replicas plus primary).

Both searches rely on the model's monotonicity: more replicas never raise the load per
replica nor the primary's; a bigger cache never raises the load it passes on. Replicas
only change the database split, so the caches are computed once and the split for
every count is exact arithmetic; the cache size is found by bisection on integers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from readscale._core.sim.funnel import assemble, funnel, predict
from readscale._core.sim.model import Prediction, Scenario, primary_writes_rps
from readscale.errors import ConfigurationError

Setting = Literal["replicas", "cache-size"]
SETTINGS: tuple[Setting, ...] = ("replicas", "cache-size")
MAX_REPLICAS = 10_000
CURVE_POINTS = 21


@dataclass(frozen=True, slots=True)
class Targets:
    """Upper bounds on loads, in requests per second; None: no bound."""

    primary_rps: float | None = None
    replica_rps: float | None = None
    database_rps: float | None = None

    def __post_init__(self) -> None:
        for name in ("primary_rps", "replica_rps", "database_rps"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"target {name} must be a number > 0, got {value!r}")

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.primary_rps, self.replica_rps, self.database_rps))

    def unmet(self, p: Prediction) -> list[str]:
        """The targets ``p`` misses, each as a short sentence."""
        out = []
        primary = p.layer("primary").absorbed_rps
        if self.primary_rps is not None and primary > self.primary_rps:
            out.append(f"the primary takes {primary:,.0f}/s, over {self.primary_rps:,.0f}/s")
        per_replica = p.layer("replicas").per_node_rps
        if self.replica_rps is not None and per_replica > self.replica_rps:
            out.append(f"each replica takes {per_replica:,.0f}/s, over {self.replica_rps:,.0f}/s")
        database = p.primary_reads_rps + p.layer("replicas").absorbed_rps
        if self.database_rps is not None and database > self.database_rps:
            out.append(f"{database:,.0f} reads/s reach the database, over {self.database_rps:,.0f}/s")
        return out

    def to_json(self) -> dict[str, float | None]:
        return {"primary_rps": self.primary_rps, "replica_rps": self.replica_rps, "database_rps": self.database_rps}


@dataclass(frozen=True, slots=True)
class Solution:
    """The smallest value of ``setting`` meeting ``targets`` (``value`` None: none does)."""

    setting: Setting
    value: int | None
    targets: Targets
    prediction: Prediction
    curve: tuple[tuple[int, Prediction], ...]
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "value": self.value,
            "feasible": self.value is not None,
            "reason": self.reason,
            "targets": self.targets.to_json(),
            "prediction": self.prediction.to_json(),
            "curve": [
                {
                    "value": value,
                    **{f"{load.layer}_rps": load.absorbed_rps for load in p.layers},
                    "per_replica_rps": p.layer("replicas").per_node_rps,
                }
                for value, p in self.curve
            ],
        }


def _grid(top: int, points: int = CURVE_POINTS) -> list[int]:
    """About ``points`` integers from 0 to ``top``, evenly spaced, both ends included."""
    if top <= points:
        return list(range(top + 1))
    return sorted({round(top * i / (points - 1)) for i in range(points)})


def _writes_note(scenario: Scenario, targets: Targets) -> str:
    writes = primary_writes_rps(scenario)
    if targets.primary_rps is not None and writes > targets.primary_rps:
        return (
            f"; writes alone put {writes:,.0f}/s on the primary, over the target of {targets.primary_rps:,.0f}/s: "
            "no read-path setting moves them (shard or batch the writes, or raise the target)"
        )
    return ""


def solve_replicas(scenario: Scenario, targets: Targets, *, max_replicas: int = MAX_REPLICAS) -> Solution:
    """The fewest replicas meeting ``targets`` (a primary or a per-replica bound is needed)."""
    if targets.primary_rps is None and targets.replica_rps is None:
        raise ConfigurationError("solving for replicas needs a target: the primary's load or a replica's capacity")
    flows = funnel(scenario)

    def at(n: int) -> Prediction:
        return assemble(replace(scenario, layers=replace(scenario.layers, replicas=n)), flows)

    answer = next((n for n in range(max_replicas + 1) if not targets.unmet(at(n))), None)
    top = max_replicas if answer is None else answer
    span = min(max_replicas, max(2 * top, top + 4, 8)) if answer is not None else min(max_replicas, 16)
    curve = tuple((n, at(n)) for n in _grid(span))
    if answer is None:
        missed = "; ".join(targets.unmet(at(max_replicas)))
        reason = f"no count up to {max_replicas} replicas meets the targets: {missed}{_writes_note(scenario, targets)}"
        return Solution("replicas", None, targets, at(max_replicas), curve, reason)
    reason = f"{answer} replica(s): the smallest count meeting every target"
    if answer > 0:
        reason += f" ({', '.join(targets.unmet(at(answer - 1)))} with one fewer)"
    return Solution("replicas", answer, targets, at(answer), curve, reason)


def solve_cache_size(scenario: Scenario, targets: Targets, progress: Callable[[str], None] | None = None) -> Solution:
    """The smallest L2 (Redis) size, in entries, meeting ``targets``."""
    if not targets.any:
        raise ConfigurationError(
            "solving for the cache size needs a target: the primary's, a replica's or the database's load"
        )
    if scenario.layers.cache_ttl_s <= 0:
        raise ConfigurationError("cache_ttl_s is 0: the app cache is off, so its size changes nothing")
    say = progress or (lambda message: None)
    keys = scenario.traffic.keys

    def at(size: int) -> Prediction:
        return predict(replace(scenario, layers=replace(scenario.layers, l2_entries=size)))

    largest = at(keys)
    if targets.unmet(largest):
        missed = "; ".join(targets.unmet(largest))
        reason = (
            f"even a cache holding all {keys:,} keys misses the targets: {missed}{_writes_note(scenario, targets)}; "
            f"past what its TTL ({scenario.layers.cache_ttl_s:g} s) and the writes let it keep, a bigger cache "
            "does not help: a longer cache TTL, a longer edge TTL or more replicas might"
        )
        curve = tuple((size, at(size)) for size in _grid(keys))
        return Solution("cache-size", None, targets, largest, curve, reason)
    lo, hi = -1, keys  # at(lo) misses (or lo = -1), at(hi) meets
    if not targets.unmet(at(0)):
        hi = 0
    else:
        lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        say(f"cache size between {lo + 1:,} and {hi:,} entries")
        if targets.unmet(at(mid)):
            lo = mid
        else:
            hi = mid
    curve = tuple((size, at(size)) for size in _grid(min(keys, max(2 * hi, 10))))
    reason = f"{hi:,} entries ({hi / keys:.1%} of the keys): the smallest L2 meeting every target"
    return Solution("cache-size", hi, targets, at(hi), curve, reason)


def solve(
    scenario: Scenario, setting: str, targets: Targets, progress: Callable[[str], None] | None = None
) -> Solution:
    """Dispatch on ``setting`` (``"replicas"`` or ``"cache-size"``)."""
    if setting == "replicas":
        return solve_replicas(scenario, targets)
    if setting == "cache-size":
        return solve_cache_size(scenario, targets, progress)
    raise ConfigurationError(f"solve must be one of {', '.join(SETTINGS)}, got {setting!r}")
