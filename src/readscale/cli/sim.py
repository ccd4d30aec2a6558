"""``readscale sim``: predict the funnel, reproduce the textbook, calibrate, answer capacity questions.

The arithmetic is in :mod:`readscale._core.sim`; this module turns options into a
:class:`~readscale._core.sim.Scenario`, runs one of four modes and prints a Rich table
or one JSON object (``--json``), and writes charts (``--chart``, ``--html``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from readscale._core.sim import Scenario, Traffic, predict
from readscale._core.sim.calibrate import calibrate, check, parse_demo_run
from readscale._core.sim.examples import READING, TEXTBOOK
from readscale._core.sim.machines import UTILISATION, MachinePlan, plan_machines, unit_costs
from readscale._core.sim.model import RYW_RULES, Latencies
from readscale._core.sim.solve import SETTINGS, Targets, solve
from readscale.cli import _sim_output as out
from readscale.cli._output import errors_to_exit, progress_line, usage_error
from readscale.errors import ConfigurationError

EXAMPLES = ("textbook",)
_TRAFFIC_FIELDS = ("rps", "keys", "zipf_alpha", "write_alpha", "reads_per_write", "clients", "duration_s")


def _latencies(base: Latencies, specs: list[str]) -> Latencies:
    values: dict[str, float] = {}
    for spec in specs:
        layer, sep, ms = spec.partition("=")
        layer = layer.strip().replace("-", "_")
        if not sep or layer not in ("browser", "edge", "app_cache", "replicas", "primary"):
            raise ConfigurationError(
                "--latency must look like LAYER=MS with LAYER one of browser, edge, app_cache, replicas, "
                f"primary; got {spec!r}"
            )
        try:
            values[layer] = float(ms)
        except ValueError:
            raise ConfigurationError(f"--latency {spec!r}: {ms!r} is not a number of milliseconds") from None
    return replace(base, **values)


def _override(base: Scenario, traffic: dict[str, Any], layers: dict[str, Any], latency: list[str]) -> Scenario:
    """``base`` with every option the user gave (None means not given)."""
    given_traffic = {k: v for k, v in traffic.items() if v is not None}
    if given_traffic.get("duration_s") == 0:
        given_traffic["duration_s"] = None  # --duration 0: steady state
    given_layers = {k: v for k, v in layers.items() if v is not None}
    return replace(
        base,
        traffic=replace(base.traffic, **given_traffic),
        layers=replace(base.layers, **given_layers),
        latencies=_latencies(base.latencies, latency),
    )


def _read_run(path: Path, what: str = "the demo run") -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{path} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from exc


def sim(
    example: Annotated[str | None, typer.Option(help="A built-in scenario: textbook.")] = None,
    calibrate_from: Annotated[
        Path | None,
        typer.Option("--calibrate", help="A demo run's JSON (readscale demo --json): fit the model to it."),
    ] = None,
    costs_from: Annotated[
        Path | None,
        typer.Option(
            "--costs",
            help="A capacity run's JSON (readscale bench capacity --json): price each layer's load "
            "in machines of the measured kind.",
        ),
    ] = None,
    utilisation: Annotated[
        float, typer.Option(help="With --costs: the share of each machine's CPU the plan may use.")
    ] = UTILISATION,
    check_run: Annotated[
        Path | None,
        typer.Option("--check", help="Another demo run's JSON: predict it with the fitted parameters, compare."),
    ] = None,
    solve_for: Annotated[
        str | None,
        typer.Option("--solve", help="Find the smallest setting meeting the targets: replicas or cache-size."),
    ] = None,
    target_primary_rps: Annotated[
        float | None, typer.Option(help="Target: the primary's load, reads and writes (req/s).")
    ] = None,
    replica_capacity_rps: Annotated[
        float | None, typer.Option(help="Target: what one replica can take (req/s).")
    ] = None,
    target_db_rps: Annotated[
        float | None, typer.Option(help="Target: reads reaching the database tier (req/s).")
    ] = None,
    rps: Annotated[float | None, typer.Option(help="All requests per second, reads and writes.")] = None,
    keys: Annotated[int | None, typer.Option(help="Distinct keys (pages, objects).")] = None,
    zipf_alpha: Annotated[float | None, typer.Option(help="Popularity skew (Zipf alpha > 0).")] = None,
    write_alpha: Annotated[
        float | None, typer.Option(help="Skew of writes over the same ranking (default: zipf-alpha).")
    ] = None,
    reads_per_write: Annotated[float | None, typer.Option(help="Reads per write (inf: read-only).")] = None,
    clients: Annotated[int | None, typer.Option(help="Browsers, each with its private cache.")] = None,
    duration: Annotated[
        float | None, typer.Option(help="Seconds of a run from cold caches (0 or unset: steady state).")
    ] = None,
    browser_max_age: Annotated[float | None, typer.Option(help="Browser max-age, seconds.")] = None,
    edge_ttl: Annotated[float | None, typer.Option(help="Edge (CDN) TTL, seconds.")] = None,
    public_share: Annotated[float | None, typer.Option(help="Share of reads on public routes (0..1).")] = None,
    edge_purge: Annotated[
        bool | None, typer.Option("--edge-purge/--no-edge-purge", help="Writes purge the edge.")
    ] = None,
    cache_ttl: Annotated[float | None, typer.Option(help="App cache TTL, seconds (0: no app cache).")] = None,
    l1_entries: Annotated[int | None, typer.Option(help="In-process L1 entries per app process (0: none).")] = None,
    l2_entries: Annotated[int | None, typer.Option(help="Redis (L2) entries (default: unbounded).")] = None,
    app_processes: Annotated[int | None, typer.Option(help="App processes, each with its L1.")] = None,
    replicas: Annotated[int | None, typer.Option(help="Read replicas.")] = None,
    replica_lag_ms: Annotated[float | None, typer.Option(help="Replica lag, milliseconds.")] = None,
    ryw: Annotated[str | None, typer.Option(help="Read-your-writes rule: lsn, window or none.")] = None,
    ryw_window: Annotated[float | None, typer.Option(help="The time-window rule's window, seconds.")] = None,
    write_behind_share: Annotated[
        float | None, typer.Option(help="Share of writes acknowledged by write-behind (batched to the database).")
    ] = None,
    latency: Annotated[list[str] | None, typer.Option(help="LAYER=MS latency of a layer's hits (repeatable).")] = None,
    chart: Annotated[Path | None, typer.Option(help="Write the chart to this .svg file.")] = None,
    html: Annotated[Path | None, typer.Option(help="Write an HTML page with the table and charts.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Model the layered read path: each layer's load, share and latency, from traffic and settings."""
    if example is not None and example not in EXAMPLES:
        usage_error(f"--example must be one of {', '.join(EXAMPLES)}, got {example!r}")
    if example is not None and calibrate_from is not None:
        usage_error("--example and --calibrate both choose the base scenario: give one")
    if check_run is not None and calibrate_from is None:
        usage_error("--check compares a run with parameters fitted by --calibrate: give --calibrate too")
    if costs_from is not None and (solve_for is not None or calibrate_from is not None):
        usage_error("--costs prices a prediction: give it without --solve and --calibrate")
    if solve_for is not None and solve_for not in SETTINGS:
        usage_error(f"--solve must be one of {', '.join(SETTINGS)}, got {solve_for!r}")
    if ryw is not None and ryw not in RYW_RULES:
        usage_error(f"--ryw must be one of {', '.join(RYW_RULES)}, got {ryw!r}")
    if solve_for is None and any(t is not None for t in (target_primary_rps, replica_capacity_rps, target_db_rps)):
        usage_error("targets need --solve replicas or --solve cache-size")
    traffic_opts = dict(
        zip(_TRAFFIC_FIELDS, (rps, keys, zipf_alpha, write_alpha, reads_per_write, clients, duration), strict=True)
    )
    layer_opts: dict[str, Any] = {
        "browser_max_age_s": browser_max_age,
        "edge_ttl_s": edge_ttl,
        "public_share": public_share,
        "edge_purge": edge_purge,
        "cache_ttl_s": cache_ttl,
        "l1_entries": l1_entries,
        "l2_entries": l2_entries,
        "app_processes": app_processes,
        "replicas": replicas,
        "replica_lag_ms": replica_lag_ms,
        "read_your_writes": ryw,
        "ryw_window_s": ryw_window,
        "write_behind_share": write_behind_share,
    }
    overrides = any(v is not None for v in (*traffic_opts.values(), *layer_opts.values())) or bool(latency)

    machines: MachinePlan | None = None
    with errors_to_exit(), progress_line(not as_json, "readscale sim") as progress:
        calibration = None
        checked = None
        if calibrate_from is not None:
            run = parse_demo_run(_read_run(calibrate_from))
            progress(f"calibrating on {calibrate_from.name}: {run.requests:,} requests in {run.duration_s:g} s")
            calibration = calibrate(run, progress)
            base = calibration.calibrated.scenario
            if check_run is not None:
                progress(f"predicting {check_run.name} with the fitted parameters")
                checked = check(calibration.locality, parse_demo_run(_read_run(check_run)))
        elif example == "textbook":
            base = TEXTBOOK
        else:
            if rps is None:
                usage_error("give --rps (or --example textbook, or --calibrate DEMO.json)")
            base = Scenario(Traffic(rps=rps))
        scenario = _override(base, traffic_opts, layer_opts, latency or [])
        if solve_for is not None:
            targets = Targets(target_primary_rps, replica_capacity_rps, target_db_rps)
            progress(f"solving for {solve_for}")
            solution = solve(scenario, solve_for, targets, progress)
        else:
            solution = None
            prediction = predict(scenario)
            if costs_from is not None:
                costs = unit_costs(_read_run(costs_from, "the capacity run"), source=costs_from.name)
                machines = plan_machines(prediction, costs, utilisation)

    if solution is not None:
        out.show_solution(solution, as_json=as_json, chart=chart, html=html)
        if solution.value is None:
            raise typer.Exit(1)
        return
    if calibration is not None:
        out.show_calibration(
            calibration,
            prediction if overrides else None,
            as_json=as_json,
            chart=chart,
            html=html,
            source=calibrate_from,
            checked=checked,
            check_source=check_run,
        )
        return
    out.show_prediction(
        prediction,
        textbook=example == "textbook" and not overrides,
        reading=READING if example == "textbook" else None,
        as_json=as_json,
        chart=chart,
        html=html,
        machines=machines,
    )
