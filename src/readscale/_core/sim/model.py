"""The layered read path as a funnel: traffic and settings in, load per layer out.

See :mod:`readscale._core.sim` for the assumptions and references. This module holds the
typed inputs (:class:`Traffic`, :class:`Layers`, :class:`Latencies`, :class:`Locality`,
bundled as a :class:`Scenario`) and the output (:class:`Prediction` of :class:`LayerLoad`);
:mod:`readscale._core.sim.funnel` computes one from the other.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from readscale._core.sim.caches import INF
from readscale.errors import ConfigurationError

LAYERS = ("browser", "edge", "app_cache", "replicas", "primary")
ReadYourWrites = Literal["lsn", "window", "none"]
RYW_RULES: tuple[ReadYourWrites, ...] = ("lsn", "window", "none")


def _need(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ConfigurationError(f"{name} must be {rule}, got {value!r}")


def _positive(name: str, value: float) -> None:
    _need(isinstance(value, int | float) and math.isfinite(value) and value > 0, name, "a number > 0", value)


def _non_negative(name: str, value: float, *, allow_inf: bool = False) -> None:
    ok = isinstance(value, int | float) and not math.isnan(value) and value >= 0 and (allow_inf or value != INF)
    _need(ok, name, "a number >= 0" + (" (inf allowed)" if allow_inf else ""), value)


def _count(name: str, value: int, minimum: int) -> None:
    _need(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        name,
        f"an integer >= {minimum}",
        value,
    )


@dataclass(frozen=True, slots=True)
class Traffic:
    """What the clients ask for.

    ``rps`` counts every request, reads and writes; ``reads_per_write`` splits it
    (``inf``: read-only). ``clients`` browsers share it evenly, each with its own
    private cache. ``duration_s`` None means steady state; a number means a run of that
    length from cold caches (what a demo run measures).
    """

    rps: float
    keys: int = 100_000
    zipf_alpha: float = 0.99
    reads_per_write: float = 100.0
    clients: int = 10_000
    write_alpha: float | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        _positive("rps", self.rps)
        _count("keys", self.keys, 1)
        _positive("zipf_alpha", self.zipf_alpha)
        _need(
            isinstance(self.reads_per_write, int | float) and self.reads_per_write > 0,
            "reads_per_write",
            "a number > 0 (inf for read-only traffic)",
            self.reads_per_write,
        )
        _count("clients", self.clients, 1)
        if self.write_alpha is not None:
            _non_negative("write_alpha", self.write_alpha)
        if self.duration_s is not None:
            _positive("duration_s", self.duration_s)

    @property
    def reads_rps(self) -> float:
        r = self.reads_per_write
        return self.rps if math.isinf(r) else self.rps * r / (r + 1.0)

    @property
    def writes_rps(self) -> float:
        return self.rps - self.reads_rps


@dataclass(frozen=True, slots=True)
class Layers:
    """The read path's settings. A TTL of 0 turns a cache off; ``inf`` keeps entries forever.

    ``public_share``: share of reads on public routes, the only ones the edge may cache.
    ``edge_purge``: writes purge the edge (tags after commit); else it serves until TTL.
    ``l1_entries`` per app process (0: no L1), ``l2_entries`` None: Redis is unbounded.
    ``read_your_writes``: after a client writes, its reads go to the primary while the
    replicas may lag (``"lsn"``: for the replica lag; ``"window"``: for ``ryw_window_s``).
    ``write_behind_share``: share of writes the app cache acknowledges (write-behind) and
    the database receives later in batches: they count at the app cache, not the primary.
    """

    browser_max_age_s: float = 60.0
    edge_ttl_s: float = 300.0
    public_share: float = 1.0
    edge_purge: bool = True
    cache_ttl_s: float = 300.0
    l1_entries: int = 1_000
    l1_ttl_s: float | None = None
    app_processes: int = 1
    l2_entries: int | None = None
    replicas: int = 2
    replica_lag_ms: float = 10.0
    read_your_writes: ReadYourWrites = "lsn"
    ryw_window_s: float = 2.0
    write_behind_share: float = 0.0

    def __post_init__(self) -> None:
        for name in ("browser_max_age_s", "edge_ttl_s", "cache_ttl_s"):
            _non_negative(name, getattr(self, name), allow_inf=True)
        if self.l1_ttl_s is not None:
            _non_negative("l1_ttl_s", self.l1_ttl_s, allow_inf=True)
        _need(0.0 <= self.public_share <= 1.0, "public_share", "a share between 0 and 1", self.public_share)
        _count("l1_entries", self.l1_entries, 0)
        _count("app_processes", self.app_processes, 1)
        if self.l2_entries is not None:
            _count("l2_entries", self.l2_entries, 0)
        _count("replicas", self.replicas, 0)
        _non_negative("replica_lag_ms", self.replica_lag_ms)
        _need(self.read_your_writes in RYW_RULES, "read_your_writes", " or ".join(RYW_RULES), self.read_your_writes)
        _non_negative("ryw_window_s", self.ryw_window_s)
        _need(
            0.0 <= self.write_behind_share <= 1.0,
            "write_behind_share",
            "a share between 0 and 1",
            self.write_behind_share,
        )

    @property
    def ryw_duration_s(self) -> float:
        """How long after its own write a client's reads must go to the primary."""
        if self.replicas == 0 or self.read_your_writes == "none":
            return 0.0
        return self.replica_lag_ms / 1000.0 if self.read_your_writes == "lsn" else self.ryw_window_s


@dataclass(frozen=True, slots=True)
class Latencies:
    """Milliseconds a request takes when the named layer serves it (no queueing).

    Defaults are this machine's loopback figures (shared/notes/baselines.md): a browser
    hit never leaves the client; a Varnish hit 0.07 ms (wrk -c1 p50); an app-cache hit
    adds the edge pass, the Python app (0.10 ms, uvicorn + httptools) and a Redis GET
    (0.11 ms, redis-py + json); a database read adds a PostgreSQL primary-key read
    (0.10 ms, psycopg prepared) after the cache miss. Writes cost what primary reads do.
    """

    browser: float = 0.0
    edge: float = 0.07
    app_cache: float = 0.28
    replicas: float = 0.38
    primary: float = 0.38

    def __post_init__(self) -> None:
        for name in LAYERS:
            _non_negative(f"latency_ms.{name}", getattr(self, name))

    def of(self, layer: str) -> float:
        value: float = getattr(self, layer)
        return value


@dataclass(frozen=True, slots=True)
class Locality:
    """The model's free parameters, 1.0 (and None) for the plain model; calibration fits them.

    ``browser``, ``edge`` and ``app_cache`` multiply the per-key request rates each
    layer's cache formula sees, without changing the volume: above 1, requests are more
    concentrated than the independent-reference Zipf model says (clients revisit their
    own pages, bursts); below 1, less (uncacheable routes, Vary splits, cold objects).
    ``ryw_effective_s`` replaces the read-your-writes duration.
    """

    browser: float = 1.0
    edge: float = 1.0
    app_cache: float = 1.0
    ryw_effective_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("browser", "edge", "app_cache"):
            _positive(f"locality.{name}", getattr(self, name))
        if self.ryw_effective_s is not None:
            _non_negative("locality.ryw_effective_s", self.ryw_effective_s, allow_inf=True)


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything :func:`predict` needs."""

    traffic: Traffic
    layers: Layers = field(default_factory=Layers)
    latencies: Latencies = field(default_factory=Latencies)
    locality: Locality = field(default_factory=Locality)

    def to_json(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in asdict(self).items()}


def _finite(value: Any) -> Any:
    """JSON has no infinity: write it as the string "inf"."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return value


@dataclass(frozen=True, slots=True)
class LayerLoad:
    """One layer of the funnel, in requests per second.

    ``arriving``: reads that reach the layer (the primary also takes every write).
    ``absorbed``: what it serves. ``share``: absorbed / all requests. ``nodes``: the
    servers sharing it (replicas), so ``per_node`` is one replica's load.
    """

    layer: str
    arriving_rps: float
    absorbed_rps: float
    share: float
    latency_ms: float
    nodes: int = 1

    @property
    def passed_rps(self) -> float:
        return max(0.0, self.arriving_rps - self.absorbed_rps)

    @property
    def hit_ratio(self) -> float:
        return self.absorbed_rps / self.arriving_rps if self.arriving_rps > 0 else 0.0

    @property
    def per_node_rps(self) -> float:
        return self.absorbed_rps / self.nodes if self.nodes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "arriving_rps": self.arriving_rps,
            "absorbed_rps": self.absorbed_rps,
            "passed_rps": self.passed_rps,
            "hit_ratio": self.hit_ratio,
            "share": self.share,
            "latency_ms": self.latency_ms,
            "nodes": self.nodes,
            "per_node_rps": self.per_node_rps,
        }


@dataclass(frozen=True, slots=True)
class Prediction:
    """The funnel :func:`predict` computes. Shares sum to 1 over reads and writes."""

    scenario: Scenario
    layers: tuple[LayerLoad, ...]
    l1_absorbed_rps: float
    l2_absorbed_rps: float
    primary_reads_rps: float
    ryw_fraction: float

    @property
    def requests_rps(self) -> float:
        return self.scenario.traffic.rps

    @property
    def reads_rps(self) -> float:
        return self.scenario.traffic.reads_rps

    @property
    def writes_rps(self) -> float:
        """Writes reaching the primary one by one (write-behind ones are batched later)."""
        return primary_writes_rps(self.scenario)

    def layer(self, name: str) -> LayerLoad:
        for load in self.layers:
            if load.layer == name:
                return load
        raise KeyError(name)

    @property
    def shares(self) -> dict[str, float]:
        return {load.layer: load.share for load in self.layers}

    @property
    def mean_latency_ms(self) -> float:
        return math.fsum(load.share * load.latency_ms for load in self.layers)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests_rps": self.requests_rps,
            "reads_rps": self.reads_rps,
            "writes_rps": self.writes_rps,
            "layers": [load.to_json() for load in self.layers],
            "shares": self.shares,
            "mean_latency_ms": self.mean_latency_ms,
            "app_cache": {"l1_absorbed_rps": self.l1_absorbed_rps, "l2_absorbed_rps": self.l2_absorbed_rps},
            "primary": {"reads_rps": self.primary_reads_rps, "writes_rps": self.writes_rps},
            "ryw_fraction": self.ryw_fraction,
            "scenario": self.scenario.to_json(),
        }


def primary_writes_rps(scenario: Scenario) -> float:
    """Writes the primary takes one by one: all but the write-behind share."""
    return scenario.traffic.writes_rps * (1.0 - scenario.layers.write_behind_share)
