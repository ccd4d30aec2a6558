"""``readscale demo``: run the reference service under load and print the funnel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from readscale.cli._output import console, err_console, errors_to_exit, print_json, terminate_as_interrupt

LABELS = {
    "browser": "browser cache",
    "edge": "edge (Varnish)",
    "app_cache": "app cache (L1 + Redis)",
    "replicas": "read replicas",
    "primary": "primary",
}


def _live_view(result: Any, started: float, duration: float) -> Group:
    table = Table(title=f"load: {time.monotonic() - started:.0f}s of {duration:.0f}s", expand=False)
    table.add_column("requests", justify="right")
    for name in ("browser", "edge", "app_cache", "replica", "primary", "error"):
        table.add_column(name, justify="right")
    total = max(result.requests, 1)
    layers = ("browser", "edge", "app_cache", "replica", "primary")
    shares = [f"{result.layers.get(n, 0) / total:.1%}" for n in layers]
    table.add_row(f"{result.requests:,}", *shares, str(result.failed))
    return Group(table)


def demo(
    duration: Annotated[float, typer.Option(min=1, help="Seconds of load.")] = 60.0,
    clients: Annotated[int, typer.Option(min=1, help="Browser-like clients.")] = 48,
    workers: Annotated[int, typer.Option(min=1, help="Service worker processes (uvicorn).")] = 2,
    chaos: Annotated[str, typer.Option(help="none, redis (killed halfway, restarted later) or replica.")] = "none",
    report: Annotated[Path, typer.Option(help="Write the HTML report here.")] = Path("readscale-report.html"),
    no_report: Annotated[bool, typer.Option("--no-report", help="Write no HTML report.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the clients' choices.")] = 7,
    logs: Annotated[Path | None, typer.Option(help="Keep the service's logs in this folder.")] = None,
) -> None:
    """Start the stack and the reference service, drive it with browser-like clients, and
    show what each layer of the read path absorbed."""
    from readscale.demo.runner import DemoConfig, run_demo

    if chaos not in ("none", "redis", "replica"):
        raise typer.BadParameter("choose none, redis or replica", param_hint="--chaos")
    with errors_to_exit(), terminate_as_interrupt():
        config = DemoConfig(
            duration_s=duration,
            clients=clients,
            workers=workers,
            chaos=chaos,  # type: ignore[arg-type]
            report=None if no_report else report,
            seed=seed,
            logs=logs,
        )
        started = [0.0]

        def progress(message: str) -> None:
            if not as_json:
                err_console.log(message, highlight=False)

        if as_json:
            data = run_demo(config, progress=progress)
            print_json({k: v for k, v in data.items() if k not in ("timeline", "layers_raw")})
            return
        with Live(Text("starting..."), console=err_console, refresh_per_second=4, transient=True) as live:

            def on_load(result: Any) -> None:
                if not started[0]:
                    started[0] = time.monotonic()
                live.update(_live_view(result, started[0], duration))

            data = run_demo(config, progress=progress, on_load=on_load)
        _print_funnel(data)


def _print_funnel(data: dict[str, Any]) -> None:
    counts = data["counts"]
    table = Table(title=data["summary"], title_justify="left")
    table.add_column("layer")
    table.add_column("requests answered", justify="right")
    table.add_column("share", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    from readscale.demo.funnel import CLIENT_LAYER as client_layer
    from readscale.demo.loadgen import BROWSER_BOUND, SHARED_BOUND

    for name, label in LABELS.items():
        latency = data["latency"].get(client_layer[name], {})
        table.add_row(
            label,
            f"{counts[name]:,}",
            f"{data[f'share_{name}']:.2%}",
            f"{latency.get('p50', float('nan')):.2f}",
            f"{latency.get('p99', float('nan')):.2f}",
        )
    console.print(table)
    console.print(
        f"layers add up to {counts['accounted']:,} of {data['requests']:,} requests "
        f"({counts['discrepancy']:+.2%}); primary share of reads {data['primary_read_share']:.2%}; "
        f"failed requests {data['failed_requests']}; {data['config']['rps']:.0f} requests/s"
    )
    console.print(
        f"stale reads beyond their bound: {data['stale_reads_beyond_bound']} of {data['stale_checks']:,} checked "
        f"(balance and profile: read-your-writes; prices: browser {BROWSER_BOUND:g} s, "
        f"shared layers {SHARED_BOUND:g} s after a change)"
    )
