"""How ``readscale sim`` shows its results: Rich tables, one JSON object, SVG and HTML."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from readscale._core.sim import Prediction, Scenario
from readscale._core.sim.calibrate import SHARE_FLOOR, TOLERANCE, Calibration, Check
from readscale._core.sim.examples import textbook_figures
from readscale._core.sim.machines import MachinePlan
from readscale._core.sim.solve import Solution
from readscale.cli._output import console, err_console, fail, print_json
from readscale.report import bar_chart, escape, funnel_chart, html_page, html_table, line_chart, stacked_bar_chart

NAMES = {
    "browser": "browser",
    "edge": "edge",
    "app_cache": "app cache",
    "replicas": "replicas",
    "primary": "primary",
}


def _secs(value: float) -> str:
    return "forever" if math.isinf(value) else f"{value:g} s"


def describe(scenario: Scenario) -> list[str]:
    """The scenario's settings in a few plain lines."""
    t, s, loc = scenario.traffic, scenario.layers, scenario.locality
    r = "no writes" if math.isinf(t.reads_per_write) else f"{t.reads_per_write:g} reads per write"
    skew = f"Zipf alpha {t.zipf_alpha:g}" + ("" if t.write_alpha is None else f", writes alpha {t.write_alpha:g}")
    run = "steady state" if t.duration_s is None else f"a {t.duration_s:g} s run from cold caches"
    l1 = "no L1" if s.l1_entries == 0 else f"L1 {s.l1_entries:,} entries x {s.app_processes} process(es)"
    l2 = "unbounded" if s.l2_entries is None else f"{s.l2_entries:,} entries"
    rule = {"lsn": f"by LSN (lag {s.replica_lag_ms:g} ms)", "window": f"{s.ryw_window_s:g} s window", "none": "off"}
    lines = [
        f"traffic: {t.rps:,.0f} requests/s ({t.reads_rps:,.0f} reads + {t.writes_rps:,.0f} writes, {r}), "
        f"{t.keys:,} keys, {skew}, {t.clients:,} clients ({t.rps / t.clients:.3g} req/s each); {run}",
        f"browser max-age {_secs(s.browser_max_age_s)}; edge TTL {_secs(s.edge_ttl_s)} on the "
        f"{s.public_share:.1%} of reads that are public, {'purged on writes' if s.edge_purge else 'never purged'}",
        f"app cache TTL {_secs(s.cache_ttl_s)}: {l1}, L2 (Redis) {l2}; {s.replicas} replica(s), "
        f"read-your-writes {rule[s.read_your_writes]}",
    ]
    if loc.browser != 1 or loc.edge != 1 or loc.app_cache != 1 or loc.ryw_effective_s is not None:
        ryw = (
            ""
            if loc.ryw_effective_s is None
            else f", reads go to the primary {loc.ryw_effective_s:.3g} s after a write"
        )
        lines.append(
            f"calibrated locality: browser x{loc.browser:.3g}, edge x{loc.edge:.3g}, "
            f"app cache x{loc.app_cache:.3g}{ryw}"
        )
    return lines


def funnel_line(p: Prediction) -> str:
    """The demo's shape: 'Of N requests: a -> browser | b -> edge | ...'."""
    parts = " | ".join(f"{load.absorbed_rps:,.0f} -> {NAMES[load.layer]}" for load in p.layers)
    return f"Of {p.requests_rps:,.0f} requests/s: {parts}"


def prediction_rows(p: Prediction) -> list[list[str]]:
    return [
        [
            NAMES[load.layer],
            f"{load.arriving_rps:,.0f}",
            f"{load.absorbed_rps:,.0f}",
            f"{load.passed_rps:,.0f}",
            f"{load.hit_ratio:.1%}",
            f"{load.share:.2%}",
            f"{load.latency_ms:.3g}",
        ]
        for load in p.layers
    ]


PREDICTION_HEADERS = ["layer", "arriving/s", "absorbed/s", "passed/s", "absorbed", "share", "ms"]


def database_line(p: Prediction) -> str:
    """Where the database reads go: per replica, and the primary's reads and writes."""
    replicas = p.layer("replicas")
    each = f"each of {replicas.nodes} replicas takes {replicas.per_node_rps:,.0f}/s; " if replicas.nodes else ""
    return (
        f"{each}the primary takes {p.primary_reads_rps:,.1f} reads/s "
        f"({p.ryw_fraction:.2%} of database reads, read-your-writes) + {p.writes_rps:,.0f} writes/s"
    )


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    table = Table(title=title)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _write(path: Path | None, text: str, what: str) -> None:
    if path is None:
        return
    try:
        path.write_text(text)
    except OSError as exc:
        fail(f"cannot write the {what} to {path}: {exc.strerror or exc}")
    err_console.print(f"wrote the {what} to {path}", highlight=False)


def _funnel_svg(p: Prediction, title: str) -> str:
    return funnel_chart([(NAMES[x.layer], x.absorbed_rps) for x in p.layers], title=title, unit="req/s")


def _prediction_blocks(p: Prediction, title: str) -> list[str]:
    return [
        "".join(f'<p class="note">{escape(line)}</p>' for line in describe(p.scenario)),
        _funnel_svg(p, title),
        html_table(PREDICTION_HEADERS, prediction_rows(p)),
        f"<p>{escape(funnel_line(p))}; mean latency {p.mean_latency_ms:.3g} ms</p>",
        f'<p class="note">{escape(database_line(p))}</p>',
        bar_chart(
            [(NAMES[x.layer], x.arriving_rps) for x in p.layers], title="Requests reaching each layer", unit="req/s"
        ),
        bar_chart([(NAMES[x.layer], x.latency_ms) for x in p.layers], title="Latency per layer", unit="ms"),
    ]


def show_prediction(
    p: Prediction,
    *,
    textbook: bool,
    reading: str | None,
    as_json: bool,
    chart: Path | None,
    html: Path | None,
    machines: MachinePlan | None = None,
) -> None:
    figures = textbook_figures(p) if textbook else ()
    title = f"Who serves {p.requests_rps:,.0f} requests/s (model)"
    _write(chart, _funnel_svg(p, title), "chart")
    blocks = _prediction_blocks(p, title)
    if figures:
        blocks.insert(0, f"<p><b>Reading:</b> {escape(reading or '')}</p>")
        blocks.append(
            html_table(
                ["textbook figure", "expected", "model", "error"],
                [[f.label, f"{f.expected:,.0f}", f"{f.predicted:,.0f}", f"{f.error:.2%}"] for f in figures],
            )
        )
    _write(html, html_page("readscale sim", blocks), "HTML page")
    if as_json:
        data: dict[str, Any] = {"mode": "predict", "funnel": funnel_line(p), **p.to_json()}
        if reading:
            data["reading"] = reading
        if figures:
            data["textbook"] = [
                {
                    "layer": f.layer,
                    "figure": f.label,
                    "expected": f.expected,
                    "predicted": f.predicted,
                    "error": f.error,
                }
                for f in figures
            ]
            data["textbook_within_1_percent"] = all(f.error <= 0.01 for f in figures)
        if machines is not None:
            data["machines"] = machines.to_json()
        print_json(data)
        return
    if figures:
        console.print(f"[bold]The textbook example, read as:[/] {reading}", highlight=False)
    for line in describe(p.scenario):
        console.print(f"[dim]{line}[/]", highlight=False)
    console.print(_table("readscale sim: the funnel per layer", PREDICTION_HEADERS, prediction_rows(p)))
    console.print(database_line(p), highlight=False)
    console.print(funnel_line(p), highlight=False)
    console.print(
        f"shares are of all requests (reads and writes; writes count at the primary); "
        f"mean latency {p.mean_latency_ms:.3g} ms",
        highlight=False,
    )
    if figures:
        rows = [[f.label, f"{f.expected:,.0f}", f"{f.predicted:,.1f}", f"{f.error:.2%}"] for f in figures]
        console.print(_table("textbook figures against the model", ["figure", "textbook", "model", "error"], rows))
        worst = max(f.error for f in figures)
        verdict = "[green]within 1 % per layer[/]" if worst <= 0.01 else "[red]off by more than 1 %[/]"
        console.print(f"largest error {worst:.2%}: {verdict}", highlight=False)
    if machines is not None:
        show_machines(machines)


def show_machines(plan: MachinePlan) -> None:
    """The machines per layer table (``--costs``)."""
    rows = [
        [m.layer, f"{m.requests_rps:,.0f}", f"{m.cpu_ms_per_request:.3g}", f"{m.cores:,.1f}", f"{m.machines:,}"]
        for m in plan.layers
    ]
    title = (
        f"machines of the measured kind ({plan.costs.cores} cores) at {plan.utilisation:.0%} CPU, "
        f"costs from {plan.costs.source or 'a capacity run'}"
    )
    console.print(_table(title, ["layer", "req/s", "CPU ms/req", "cores", "machines"], rows))
    console.print(
        f"{plan.machines:,} machines in all; Redis counts one core per process (shards of a Redis Cluster)",
        highlight=False,
    )


def show_calibration(
    c: Calibration,
    extrapolated: Prediction | None,
    *,
    as_json: bool,
    chart: Path | None,
    html: Path | None,
    source: Path | None,
    checked: Check | None = None,
    check_source: Path | None = None,
) -> None:
    def shares(p: Prediction) -> list[tuple[str, float]]:
        return [(NAMES[x.layer], x.share) for x in p.layers]

    svg = stacked_bar_chart(
        {
            "measured": [(NAMES[k], v) for k, v in c.run.shares.items()],
            "model, config only": shares(c.uncalibrated),
            "model, calibrated": shares(c.calibrated),
        },
        title="Share of requests per layer: measured and predicted",
    )
    _write(chart, svg, "chart")
    rows = [
        [
            NAMES[a.layer],
            f"{a.measured:.2%}",
            f"{b.predicted:.2%}",
            f"{b.error:.0%}",
            f"{a.predicted:.2%}",
            f"{a.error:.1%}",
            "yes" if a.ok else "NO",
        ]
        for a, b in zip(c.after, c.before, strict=True)
    ]
    headers = ["layer", "measured", "config only", "error", "calibrated", "error", f"within {TOLERANCE:.0%}"]
    definition = (
        f"error = |predicted - measured| / max(measured, {SHARE_FLOOR:g}): relative, "
        f"or absolute under a {SHARE_FLOOR:.0%} share"
    )
    blocks = ["".join(f'<p class="note">{escape(x)}</p>' for x in describe(c.calibrated.scenario)), svg]
    blocks += [html_table(headers, rows), f'<p class="note">{escape(definition)}</p>']
    check_rows = []
    if checked is not None:
        check_rows = [
            [NAMES[e.layer], f"{e.measured:.2%}", f"{e.predicted:.2%}", f"{e.error:.1%}", "yes" if e.ok else "NO"]
            for e in checked.errors
        ]
        name = check_source.name if check_source else "another run"
        blocks += [
            f"<h2>Hold-out: {escape(name)} predicted with these parameters</h2>",
            html_table(["layer", "measured", "predicted", "error", f"within {TOLERANCE:.0%}"], check_rows),
        ]
    if extrapolated is not None:
        blocks += ["<h2>Prediction with the fitted parameters</h2>", *_prediction_blocks(extrapolated, "Prediction")]
    _write(html, html_page("readscale sim: calibration", blocks), "HTML page")
    if as_json:
        data: dict[str, Any] = {"mode": "calibrate", "source": str(source) if source else None, **c.to_json()}
        if extrapolated is not None:
            data["prediction"] = extrapolated.to_json()
        if checked is not None:
            data["check"] = {"source": str(check_source) if check_source else None, **checked.to_json()}
        print_json(data)
        return
    for line in describe(c.calibrated.scenario):
        console.print(f"[dim]{line}[/]", highlight=False)
    for note in c.run.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(_table(f"calibration on {source.name if source else 'the run'}", headers, rows))
    console.print(definition, highlight=False)
    if c.clamped:
        console.print(
            f"[yellow]out of the model's reach (parameter at its bound):[/] {', '.join(c.clamped)}", highlight=False
        )
    verdict = "[green]every layer within 20 %[/]" if c.ok else "[red]some layers off by more than 20 %[/]"
    console.print(verdict, highlight=False)
    if checked is not None:
        name = check_source.name if check_source else "another run"
        for note in checked.run.notes:
            console.print(f"[yellow]note ({name}):[/] {note}", highlight=False)
        headers = ["layer", "measured", "predicted", "error", f"within {TOLERANCE:.0%}"]
        console.print(_table(f"hold-out: {name} with the parameters fitted above", headers, check_rows))
        verdict = "[green]every layer within 20 %[/]" if checked.ok else "[red]some layers off by more than 20 %[/]"
        console.print(f"hold-out: {verdict}", highlight=False)
    if extrapolated is not None:
        console.print("[bold]with the fitted parameters, for the configuration given:[/]", highlight=False)
        for line in describe(extrapolated.scenario):
            console.print(f"[dim]{line}[/]", highlight=False)
        console.print(_table("prediction", PREDICTION_HEADERS, prediction_rows(extrapolated)))
        console.print(funnel_line(extrapolated), highlight=False)


def _solution_svg(s: Solution) -> str:
    label = "replicas" if s.setting == "replicas" else "L2 (Redis) entries"
    series: dict[str, list[tuple[float, float]]] = {"primary": [], "replicas (all)": [], "per replica": []}
    if s.setting == "cache-size":
        series = {"app cache": [], **series}
    for value, p in s.curve:
        if "app cache" in series:
            series["app cache"].append((value, p.layer("app_cache").absorbed_rps))
        series["primary"].append((value, p.layer("primary").absorbed_rps))
        series["replicas (all)"].append((value, p.layer("replicas").absorbed_rps))
        series["per replica"].append((value, p.layer("replicas").per_node_rps))
    xs = [float(v) for v, _ in s.curve]
    ends = [min(xs), max(xs)] if xs else [0.0, 1.0]
    dashed = []
    for name, target in (
        ("target: primary", s.targets.primary_rps),
        ("replica capacity", s.targets.replica_rps),
        ("target: database", s.targets.database_rps),
    ):
        if target is not None:
            series[name] = [(x, target) for x in ends]
            dashed.append(name)
    answer = "none meets the targets" if s.value is None else f"answer: {s.value:,}"
    return line_chart(
        series,
        title=f"Load against {label} ({answer})",
        x_label=label,
        y_label="requests per second",
        dashed=dashed,
    )


def show_solution(s: Solution, *, as_json: bool, chart: Path | None, html: Path | None) -> None:
    svg = _solution_svg(s)
    _write(chart, svg, "chart")
    headers = [s.setting, "app cache/s", "replicas/s", "per replica/s", "primary/s", "meets targets"]
    rows = [
        [
            f"{value:,}",
            f"{p.layer('app_cache').absorbed_rps:,.0f}",
            f"{p.layer('replicas').absorbed_rps:,.0f}",
            f"{p.layer('replicas').per_node_rps:,.0f}",
            f"{p.layer('primary').absorbed_rps:,.0f}",
            "no" if s.targets.unmet(p) else "yes",
        ]
        for value, p in s.curve
    ]
    blocks = [f"<p><b>{escape(s.reason)}</b></p>", svg, html_table(headers, rows)]
    blocks += _prediction_blocks(s.prediction, "At the answer" if s.value is not None else "At the largest setting")
    _write(html, html_page(f"readscale sim --solve {s.setting}", blocks), "HTML page")
    if as_json:
        print_json({"mode": "solve", **s.to_json()})
        return
    for line in describe(s.prediction.scenario):
        console.print(f"[dim]{line}[/]", highlight=False)
    console.print(_table(f"load against {s.setting}", headers, rows))
    if s.value is None:
        console.print(f"[bold red]no answer:[/] {s.reason}", highlight=False)
        return
    console.print(f"[bold green]{s.setting} = {s.value:,}[/]: {s.reason}", highlight=False)
    console.print(_table("the funnel at the answer", PREDICTION_HEADERS, prediction_rows(s.prediction)))
