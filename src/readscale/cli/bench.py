"""``readscale bench <name>``: run one benchmark, print a table or JSON."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from readscale.bench.harness import BENCHES, load_bench
from readscale.cli._output import (
    console,
    errors_to_exit,
    fail,
    print_json,
    progress_line,
    terminate_as_interrupt,
)


def bench(
    name: Annotated[str, typer.Argument(help=f"Which bench: {', '.join(sorted(BENCHES))}.")],
    rounds: Annotated[int, typer.Option(min=1, help="Repeated rounds; the median is reported.")] = 5,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Fewer, shorter rounds (a smoke run, not a measurement)."),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table (progress stays on stderr).")
    ] = False,
) -> None:
    """Run a benchmark against real servers and report medians of repeated rounds."""
    try:
        fn = load_bench(name)
    except KeyError as exc:
        fail(str(exc.args[0]))
    except ImportError as exc:
        fail(f"bench {name!r} needs {exc.name}; install the peers with: pip install 'readscale[bench]'")
    with (
        errors_to_exit(),
        terminate_as_interrupt(),
        progress_line(True, f"bench {name}") as progress,  # on stderr: --json keeps stdout clean
    ):
        report = fn(rounds=rounds, quick=quick, progress=progress)
    if as_json:
        print_json(report.to_json())
        return
    table = Table(title=f"readscale bench {name}")
    for column in ("metric", "value", "unit", "note"):
        table.add_column(column)
    for metric in report.results:
        table.add_row(metric.name, f"{metric.value:.4g}", metric.unit, metric.note)
    console.print(table)
    machine = report.machine
    console.print(f"{machine['cpu']} x{machine['cores']}, Python {machine['python']}, load {machine['load_avg_1m']}")
