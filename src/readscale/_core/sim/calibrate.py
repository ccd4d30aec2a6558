"""Calibration: fit the model's free parameters to a measured demo run, then compare.

A demo run (``readscale demo --json``) reports its configuration and the share of
requests each layer served. :func:`parse_demo_run` reads that object defensively;
:func:`calibrate` fits :class:`~readscale._core.sim.model.Locality` layer by layer, in
the order requests flow, since each layer's share depends only on the layers above it:

1. ``browser``: the clients' revisit rate, so the browsers absorb the measured share;
2. ``edge``: the edge's effective locality, for the edge's share;
3. ``app_cache``: the app cache's, for its share;
4. ``ryw_effective_s``: how long after a write a client's reads go to the primary, for
   the primary's share (the replicas get the rest, so their share follows).

Each is a one-dimensional bisection on a monotone function, so the fit is exact unless
a measured share is out of the model's reach (the parameter is then clamped at its
bound and the layer named in ``clamped``). The uncalibrated prediction (the plain model
from the configuration alone) is kept beside it: its error is the honest measure of
the model; the calibrated one measures the fit.

Error per layer: ``|predicted - measured| / max(measured, SHARE_FLOOR)``, a relative
error with a floor of 2 percentage points, so a tiny share (the primary's 0.5 %) is not
judged on noise: a layer passes at :data:`TOLERANCE` (20 %), i.e. within 20 % relative,
or within 0.4 points absolute for shares under 2 %.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from readscale._core.sim.funnel import predict
from readscale._core.sim.model import (
    LAYERS,
    RYW_RULES,
    Latencies,
    Layers,
    Locality,
    Prediction,
    ReadYourWrites,
    Scenario,
    Traffic,
    primary_writes_rps,
)
from readscale.errors import ConfigurationError

SHARE_FLOOR = 0.02
TOLERANCE = 0.20
SHARES_SUM_TOLERANCE = 0.01
LOCALITY_BOUNDS = (1e-4, 1e4)


REQUIRED = ("requests", "duration_s", "config", *(f"share_{layer}" for layer in LAYERS))
REQUIRED_CONFIG = (
    "clients",
    "keys",
    "zipf_alpha",
    "reads_per_write",
    "browser_max_age_s",
    "edge_ttl_s",
    "cache_ttl_s",
    "l1_entries",
    "replicas",
    "replica_lag_ms",
    "rps",
)


def _field(data: Mapping[str, Any], name: str, path: str, kind: type[int] | type[float]) -> Any:
    """``data[name]`` as ``kind`` (an int, or any finite number for float), or a clear error."""
    where = f"{path}.{name}" if path else name
    if name not in data:
        raise ConfigurationError(f"demo run: missing field {where!r}")
    value = data[name]
    wanted = "an integer" if kind is int else "a number"
    if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
        raise ConfigurationError(f"demo run: field {where!r} must be {wanted}, got {value!r}")
    if kind is int:
        return value
    number = float(value)
    if not math.isfinite(number):
        raise ConfigurationError(f"demo run: field {where!r} must be finite, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class DemoRun:
    """What calibration needs of a demo run: its scenario and its measured shares."""

    requests: int
    duration_s: float
    scenario: Scenario
    shares: Mapping[str, float]
    config_rps: float
    notes: tuple[str, ...] = ()


def parse_demo_run(data: Any) -> DemoRun:
    """Read a ``readscale demo --json`` object.

    Required: ``requests``, ``duration_s``, ``config`` (``clients``, ``keys``,
    ``zipf_alpha``, ``reads_per_write``, ``browser_max_age_s``, ``edge_ttl_s``,
    ``cache_ttl_s``, ``l1_entries``, ``replicas``, ``replica_lag_ms``, ``rps``) and the
    five ``share_*``. Optional: ``latency_ms`` per layer (defaults otherwise) and, in
    ``config``, ``public_share``, ``l2_entries``, ``app_processes``, ``write_alpha``,
    ``read_your_writes``, ``ryw_window_s``, ``write_behind_share``. Other fields are ignored.

    Raises :class:`ConfigurationError` naming the missing or malformed field, or the
    shares when they are outside [0, 1] or do not add up to 1 (within 0.01).
    """
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"demo run: expected a JSON object, got {type(data).__name__}")
    config = data.get("config")
    missing = [name for name in REQUIRED if name not in data]
    if isinstance(config, Mapping):
        missing += [f"config.{name}" for name in REQUIRED_CONFIG if name not in config]
    if missing:
        raise ConfigurationError(
            f"demo run: missing field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
        )
    requests = _field(data, "requests", "", int)
    duration = _field(data, "duration_s", "", float)
    if requests <= 0 or duration <= 0:
        raise ConfigurationError(f"demo run: requests and duration_s must be > 0, got {requests} and {duration}")
    if not isinstance(config, Mapping):
        raise ConfigurationError("demo run: field 'config' must be an object with the run's settings")

    def cfg(name: str, kind: type) -> Any:
        return _field(config, name, "config", kind)

    shares = {layer: _field(data, f"share_{layer}", "", float) for layer in LAYERS}
    bad = [f"share_{k}={v}" for k, v in shares.items() if not 0.0 <= v <= 1.0]
    if bad:
        raise ConfigurationError(f"demo run: shares must be between 0 and 1: {', '.join(bad)}")
    total = math.fsum(shares.values())
    if abs(total - 1.0) > SHARES_SUM_TOLERANCE:
        listed = ", ".join(f"share_{k}={v:g}" for k, v in shares.items())
        raise ConfigurationError(f"demo run: the shares add up to {total:.4f}, not 1 (within 0.01): {listed}")

    notes: list[str] = []
    latency = data.get("latency_ms")
    if isinstance(latency, Mapping):
        latencies = Latencies(**{layer: _field(latency, layer, "latency_ms", float) for layer in LAYERS})
    else:
        latencies = Latencies()
        notes.append("no latency_ms in the run: default latencies used")
    ryw = config.get("read_your_writes", "lsn")
    if ryw not in RYW_RULES:
        raise ConfigurationError(f"demo run: config.read_your_writes must be one of {RYW_RULES}, got {ryw!r}")
    rule: ReadYourWrites = ryw
    optional: dict[str, Any] = {}
    for name, kind in (
        ("public_share", float),
        ("ryw_window_s", float),
        ("app_processes", int),
        ("l2_entries", int),
        ("write_behind_share", float),
    ):
        if name in config and config[name] is not None:
            optional[name] = _field(config, name, "config", kind)
    write_alpha = _field(config, "write_alpha", "config", float) if config.get("write_alpha") is not None else None

    config_rps = cfg("rps", float)
    measured_rps = requests / duration
    if config_rps > 0 and abs(measured_rps / config_rps - 1.0) > 0.10:
        notes.append(
            f"measured {measured_rps:.1f} requests/s against the configured {config_rps:g}: the measured rate is used"
        )
    try:
        scenario = Scenario(
            traffic=Traffic(
                rps=measured_rps,
                keys=cfg("keys", int),
                zipf_alpha=cfg("zipf_alpha", float),
                reads_per_write=cfg("reads_per_write", float),
                clients=cfg("clients", int),
                write_alpha=write_alpha,
                duration_s=duration,
            ),
            layers=Layers(
                browser_max_age_s=cfg("browser_max_age_s", float),
                edge_ttl_s=cfg("edge_ttl_s", float),
                cache_ttl_s=cfg("cache_ttl_s", float),
                l1_entries=cfg("l1_entries", int),
                replicas=cfg("replicas", int),
                replica_lag_ms=cfg("replica_lag_ms", float),
                read_your_writes=rule,
                **optional,
            ),
            latencies=latencies,
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"demo run: config: {exc}") from exc
    return DemoRun(requests, duration, scenario, shares, config_rps, tuple(notes))


@dataclass(frozen=True, slots=True)
class LayerError:
    """Measured and predicted share of one layer, and the error as defined above."""

    layer: str
    measured: float
    predicted: float

    @property
    def error(self) -> float:
        return abs(self.predicted - self.measured) / max(self.measured, SHARE_FLOOR)

    @property
    def ok(self) -> bool:
        return self.error <= TOLERANCE


def compare(prediction: Prediction, shares: Mapping[str, float]) -> tuple[LayerError, ...]:
    """Per-layer errors of a prediction against measured shares."""
    return tuple(LayerError(layer, shares[layer], prediction.layer(layer).share) for layer in LAYERS)


@dataclass(frozen=True, slots=True)
class Calibration:
    """The fitted parameters, and the predictions before and after fitting."""

    run: DemoRun
    locality: Locality
    uncalibrated: Prediction
    calibrated: Prediction
    clamped: tuple[str, ...]

    @property
    def before(self) -> tuple[LayerError, ...]:
        return compare(self.uncalibrated, self.run.shares)

    @property
    def after(self) -> tuple[LayerError, ...]:
        return compare(self.calibrated, self.run.shares)

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.after)

    def to_json(self) -> dict[str, Any]:
        return {
            "locality": {
                "browser": self.locality.browser,
                "edge": self.locality.edge,
                "app_cache": self.locality.app_cache,
                "ryw_effective_s": self.locality.ryw_effective_s,
            },
            "clamped": list(self.clamped),
            "error_definition": f"|predicted - measured| / max(measured, {SHARE_FLOOR}); pass at <= {TOLERANCE}",
            "layers": [
                {
                    "layer": a.layer,
                    "measured": a.measured,
                    "uncalibrated": b.predicted,
                    "uncalibrated_error": b.error,
                    "calibrated": a.predicted,
                    "error": a.error,
                    "ok": a.ok,
                }
                for a, b in zip(self.after, self.before, strict=True)
            ],
            "ok": self.ok,
            "notes": list(self.run.notes),
            "scenario": self.calibrated.scenario.to_json(),
        }


def _fit_increasing(share_of: Callable[[float], float], target: float) -> tuple[float, bool]:
    """The parameter in LOCALITY_BOUNDS (log scale) at which ``share_of`` meets ``target``."""
    lo, hi = (math.log(b) for b in LOCALITY_BOUNDS)
    if share_of(math.exp(hi)) <= target:
        return math.exp(hi), True
    if share_of(math.exp(lo)) >= target:
        return math.exp(lo), True
    for _ in range(32):
        mid = (lo + hi) / 2.0
        if share_of(math.exp(mid)) < target:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2.0), False


def calibrate(run: DemoRun, progress: Callable[[str], None] | None = None) -> Calibration:
    """Fit :class:`Locality` to ``run`` and predict its configuration with it."""
    say = progress or (lambda message: None)
    base = run.scenario
    uncalibrated = predict(base)
    loc = Locality()
    clamped: list[str] = []
    for layer in ("browser", "edge", "app_cache"):
        say(f"fitting the {layer} locality")

        def share_of(k: float, layer: str = layer, fitted: Locality = loc) -> float:
            return predict(replace(base, locality=replace(fitted, **{layer: k}))).layer(layer).share

        value, hit_bound = _fit_increasing(share_of, run.shares[layer])
        loc = replace(loc, **{layer: value})
        if hit_bound:
            clamped.append(layer)
    say("fitting read-your-writes")
    fitted = predict(replace(base, locality=loc))
    traffic = base.traffic
    writes = primary_writes_rps(base)
    if base.layers.replicas > 0 and writes > 0:
        db_reads = fitted.primary_reads_rps + fitted.layer("replicas").absorbed_rps
        needed = run.shares["primary"] * traffic.rps - writes
        fraction = needed / db_reads if db_reads > 0 else 0.0
        if not 0.0 <= fraction < 1.0:
            clamped.append("primary")
        fraction = min(max(fraction, 0.0), 1.0 - 1e-9)
        per_client = writes / traffic.clients
        loc = replace(loc, ryw_effective_s=-math.log1p(-fraction) / per_client)
        fitted = predict(replace(base, locality=loc))
    return Calibration(run, loc, uncalibrated, fitted, tuple(clamped))


@dataclass(frozen=True, slots=True)
class Check:
    """A run the fit never saw, predicted with fitted parameters: the hold-out test."""

    run: DemoRun
    prediction: Prediction

    @property
    def errors(self) -> tuple[LayerError, ...]:
        return compare(self.prediction, self.run.shares)

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.errors)

    def to_json(self) -> dict[str, Any]:
        return {
            "layers": [
                {"layer": e.layer, "measured": e.measured, "predicted": e.predicted, "error": e.error, "ok": e.ok}
                for e in self.errors
            ],
            "ok": self.ok,
            "notes": list(self.run.notes),
        }


def check(locality: Locality, run: DemoRun) -> Check:
    """Predict ``run``'s configuration with ``locality`` (fitted on another run) and compare."""
    return Check(run, predict(replace(run.scenario, locality=locality)))
