"""The small harness every benchmark uses: repeated rounds, medians, machine facts.

Rounds run round-robin when a bench compares several contenders (round 1 of each, then
round 2, ...), so a noisy moment on a shared host hurts every contender alike; the
reported figure is the median of the rounds, and the spread travels with it.
"""

from __future__ import annotations

import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from readscale._build import build_info

# name -> "module:function". Modules are imported only when their bench runs, so a bench
# whose peer libraries are missing does not break the others.
BENCHES: dict[str, str] = {
    "stack": "readscale.bench.stack:run",
    "consistency": "readscale.bench.consistency:run",
    "cache": "readscale.bench.cache:run",
    "http": "readscale.bench.http:run",
    "replicas": "readscale.bench.replicas:run",
    "writes": "readscale.bench.writes:run",
    "hitratio": "readscale.bench.hitratio:run",
    "chaos": "readscale.bench.chaos:run",
    "capacity": "readscale.bench.capacity:run",
    "backends": "readscale.bench.backends:run",
    "memcached": "readscale.bench.memcached:run",
}


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "value": self.value, "unit": self.unit}
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class BenchReport:
    bench: str
    results: list[Metric] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=lambda: machine_info())  # noqa: PLW0108 (defined below)

    def add(self, name: str, value: float, unit: str, note: str = "") -> None:
        self.results.append(Metric(name, value, unit, note))

    def to_json(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "machine": self.machine,
            "params": self.params,
            "results": [m.to_json() for m in self.results],
        }

    def value(self, name: str) -> float:
        for metric in self.results:
            if metric.name == name:
                return metric.value
        raise KeyError(name)


@dataclass(frozen=True)
class Rounds:
    """Per-round figures of one measurement and their median."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self, fmt: str = "{:.3g}") -> str:
        return "rounds: " + ", ".join(fmt.format(v) for v in self.values)


def measure_rounds(fn: Callable[[], float], rounds: int, *, warmup: int = 1) -> Rounds:
    """Call ``fn`` (which returns one round's figure) ``warmup + rounds`` times."""
    for _ in range(warmup):
        fn()
    return Rounds(tuple(fn() for _ in range(rounds)))


def round_robin(contenders: dict[str, Callable[[], float]], rounds: int, *, warmup: int = 1) -> dict[str, Rounds]:
    """Measure several contenders in interleaved rounds (see module docstring)."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    per: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            per[name].append(fn())
    return {name: Rounds(tuple(values)) for name, values in per.items()}


def time_per_call(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call of ``fn`` over ``calls`` calls (one round)."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        # Which readscale ran: "pure", or "compiled (mypyc <version>): <modules>".
        "build": build_info(),
        "platform": platform.platform(),
        "load_avg_1m": round(load[0], 2),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class BenchFunction(Protocol):
    def __call__(self, *, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport: ...


def load_bench(name: str) -> BenchFunction:
    try:
        target = BENCHES[name]
    except KeyError:
        known = ", ".join(sorted(BENCHES))
        raise KeyError(f"unknown bench {name!r}; choose one of: {known}") from None
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    fn: BenchFunction = getattr(module, func_name)
    return fn


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")
