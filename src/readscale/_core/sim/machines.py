"""Machines per layer: the model's loads priced at costs measured on real servers.

``readscale bench capacity --json`` measures, on one machine, the CPU time each process
group spends per request in four configurations of the reference service. From those
runs this module takes one unit cost per layer (CPU milliseconds per request the layer
handles) and turns a :class:`~readscale._core.sim.model.Prediction`'s loads into cores,
then into machines of the measured kind at a utilisation target (headroom for peaks and
failover):

============  =====================================================  ==========================
layer         work per request it handles                            measured in configuration
============  =====================================================  ==========================
edge          every request reaching the edge (hit or miss)          ``edge``: the edge group
app           a request the app cache answered                       ``cache``: the service
app           a request the service sends to the database            ``replicas``: the service
redis         a command (an L2 read), per INFO's command count       ``cache``: Redis
replicas      a read a replica serves                                ``replicas``: all replicas
primary       a read or write the primary serves                     ``primary``: the primary
============  =====================================================  ==========================

Redis runs commands on one core, so its cores are Redis processes (shards of a Redis
Cluster), each on its own core; every other layer uses all of a machine's cores. A
write is priced as a primary read (a measured write cost is not in the capacity run).
Pure: the caller reads the file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from readscale._core.sim.model import Prediction
from readscale.errors import ConfigurationError

#: Share of a machine's CPU a layer may use in the plan (the rest is headroom).
UTILISATION = 0.6


@dataclass(frozen=True)
class UnitCosts:
    """CPU milliseconds per request, per layer, and the measured machine's cores."""

    cores: int
    edge_ms: float
    app_cached_ms: float
    app_db_ms: float
    #: Per Redis command: the L2 reads (requests the L1 did not answer) are priced at one each.
    redis_ms: float
    replica_ms: float
    primary_ms: float
    source: str = ""


def _cpu(configurations: Mapping[str, Any], name: str) -> Mapping[str, float]:
    try:
        cpu = configurations[name]["cpu_ms_per_request"]
    except (KeyError, TypeError):
        raise ConfigurationError(f"the capacity run has no CPU figures for the {name!r} configuration") from None
    if not isinstance(cpu, Mapping) or not cpu:
        raise ConfigurationError(
            f"the capacity run's {name!r} configuration has no CPU figures (no step met the objective)"
        )
    return cpu


def _group(cpu: Mapping[str, float], group: str, config: str) -> float:
    value = cpu.get(group)
    if not isinstance(value, int | float) or value < 0 or math.isnan(value):
        raise ConfigurationError(f"the capacity run's {config!r} configuration has no CPU figure for {group!r}")
    return float(value)


def _redis_ms(configurations: Mapping[str, Any]) -> float:
    value = configurations.get("cache", {}).get("redis_ms_per_command")
    if not isinstance(value, int | float) or value < 0:
        raise ConfigurationError("the capacity run's 'cache' configuration has no redis_ms_per_command")
    return float(value)


def unit_costs(run: Mapping[str, Any], source: str = "") -> UnitCosts:
    """Unit costs from a ``readscale bench capacity --json`` object; a clear error
    naming what is missing otherwise."""
    if run.get("bench") != "capacity":
        raise ConfigurationError(f"not a `readscale bench capacity --json` result (bench = {run.get('bench')!r})")
    try:
        configurations = run["params"]["configurations"]
        cores = int(run["machine"]["cores"])
    except (KeyError, TypeError, ValueError):
        raise ConfigurationError("the capacity run lacks params.configurations or machine.cores") from None
    primary = _cpu(configurations, "primary")
    replicas = _cpu(configurations, "replicas")
    cache = _cpu(configurations, "cache")
    edge = _cpu(configurations, "edge")
    replica_groups = [name for name in replicas if name.startswith("r") and name[1:].isdigit()]
    if not replica_groups:
        raise ConfigurationError("the capacity run's 'replicas' configuration names no replica group (r1, r2, ...)")
    return UnitCosts(
        cores=cores,
        edge_ms=_group(edge, "edge", "edge"),
        app_cached_ms=_group(cache, "service", "cache"),
        app_db_ms=_group(replicas, "service", "replicas"),
        redis_ms=_redis_ms(configurations),
        replica_ms=sum(_group(replicas, name, "replicas") for name in replica_groups),
        primary_ms=_group(primary, "primary", "primary"),
        source=source,
    )


@dataclass(frozen=True)
class LayerMachines:
    layer: str
    requests_rps: float
    cpu_ms_per_request: float
    cores: float
    machines: int
    #: Cores one machine (or one Redis process) gives this layer.
    cores_per_machine: int


@dataclass(frozen=True)
class MachinePlan:
    layers: tuple[LayerMachines, ...]
    utilisation: float
    costs: UnitCosts

    @property
    def machines(self) -> int:
        return sum(layer.machines for layer in self.layers)

    def to_json(self) -> dict[str, Any]:
        return {
            "utilisation": self.utilisation,
            "machine_cores": self.costs.cores,
            "costs_from": self.costs.source,
            "machines": self.machines,
            "layers": [
                {"layer": m.layer, "requests_rps": round(m.requests_rps, 1),
                 "cpu_ms_per_request": m.cpu_ms_per_request, "cores": round(m.cores, 2),
                 "machines": m.machines, "cores_per_machine": m.cores_per_machine}
                for m in self.layers
            ],
        }  # fmt: skip


def plan_machines(prediction: Prediction, costs: UnitCosts, utilisation: float = UTILISATION) -> MachinePlan:
    """How many machines of the measured kind each layer needs for ``prediction``'s loads."""
    if not 0 < utilisation <= 1:
        raise ConfigurationError(f"utilisation must be in (0, 1], got {utilisation}")
    edge = prediction.layer("edge")
    app = prediction.layer("app_cache")
    replicas = prediction.layer("replicas")
    primary = prediction.layer("primary")
    l2_reads = max(0.0, app.arriving_rps - prediction.l1_absorbed_rps)
    app_cpu = app.absorbed_rps * costs.app_cached_ms + app.passed_rps * costs.app_db_ms
    rows = (
        ("edge", edge.arriving_rps, edge.arriving_rps * costs.edge_ms, costs.cores),
        ("app", app.arriving_rps, app_cpu, costs.cores),
        ("redis", l2_reads, l2_reads * costs.redis_ms, 1),
        ("replicas", replicas.absorbed_rps, replicas.absorbed_rps * costs.replica_ms, costs.cores),
        ("primary", primary.absorbed_rps, primary.absorbed_rps * costs.primary_ms, costs.cores),
    )
    layers = []
    for layer, rps, cpu_ms_per_s, per_machine in rows:
        cores = cpu_ms_per_s / 1000
        machines = math.ceil(cores / (per_machine * utilisation) - 1e-9) if cores > 0 else 0
        if layer == "primary":
            machines = max(1, machines)  # one primary, whatever its load (more means sharding)
        per_request = cpu_ms_per_s / rps if rps > 0 else 0.0
        layers.append(LayerMachines(layer, rps, round(per_request, 4), cores, machines, per_machine))
    return MachinePlan(tuple(layers), utilisation, costs)
